"""Query root: viewer, node, nodes, board."""

from __future__ import annotations

import asyncio

import strawberry

import schema.visibility  # noqa: F401 - registers the built-in Node types
from schema.context import Info
from schema.errors import bad_input, unauthenticated
from schema.ids import decode_id, decode_typed_id
from schema.nodes import visible_node
from schema.types import Board, Node, User
from schema.validation import NODES_MAX_IDS


@strawberry.type
class Query:
    @strawberry.field(description="UNAUTHENTICATED error without a valid token.")
    async def viewer(self, info: Info) -> User:
        viewer_id = info.context.require_viewer()
        user = await info.context.loaders.user.load(viewer_id)
        if user is None:
            raise unauthenticated("The account this token was issued to no longer exists.")
        return User.from_model(user)

    @strawberry.field(description="null when the id does not exist or the viewer may not see it.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        info.context.require_viewer()
        typename, pk = decode_id(id, field="id")
        return await visible_node(info.context, typename, pk)

    @strawberry.field(
        description=f"Like node, for up to {NODES_MAX_IDS} ids at once, in the order given."
    )
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        info.context.require_viewer()
        if len(ids) > NODES_MAX_IDS:
            raise bad_input("ids", f"at most {NODES_MAX_IDS} ids per request")
        decoded = [decode_id(gid, field=f"ids[{i}]") for i, gid in enumerate(ids)]
        return list(await asyncio.gather(*(visible_node(info.context, t, pk) for t, pk in decoded)))

    @strawberry.field(description="null when the board does not exist or the viewer is no member.")
    async def board(self, info: Info, id: strawberry.ID) -> Board | None:
        info.context.require_viewer()
        pk = decode_typed_id(id, "Board", field="id")
        node = await visible_node(info.context, "Board", pk)
        return node if isinstance(node, Board) else None
