"""What a request or a delivery allocates goes when it ends, freed by reference
counting: nothing of it waits for the cycle collector (issue 7).

Kept in reference cycles (graphql-core's executor and its resolver helpers; the shared
reads and the loaders that run their statements there), an `updateCard` request's
context, request, response and execution context, and a delivery's loaders, records
and updates, were most of what the collector walked and freed at 200 mutations/s: a
young collection every 80 or so mutations, stopping the event loop for 5 to 13 ms
each (the benchmark's 200/s window: 60 young and 12 middle collections in 15 s, about
0.6 s in all; without the cycles 3 to 6 and 1).

Each test runs its requests and deliveries with the collector off, then collects once
with DEBUG_SAVEALL, which keeps everything found unreachable, in cycles or held only by
them: none of it may be ours.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.realtime_support import Realtime
from tests.support import Account, eventually, subscriptions_started
from tests.ws_client import UPDATES, GraphQLSocket, graphql_socket

# What a request or a delivery makes, by module-qualified type name.
OURS = frozenset(
    {
        "graphql.execution.values.VariableValues",
        "models.card.Card",
        "schema.context.Context",
        "schema.execution.SubscriptionSafeExecutionContext",
        "schema.loaders.Loaders",
        "schema.loaders.RecordLoaders",
        "schema.loaders.AccessLoaders",
        "schema.shared_reads.SharedReads",
        "schema.subscription.UserUpdate",
        "schema.types.Card",
        "starlette.requests.Request",
        "starlette.responses.Response",
        "strawberry.dataloader.DataLoader",
    }
)
CHANGES = 5


@contextmanager
def left_to_the_collector() -> Iterator[Counter[str]]:
    """Counts, by module-qualified type name, what became unreachable in the block
    without being freed: what only the cycle collector would have freed."""
    found: Counter[str] = Counter()
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.update(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            if enabled:
                gc.enable()


def ours(found: Counter[str]) -> dict[str, int]:
    return {name: count for name, count in found.items() if name in OURS}


async def rename(realtime: Realtime, ann: Account, card: str, title: str) -> None:
    await realtime.api.data(
        "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id title version } }",
        {"i": {"id": card, "title": title}},
        token=ann.token,
    )


async def until(socket: GraphQLSocket, wanted: Callable[[dict[str, Any]], bool]) -> None:
    while not wanted(await socket.next_update()):
        pass


async def until_title(socket: GraphQLSocket, card: str, title: str) -> None:
    await until(socket, lambda u: u["id"] == card and (u.get("node") or {}).get("title") == title)


async def reads_ended(realtime: Realtime) -> None:
    """Until the last delivery's shared reads have ended (they linger a moment for
    other subscriptions to join)."""
    groups = realtime.server.runtime.read_groups

    async def ended() -> bool:
        return groups is None or groups._current is None

    await eventually(ended, "the last delivery's shared reads to end")


async def test_requests_and_deliveries_leave_nothing_to_the_collector(
    realtime: Realtime,
) -> None:
    api = realtime.api
    ann = await api.account("Ann")
    board = await api.board(ann)
    card = await api.card(ann, board)
    async with graphql_socket(realtime.server.ws_url, ann.token) as socket:
        await socket.subscribe(UPDATES)
        await subscriptions_started(realtime.server.runtime, [ann.pk])
        # (What the first change makes once and keeps: plans, caches, connections.)
        await rename(realtime, ann, card, "warm")
        await until_title(socket, card, "warm")
        await reads_ended(realtime)

        with left_to_the_collector() as found:
            for n in range(CHANGES):
                await rename(realtime, ann, card, f"change {n}")
                await until_title(socket, card, f"change {n}")
            # Writes through a session (capture's events), and their deliveries.
            other = await api.card(ann, board, "Another")
            comment = await api.comment(ann, other)
            await until(socket, lambda u: u["id"] == comment)
            # A query through the loaders, as a client refetching would.
            read = await api.data(
                "query($id: ID!) { node(id: $id) { ... on Card { title board { name"
                " members { role user { name } } } } } }",
                {"id": card},
                token=ann.token,
            )
            await realtime.server.runtime.relay.idle()
            await reads_ended(realtime)

    assert read["node"]["title"] == f"change {CHANGES - 1}"
    assert ours(found) == {}, found.most_common(25)
