"""Accounts."""

from __future__ import annotations

from sqlalchemy import Index, String, func
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import NEVER_REUSE_IDS, Base, Record
from models.realtime import Realtime, UserAudience

EMAIL_MAX_LENGTH = 254


class User(Realtime, Record, Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)

    def audience(self, session: Session) -> UserAudience:
        return UserAudience(self.id)


# Case-insensitive uniqueness: the address keeps the casing its owner typed, and the
# index on lower(email) refuses "Ann@x.io" once "ann@x.io" exists.
Index("uq_users_email_lower", func.lower(User.email), unique=True)
