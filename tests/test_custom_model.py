"""docs/custom-models.md, done as written: a model of the user's own becomes real-time
with the mixin, a type and a registered resolver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import strawberry
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.settings import Settings
from models import Record
from models.database import create_engine
from models.realtime import BoardAudience, Realtime
from schema import Context, node_type
from schema.ids import decode_typed_id, encode_id
from schema.nodes import forget_node_type
from schema.types import Node
from tests.live import live_server
from tests.support import GraphQLClient, subscriptions_live
from tests.ws_client import graphql_socket


class PluginBase(DeclarativeBase):
    """The user's own tables (a separate metadata, so the product's migrations and
    other tests never see them)."""


class Label(Realtime, Record, PluginBase):
    __tablename__ = "test_labels"
    board_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(50))

    def audience(self, session: Session) -> BoardAudience:
        return BoardAudience(self.board_id)


@strawberry.type(name="Label")
class LabelType(Node):
    name: str
    version: int


async def load_label(ctx: Context, pk: int) -> LabelType | None:
    row = await ctx.loaders.record(Label).load(pk)
    if row is None or await ctx.loaders.viewer_role.load(row.board_id) is None:
        return None
    return LabelType(id=strawberry.ID(encode_id("Label", pk)), name=row.name, version=row.version)


@pytest.fixture
async def labels(database_url: str) -> AsyncIterator[str]:
    node_type(LabelType)(load_label)
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(PluginBase.metadata.create_all)
    try:
        yield database_url
    finally:
        forget_node_type(LabelType)
        async with engine.begin() as conn:
            await conn.run_sync(PluginBase.metadata.drop_all)
        await engine.dispose()


SUBSCRIPTION = "subscription { userUpdates { op typename id node { ... on Label { name } } } }"


async def test_a_custom_model_is_pushed_and_resolvable_like_the_built_in_ones(
    labels: str,
) -> None:
    async with (
        live_server(Settings(database_url=labels)) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        api = GraphQLClient(http, server.runtime)
        ann, bob, eve = [await api.account(n) for n in ("Ann", "Bob", "Eve")]
        board = await api.board(ann)
        await api.add_member(ann, board, bob, "VIEWER")
        board_pk = decode_typed_id(board, "Board", field="id")
        await server.runtime.relay.idle()  # the setup's notices are out before subscribing
        async with (
            graphql_socket(server.ws_url, bob.token) as bob_socket,
            graphql_socket(server.ws_url, eve.token) as eve_socket,
        ):
            await bob_socket.subscribe(SUBSCRIPTION)
            await eve_socket.subscribe(SUBSCRIPTION)
            await subscriptions_live(server.runtime, users=2)
            async with server.runtime.write_sessions() as session, session.begin():
                label = Label(board_id=board_pk, name="urgent")
                session.add(label)
            label_id = encode_id("Label", label.id)
            update = await bob_socket.next_update()
            assert update == {
                "op": "CREATED",
                "typename": "Label",
                "id": label_id,
                "node": {"name": "urgent"},
            }
            # node(id:) resolves it for a member, and hides it from a stranger.
            query = "query($id: ID!) { node(id: $id) { __typename ... on Label { name } } }"
            seen = await api.data(query, {"id": label_id}, token=bob.token)
            assert seen["node"] == {"__typename": "Label", "name": "urgent"}
            hidden = await api.data(query, {"id": label_id}, token=eve.token)
            assert hidden["node"] is None
            # Eve, not a member, receives nothing: her next update is her own board.
            await api.board(eve, "Eve's")
            assert (await eve_socket.next_update())["typename"] in ("Board", "Membership")
