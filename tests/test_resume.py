"""Delivery guarantees: resume from a cursor, RESYNC for cursors that cannot be served,
no commit-order hole, repair after a broker outage, orphaned changes swept."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

import models
from app.settings import Settings
from models import change_log
from schema.ids import decode_typed_id
from subscriptions.capture import CapturingSession
from subscriptions.changelog import trim
from subscriptions.cursors import encode_cursor
from tests.live import LiveServer, live_server
from tests.realtime_support import Realtime, Update
from tests.redis_server import redis_server
from tests.support import Account, GraphQLClient, eventually, subscriptions_started
from tests.ws_client import UPDATES, GraphQLSocket, graphql_socket

UPDATE_TITLE = """
mutation($id: ID!, $t: String!) { updateCard(input: {id: $id, title: $t}) { id version } }
"""
DELETE_CARD = "mutation($id: ID!) { deleteCard(id: $id) }"


async def subscribe(socket: GraphQLSocket, after: str | None = None) -> None:
    await socket.subscribe(UPDATES, {"after": after} if after else {})


async def until(socket: GraphQLSocket, wanted: tuple[str, str, str]) -> list[Update]:
    """Updates up to and including `wanted` (op, typename, id)."""
    seen: list[Update] = []
    while True:
        update = await socket.next_update()
        seen.append(update)
        if (update["op"], update["typename"], update["id"]) == wanted:
            return seen


async def team(api: GraphQLClient) -> tuple[Account, Account, str]:
    ann, bob = await api.account("Ann"), await api.account("Bob")
    board = await api.board(ann, "Plans")
    await api.add_member(ann, board, bob, "EDITOR")
    return ann, bob, board


async def test_resuming_delivers_what_was_missed_once_then_goes_live(realtime: Realtime) -> None:
    api, url = realtime.api, realtime.server.ws_url
    ann, bob, board = await team(api)
    doomed = await api.card(bob, board, "doomed")
    await realtime.server.runtime.relay.idle()
    async with graphql_socket(url, ann.token) as socket:
        await subscribe(socket)
        await subscriptions_started(realtime.server.runtime, [ann.pk])
        kept = await api.card(bob, board, "kept")
        cursor = (await until(socket, ("CREATED", "Card", kept)))[-1]["cursor"]

    # While Ann is away: three edits of one card, a new card, two deletions (one of a
    # card created and deleted while she was away).
    for title in ("v2", "v3", "v4"):
        await api.data(UPDATE_TITLE, {"id": kept, "t": title}, token=bob.token)
    fresh = await api.card(bob, board, "fresh")
    await api.data(DELETE_CARD, {"id": doomed}, token=bob.token)
    fleeting = await api.card(bob, board, "fleeting")
    await api.data(DELETE_CARD, {"id": fleeting}, token=bob.token)

    expected = Counter(
        {
            ("UPDATED", "Card", kept): 1,
            ("CREATED", "Card", fresh): 1,
            ("DELETED", "Card", doomed): 1,
            ("DELETED", "Card", fleeting): 1,
            ("UPDATED", "Board", board): 1,
        }
    )
    async with graphql_socket(url, ann.token) as socket:
        await subscribe(socket, after=cursor)
        missed = [await socket.next_update() for _ in range(sum(expected.values()))]
        assert Counter((u["op"], u["typename"], u["id"]) for u in missed) == expected
        by_id = {u["id"]: u for u in missed}
        assert by_id[kept]["node"]["title"] == "v4"
        assert by_id[kept]["node"]["version"] == 4
        assert "RESYNC" not in {u["op"] for u in missed}
        # The seam: the next change arrives once, and nothing before it.
        await api.data(UPDATE_TITLE, {"id": fresh, "t": "live"}, token=bob.token)
        live = await socket.next_update()
        assert (live["op"], live["id"], live["node"]["title"]) == ("UPDATED", fresh, "live")
        # Cursors only move forward.
        cursors = [u["cursor"] for u in [*missed, live]]
        assert len(set(cursors)) == len(cursors)


@pytest.mark.parametrize("problem", ["malformed", "another user's", "from the future", "trimmed"])
async def test_a_cursor_that_cannot_be_served_gives_one_resync_then_live(
    realtime: Realtime, problem: str
) -> None:
    api, runtime = realtime.api, realtime.server.runtime
    ann, bob, board = await team(api)
    card = await api.card(bob, board, "first")
    await runtime.relay.idle()
    async with runtime.engine.connect() as connection:
        head = int(
            await connection.scalar(select(change_log.c.id).order_by(change_log.c.id.desc())) or 0
        )
    cursors = {
        "malformed": "not-a-cursor",
        "another user's": encode_cursor(bob.pk, head),
        "from the future": encode_cursor(ann.pk, head + 1000),
        "trimmed": encode_cursor(ann.pk, 1),
    }
    if problem == "trimmed":
        await trim(runtime.engine, timedelta(0))
    async with graphql_socket(realtime.server.ws_url, ann.token) as socket:
        await subscribe(socket, after=cursors[problem])
        resync = await socket.next_update()
        assert resync == {
            "cursor": resync["cursor"],
            "op": "RESYNC",
            "typename": None,
            "id": None,
            "node": None,
        }
        await api.data(UPDATE_TITLE, {"id": card, "t": "after"}, token=bob.token)
        live = await socket.next_update()
        assert (live["op"], live["id"]) == ("UPDATED", card)
    # The RESYNC's cursor is a good one: resuming from it is not another RESYNC.
    await api.data(UPDATE_TITLE, {"id": card, "t": "again"}, token=bob.token)
    async with graphql_socket(realtime.server.ws_url, ann.token) as socket:
        await subscribe(socket, after=resync["cursor"])
        first = await socket.next_update()
        assert first["op"] == "UPDATED"
        assert first["node"]["title"] == "again"


@pytest.fixture
async def on_postgres(empty_postgres_url: str, redis_url: str) -> Any:
    settings = Settings(database_url=empty_postgres_url, broker_url=redis_url)
    async with (
        live_server(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        yield Realtime(server, GraphQLClient(http, server.runtime))


async def test_no_commit_order_hole_on_postgresql(on_postgres: Realtime) -> None:
    """A transaction that started first but commits last is still delivered to a client
    that resumed in between (PostgreSQL hands out sequence values before commit)."""
    api, runtime = on_postgres.api, on_postgres.server.runtime
    ann, bob, board = await team(api)
    slow_card = await api.card(bob, board, "slow")
    fast_card = await api.card(bob, board, "fast")
    await runtime.relay.idle()
    async with graphql_socket(on_postgres.server.ws_url, ann.token) as socket:
        await subscribe(socket)
        await subscriptions_started(runtime, [ann.pk])
        await api.data(UPDATE_TITLE, {"id": fast_card, "t": "warm-up"}, token=bob.token)
        cursor = (await until(socket, ("UPDATED", "Card", fast_card)))[-1]["cursor"]

    slow_pk = decode_typed_id(slow_card, "Card", field="id")
    async with runtime.write_sessions() as slow_session:
        await slow_session.begin()
        card = await slow_session.get(models.Card, slow_pk)
        assert card is not None
        card.title = "committed last"
        await slow_session.flush()  # written, not committed: the transaction stays open
        # Meanwhile a later transaction commits, and Ann resumes from her cursor.
        await api.data(UPDATE_TITLE, {"id": fast_card, "t": "committed first"}, token=bob.token)
        async with graphql_socket(on_postgres.server.ws_url, ann.token) as socket:
            await subscribe(socket, after=cursor)
            first = await until(socket, ("UPDATED", "Card", fast_card))
            assert first[-1]["node"]["title"] == "committed first"
            await slow_session.commit()
            late = await until(socket, ("UPDATED", "Card", slow_card))
            assert late[-1]["node"]["title"] == "committed last"


async def test_after_a_broker_outage_the_subscriber_catches_up_without_resync(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with redis_server(tmp_path) as redis:
        settings = Settings(database_url=sqlite_url, broker_url=redis.url())
        async with (
            live_server(settings) as server,
            httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
        ):
            api = GraphQLClient(http, server.runtime)
            ann, bob, board = await team(api)
            card = await api.card(bob, board, "before")
            await server.runtime.relay.idle()
            async with graphql_socket(server.ws_url, ann.token) as socket:
                await subscribe(socket)
                await subscriptions_started(server.runtime, [ann.pk])
                await redis.stop()
                # Committed while the broker is down: the mutation does not fail.
                await api.data(UPDATE_TITLE, {"id": card, "t": "during"}, token=bob.token)
                await redis.start()
                updates = await until(socket, ("UPDATED", "Card", card))
        assert updates[-1]["node"]["title"] == "during"
        assert "RESYNC" not in {u["op"] for u in updates}


async def test_a_change_nobody_published_is_swept_and_delivered(realtime: Realtime) -> None:
    """A process that commits and dies before publishing leaves an unpublished change in
    the log; the sweeper of any other process publishes it."""
    api, server = realtime.api, realtime.server
    ann, bob, board = await team(api)
    card = await api.card(bob, board, "orphan")
    await server.runtime.relay.idle()
    async with graphql_socket(server.ws_url, ann.token) as socket:
        await subscribe(socket)
        await subscriptions_started(server.runtime, [ann.pk])
        # The subscription is live and has read the log up to here: from now on only a
        # wake-up makes it look again, and the orphan's can only come from a sweeper.
        await api.data(UPDATE_TITLE, {"id": card, "t": "barrier"}, token=bob.token)
        await until(socket, ("UPDATED", "Card", card))
        await write_as_a_crashed_process(server, decode_typed_id(card, "Card", field="id"))
        async with asyncio.timeout(20):
            updates = await until(socket, ("UPDATED", "Card", card))
    assert updates[-1]["node"]["title"] == "from a crashed process"

    async def swept() -> bool:  # counted once also marked published
        return server.runtime.relay.swept >= 1

    await eventually(swept, "the sweeper to count the orphan", within=5.0)


async def write_as_a_crashed_process(server: LiveServer, card_pk: int) -> None:
    """Commit through a capturing session whose process never publishes (no sink)."""
    sessions = async_sessionmaker(
        server.runtime.engine, sync_session_class=CapturingSession, expire_on_commit=False
    )
    async with sessions() as session, session.begin():
        card = await session.get(models.Card, card_pk)
        assert card is not None
        card.title = "from a crashed process"


async def test_a_re_added_member_catches_up_on_what_changed_while_out(
    realtime: Realtime,
) -> None:
    """Removed, then re-added while disconnected: on resume the member receives the
    current state of the board's records, not just the new membership."""
    api, url = realtime.api, realtime.server.ws_url
    ann, bob, board = await team(api)
    card = await api.card(ann, board, "before")
    await realtime.server.runtime.relay.idle()
    async with graphql_socket(url, bob.token) as socket:
        await subscribe(socket)
        await subscriptions_started(realtime.server.runtime, [bob.pk])
        await api.data(UPDATE_TITLE, {"id": card, "t": "seen"}, token=ann.token)
        cursor = (await until(socket, ("UPDATED", "Card", card)))[-1]["cursor"]

    membership = (
        await api.data(
            "query($id: ID!) { board(id: $id) { members { id user { id } } } }",
            {"id": board},
            token=ann.token,
        )
    )["board"]["members"]
    bob_membership = next(m["id"] for m in membership if m["user"]["id"] == bob.id)
    await api.data(
        "mutation($id: ID!) { removeMember(id: $id) }", {"id": bob_membership}, token=ann.token
    )
    await api.data(UPDATE_TITLE, {"id": card, "t": "changed while Bob was out"}, token=ann.token)
    await api.add_member(ann, board, bob, "EDITOR")

    async with graphql_socket(url, bob.token) as socket:
        await subscribe(socket, after=cursor)
        updates = await until(socket, ("UPDATED", "Card", card))
    assert updates[-1]["node"]["title"] == "changed while Bob was out"
