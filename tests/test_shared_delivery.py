"""A change costs the database the same whatever the number of local subscriptions of
one user (issue 7): the user's subscriptions in a process share one log read per
wake-up and one reload of each record, as that viewer (subscriptions.hub,
schema.shared_reads).

Every SQL statement the server process runs is counted (an SQLAlchemy event on its
engine, and asyncpg's query logger for what runs on the driver directly) while a card
is updated and until every subscription has delivered the update: with one
subscription, and with twenty subscriptions on twenty sockets of the same user. The
relay's own statements (publishing, sweeping) are left out: they are per change by
construction. The counts must be equal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sqlalchemy import event

from tests.realtime_support import Realtime
from tests.support import (
    Account,
    connections_in_use,
    driver_statements,
    eventually,
    subscriptions_started,
)
from tests.ws_client import UPDATES, GraphQLSocket, graphql_socket

CHANGES = 3
MANY = 20


class StatementCounter:
    def __init__(self) -> None:
        self.count = 0
        self.statements: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if conn.get_execution_options().get("logging_token") == "relay":
            return
        self.on_driver(statement)

    def on_driver(self, statement: str) -> None:
        self.count += 1
        self.statements.append(statement.split("\n")[0][:80])


@asynccontextmanager
async def counting(realtime: Realtime) -> AsyncIterator[StatementCounter]:
    """Through SQLAlchemy's cursor, and on asyncpg directly (the revocation check, the
    change-log reads and the deliveries' snapshots, on PostgreSQL). asyncpg's logger is
    attached to each connection as the pool hands it out: a delivery snapshot's
    connection kept from before (models.kept_snapshots) is given back first, so that
    the next one is handed out again. The last delivery's snapshot may still be ending
    (its update is sent before it ends): kept after that, it would serve the next
    deliveries unseen. So first every connection out of the pool must be a kept one."""
    runtime = realtime.server.runtime
    kept = runtime.kept_snapshots
    if kept is not None:

        async def only_kept_ones_out() -> bool:
            return connections_in_use(runtime.engine) == len(kept)

        await eventually(only_kept_ones_out, "the last delivery's snapshot to end")
        await kept.release()
    engine = runtime.engine
    counter = StatementCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        async with driver_statements(engine, counter.on_driver):
            yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)


async def rename(realtime: Realtime, ann: Account, card: str, title: str) -> None:
    await realtime.api.data(
        "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }",
        {"i": {"id": card, "title": title}},
        token=ann.token,
    )


async def until_title(socket: GraphQLSocket, card: str, title: str) -> None:
    while True:
        update = await socket.next_update()
        node = update.get("node") or {}
        if update["id"] == card and node.get("title") == title:
            return


async def statements_per_change(
    realtime: Realtime, ann: Account, card: str, subscriptions: int
) -> tuple[float, list[str]]:
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(graphql_socket(realtime.server.ws_url, ann.token))
            for _ in range(subscriptions)
        ]
        for socket in sockets:
            await socket.subscribe(UPDATES)
        await subscriptions_started(realtime.server.runtime, [ann.pk] * subscriptions)
        # Every subscription is live once it delivered this first change.
        await rename(realtime, ann, card, f"live {subscriptions}")
        await asyncio.gather(*(until_title(s, card, f"live {subscriptions}") for s in sockets))
        await realtime.server.runtime.relay.idle()

        async with counting(realtime) as counter:
            for n in range(CHANGES):
                title = f"{subscriptions} subscriptions, change {n}"
                await rename(realtime, ann, card, title)
                await asyncio.gather(*(until_title(s, card, title) for s in sockets))
                await realtime.server.runtime.relay.idle()
        return counter.count / CHANGES, counter.statements


async def test_statements_per_change_do_not_grow_with_local_subscriptions(
    realtime: Realtime,
) -> None:
    ann = await realtime.api.account("Ann")
    board = await realtime.api.board(ann)
    card = await realtime.api.card(ann, board)

    one, one_statements = await statements_per_change(realtime, ann, card, 1)
    many, many_statements = await statements_per_change(realtime, ann, card, MANY)

    # The mutation itself and one delivery's reads: a handful, not one set per socket.
    assert one <= 20, one_statements
    assert many == one, (
        f"{one} statements per change with 1 subscription, {many} with {MANY}:\n"
        + "\n".join(many_statements)
    )


MEMBERS = 12


def per_user(statement: str) -> bool:
    """A hub's read of its user's change log (subscriptions.hub), or the BEGIN of its
    connection: one per user and wake-up, counted separately."""
    return statement.startswith(("SELECT change_log.id", "BEGIN"))


async def reload_statements_per_change(
    realtime: Realtime, owner: Account, card: str, members: list[Account]
) -> tuple[float, list[str]]:
    """Statements per change, with one socket per member, log reads aside."""
    async with AsyncExitStack() as stack:
        sockets = []
        for member in members:
            socket = await stack.enter_async_context(
                graphql_socket(realtime.server.ws_url, member.token)
            )
            await socket.subscribe(UPDATES)
            sockets.append(socket)
        await subscriptions_started(realtime.server.runtime, [m.pk for m in members])
        await rename(realtime, owner, card, f"live {len(members)}")
        await asyncio.gather(*(until_title(s, card, f"live {len(members)}") for s in sockets))
        await realtime.server.runtime.relay.idle()

        async with counting(realtime) as counter:
            for n in range(CHANGES):
                title = f"{len(members)} members, change {n}"
                await rename(realtime, owner, card, title)
                await asyncio.gather(*(until_title(s, card, title) for s in sockets))
                await realtime.server.runtime.relay.idle()
        others = [s for s in counter.statements if not per_user(s)]
        return len(others) / CHANGES, others


async def test_members_of_a_board_share_each_reload(realtime: Realtime) -> None:
    """A change that many members receive is reloaded once, with one membership check
    for all of them (schema.shared_reads), not once per member."""
    owner = await realtime.api.account("Owner")
    board = await realtime.api.board(owner)
    card = await realtime.api.card(owner, board)
    members = [await realtime.api.account(f"Member{n}") for n in range(MEMBERS)]
    for member in members:
        await realtime.api.add_member(owner, board, member, "VIEWER")

    one, _ = await reload_statements_per_change(realtime, owner, card, members[:1])
    many, many_statements = await reload_statements_per_change(realtime, owner, card, members)

    # Equal here; on a loaded machine the members' wake-ups may spread over more than
    # schema.shared_reads.LINGER and take a second snapshot (4 statements more). A
    # reload per member would cost 4 statements per member.
    assert many <= one + 4, (
        f"{one} statements per change (log reads aside) for 1 member, {many} for "
        f"{MEMBERS}:\n" + "\n".join(many_statements)
    )
