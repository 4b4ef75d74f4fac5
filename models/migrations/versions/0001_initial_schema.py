"""Initial schema: users, boards, memberships, cards, comments.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A deleted record's global id must never name a new record (a late DELETED would
# evict it from client caches): SQLite reuses the highest rowid without AUTOINCREMENT.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def record_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        *record_columns(),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        **NEVER_REUSE_IDS,
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "boards",
        *record_columns(),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_boards_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boards")),
        **NEVER_REUSE_IDS,
    )
    op.create_index(op.f("ix_boards_owner_id"), "boards", ["owner_id"])

    op.create_table(
        "memberships",
        *record_columns(),
        sa.Column("board_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "OWNER", "EDITOR", "VIEWER",
                name="role", native_enum=False, create_constraint=True, length=16,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["board_id"], ["boards.id"],
            name=op.f("fk_memberships_board_id_boards"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"],
            name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("board_id", "user_id", name="uq_memberships_board_user"),
        **NEVER_REUSE_IDS,
    )
    op.create_index(op.f("ix_memberships_user_id"), "memberships", ["user_id"])

    op.create_table(
        "cards",
        *record_columns(),
        sa.Column("board_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("position", sa.Float(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignee_id"], ["users.id"],
            name=op.f("fk_cards_assignee_id_users"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_cards_author_id_users")),
        sa.ForeignKeyConstraint(
            ["board_id"], ["boards.id"], name=op.f("fk_cards_board_id_boards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        **NEVER_REUSE_IDS,
    )
    op.create_index(op.f("ix_cards_board_id"), "cards", ["board_id"])

    op.create_table(
        "comments",
        *record_columns(),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_comments_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_comments_card_id_cards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
        **NEVER_REUSE_IDS,
    )
    op.create_index(op.f("ix_comments_card_id"), "comments", ["card_id"])


def downgrade() -> None:
    for table in ("comments", "cards", "memberships", "boards", "users"):
        op.drop_table(table)
