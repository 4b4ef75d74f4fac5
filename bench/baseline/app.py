"""The textbook version of real-time GraphQL, kept as the benchmark's yardstick.

strawberry + broadcaster (Redis), the way tutorials write it: after a mutation commits,
publish `{typename, id}` on each member's channel; every `userUpdates` subscriber
reloads the record in a fresh session on each event, checks that its viewer may see
it, and yields it. No change log, no resume, no sharing between subscribers.

Same schema subset as Commitcast for what the benchmark touches (Card with `title`,
`version`, `updatedAt`; `updateCard`; `userUpdates { op typename id node }`), same
server settings (uvicorn, websockets-sansio, no compression; uvicorn's stock protocol,
where Commitcast runs its leaner subclass, app/ws_protocol.py), same tokens (HS256
JWT with `sub` = user id).

Two changes to broadcaster 0.3.1, without which it loses subscribers instead of being
slow (see DESIGN.md "Known traps"): concurrent first subscriptions to a channel are
serialized (otherwise they overwrite each other's queue), and one channel stays
subscribed for the life of the process (otherwise the Redis listener can stop for good
after the first subscription).

Run: `python -m bench.serve baseline` (the benchmark does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jwt
import strawberry
from broadcaster import Broadcast
from sqlalchemy import DateTime, ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types import Info


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "bl_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Board(Base):
    __tablename__ = "bl_boards"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Membership(Base):
    __tablename__ = "bl_memberships"
    id: Mapped[int] = mapped_column(primary_key=True)
    board_id: Mapped[int] = mapped_column(ForeignKey("bl_boards.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("bl_users.id"), index=True)


class Card(Base):
    __tablename__ = "bl_cards"
    id: Mapped[int] = mapped_column(primary_key=True)
    board_id: Mapped[int] = mapped_column(ForeignKey("bl_boards.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=1)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def encode_id(typename: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{typename}:{pk}".encode()).decode().rstrip("=")


def decode_id(value: str) -> int:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    return int(raw.split(":", 1)[1])


class State:
    sessions: async_sessionmaker[AsyncSession]
    broadcast: Broadcast
    realtime: bool
    secret: str
    locks: dict[str, asyncio.Lock]
    # Redis pub/sub ignores the database number: runs sharing a Redis stay apart.
    namespace: str


STATE = State()


@strawberry.type(name="Card")
class CardType:
    id: strawberry.ID
    title: str
    version: int
    updated_at: datetime

    @classmethod
    def of(cls, card: Card) -> CardType:
        return cls(
            id=strawberry.ID(encode_id("Card", card.id)),
            title=card.title,
            version=card.version,
            updated_at=card.updated_at,
        )


@strawberry.type
class UserUpdate:
    cursor: str
    op: str
    typename: str
    id: strawberry.ID
    node: CardType | None


@strawberry.input
class UpdateCardInput:
    id: strawberry.ID
    title: str


async def is_member(session: AsyncSession, user_id: int, board_id: int) -> bool:
    found = await session.scalar(
        select(Membership.id).where(Membership.user_id == user_id, Membership.board_id == board_id)
    )
    return found is not None


@strawberry.type
class Query:
    @strawberry.field
    async def card(self, info: Info, id: strawberry.ID) -> CardType | None:
        async with STATE.sessions() as session:
            card = await session.get(Card, decode_id(id))
            if card is None or not await is_member(session, info.context["viewer"], card.board_id):
                return None
            return CardType.of(card)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def update_card(self, info: Info, input: UpdateCardInput) -> CardType | None:
        async with STATE.sessions() as session, session.begin():
            card = await session.get(Card, decode_id(input.id), with_for_update=True)
            if card is None or not await is_member(session, info.context["viewer"], card.board_id):
                return None
            card.title = input.title
            card.version += 1
            card.updated_at = datetime.now(UTC)
            members = list(
                await session.scalars(
                    select(Membership.user_id).where(Membership.board_id == card.board_id)
                )
            )
        if STATE.realtime:
            event = json.dumps({"typename": "Card", "id": card.id, "op": "UPDATED"})
            for user_id in members:
                await STATE.broadcast.publish(f"{STATE.namespace}user:{user_id}", event)
        return CardType.of(card)


@contextlib.asynccontextmanager
async def subscribe(channel: str) -> AsyncIterator[Any]:
    lock = STATE.locks.setdefault(channel, asyncio.Lock())
    async with lock:
        manager = STATE.broadcast.subscribe(channel)
        subscriber = await manager.__aenter__()
    try:
        yield subscriber
    finally:
        async with lock:
            await manager.__aexit__(None, None, None)


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def user_updates(self, info: Info) -> AsyncGenerator[UserUpdate, None]:
        viewer = info.context["viewer"]
        async with subscribe(f"{STATE.namespace}user:{viewer}") as subscriber:
            async for event in subscriber:
                if event is None:
                    return
                change = json.loads(event.message)
                # Reload per event, as the viewer, in a fresh session.
                async with STATE.sessions() as session:
                    card = await session.get(Card, change["id"])
                    if card is None or not await is_member(session, viewer, card.board_id):
                        continue
                    node = CardType.of(card)
                yield UserUpdate(
                    cursor=str(card.version),
                    op=change["op"],
                    typename=change["typename"],
                    id=node.id,
                    node=node,
                )


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)


def viewer_of(header: Any) -> int | None:
    if not isinstance(header, str) or not header.startswith("Bearer "):
        return None
    try:
        claims = jwt.decode(header[7:], STATE.secret, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return None
    return int(claims["sub"])


class View(GraphQL[Any, None]):
    async def get_context(self, request: Any, response: Any) -> Any:
        return {"viewer": viewer_of(request.headers.get("authorization"))}

    async def on_ws_connect(self, context: Any) -> Any:
        params = context.get("connection_params") or {}
        viewer = viewer_of(params.get("authorization"))
        if viewer is None:
            raise ConnectionRejectionError()
        context["viewer"] = viewer
        return None


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    engine = create_async_engine(os.environ["DATABASE_URL"])
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    STATE.sessions = async_sessionmaker(engine, expire_on_commit=False)
    STATE.realtime = os.environ.get("BENCH_REALTIME", "1") == "1"
    STATE.secret = os.environ["SECRET_KEY"]
    STATE.locks = {}
    STATE.namespace = os.environ.get("BENCH_NAMESPACE", "baseline") + ":"
    STATE.broadcast = Broadcast(os.environ["BROKER_URL"])
    await STATE.broadcast.connect()
    async with subscribe(f"{STATE.namespace}keepalive"):
        yield
    await STATE.broadcast.disconnect()
    await engine.dispose()


def create_app() -> Starlette:
    view = View(schema)
    return Starlette(
        routes=[
            Route("/graphql", view, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
        ],
        lifespan=lifespan,
    )
