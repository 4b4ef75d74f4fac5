"""The opt-in for real-time: models that inherit `Realtime` are captured on flush and
pushed to every user who may see them (subscriptions.capture does the capturing).

A model says three things:
- `realtime_typename`: the GraphQL type clients cache it as (default: the class name);
- `audience(session)`: who may see it, as an `Audience` (members of a board, or a user
  and everyone who shares a board with them);
- `realtime_parents()`: records whose lists contain this one (a card's board lists its
  cards). They are announced as UPDATED when this record is created or deleted, or when
  one of `realtime_parent_attributes` changes (a card's position reorders the list);
- `realtime_grants(session)`: records a user may see once this one exists (a new
  membership grants its user the board's contents), announced to that user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class BoardAudience:
    """Every member of the board."""

    board_id: int


@dataclass(frozen=True, slots=True)
class UserAudience:
    """The user and every member of a board the user belongs to."""

    user_id: int


Audience = BoardAudience | UserAudience


@dataclass(frozen=True, slots=True)
class RecordKey:
    typename: str
    id: int


class Realtime:
    realtime_typename: ClassVar[str] = ""
    realtime_parent_attributes: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("realtime_typename"):
            cls.realtime_typename = cls.__name__

    def audience(self, session: Session) -> Audience:
        """Who may see this record. Runs inside the flush: use `session` synchronously."""
        raise NotImplementedError

    def realtime_parents(self) -> tuple[RecordKey, ...]:
        return ()

    def realtime_grants(self, session: Session) -> tuple[int, list[RecordKey]] | None:
        """When creating this record lets a user see other records (a membership lets
        its user see the board's contents): (user id, those records). They are
        announced to that user as UPDATED."""
        return None
