"""One change to a board of many members costs the process one change-log read, not one
per member (subscriptions.log_reader): the hubs woken by one broker burst read their
users' logs in one statement, and each gets what changes_since would have given it.

End to end, on both deployments: thirty members, each with a live subscription on
their own socket; the SELECTs on change_audience that the server runs for one change,
until every member received it, are counted (an SQLAlchemy event on its engine, and
asyncpg's query logger for the reads PostgreSQL's runs on the driver directly; the
relay's statements are left out). Then the reader itself, against each database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from models import change_audience, change_log, utcnow
from subscriptions.broker import broker_from_url
from subscriptions.changelog import changes_since
from subscriptions.hub import READ_BATCH, LocalHubs
from subscriptions.log_reader import LogReader
from tests.realtime_support import Realtime
from tests.support import driver_statements, subscriptions_live
from tests.ws_client import UPDATES, GraphQLSocket, graphql_socket

MEMBERS = 30
CHANGES = 3


class LogReads:
    """Counts the SELECTs on change_audience an engine runs (not the relay's)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if conn.get_execution_options().get("logging_token") == "relay":
            return
        self.on_driver(statement)

    def on_driver(self, statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "change_audience" in statement:
            self.count += 1


@asynccontextmanager
async def counting_log_reads(engine: AsyncEngine) -> AsyncIterator[LogReads]:
    """Through SQLAlchemy's cursor (SQLite) or on asyncpg directly (PostgreSQL)."""
    counter = LogReads()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        async with driver_statements(engine, counter.on_driver):
            yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)


async def until_title(socket: GraphQLSocket, card: str, title: str) -> None:
    while True:
        update = await socket.next_update()
        if update["id"] == card and (update.get("node") or {}).get("title") == title:
            return


async def test_one_log_read_per_change_for_all_members(realtime: Realtime) -> None:
    api = realtime.api
    owner = await api.account("Owner")
    board = await api.board(owner)
    members = [owner]
    for n in range(MEMBERS - 1):
        member = await api.account(f"Member{n}")
        await api.add_member(owner, board, member, "EDITOR")
        members.append(member)
    card = await api.card(owner, board)

    async def rename(title: str) -> None:
        await api.data(
            "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }",
            {"i": {"id": card, "title": title}},
            token=owner.token,
        )

    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(graphql_socket(realtime.server.ws_url, m.token))
            for m in members
        ]
        for socket in sockets:
            await socket.subscribe(UPDATES)
        await subscriptions_live(realtime.server.runtime, MEMBERS)
        # Every subscription is live (past its first read) once it delivered this.
        await rename("live")
        await asyncio.gather(*(until_title(s, card, "live") for s in sockets))
        await realtime.server.runtime.relay.idle()

        reads: list[int] = []
        for n in range(CHANGES):
            async with counting_log_reads(realtime.server.runtime.engine) as counter:
                await rename(f"change {n}")
                # Every member receives it...
                await asyncio.gather(*(until_title(s, card, f"change {n}") for s in sockets))
                await realtime.server.runtime.relay.idle()
            reads.append(counter.count)
    # ...after a few statements (one per burst of wake-ups that reaches the process
    # in one tick), not one per member: SQLite and PostgreSQL alike (UNION ALL there).
    assert max(reads) <= 3, f"change-log reads per change for {MEMBERS} members: {reads}"


async def log(engine: AsyncEngine, audiences: list[set[int]]) -> list[int]:
    """One change per audience (in order); their ids."""
    async with engine.begin() as connection:
        ids = list(
            (
                await connection.execute(
                    insert(change_log).returning(change_log.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "committed_at": utcnow(),
                            "typename": "Card",
                            "record_id": n,
                            "op": "UPDATED",
                            "version": n,
                        }
                        for n in range(len(audiences))
                    ],
                )
            ).scalars()
        )
        await connection.execute(
            insert(change_audience),
            [
                {"user_id": user, "change_id": change_id}
                for change_id, audience in zip(ids, audiences, strict=True)
                for user in audience
            ],
        )
    return ids


