"""commitcast_previous_change(user_id, before): a user's newest committed change below
an id (0: none), for the change-log write (subscriptions.changelog).

The write takes the commit-order lock inside its one statement, after that statement's
snapshot was taken: a plain subquery there would not see a change that committed while
the write waited for the lock. A VOLATILE PL/pgSQL function takes a fresh snapshot for
each statement it runs under READ COMMITTED, so, called once the lock is held, it sees
every change committed before. Under another isolation level it returns NULL (its
snapshot would be the transaction's): the write then carries nothing, and subscribers
read the log as before. PostgreSQL only; SQLite has nothing to create.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
CREATE FUNCTION commitcast_previous_change(wanted_user integer, before bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN NULL;
    END IF;
    RETURN COALESCE((
        SELECT max(change_audience.change_id) FROM change_audience
        WHERE change_audience.user_id = wanted_user AND change_audience.change_id < before
    ), 0);
END
$$
"""
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION commitcast_previous_change(integer, bigint)")
