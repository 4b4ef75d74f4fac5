"""Revoked access tokens (logOut).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_revocations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=True),
        sa.Column("issued_through", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"],
            name=op.f("fk_token_revocations_user_id_users"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_revocations")),
    )
    op.create_index(op.f("ix_token_revocations_user_id"), "token_revocations", ["user_id"])
    op.create_index(op.f("ix_token_revocations_token_id"), "token_revocations", ["token_id"])
    op.create_index(op.f("ix_token_revocations_expires_at"), "token_revocations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("token_revocations")
