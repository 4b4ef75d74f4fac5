"""Boards and who belongs to them."""

from __future__ import annotations

import enum

from sqlalchemy import Enum, ForeignKey, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.base import NEVER_REUSE_IDS, Base, Record
from models.card import Card, Comment
from models.realtime import BoardAudience, Realtime, RecordKey


class Role(enum.StrEnum):
    OWNER = "OWNER"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


class Board(Realtime, Record, Base):
    __tablename__ = "boards"
    __table_args__ = NEVER_REUSE_IDS

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)

    # ORM cascades (not only ON DELETE CASCADE) so that deleting a board goes through
    # the unit of work and every deleted child is seen by flush events.
    memberships: Mapped[list[Membership]] = relationship(
        cascade="all, delete-orphan", lazy="raise", back_populates="board"
    )
    cards: Mapped[list[Card]] = relationship(cascade="all, delete-orphan", lazy="raise")

    def audience(self, session: Session) -> BoardAudience:
        return BoardAudience(self.id)


class Membership(Realtime, Record, Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("board_id", "user_id", name="uq_memberships_board_user"),
        NEVER_REUSE_IDS,
    )

    board_id: Mapped[int] = mapped_column(
        ForeignKey("boards.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=16, create_constraint=True, name="role"),
        nullable=False,
    )
    board: Mapped[Board] = relationship(lazy="raise", back_populates="memberships")

    def audience(self, session: Session) -> BoardAudience:
        # The member being removed is still in the audience: capture reads it before
        # the membership row goes.
        return BoardAudience(self.board_id)

    def realtime_parents(self) -> tuple[RecordKey, ...]:
        return (RecordKey("Board", self.board_id),)

    def realtime_grants(self, session: Session) -> tuple[int, list[RecordKey]]:
        """A new member may now see everything on the board, including what changed
        while they were not a member (a re-added member's cache may hold old copies):
        every record of the board is announced to them once."""
        keys = [RecordKey("Board", self.board_id)]
        keys += [
            RecordKey("Membership", pk)
            for pk in session.scalars(
                select(Membership.id).where(Membership.board_id == self.board_id)
            )
        ]
        card_ids = list(session.scalars(select(Card.id).where(Card.board_id == self.board_id)))
        keys += [RecordKey("Card", pk) for pk in card_ids]
        if card_ids:
            keys += [
                RecordKey("Comment", pk)
                for pk in session.scalars(select(Comment.id).where(Comment.card_id.in_(card_ids)))
            ]
        return self.user_id, keys
