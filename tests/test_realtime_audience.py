"""Each mutation reaches exactly its audience, exactly once, over a real WebSocket, on
SQLite + memory:// and on PostgreSQL + Redis."""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack

from tests.realtime_support import Realtime, Update
from tests.support import Account, subscriptions_started
from tests.ws_client import UPDATES, GraphQLSocket, graphql_socket

Item = tuple[str, str, str]


class Observers:
    """One subscribed socket per user; `expect` waits for exactly the given updates."""

    def __init__(self) -> None:
        self.sockets: dict[str, GraphQLSocket] = {}
        self.last: dict[str, dict[Item, Update]] = {}

    async def expect(self, names: str, *items: Item) -> None:
        for name in names.split():
            pending = Counter(items)
            while pending:
                update = await self.sockets[name].next_update()
                item = (update["op"], update["typename"], update["id"])
                assert pending[item] > 0, f"{name} got unexpected {item}; waiting for {pending}"
                pending[item] -= 1
                pending += Counter()  # drop zero counts
                self.last.setdefault(name, {})[item] = update


async def first_member(realtime: Realtime, board: str, token: str) -> str:
    data = await realtime.api.data(
        "query($id: ID!) { board(id: $id) { members { id } } }", {"id": board}, token=token
    )
    member_id: str = data["board"]["members"][0]["id"]
    return member_id


async def barrier(realtime: Realtime, observers: Observers, people: list[Account]) -> None:
    """Each user makes a board of their own and must receive exactly its two updates
    next: anything else still queued for them fails the test."""
    for person in people:
        own = await realtime.api.board(person, f"{person.name}'s own")
        membership = await first_member(realtime, own, person.token)
        await observers.expect(
            person.name, ("CREATED", "Board", own), ("CREATED", "Membership", membership)
        )


async def test_every_mutation_reaches_exactly_its_audience(realtime: Realtime) -> None:
    api = realtime.api
    people = [await api.account(n) for n in ("Ann", "Bob", "Cat", "Dan")]
    ann, bob, cat, _dan = people
    observers = Observers()
    # The accounts' own CREATED notices are out before anyone subscribes.
    await realtime.server.runtime.relay.idle()
    async with AsyncExitStack() as stack:
        for person in people:
            socket = await stack.enter_async_context(
                graphql_socket(realtime.server.ws_url, person.token)
            )
            await socket.subscribe(UPDATES)
            observers.sockets[person.name] = socket
        await subscriptions_started(realtime.server.runtime, [p.pk for p in people])
        expect = observers.expect

        board = await api.board(ann, "Plans")
        # One transaction: the board and its owner's membership (whose announcement of
        # its parent board folds into the board's CREATED).
        owner_membership = await first_member(realtime, board, ann.token)
        await expect(
            "Ann", ("CREATED", "Board", board), ("CREATED", "Membership", owner_membership)
        )

        bob_membership = await api.add_member(ann, board, bob, "EDITOR")
        joined = [("CREATED", "Membership", bob_membership), ("UPDATED", "Board", board)]
        await expect("Ann", *joined)
        # A new member is also given everything already on the board, once.
        await expect("Bob", *joined, ("UPDATED", "Membership", owner_membership))
        cat_membership = await api.add_member(ann, board, cat, "VIEWER")
        joined = [("CREATED", "Membership", cat_membership), ("UPDATED", "Board", board)]
        await expect("Ann Bob", *joined)
        await expect(
            "Cat",
            *joined,
            ("UPDATED", "Membership", owner_membership),
            ("UPDATED", "Membership", bob_membership),
        )

        card = await api.card(bob, board, "Draft")
        await expect("Ann Bob Cat", ("CREATED", "Card", card), ("UPDATED", "Board", board))

        await api.data(
            'mutation($id: ID!) { updateCard(input: {id: $id, title: "Final"}) { id } }',
            {"id": card},
            token=bob.token,
        )
        await expect("Ann Bob Cat", ("UPDATED", "Card", card))
        assert observers.last["Cat"][("UPDATED", "Card", card)]["node"]["title"] == "Final"

        comment = await api.comment(cat, card, "Nice")
        await expect("Ann Bob Cat", ("CREATED", "Comment", comment), ("UPDATED", "Card", card))
        card_node = observers.last["Bob"][("UPDATED", "Card", card)]["node"]
        assert card_node["comments"] == [{"id": comment}]

        await api.data("mutation($id: ID!) { deleteCard(id: $id) }", {"id": card}, token=ann.token)
        await expect(
            "Ann Bob Cat",
            ("DELETED", "Card", card),
            ("DELETED", "Comment", comment),
            ("UPDATED", "Board", board),
        )
        assert observers.last["Ann"][("DELETED", "Card", card)]["node"] is None

        await api.data(
            "mutation($id: ID!) { removeMember(id: $id) }", {"id": cat_membership}, token=ann.token
        )
        await expect(
            "Ann Bob", ("DELETED", "Membership", cat_membership), ("UPDATED", "Board", board)
        )
        # The removed member learns that the membership and the board are gone for them.
        await expect("Cat", ("DELETED", "Membership", cat_membership), ("DELETED", "Board", board))
        assert observers.last["Cat"][("DELETED", "Board", board)]["node"] is None
        members_now = observers.last["Bob"][("UPDATED", "Board", board)]["node"]["members"]
        assert {m["id"] for m in members_now} == {owner_membership, bob_membership}

        await api.data(
            'mutation($id: ID!) { updateBoard(input: {id: $id, name: "Plans v2"}) { id } }',
            {"id": board},
            token=ann.token,
        )
        await expect("Ann Bob", ("UPDATED", "Board", board))
        assert observers.last["Bob"][("UPDATED", "Board", board)]["node"]["name"] == "Plans v2"

        # Cat (removed) and Dan (never a member) received nothing else about the board.
        await barrier(realtime, observers, people)
