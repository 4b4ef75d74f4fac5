"""The change log (transactional outbox): one row per committed change, written in the
same transaction as the data, with the users it concerns.

It is the source of truth for delivery: broker messages only wake subscribers up, and a
subscriber reads what it has not yet delivered from here. Ids are assigned at commit
time in commit order (see subscriptions.changelog), so "every id up to N" is a
gap-free resume position.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, text

from models.base import Base, UTCDateTime

# SQLite only auto-assigns INTEGER PRIMARY KEY columns; PostgreSQL gets a BIGINT.
ChangeId = BigInteger().with_variant(Integer(), "sqlite")

change_log = Table(
    "change_log",
    Base.metadata,
    Column("id", ChangeId, primary_key=True, autoincrement=True),
    Column("committed_at", UTCDateTime, nullable=False),
    Column("typename", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("op", String(8), nullable=False),
    Column("version", Integer, nullable=True),
    # Set once a relay has published the change; the sweeper publishes what a crashed
    # process committed but never published.
    Column("published_at", UTCDateTime, nullable=True),
    Index(
        "ix_change_log_unpublished",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    Index("ix_change_log_committed_at", "committed_at"),
    sqlite_autoincrement=True,  # ids are positions: never reused
)

# Who each change concerns. No foreign key to change_log: the write inserts a change
# and its audience in one statement (subscriptions.changelog) and retention deletes the
# audience first, and a key would cost a lookup per audience row inside the write's
# commit-order lock (1,000 of them for a change to a board of 1,000 members).
change_audience = Table(
    "change_audience",
    Base.metadata,
    Column("user_id", Integer, primary_key=True),
    Column("change_id", ChangeId, primary_key=True, index=True),
)
