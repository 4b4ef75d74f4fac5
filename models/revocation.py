"""Revoked access tokens: what logOut wrote, until the tokens it names have expired.

A row either names one token (`token_id`, its jti) or every token of a user issued up
to a moment (`issued_through`, milliseconds since the epoch: logOut(allSessions)).
Rows are deleted once `expires_at` has passed: by then every token they name is
expired anyway.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, String, Table

from models.base import Base, UTCDateTime

token_revocations = Table(
    "token_revocations",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("token_id", String(64), nullable=True, index=True),
    Column("issued_through", BigInteger, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)
