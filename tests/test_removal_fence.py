"""Removing a member takes effect for queued and in-flight updates: once removeMember
has returned, the removed user's socket receives nothing more about the board but the
notices of the removal itself (their membership and the board DELETED), even while
another member keeps editing the board's cards."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from tests.realtime_support import Realtime, Update
from tests.support import eventually, subscriptions_started
from tests.ws_client import UPDATES, graphql_socket

ITERATIONS = 3
UPDATES_BEFORE_REMOVAL = 3
EDITS_AFTER_REMOVAL = 3
UPDATE_CARD = "mutation($id: ID!, $t: String!) { updateCard(input: {id: $id, title: $t}) { id } }"
REMOVE_MEMBER = "mutation($id: ID!) { removeMember(id: $id) }"


async def test_no_payload_about_the_board_reaches_a_removed_member_after_remove_member(
    realtime: Realtime,
) -> None:
    for iteration in range(ITERATIONS):
        await remove_while_streaming(realtime, iteration)


async def remove_while_streaming(realtime: Realtime, iteration: int) -> None:
    api = realtime.api
    ann = await api.account(f"Ann{iteration}")
    bob = await api.account(f"Bob{iteration}")
    cat = await api.account(f"Cat{iteration}")
    board = await api.board(ann, f"Board {iteration}")
    await api.add_member(ann, board, bob, "EDITOR")
    cat_membership = await api.add_member(ann, board, cat, "EDITOR")
    cards = [await api.card(ann, board, f"card {n}") for n in range(3)]
    comment = await api.comment(ann, cards[0])
    # A board Cat stays on: its updates keep coming (a refused read is read again).
    other_board = await api.board(bob, f"Other {iteration}")
    await api.add_member(bob, other_board, cat, "VIEWER")
    other_card = await api.card(bob, other_board, "elsewhere")

    received: list[Update] = []
    edits_after_removal = 0
    removed = asyncio.Event()
    stop = asyncio.Event()

    async with graphql_socket(realtime.server.ws_url, cat.token) as socket:
        await socket.subscribe(UPDATES)
        await subscriptions_started(realtime.server.runtime, [cat.pk])

        async def read() -> None:
            while True:
                received.append(await socket.next_update())

        async def edit() -> None:
            nonlocal edits_after_removal
            for n in itertools.count():
                if stop.is_set():
                    return
                await api.data(UPDATE_CARD, {"id": cards[n % 3], "t": f"t{n}"}, token=bob.token)
                if n % 5 == 0:
                    await api.comment(bob, cards[n % 3], f"c{n}")
                if n % 2 == 0:
                    await api.data(UPDATE_CARD, {"id": other_card, "t": f"o{n}"}, token=bob.token)
                if removed.is_set():
                    edits_after_removal += 1

        reader = asyncio.create_task(read())
        editor = asyncio.create_task(edit())
        try:

            async def streaming() -> bool:
                return sum(u["typename"] == "Card" for u in received) >= UPDATES_BEFORE_REMOVAL

            await eventually(streaming, "card updates streaming to Cat")
            await api.data(REMOVE_MEMBER, {"id": cat_membership}, token=ann.token)
            # Everything Cat receives from here on arrived after removeMember returned
            # (the server runs on this event loop: a frame it wrote earlier was read
            # first).
            boundary = len(received)
            removed.set()

            async def kept_editing() -> bool:
                return edits_after_removal >= EDITS_AFTER_REMOVAL

            await eventually(kept_editing, "Bob's edits after the removal")
        finally:
            stop.set()  # (not cancelled: a request cut off mid-way logs an error)
            await editor
        # A change of Cat's own, to know that everything before it was delivered.
        barrier = await api.board(cat, f"Barrier {iteration}")

        async def barrier_arrived() -> bool:
            return any(u["id"] == barrier for u in received)

        await eventually(barrier_arrived, "Cat's own board")
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

    assert any(u["id"] == other_card for u in received[boundary:]), (
        f"iteration {iteration}: nothing about the board Cat is still on after the removal"
    )
    elsewhere = {barrier, other_board}
    after = [
        u
        for u in received[boundary:]
        if u["id"] not in elsewhere
        and ((u["node"] or {}).get("board") or {}).get("id") not in elsewhere
    ]
    about_the_board = {board, cat_membership, comment, *cards}
    allowed = {("DELETED", "Membership", cat_membership), ("DELETED", "Board", board)}
    leaked = [
        u
        for u in after
        if (u["op"], u["typename"], u["id"]) not in allowed
        and (u["id"] in about_the_board or u["typename"] in ("Card", "Comment", "Membership"))
    ]
    assert leaked == [], f"iteration {iteration}: after removeMember returned: {leaked}"
    # (It may also arrive before the response: the change is published at commit.)
    assert ("DELETED", "Board", board) in {(u["op"], u["typename"], u["id"]) for u in received}
    assert all(u["node"] is None for u in after)
    assert sum(u["typename"] == "Card" for u in received[:boundary]) >= UPDATES_BEFORE_REMOVAL
