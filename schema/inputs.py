"""Input objects. Optional fields left out (or null) leave a value unchanged, except
`UpdateCardInput.assigneeId`, where an explicit null unassigns the card. Each is built
from its GraphQL value by a plan made once (schema.input_plans)."""

from __future__ import annotations

import strawberry

from schema.input_plans import planned
from schema.types import Role


@planned
@strawberry.input
class SignUpInput:
    email: str
    name: str
    password: str


@planned
@strawberry.input
class LogInInput:
    email: str
    password: str


@planned
@strawberry.input
class CreateBoardInput:
    name: str


@planned
@strawberry.input
class UpdateBoardInput:
    id: strawberry.ID
    name: str | None = strawberry.UNSET
    expected_version: int | None = strawberry.UNSET


@planned
@strawberry.input
class AddMemberInput:
    board_id: strawberry.ID
    email: str
    role: Role = Role.EDITOR


@planned
@strawberry.input
class CreateCardInput:
    board_id: strawberry.ID
    title: str
    description: str | None = ""
    position: float | None = strawberry.UNSET
    assignee_id: strawberry.ID | None = strawberry.UNSET


@planned
@strawberry.input
class UpdateCardInput:
    id: strawberry.ID
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    position: float | None = strawberry.UNSET
    done: bool | None = strawberry.UNSET
    assignee_id: strawberry.ID | None = strawberry.UNSET
    expected_version: int | None = strawberry.UNSET


@planned
@strawberry.input
class AddCommentInput:
    card_id: strawberry.ID
    body: str


@planned
@strawberry.input
class UpdateCommentInput:
    id: strawberry.ID
    body: str
    expected_version: int | None = strawberry.UNSET


def given(value: object) -> bool:
    """True when the client sent a non-null value for an optional input field."""
    return value is not None and value is not strawberry.UNSET
