"""Helpers shared by the mutation modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Record
from schema.context import Context
from schema.errors import ConcurrentChange, conflict, not_found

R = TypeVar("R", bound=Record)


# Row lock for a record about to be updated: PostgreSQL's FOR NO KEY UPDATE, the lock an
# UPDATE itself takes, so inserts that reference the row are not blocked. SQLite ignores
# it (its write transactions are already serial: BEGIN IMMEDIATE).
FOR_UPDATE = {"key_share": True}


async def get_or_not_found(
    session: AsyncSession, model: type[R], pk: int, kind: str, *, for_update: bool = False
) -> R:
    """`for_update` locks the row until commit: a concurrent writer waits and then reads
    the committed version, so expectedVersion is checked against the newest state and
    an update without expectedVersion applies after the other (instead of failing)."""
    record = await session.get(model, pk, with_for_update=FOR_UPDATE if for_update else None)
    if record is None:
        raise not_found(kind)
    return record


async def lock_parent(session: AsyncSession, model: type[Record], pk: int) -> None:
    """Keep `model` row `pk` from being deleted until this transaction ends (FOR KEY
    SHARE on PostgreSQL), before inserting a row that references it: a concurrent
    delete then waits, instead of this insert failing on its foreign key. SQLite
    ignores it (its writers are serial)."""
    await session.execute(
        select(model.id).where(model.id == pk).with_for_update(read=True, key_share=True)
    )


def check_version(kind: str, record: Record, expected: int | None) -> None:
    if expected is not None and expected != record.version:
        raise conflict(kind, record.version)


@asynccontextmanager
async def write_record(
    ctx: Context, model: type[Record], pk: int, kind: str
) -> AsyncIterator[AsyncSession]:
    """A write transaction on one record that turns a lost race into CONFLICT.

    `expectedVersion` is checked against what the transaction read; if another writer
    commits in between, the versioned UPDATE matches no row and SQLAlchemy raises
    StaleDataError (ConcurrentChange here), which is the same conflict seen a moment later.
    """
    try:
        async with ctx.write() as session:
            yield session
    except ConcurrentChange:
        versions = await ctx.run_query(select(model.version).where(model.id == pk), {})
        if not versions:
            raise not_found(kind) from None
        raise conflict(kind, versions[0]) from None
