"""The GraphQL record types. Queries, mutations and (later) subscriptions all return
these, so a client cache merges every source by `__typename` + `id`.

A resolver whose result depends only on its object says so (SAME_FOR_EVERY_VIEWER:
schema.viewer_free); one that reads the viewer (`User.email`, `User.boards`) must not."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

import models
from schema.context import Info
from schema.ids import encode_id
from schema.viewer_free import SAME_FOR_EVERY_VIEWER


@strawberry.enum
class Role(Enum):
    OWNER = "OWNER"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class User(Node):
    pk: strawberry.Private[int]
    _email: strawberry.Private[str]
    name: str
    version: int

    @strawberry.field(
        description="Only the user themself sees their email; null for everyone else."
    )
    def email(self, info: Info) -> str | None:
        return self._email if info.context.viewer_id == self.pk else None

    @strawberry.field(
        description="The boards this user belongs to; only readable for the viewer themself "
        "(an empty list for anyone else)."
    )
    async def boards(self, info: Info) -> list[Board]:
        if info.context.viewer_id != self.pk:
            return []
        loaders = info.context.loaders
        memberships = await loaders.user_memberships.load(self.pk)
        boards = await loaders.board.load_many([m.board_id for m in memberships])
        return [Board.from_model(b) for b in boards if b is not None]

    @classmethod
    def from_model(cls, user: models.User) -> User:
        return cls(
            id=strawberry.ID(encode_id("User", user.id)),
            pk=user.id,
            _email=user.email,
            name=user.name,
            version=user.version,
        )


async def load_user(info: Info, user_id: int) -> User:
    user = await info.context.loaders.user.load(user_id)
    if user is None:  # pragma: no cover - foreign keys make this impossible
        raise LookupError(f"user {user_id} is referenced but missing")
    return User.from_model(user)


async def load_board(info: Info, board_id: int) -> Board:
    board = await info.context.loaders.board.load(board_id)
    if board is None:  # pragma: no cover - foreign keys make this impossible
        raise LookupError(f"board {board_id} is referenced but missing")
    return Board.from_model(board)


@strawberry.type
class Board(Node):
    pk: strawberry.Private[int]
    owner_id: strawberry.Private[int]
    name: str
    version: int
    created_at: datetime
    updated_at: datetime

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def owner(self, info: Info) -> User:
        return await load_user(info, self.owner_id)

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def members(self, info: Info) -> list[Membership]:
        rows = await info.context.loaders.board_members.load(self.pk)
        return [Membership.from_model(m) for m in rows]

    @strawberry.field(
        description="Ordered by position, then by creation.", metadata=SAME_FOR_EVERY_VIEWER
    )
    async def cards(self, info: Info) -> list[Card]:
        rows = await info.context.loaders.board_cards.load(self.pk)
        return [Card.from_model(c) for c in rows]

    @classmethod
    def from_model(cls, board: models.Board) -> Board:
        return cls(
            id=strawberry.ID(encode_id("Board", board.id)),
            pk=board.id,
            owner_id=board.owner_id,
            name=board.name,
            version=board.version,
            created_at=board.created_at,
            updated_at=board.updated_at,
        )


@strawberry.type
class Membership(Node):
    pk: strawberry.Private[int]
    board_id: strawberry.Private[int]
    user_id: strawberry.Private[int]
    role: Role
    version: int

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def board(self, info: Info) -> Board:
        return await load_board(info, self.board_id)

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def user(self, info: Info) -> User:
        return await load_user(info, self.user_id)

    @classmethod
    def from_model(cls, membership: models.Membership) -> Membership:
        return cls(
            id=strawberry.ID(encode_id("Membership", membership.id)),
            pk=membership.id,
            board_id=membership.board_id,
            user_id=membership.user_id,
            role=Role(membership.role.value),
            version=membership.version,
        )


@strawberry.type
class Card(Node):
    pk: strawberry.Private[int]
    board_id: strawberry.Private[int]
    author_id: strawberry.Private[int]
    assignee_id: strawberry.Private[int | None]
    title: str
    description: str
    position: float
    done: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def board(self, info: Info) -> Board:
        return await load_board(info, self.board_id)

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def author(self, info: Info) -> User:
        return await load_user(info, self.author_id)

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def assignee(self, info: Info) -> User | None:
        if self.assignee_id is None:
            return None
        return await load_user(info, self.assignee_id)

    @strawberry.field(description="Oldest first.", metadata=SAME_FOR_EVERY_VIEWER)
    async def comments(self, info: Info) -> list[Comment]:
        rows = await info.context.loaders.card_comments.load(self.pk)
        return [Comment.from_model(c) for c in rows]

    @classmethod
    def from_model(cls, card: models.Card) -> Card:
        return cls(
            id=strawberry.ID(encode_id("Card", card.id)),
            pk=card.id,
            board_id=card.board_id,
            author_id=card.author_id,
            assignee_id=card.assignee_id,
            title=card.title,
            description=card.description,
            position=card.position,
            done=card.done,
            version=card.version,
            created_at=card.created_at,
            updated_at=card.updated_at,
        )


@strawberry.type
class Comment(Node):
    pk: strawberry.Private[int]
    card_id: strawberry.Private[int]
    author_id: strawberry.Private[int]
    body: str
    version: int
    created_at: datetime
    updated_at: datetime

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def card(self, info: Info) -> Card:
        card = await info.context.loaders.card.load(self.card_id)
        if card is None:  # pragma: no cover - foreign keys make this impossible
            raise LookupError(f"card {self.card_id} is referenced but missing")
        return Card.from_model(card)

    @strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)
    async def author(self, info: Info) -> User:
        return await load_user(info, self.author_id)

    @classmethod
    def from_model(cls, comment: models.Comment) -> Comment:
        return cls(
            id=strawberry.ID(encode_id("Comment", comment.id)),
            pk=comment.id,
            card_id=comment.card_id,
            author_id=comment.author_id,
            body=comment.body,
            version=comment.version,
            created_at=comment.created_at,
            updated_at=comment.updated_at,
        )


@strawberry.type
class AuthPayload:
    token: str
    user: User
