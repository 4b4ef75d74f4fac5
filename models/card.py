"""Cards and their comments."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship
from sqlalchemy.orm.util import identity_key

from models.base import NEVER_REUSE_IDS, Base, Record
from models.realtime import BoardAudience, Realtime, RecordKey


class Card(Realtime, Record, Base):
    __tablename__ = "cards"
    __table_args__ = NEVER_REUSE_IDS
    # Board.cards is ordered by position: moving a card changes the board's list.
    realtime_parent_attributes = frozenset({"position"})

    board_id: Mapped[int] = mapped_column(
        ForeignKey("boards.id", ondelete="CASCADE"), nullable=False, index=True
    )
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    position: Mapped[float] = mapped_column(Float, nullable=False)
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )

    comments: Mapped[list[Comment]] = relationship(cascade="all, delete-orphan", lazy="raise")

    def audience(self, session: Session) -> BoardAudience:
        return BoardAudience(self.board_id)

    def realtime_parents(self) -> tuple[RecordKey, ...]:
        return (RecordKey("Board", self.board_id),)


class Comment(Realtime, Record, Base):
    __tablename__ = "comments"
    __table_args__ = NEVER_REUSE_IDS

    card_id: Mapped[int] = mapped_column(
        ForeignKey("cards.id", ondelete="CASCADE"), nullable=False, index=True
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)

    def audience(self, session: Session) -> BoardAudience:
        # The card is usually in the session already (deleting a card loads its
        # comments through it): no SQL per comment then.
        card = session.identity_map.get(identity_key(Card, self.card_id))
        board_id = (
            card.board_id
            if isinstance(card, Card)
            else session.scalar(select(Card.board_id).where(Card.id == self.card_id))
        )
        if board_id is None:
            raise LookupError(f"comment {self.id} belongs to no card")
        return BoardAudience(board_id)

    def realtime_parents(self) -> tuple[RecordKey, ...]:
        return (RecordKey("Card", self.card_id),)
