"""addComment, updateComment, deleteComment."""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

import models
from schema import validation
from schema.context import Info
from schema.errors import forbidden
from schema.ids import decode_typed_id
from schema.inputs import AddCommentInput, UpdateCommentInput, given
from schema.mutations.common import (
    check_version,
    get_locked_for_member,
    get_or_not_found,
    write_record,
)
from schema.permissions import COMMENT, MANAGE_BOARD, require_member
from schema.types import Comment


async def _comment_and_role(
    session: AsyncSession, viewer_id: int, pk: int
) -> tuple[models.Comment, models.Role]:
    comment = await get_or_not_found(session, models.Comment, pk, "Comment", for_update=True)
    card = await get_or_not_found(session, models.Card, comment.card_id, "Comment")
    role = await require_member(
        session, viewer_id, card.board_id, COMMENT, "Comment", "change comments"
    )
    return comment, role


@strawberry.type
class CommentMutations:
    @strawberry.mutation
    async def add_comment(self, info: Info, input: AddCommentInput) -> Comment:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        card_pk = decode_typed_id(input.card_id, "Card", field="cardId")
        body = validation.required_text("body", input.body, validation.COMMENT_BODY_MAX)
        async with ctx.write() as session:
            # Kept (the session holds it weakly): the comment's audience reads its board.
            card = await get_locked_for_member(
                session, models.Card, card_pk, viewer_id, COMMENT, "Card", "comment", share=True
            )
            comment = models.Comment(card_id=card.id, author_id=viewer_id, body=body)
            session.add(comment)
        return Comment.from_model(comment)

    @strawberry.mutation
    async def update_comment(self, info: Info, input: UpdateCommentInput) -> Comment:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(input.id, "Comment", field="id")
        body = validation.required_text("body", input.body, validation.COMMENT_BODY_MAX)
        expected = validation.expected_version(
            "expectedVersion", input.expected_version if given(input.expected_version) else None
        )
        async with write_record(ctx, models.Comment, pk, "Comment") as session:
            comment, _role = await _comment_and_role(session, viewer_id, pk)
            if comment.author_id != viewer_id:
                raise forbidden("Only the comment's author can edit it.")
            check_version("Comment", comment, expected)
            if comment.body != body:
                comment.body = body
        return Comment.from_model(comment)

    @strawberry.mutation
    async def delete_comment(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(id, "Comment", field="id")
        async with ctx.write() as session:
            comment, role = await _comment_and_role(session, viewer_id, pk)
            if comment.author_id != viewer_id and role not in MANAGE_BOARD:
                raise forbidden("Only the comment's author or a board OWNER can delete it.")
            await session.delete(comment)
        return id
