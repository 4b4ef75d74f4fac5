"""How each built-in record type is loaded for the viewer (see schema.nodes)."""

from __future__ import annotations

from schema.context import Context
from schema.nodes import node_type
from schema.types import Board, Card, Comment, Membership, User


@node_type(User)
async def load_user(ctx: Context, pk: int) -> User | None:
    """Visible to the user themself and to members of a board they share."""
    user = await ctx.loaders.user.load(pk)
    if user is None:
        return None
    if pk == ctx.viewer_id or await ctx.loaders.shares_board_with_viewer.load(pk):
        return ctx.loaders.node(user, User.from_model)
    return None


@node_type(Board)
async def load_board(ctx: Context, pk: int) -> Board | None:
    board = await ctx.loaders.board.load(pk)
    if board is None or await ctx.loaders.viewer_role.load(pk) is None:
        return None
    return ctx.loaders.node(board, Board.from_model)


@node_type(Membership)
async def load_membership(ctx: Context, pk: int) -> Membership | None:
    membership = await ctx.loaders.membership.load(pk)
    if membership is None or await ctx.loaders.viewer_role.load(membership.board_id) is None:
        return None
    return ctx.loaders.node(membership, Membership.from_model)


@node_type(Card)
async def load_card(ctx: Context, pk: int) -> Card | None:
    card = await ctx.loaders.card.load(pk)
    if card is None or await ctx.loaders.viewer_role.load(card.board_id) is None:
        return None
    return ctx.loaders.node(card, Card.from_model)


@node_type(Comment)
async def load_comment(ctx: Context, pk: int) -> Comment | None:
    comment = await ctx.loaders.comment.load(pk)
    if comment is None:
        return None
    parent = await ctx.loaders.card.load(comment.card_id)
    if parent is None or await ctx.loaders.viewer_role.load(parent.board_id) is None:
        return None
    return ctx.loaders.node(comment, Comment.from_model)
