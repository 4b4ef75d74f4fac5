"""A random id for the deployment (namespaces its broker channels).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "commitcast_deployment",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commitcast_deployment")),
    )
    op.bulk_insert(table, [{"id": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("commitcast_deployment")
