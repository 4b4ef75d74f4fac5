"""createBoard, updateBoard, deleteBoard, addMember, removeMember."""

from __future__ import annotations

import strawberry
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

import models
from schema import validation
from schema.context import Info
from schema.errors import bad_input, forbidden
from schema.ids import decode_typed_id
from schema.inputs import AddMemberInput, CreateBoardInput, UpdateBoardInput, given
from schema.mutations.common import (
    check_version,
    get_locked_for_member,
    get_or_not_found,
    write_record,
)
from schema.permissions import ANY_MEMBER, MANAGE_BOARD, require_member, role_on_board
from schema.types import Board, Membership


@strawberry.type
class BoardMutations:
    @strawberry.mutation
    async def create_board(self, info: Info, input: CreateBoardInput) -> Board:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        name = validation.required_text("name", input.name, validation.BOARD_NAME_MAX)
        board = models.Board(name=name, owner_id=viewer_id)
        async with ctx.write() as session:
            session.add(board)
            session.add(models.Membership(board=board, user_id=viewer_id, role=models.Role.OWNER))
        return Board.from_model(board)

    @strawberry.mutation
    async def update_board(self, info: Info, input: UpdateBoardInput) -> Board:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(input.id, "Board", field="id")
        expected = validation.expected_version(
            "expectedVersion", input.expected_version if given(input.expected_version) else None
        )
        name = (
            validation.required_text("name", input.name, validation.BOARD_NAME_MAX)
            if given(input.name) and input.name is not None
            else None
        )
        async with write_record(ctx, models.Board, pk, "Board") as session:
            board = await get_locked_for_member(
                session, models.Board, pk, viewer_id, MANAGE_BOARD, "Board", "rename a board"
            )
            check_version("Board", board, expected)
            if name is not None:
                board.name = name
        return Board.from_model(board)

    @strawberry.mutation(description="Returns the id of the deleted board.")
    async def delete_board(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(id, "Board", field="id")
        async with ctx.write() as session:
            await require_member(session, viewer_id, pk, MANAGE_BOARD, "Board", "delete a board")
            # Load the children so the unit of work deletes (and sees) every one. The
            # lock comes first: a card being added concurrently (it holds KEY SHARE on
            # the board) either commits before we load the children or finds no board.
            board = await session.scalar(
                select(models.Board)
                .where(models.Board.id == pk)
                .with_for_update()
                .options(
                    selectinload(models.Board.memberships),
                    selectinload(models.Board.cards).selectinload(models.Card.comments),
                )
            )
            if board is None:  # pragma: no cover - the membership proves it exists
                raise LookupError(pk)
            await session.delete(board)
        return id

    @strawberry.mutation
    async def add_member(self, info: Info, input: AddMemberInput) -> Membership:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        board_pk = decode_typed_id(input.board_id, "Board", field="boardId")
        email = validation.email("email", input.email)
        try:
            async with ctx.write() as session:
                await get_locked_for_member(
                    session,
                    models.Board,
                    board_pk,
                    viewer_id,
                    MANAGE_BOARD,
                    "Board",
                    "add members",
                    share=True,
                )
                user_id = await session.scalar(
                    select(models.User.id).where(func.lower(models.User.email) == email.lower())
                )
                if user_id is None:
                    raise bad_input("email", "no account uses this email")
                if await role_on_board(session, user_id, board_pk) is not None:
                    raise bad_input("email", "already a member of this board")
                membership = models.Membership(
                    board_id=board_pk, user_id=user_id, role=models.Role(input.role.value)
                )
                session.add(membership)
        except IntegrityError:  # a concurrent addMember of the same person won
            raise bad_input("email", "already a member of this board") from None
        return Membership.from_model(membership)

    @strawberry.mutation(
        description="Takes a Membership id; returns it. Owners remove anyone, members "
        "remove themselves. The board's owner cannot be removed (delete the board instead)."
    )
    async def remove_member(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(id, "Membership", field="id")
        async with ctx.write() as session:
            membership = await get_or_not_found(session, models.Membership, pk, "Membership")
            role = await require_member(
                session, viewer_id, membership.board_id, ANY_MEMBER, "Membership", "remove members"
            )
            board = await get_or_not_found(session, models.Board, membership.board_id, "Board")
            if membership.user_id == board.owner_id:
                raise forbidden("The board's owner cannot be removed; delete the board instead.")
            if membership.user_id != viewer_id and role not in MANAGE_BOARD:
                raise forbidden("Only OWNER members can remove other members.")
            # An assignee must be a member: unassign what the leaver was assigned.
            assigned = await session.scalars(
                select(models.Card)
                .where(
                    models.Card.board_id == membership.board_id,
                    models.Card.assignee_id == membership.user_id,
                )
                # Locked like any card about to change: a concurrent updateCard waits.
                .with_for_update(key_share=True)
            )
            for card in assigned:
                card.assignee_id = None
            removed_user = membership.user_id
            await session.delete(membership)
        # Committed: now nothing read while they were a member may still reach them.
        await ctx.access_fence.exclude(removed_user)
        return id
