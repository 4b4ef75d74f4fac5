"""Helpers shared by the mutation modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar, cast

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Board, Card, Membership, Record, Role
from schema.context import Context
from schema.errors import ConcurrentChange, conflict, not_found
from schema.permissions import require_role

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


def _locked_with_role(
    model: type[Record], board_id: object, *, share: bool
) -> Select[Record, Role]:
    return (
        select(model, Membership.role)
        .outerjoin(
            Membership,
            (Membership.board_id == board_id) & (Membership.user_id == bindparam("viewer_id")),
        )
        .where(model.id == bindparam("pk"))
        .with_for_update(read=share, key_share=True, of=model)
    )


# Built once (every card or comment written runs one): building a statement costs more
# CPU than running it. (model, share) -> statement.
LOCKED_WITH_ROLE: dict[tuple[type[Record], bool], Select[Record, Role]] = {
    (model, share): _locked_with_role(model, board_id, share=share)
    for model, board_id in ((Card, Card.board_id), (Board, Board.id))
    for share in (False, True)
}


async def get_locked_for_member(
    session: AsyncSession,
    model: type[R],
    pk: int,
    viewer_id: int,
    allowed: frozenset[Role],
    kind: str,
    action: str,
    *,
    share: bool = False,
) -> R:
    """A card or board, locked until commit, once the viewer's role on its board is
    checked against `allowed` (require_role: NOT_FOUND for a missing record and for a
    non-member alike).

    The lock is get_or_not_found(for_update=True)'s, for a record about to be updated.
    With `share`, it is FOR KEY SHARE, for the parent of a row about to be inserted: it
    only keeps the row from being deleted until this transaction ends, so a concurrent
    delete waits instead of the insert failing on its foreign key (SQLite ignores both:
    its writers are serial). Record and role come in one statement: one round trip less
    than reading them in turn, in the mutations that run most often. The role is read in
    the statement's snapshot, as a statement of its own would read it: the membership
    row is not locked either way."""
    statement = LOCKED_WITH_ROLE[(model, share)]
    row = (await session.execute(statement, {"pk": pk, "viewer_id": viewer_id})).one_or_none()
    if row is None:
        raise not_found(kind)
    record, role = row
    require_role(role, allowed, kind, action)
    return cast("R", record)


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
    async with race_as_conflict(ctx, model, pk, kind), ctx.write() as session:
        yield session


@asynccontextmanager
async def race_as_conflict(
    ctx: Context, model: type[Record], pk: int, kind: str
) -> AsyncIterator[None]:
    """ConcurrentChange inside becomes CONFLICT with the record's committed version (or
    NOT_FOUND once it is gone)."""
    try:
        yield
    except ConcurrentChange:
        versions = await ctx.run_query(select(model.version).where(model.id == pk), {})
        if not versions:
            raise not_found(kind) from None
        raise conflict(kind, versions[0][0]) from None