async def test_reads_of_one_tick_are_one_statement_with_each_own_result(
    engine: AsyncEngine,
) -> None:
    busy, quiet, idle = 1, 2, 3
    # `busy` has more changes than a read takes; `quiet` has a few; `idle` has none.
    ids = await log(engine, [{busy} for _ in range(READ_BATCH + 50)])
    ids += await log(engine, [{busy, quiet}, {quiet}, {busy, quiet}])
    requests = [
        (busy, 0),
        (busy, ids[120]),
        (busy, ids[-2]),
        (quiet, 0),
        (quiet, ids[-3]),
        (quiet, 0),  # asked twice in the tick: read once, both answered
        (idle, 0),
        (quiet, ids[-1]),
    ]
    reader = LogReader(engine, READ_BATCH)
    async with counting_log_reads(engine) as counter:
        results = await asyncio.gather(*(reader.read(user, after) for user, after in requests))
    assert counter.count == 1
    async with engine.connect() as connection:
        for (user, after), result in zip(requests, results, strict=True):
            assert result == await changes_since(connection, user, after, READ_BATCH)
    assert len(results[0]) == READ_BATCH  # the limit is per user
    assert [len(r) for r in results[1:]] == [READ_BATCH + 50 - 121 + 2, 1, 3, 2, 3, 0, 0]

    # A burst above the cap runs as several statements, with the same answers.
    capped = LogReader(engine, READ_BATCH, max_requests=3)
    async with counting_log_reads(engine) as counter:
        again = await asyncio.gather(*(capped.read(user, after) for user, after in requests))
    assert again == results
    assert counter.count == 3  # 7 distinct requests, at most 3 per statement


async def test_failed_statement_fails_every_waiter_and_the_next_read_retries(
    engine: AsyncEngine,
) -> None:
    ids = await log(engine, [{1}, {1, 2}])
    reader = LogReader(engine, READ_BATCH)
    # A position no bigint holds: the database (or its driver) refuses the statement.
    outcomes = await asyncio.gather(
        reader.read(1, 0), reader.read(2, 0), reader.read(3, 2**70), return_exceptions=True
    )
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    # Nothing is remembered: the next reads go out again, and succeed.
    assert [c.id for c in await reader.read(1, 0)] == ids
    assert [c.id for c in await reader.read(2, 0)] == ids[1:]


async def test_a_cancelled_request_leaves_the_others_of_its_statement_alone(
    engine: AsyncEngine,
) -> None:
    ids = await log(engine, [{1, 2, 3}])
    reader = LogReader(engine, READ_BATCH)
    reads = [asyncio.create_task(reader.read(user, 0)) for user in (1, 2, 3)]
    await asyncio.sleep(0)  # all three asked; the statement has not run yet
    reads[1].cancel()  # (a hub stopped while its read was pending)
    first, second, third = await asyncio.gather(*reads, return_exceptions=True)
    assert isinstance(second, asyncio.CancelledError)
    assert [c.id for c in first] == [c.id for c in third] == ids  # type: ignore[union-attr]


async def test_a_hub_stopped_during_a_shared_read_leaves_the_other_hubs_alone(
    engine: AsyncEngine,
) -> None:
    ids = await log(engine, [{1, 2, 3}])
    broker = broker_from_url("memory://")
    await broker.connect()
    try:
        hubs = LocalHubs(broker, engine)
        async with AsyncExitStack() as stack:
            joined = {user: await stack.enter_async_context(hubs.join(user)) for user in (1, 2)}
            async with hubs.join(3) as (leaving, _):
                reads = [asyncio.create_task(hub.read(0)) for hub, _ in joined.values()]
                leaving_read = asyncio.create_task(leaving.read(0))
                # Two ticks: each hub's reader has asked the log reader, whose statement
                # is scheduled (or running) when the third one's subscription ends.
                for _ in range(2):
                    await asyncio.sleep(0)
                # (A read runs in its subscription's task: it ends with it.)
                leaving_read.cancel()
            # Its last listener left: the hub stopped.
            with pytest.raises(asyncio.CancelledError):
                await leaving_read
            batches = await asyncio.gather(*reads)
        assert [[c.id for c in batch.changes] for batch in batches] == [ids, ids]
        assert all(batch.caught_up for batch in batches)
    finally:
        await broker.disconnect()
