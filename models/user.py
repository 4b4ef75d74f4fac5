"""Accounts."""

from __future__ import annotations

from sqlalchemy import Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Record

EMAIL_MAX_LENGTH = 254


class User(Record, Base):
    __tablename__ = "users"
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)


# Case-insensitive uniqueness: the address keeps the casing its owner typed, and the
# index on lower(email) refuses "Ann@x.io" once "ann@x.io" exists.
Index("uq_users_email_lower", func.lower(User.email), unique=True)
