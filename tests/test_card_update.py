"""updateCard writes the same on both databases: on SQLite through a session (its
capture events), on PostgreSQL on asyncpg directly (schema.mutations.card_update). The
same answers, the same errors, the same change log (what the relay publishes), no
connection left behind."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from models import change_audience, change_log
from models.database import create_sessionmakers
from schema.ids import decode_id, encode_id
from subscriptions.backends import _Gap
from subscriptions.capture import SINK_KEY, CapturingSession, captures, sink_of
from subscriptions.changes import Change, user_channel
from subscriptions.wakeups import Wakeup, decode_wakeup
from tests.support import GraphQLClient, connections_in_use, driver_statements, eventually
from tests.team import Team, make_team

UPDATE = """
mutation($i: UpdateCardInput!) {
  updateCard(input: $i) { id title position done version updatedAt assignee { name } }
}"""
READ = "query($id: ID!) { node(id: $id) { ... on Card { title position version updatedAt } } }"


async def logged(api: GraphQLClient) -> list[tuple[str, int, str, int | None, set[int]]]:
    """The change log, oldest first: (typename, record id, op, version, users)."""
    async with api.runtime.engine.connect() as connection:
        changes = (await connection.execute(select(change_log).order_by(change_log.c.id))).all()
        audience = (await connection.execute(select(change_audience))).all()
    users: dict[int, set[int]] = {}
    for row in audience:
        users.setdefault(row.change_id, set()).add(row.user_id)
    return [(c.typename, c.record_id, c.op, c.version, users.get(c.id, set())) for c in changes]


@pytest.fixture
async def team(api: GraphQLClient) -> Team:
    return await make_team(api)


async def new_card(api: GraphQLClient, team: Team) -> tuple[str, int]:
    card = await api.card(team.owner, team.board, "Card")
    return card, decode_id(card, field="id")[1]


async def update(api: GraphQLClient, team: Team, role: str, **values: Any) -> dict[str, Any]:
    data = await api.data(UPDATE, {"i": values}, token=team.member(role).token)
    result: dict[str, Any] = data["updateCard"]
    return result


async def test_an_update_answers_and_logs_what_a_session_would(
    api: GraphQLClient, team: Team
) -> None:
    card, pk = await new_card(api, team)
    board_pk = decode_id(team.board, field="id")[1]
    members = {team.owner.pk, team.editor.pk, team.viewer.pk}
    before = len(await logged(api))

    renamed = await update(api, team, "EDITOR", id=card, title="Renamed", assigneeId=team.viewer.id)
    assert renamed["title"] == "Renamed"
    assert renamed["version"] == 2
    assert renamed["assignee"] == {"name": team.viewer.name}
    # The answer is what a read sees now.
    read = (await api.data(READ, {"id": card}, token=team.owner.token))["node"]
    assert read == {k: renamed[k] for k in ("title", "position", "version", "updatedAt")}

    moved = await update(api, team, "OWNER", id=card, position=7.5, expectedVersion=2)
    assert moved["position"] == 7.5
    assert moved["version"] == 3
    assert moved["updatedAt"] > renamed["updatedAt"]
    # Nothing differs: no write, no version, nothing logged.
    same = await update(api, team, "OWNER", id=card, title="Renamed", position=7.5)
    assert same["version"] == 3
    assert same["updatedAt"] == moved["updatedAt"]

    assert (await logged(api))[before:] == [
        ("Card", pk, "UPDATED", 2, members),
        # Moving a card reorders its board's list: the board is announced with it.
        ("Card", pk, "UPDATED", 3, members),
        ("Board", board_pk, "UPDATED", None, members),
    ]


async def test_refused_updates_change_and_log_nothing(api: GraphQLClient, team: Team) -> None:
    card, _ = await new_card(api, team)
    before = await logged(api)

    async def refused(role: str, **values: Any) -> dict[str, Any]:
        error = await api.error(
            UPDATE, {"i": {"id": card, **values}}, token=team.member(role).token
        )
        extensions: dict[str, Any] = error["extensions"]
        return extensions

    assert (await refused("VIEWER", title="No"))["code"] == "FORBIDDEN"
    assert (await refused("OUTSIDER", title="No"))["code"] == "NOT_FOUND"
    conflict = await refused("OWNER", title="No", expectedVersion=5)
    assert conflict["code"] == "CONFLICT"
    assert conflict["currentVersion"] == 1
    assignee = await refused("OWNER", title="No", assigneeId=team.outsider.id)
    assert assignee["code"] == "BAD_USER_INPUT"
    assert assignee["field"] == "assigneeId"
    gone = await api.error(
        UPDATE, {"i": {"id": encode_id("Card", 10**9), "title": "No"}}, token=team.owner.token
    )
    assert gone["extensions"]["code"] == "NOT_FOUND"

    read = (await api.data(READ, {"id": card}, token=team.owner.token))["node"]
    assert read["title"] == "Card"
    assert read["version"] == 1
    assert await logged(api) == before
    # Every refusal gave its connection back (or kept it for the next statement on the
    # driver), with no transaction open. Polled: the relay's sweeper and marker check
    # one out for a statement now and then (every 2 s), which a slow machine may catch.
    engine = api.runtime.engine

    async def none_in_use() -> bool:
        return connections_in_use(engine) == 0

    await eventually(none_in_use, "every connection back in the pool")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_on_postgresql_an_update_that_applies_is_one_statement(
    api: GraphQLClient, team: Team
) -> None:
    card, _ = await new_card(api, team)
    await update(api, team, "OWNER", id=card, title="First")  # (prepares the statement)
    statements: list[str] = []
    async with driver_statements(api.runtime.engine, statements.append):
        await update(api, team, "OWNER", id=card, title="Second", position=3.0)
    writes = [s for s in statements if "token_revocations" not in s]
    assert len(writes) == 1, "\n".join(writes)
    assert "UPDATE cards SET position = $" in writes[0]
    assert "INSERT INTO change_log" in writes[0]
    # One that does not apply as given (nothing differs) runs as a transaction, which
    # finds that out: the same answer as the session path, no write.
    statements.clear()
    async with driver_statements(api.runtime.engine, statements.append):
        same = await update(api, team, "OWNER", id=card, title="Second")
    writes = [s for s in statements if "token_revocations" not in s]
    assert same["version"] == 3
    assert len(writes) == 2, "\n".join(writes)  # (the statement, then the locked read)
    assert "FOR NO KEY UPDATE OF cards" in writes[1]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_on_postgresql_wake_ups_carry_each_members_previous_change(
    api: GraphQLClient, team: Team
) -> None:
    """A rename logs its one change (ONE_CHANGE_LOG_CTES), a move its card's and its
    board's (LOG_CTES): either way, each member's wake-up names the member's change
    right before it, as the change log has it."""
    card, _ = await new_card(api, team)
    other, _ = await new_card(api, team)
    members = [team.owner.pk, team.editor.pk, team.viewer.pk]
    received: dict[int, list[Wakeup]] = {user: [] for user in members}

    def keep(user: int) -> Callable[[str | _Gap], None]:
        def on_message(message: str | _Gap) -> None:
            if isinstance(message, str):
                received[user].append(decode_wakeup(message))

        return on_message

    broker = api.runtime.broker
    await api.runtime.relay.idle()  # (the cards' creations published)
    async with contextlib.AsyncExitStack() as listening:
        for user in members:
            await listening.enter_async_context(broker.listen(user_channel(user), keep(user)))
        await update(api, team, "OWNER", id=card, title="One")
        await update(api, team, "EDITOR", id=other, title="Two")
        await update(api, team, "EDITOR", id=card, position=9.0)
        last = await update(api, team, "OWNER", id=card, title="Three")
        await api.runtime.relay.idle()

        async def all_woken() -> bool:
            return all(
                wakeups and wakeups[-1].carried and wakeups[-1].carried.version == last["version"]
                for wakeups in received.values()
            )

        await eventually(all_woken, "each member's wake-up for the last rename")
    async with api.runtime.engine.connect() as connection:
        rows = (await connection.execute(select(change_audience))).all()
    for user, wakeups in received.items():
        logged = sorted(row.change_id for row in rows if row.user_id == user)
        mine = logged[-5:]  # (two renames, a move and its board, a rename)
        assert [w.change_id for w in wakeups] == mine[:2] + mine[3:]  # (one per commit)
        for wakeup in wakeups:
            before = [change for change in logged if change < wakeup.change_id]
            assert wakeup.carried is not None
            assert wakeup.previous == (before[-1] if before else 0)


def test_writes_without_a_session_capture_when_the_sessions_would(
    api: GraphQLClient,
) -> None:
    class Sink:
        def submit(self, changes: list[Change]) -> None: ...

    sink = Sink()
    engine = api.runtime.engine
    capturing: async_sessionmaker[AsyncSession] = async_sessionmaker(
        engine, sync_session_class=CapturingSession, info={SINK_KEY: sink}
    )
    assert captures(capturing)
    assert sink_of(capturing) is sink
    # Real-time off (the benchmark's plain sessions): nothing captured.
    plain: async_sessionmaker[AsyncSession] = async_sessionmaker(
        engine, sync_session_class=Session, info={SINK_KEY: sink}
    )
    assert not captures(plain)
    assert not captures(create_sessionmakers(engine)[1])
    assert captures(api.runtime.write_sessions)
    assert sink_of(api.runtime.write_sessions) is api.runtime.relay


async def test_a_card_update_without_capture_logs_nothing(api: GraphQLClient, team: Team) -> None:
    """The benchmark's real-time off: the app's sessions without capture (bench/serve.py)."""
    card, _ = await new_card(api, team)
    before = await logged(api)
    runtime = api.runtime
    _, plain = create_sessionmakers(runtime.engine, info={SINK_KEY: runtime.relay})
    object.__setattr__(runtime, "write_sessions", plain)
    renamed = await update(api, team, "OWNER", id=card, title="Unannounced")
    assert renamed["version"] == 2
    assert await logged(api) == before


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_card_moved_back_while_its_update_waited_announces_its_board(
    api: GraphQLClient, team: Team, database_url: str
) -> None:
    """The statement reads the card, then waits for the row: another writer moves the
    card meanwhile, and this update (a new title, the position it read) moves it back.
    The board's list changed (from the other writer's order): it is announced."""
    card, pk = await new_card(api, team)
    board_pk = decode_id(team.board, field="id")[1]
    before = len(await logged(api))
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    other, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        transaction = other.transaction()
        await transaction.start()
        (position,) = await other.fetchrow(
            "SELECT position FROM cards WHERE id = $1 FOR UPDATE", pk
        )
        # (Its title differs from the one read: the statement's UPDATE applies, and waits.)
        moving = asyncio.create_task(
            update(api, team, "OWNER", id=card, title="Back", position=position)
        )

        async def waiting() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%UPDATE cards SET position%'"
                )
            )

        await eventually(waiting, "the update waiting for the row")
        await other.execute(
            "UPDATE cards SET position = position + 1, version = version + 1 WHERE id = $1", pk
        )
        await transaction.commit()
        moved = await asyncio.wait_for(moving, 10)
    finally:
        await other.close()
        await watcher.close()
    assert moved["position"] == position
    assert moved["version"] == 3
    assert [change[:4] for change in (await logged(api))[before:]] == [
        ("Card", pk, "UPDATED", 3),
        ("Board", board_pk, "UPDATED", None),
    ]


def test_a_card_is_made_in_a_process_that_has_not_used_the_orm_yet() -> None:
    """A fresh server's first request may be an updateCard: nothing has configured the
    mappers yet (attribute access failed in the benchmark's server before)."""
    code = (
        "from schema.mutations.card_update import new_card\n"
        "card = new_card({'id': 7, 'title': 'T'}.items())\n"
        "print(card.id, card.title)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7", "T"]
