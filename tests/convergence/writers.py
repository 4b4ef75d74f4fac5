"""Writers: random mutations over HTTP through every live process, bounded in count and
rate, across several boards and users, membership changes included.

The writers share a model of what exists (`World`), kept from their own results; races
between writers make some mutations fail (NOT_FOUND, FORBIDDEN, CONFLICT), which is
expected and counted. Every attempt is logged for the report.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.convergence import documents as docs
from tests.convergence.api import GraphQLRejected, ServerFailure, run
from tests.convergence.cluster import AppProcess, Cluster
from tests.convergence.subscriber import Person

CAN_EDIT = ("OWNER", "EDITOR")
MAX_CARDS_PER_BOARD = 12


@dataclass
class BoardModel:
    id: str
    owner: int
    # person index -> (membership id, role)
    members: dict[int, tuple[str, str]] = field(default_factory=dict)
    # card id -> comment id -> author index
    cards: dict[str, dict[str, int]] = field(default_factory=dict)

    def with_role(self, roles: tuple[str, ...]) -> list[int]:
        return sorted(i for i, (_, role) in self.members.items() if role in roles)


@dataclass(frozen=True)
class Attempt:
    at: float
    writer: int
    app: str
    action: str
    variables: dict[str, Any]
    outcome: str
    result: Any = None
    about: str = ""
    """Context the variables do not show (whose membership is removed, on which board)."""


@dataclass
class World:
    people: list[Person]
    boards: list[BoardModel]
    clock: Callable[[], float]
    log: list[Attempt] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


class Skip(Exception):
    """Nothing to do for this action right now."""


class Gone(Exception):
    """The record a mutation named does not exist any more (NOT_FOUND)."""


class Writer:
    def __init__(
        self,
        number: int,
        world: World,
        cluster: Cluster,
        clients: dict[str, httpx.AsyncClient],
        rng: random.Random,
    ) -> None:
        self.number = number
        self.world = world
        self.cluster = cluster
        self.clients = clients
        self.rng = rng

    async def run(self, operations: int, pace: tuple[float, float], until: float) -> None:
        actions: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.create_card, 18),
            (self.update_card, 26),
            (self.delete_card, 5),
            (self.add_comment, 14),
            (self.update_comment, 8),
            (self.delete_comment, 4),
            (self.rename_board, 6),
            (self.remove_member, 5),
            (self.add_member, 8),
        ]
        functions = [action for action, _ in actions]
        weights = [weight for _, weight in actions]
        done = 0
        while done < operations and self.world.clock() < until:
            # Pacing: the writers' rate, not a wait for anything.
            await asyncio.sleep(self.rng.uniform(*pace))
            action = self.rng.choices(functions, weights)[0]
            try:
                await action()
            except Skip:
                continue
            done += 1

    # -- helpers ----------------------------------------------------------------------

    def _board(self) -> BoardModel:
        return self.rng.choice(self.world.boards)

    def _card(self) -> tuple[BoardModel, str]:
        boards = [b for b in self.world.boards if b.cards]
        if not boards:
            raise Skip
        board = self.rng.choice(boards)
        return board, self.rng.choice(sorted(board.cards))

    def _actor(self, board: BoardModel, roles: tuple[str, ...]) -> Person:
        candidates = board.with_role(roles)
        if not candidates:
            raise Skip
        return self.world.people[self.rng.choice(candidates)]

    def _words(self, prefix: str) -> str:
        return f"{prefix} {self.rng.randrange(10_000)}"

    async def _call(
        self,
        action: str,
        person: Person,
        query: str,
        variables: dict[str, Any],
        about: str = "",
    ) -> dict[str, Any] | None:
        """The data, or None when the mutation failed (logged and counted)."""
        apps = self.cluster.alive()
        app: AppProcess = self.rng.choice(apps)
        outcome = "ok"
        data: dict[str, Any] | None = None
        try:
            data = await run(self.clients[app.name], query, variables, token=person.token)
        except GraphQLRejected as exc:
            outcome = f"rejected {exc.code}"
            if exc.code not in ("NOT_FOUND", "FORBIDDEN", "CONFLICT", "BAD_USER_INPUT"):
                outcome = f"error {exc.code}: {exc}"
        except ServerFailure as exc:
            outcome = f"server failure: {exc}"
        except httpx.TransportError as exc:
            # The process died or the request was cut: committed or not, unknown.
            outcome = f"transport {type(exc).__name__}"
        self.world.outcomes[outcome.split(":")[0]] += 1
        self.world.log.append(
            Attempt(
                self.world.clock(),
                self.number,
                app.name,
                f"{action} as {person.name}",
                variables,
                outcome,
                data,
                about,
            )
        )
        if outcome.startswith("rejected NOT_FOUND"):
            raise Gone
        return data

    # -- actions ----------------------------------------------------------------------

    async def create_card(self) -> None:
        board = self._board()
        if len(board.cards) >= MAX_CARDS_PER_BOARD:
            raise Skip
        actor = self._actor(board, CAN_EDIT)
        assignee = None
        if self.rng.random() < 0.3:
            assignee = self.world.people[self.rng.choice(sorted(board.members))].id
        variables = {
            "b": board.id,
            "t": self._words("card"),
            "d": self._words("about"),
            "p": round(self.rng.uniform(0, 100), 2) if self.rng.random() < 0.5 else None,
            "a": assignee,
        }
        try:
            data = await self._call("createCard", actor, docs.CREATE_CARD, variables)
        except Gone:
            return
        if data is not None:
            board.cards[data["createCard"]["id"]] = {}

    async def update_card(self) -> None:
        board, card = self._card()
        actor = self._actor(board, CAN_EDIT)
        change: dict[str, Any] = {"id": card}
        choices = self.rng.sample(["title", "description", "position", "done", "assignee"], 2)
        if "title" in choices:
            change["title"] = self._words("card")
        if "description" in choices:
            change["description"] = self._words("about")
        if "position" in choices:
            change["position"] = round(self.rng.uniform(0, 100), 2)
        if "done" in choices:
            change["done"] = self.rng.random() < 0.5
        if "assignee" in choices:
            member = self.rng.choice([*sorted(board.members), None])
            change["assigneeId"] = None if member is None else self.world.people[member].id
        try:
            await self._call("updateCard", actor, docs.UPDATE_CARD, {"input": change})
        except Gone:
            board.cards.pop(card, None)

    async def delete_card(self) -> None:
        board, card = self._card()
        actor = self._actor(board, CAN_EDIT)
        try:
            data = await self._call("deleteCard", actor, docs.DELETE_CARD, {"id": card})
        except Gone:
            data = {}
        if data is not None:
            board.cards.pop(card, None)

    async def add_comment(self) -> None:
        board, card = self._card()
        actor = self._actor(board, ("OWNER", "EDITOR", "VIEWER"))
        variables = {"c": card, "b": self._words("comment")}
        try:
            data = await self._call("addComment", actor, docs.ADD_COMMENT, variables)
        except Gone:
            return
        if data is not None and card in board.cards:
            board.cards[card][data["addComment"]["id"]] = actor.index

    def _comment(self) -> tuple[BoardModel, str, str, int]:
        found = [
            (board, card, comment, author)
            for board in self.world.boards
            for card, comments in board.cards.items()
            for comment, author in comments.items()
        ]
        if not found:
            raise Skip
        return self.rng.choice(found)

    async def update_comment(self) -> None:
        board, card, comment, author = self._comment()
        if author not in board.members:
            raise Skip
        variables = {"id": comment, "b": self._words("edited")}
        try:
            await self._call(
                "updateComment", self.world.people[author], docs.UPDATE_COMMENT, variables
            )
        except Gone:
            board.cards.get(card, {}).pop(comment, None)

    async def delete_comment(self) -> None:
        board, card, comment, author = self._comment()
        actor = self.world.people[author] if author in board.members else None
        if actor is None or self.rng.random() < 0.3:
            actor = self.world.people[board.owner]
        try:
            data = await self._call("deleteComment", actor, docs.DELETE_COMMENT, {"id": comment})
        except Gone:
            data = {}
        if data is not None:
            board.cards.get(card, {}).pop(comment, None)

    async def rename_board(self) -> None:
        board = self._board()
        variables = {"id": board.id, "n": self._words("board")}
        await self._call(
            "updateBoard", self.world.people[board.owner], docs.UPDATE_BOARD, variables
        )

    async def remove_member(self) -> None:
        board = self._board()
        leavers = [i for i in sorted(board.members) if i != board.owner]
        if len(leavers) < 2:
            raise Skip  # keep boards shared
        leaver = self.rng.choice(leavers)
        membership, _ = board.members[leaver]
        actor = self.world.people[board.owner if self.rng.random() < 0.7 else leaver]
        about = f"{self.world.people[leaver].name} leaves board {board.id}"
        try:
            data = await self._call(
                "removeMember", actor, docs.REMOVE_MEMBER, {"id": membership}, about
            )
        except Gone:
            data = {}
        if data is not None and board.members.get(leaver, ("",))[0] == membership:
            del board.members[leaver]

    async def add_member(self) -> None:
        board = self._board()
        outside = [p.index for p in self.world.people if p.index not in board.members]
        if not outside:
            raise Skip
        joiner = self.world.people[self.rng.choice(outside)]
        role = "EDITOR" if self.rng.random() < 0.7 else "VIEWER"
        variables = {"b": board.id, "e": joiner.email, "r": role}
        try:
            data = await self._call(
                "addMember", self.world.people[board.owner], docs.ADD_MEMBER, variables
            )
        except Gone:
            return
        if data is not None:
            board.members[joiner.index] = (data["addMember"]["id"], role)
