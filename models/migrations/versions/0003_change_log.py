"""The change log (transactional outbox) and the retention watermark.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("id", CHANGE_ID, autoincrement=True, nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("typename", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_log")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_change_log_unpublished",
        "change_log",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_index("ix_change_log_committed_at", "change_log", ["committed_at"])
    op.create_table(
        "change_audience",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("change_id", CHANGE_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["change_id"], ["change_log.id"],
            name=op.f("fk_change_audience_change_id_change_log"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "change_id", name=op.f("pk_change_audience")),
    )
    op.create_index(op.f("ix_change_audience_change_id"), "change_audience", ["change_id"])
    op.add_column(
        "commitcast_deployment",
        sa.Column("trimmed_through", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("commitcast_deployment") as batch:
        batch.drop_column("trimmed_through")
    op.drop_table("change_audience")
    op.drop_table("change_log")
