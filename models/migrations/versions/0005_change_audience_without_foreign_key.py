"""change_audience loses its foreign key to change_log.

Every change-log write inserts a change's row and its audience rows in one statement,
and retention deletes the audience rows before the changes, so the key guarded nothing
those two do not already keep. It cost one lookup per audience row, inside the
transaction's commit-order lock: for a change to a board of 1,000 members, about half
of the write (4 of 9 ms on the benchmark machine).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "fk_change_audience_change_id_change_log"


def upgrade() -> None:
    # (Batch mode: SQLite rebuilds the table to drop a constraint; PostgreSQL alters it.)
    with op.batch_alter_table("change_audience") as batch:
        batch.drop_constraint(_KEY, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("change_audience") as batch:
        batch.create_foreign_key(_KEY, "change_log", ["change_id"], ["id"], ondelete="CASCADE")
