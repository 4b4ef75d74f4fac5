"""createCard, updateCard, deleteCard."""

from __future__ import annotations

import strawberry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

import models
from models.driver_snapshot import driver_engine
from schema import validation
from schema.context import Info
from schema.errors import bad_input, not_found
from schema.ids import decode_typed_id
from schema.inputs import CreateCardInput, UpdateCardInput, given
from schema.mutations.card_update import CardUpdate, update_card_on_driver
from schema.mutations.common import (
    check_version,
    get_locked_for_member,
    write_record,
)
from schema.permissions import EDIT_CARDS, require_member, role_on_board
from schema.types import Card

POSITION_STEP = 1.0


async def _check_assignee(session: AsyncSession, user_id: int, board_id: int) -> None:
    if await role_on_board(session, user_id, board_id) is None:
        raise bad_input("assigneeId", "must be a member of the card's board")


@strawberry.type
class CardMutations:
    @strawberry.mutation
    async def create_card(self, info: Info, input: CreateCardInput) -> Card:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        board_pk = decode_typed_id(input.board_id, "Board", field="boardId")
        title = validation.required_text("title", input.title, validation.CARD_TITLE_MAX)
        description = (
            validation.optional_text(
                "description", input.description, validation.CARD_DESCRIPTION_MAX
            )
            if given(input.description) and input.description is not None
            else ""
        )
        position = (
            validation.position("position", input.position)
            if given(input.position) and input.position is not None
            else None
        )
        assignee_pk = (
            decode_typed_id(input.assignee_id, "User", field="assigneeId")
            if given(input.assignee_id) and input.assignee_id is not None
            else None
        )
        async with ctx.write() as session:
            await get_locked_for_member(
                session,
                models.Board,
                board_pk,
                viewer_id,
                EDIT_CARDS,
                "Board",
                "create cards",
                share=True,
            )
            if assignee_pk is not None:
                await _check_assignee(session, assignee_pk, board_pk)
            if position is None:
                # New cards go last by default.
                last = await session.scalar(
                    select(func.max(models.Card.position)).where(models.Card.board_id == board_pk)
                )
                position = (last or 0.0) + POSITION_STEP
            card = models.Card(
                board_id=board_pk,
                title=title,
                description=description,
                position=position,
                done=False,
                author_id=viewer_id,
                assignee_id=assignee_pk,
            )
            session.add(card)
        return Card.from_model(card)

    @strawberry.mutation
    async def update_card(self, info: Info, input: UpdateCardInput) -> Card:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(input.id, "Card", field="id")
        expected = validation.expected_version(
            "expectedVersion", input.expected_version if given(input.expected_version) else None
        )
        changes: dict[str, object] = {}
        if given(input.title) and input.title is not None:
            changes["title"] = validation.required_text(
                "title", input.title, validation.CARD_TITLE_MAX
            )
        if given(input.description) and input.description is not None:
            changes["description"] = validation.optional_text(
                "description", input.description, validation.CARD_DESCRIPTION_MAX
            )
        if given(input.position) and input.position is not None:
            changes["position"] = validation.position("position", input.position)
        if given(input.done):
            changes["done"] = input.done
        assignee_sent = input.assignee_id is not strawberry.UNSET
        assignee_pk = (
            decode_typed_id(input.assignee_id, "User", field="assigneeId")
            if assignee_sent and input.assignee_id is not None
            else None
        )
        engine = driver_engine(ctx.write_sessions)
        if engine is not None:  # PostgreSQL: the same write, without a session around it
            request = CardUpdate(pk, expected, changes, assignee_sent, assignee_pk)
            card = await update_card_on_driver(ctx, engine, request)
            return Card.from_model(card)
        async with write_record(ctx, models.Card, pk, "Card") as session:
            card = await get_locked_for_member(
                session, models.Card, pk, viewer_id, EDIT_CARDS, "Card", "edit cards"
            )
            check_version("Card", card, expected)
            if assignee_pk is not None:
                await _check_assignee(session, assignee_pk, card.board_id)
            if assignee_sent:
                changes["assignee_id"] = assignee_pk
            for attribute, value in changes.items():
                if getattr(card, attribute) != value:
                    setattr(card, attribute, value)
        return Card.from_model(card)

    @strawberry.mutation
    async def delete_card(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        pk = decode_typed_id(id, "Card", field="id")
        async with ctx.write() as session:
            card = await session.scalar(
                select(models.Card)
                .where(models.Card.id == pk)
                .options(selectinload(models.Card.comments))
                .with_for_update()
            )
            if card is None:
                raise not_found("Card")
            await require_member(
                session, viewer_id, card.board_id, EDIT_CARDS, "Card", "delete cards"
            )
            await session.delete(card)
        return id
