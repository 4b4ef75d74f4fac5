"""Query root: viewer, node, nodes, board."""

from __future__ import annotations

import asyncio

import strawberry

from schema.context import Info
from schema.errors import bad_input, unauthenticated
from schema.ids import decode_id, decode_typed_id
from schema.types import Board, Card, Comment, Membership, Node, User
from schema.validation import NODES_MAX_IDS


async def visible_node(info: Info, typename: str, pk: int) -> Node | None:
    """The record if the viewer may read it, else None (missing and hidden look alike)."""
    ctx = info.context
    loaders = ctx.loaders
    viewer_id = ctx.require_viewer()
    if typename == "User":
        user = await loaders.user.load(pk)
        if user is None:
            return None
        if pk == viewer_id or await loaders.shares_board_with_viewer.load(pk):
            return User.from_model(user)
        return None
    if typename == "Board":
        board = await loaders.board.load(pk)
        if board is None or await loaders.viewer_role.load(pk) is None:
            return None
        return Board.from_model(board)
    if typename == "Membership":
        membership = await loaders.membership.load(pk)
        if membership is None or await loaders.viewer_role.load(membership.board_id) is None:
            return None
        return Membership.from_model(membership)
    if typename == "Card":
        card = await loaders.card.load(pk)
        if card is None or await loaders.viewer_role.load(card.board_id) is None:
            return None
        return Card.from_model(card)
    if typename == "Comment":
        comment = await loaders.comment.load(pk)
        if comment is None:
            return None
        parent = await loaders.card.load(comment.card_id)
        if parent is None or await loaders.viewer_role.load(parent.board_id) is None:
            return None
        return Comment.from_model(comment)
    raise AssertionError(f"decode_id admitted unknown type {typename!r}")


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
        return await visible_node(info, typename, pk)

    @strawberry.field(
        description=f"Like node, for up to {NODES_MAX_IDS} ids at once, in the order given."
    )
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        info.context.require_viewer()
        if len(ids) > NODES_MAX_IDS:
            raise bad_input("ids", f"at most {NODES_MAX_IDS} ids per request")
        decoded = [decode_id(gid, field=f"ids[{i}]") for i, gid in enumerate(ids)]
        return list(await asyncio.gather(*(visible_node(info, t, pk) for t, pk in decoded)))

    @strawberry.field(description="null when the board does not exist or the viewer is no member.")
    async def board(self, info: Info, id: strawberry.ID) -> Board | None:
        info.context.require_viewer()
        pk = decode_typed_id(id, "Board", field="id")
        node = await visible_node(info, "Board", pk)
        return node if isinstance(node, Board) else None
