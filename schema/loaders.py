"""Per-operation DataLoaders: each batches one kind of lookup into one SQL statement.

They are why a board with hundreds of cards and thousands of comments loads in a
handful of statements instead of one per record. A set lives for one operation (or
until a write commits); it is never kept on a WebSocket connection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from strawberry.dataloader import DataLoader

from models import Board, Card, Comment, Membership, Record, Role, User

RunQuery = Callable[[Select[Any]], Awaitable[Sequence[Any]]]
R = TypeVar("R", bound=Record)
K = TypeVar("K", bound=Hashable)


class Loaders:
    def __init__(self, run: RunQuery, viewer_id: int | None) -> None:
        self._run = run
        self._viewer_id = viewer_id
        self._records: dict[type[Any], DataLoader[int, Any]] = {}
        # What the layers above derive from these loads, for everyone reading through
        # them (schema.subscription: one update object per change).
        self.derived: dict[object, Any] = {}
        self.user = self.record(User)
        self.board = self.record(Board)
        self.membership = self.record(Membership)
        self.card = self.record(Card)
        self.comment = self.record(Comment)
        self.board_members = self._grouped(Membership, Membership.board_id, Membership.id)
        self.board_cards = self._grouped(Card, Card.board_id, Card.position, Card.id)
        self.card_comments = self._grouped(Comment, Comment.card_id, Comment.id)
        self.user_memberships = self._grouped(Membership, Membership.user_id, Membership.board_id)
        self.viewer_role: DataLoader[int, Role | None] = DataLoader(self._viewer_roles)
        self.shares_board_with_viewer: DataLoader[int, bool] = DataLoader(self._shares_board)

    def record(self, model: type[R]) -> DataLoader[int, R | None]:
        """Records of `model` by primary key (one loader per model and operation)."""
        loader = self._records.get(model)
        if loader is None:

            async def load(ids: list[int]) -> list[R | None]:
                rows = await self._run(select(model).where(model.id.in_(ids)))
                found = {row.id: row for row in rows}
                return [found.get(i) for i in ids]

            loader = self._records[model] = DataLoader(load)
        return loader

    def _grouped(self, model: type[R], key: Any, *order: Any) -> DataLoader[int, list[R]]:
        async def load(keys: list[int]) -> list[list[R]]:
            rows = await self._run(select(model).where(key.in_(keys)).order_by(*order))
            groups: dict[int, list[R]] = defaultdict(list)
            for row in rows:
                groups[getattr(row, key.key)].append(row)
            return [groups.get(k, []) for k in keys]

        return DataLoader(load)

    async def _viewer_roles(self, board_ids: list[int]) -> list[Role | None]:
        if self._viewer_id is None:
            return [None] * len(board_ids)
        rows = await self._run(
            select(Membership).where(
                Membership.user_id == self._viewer_id, Membership.board_id.in_(board_ids)
            )
        )
        roles = {m.board_id: m.role for m in rows}
        return [roles.get(b) for b in board_ids]

    async def _shares_board(self, user_ids: list[int]) -> list[bool]:
        if self._viewer_id is None:
            return [False] * len(user_ids)
        mine, theirs = aliased(Membership), aliased(Membership)
        rows = await self._run(
            select(theirs.user_id)
            .join(mine, mine.board_id == theirs.board_id)
            .where(mine.user_id == self._viewer_id, theirs.user_id.in_(user_ids))
            .distinct()
        )
        shared = set(rows)
        return [u in shared for u in user_ids]


async def scalars(session: AsyncSession, statement: Select[Any]) -> Sequence[Any]:
    return (await session.scalars(statement)).all()
