"""updateCard on PostgreSQL: one statement, on asyncpg directly.

An update that applies (the viewer may edit the card, expectedVersion matches, the
assignee is a member, something differs) is one statement outside a transaction: it
finds the card and the viewer's role, updates what the input gives (the version, and
updated_at, as the session's flush would), and writes the change log from the rows its
UPDATE returns (subscriptions.changelog: LOG_CTES when a position is given, since the
card's board may change too; otherwise ONE_CHANGE_LOG_CTES, for the card's change
alone). PostgreSQL commits it as it ends.
Every other case (a refusal, nothing to change) then runs as a write transaction on the
driver, which reads, checks and answers exactly as the session path (schema.mutations
.cards, which SQLite keeps) does: BEGIN, the card and the viewer's role FOR NO KEY
UPDATE, the assignee's membership, the versioned UPDATE of what changed, the change-log
write, COMMIT.

Why one statement: the change log's commit-order lock is held from the change-log
write to the end of the COMMIT. With the COMMIT a round trip later, the lock was held
while the event loop came round to send it: in the benchmark's 200 changes/s, a fifth
of the time 8 to 16 writes stood waiting for it (pg_stat_activity). In one statement it
is held inside PostgreSQL only, from the write to the commit. And one round trip instead
of five (and a pooled connection's check), without SQLAlchemy's session around them:
its unit of work, identity map, flush and commit events, and each statement's execution
context cost more CPU than the statements.

Under a concurrent update of the same card, the UPDATE waits for the row and then
checks its conditions against the row as committed (READ COMMITTED), as the
transaction's FOR NO KEY UPDATE read does; the role is read in the statement's
snapshot, as there. Whether a moved card's board is announced is judged against the
position read before the wait, and when the row changed meanwhile the board is
announced whenever a position was given (an extra announcement costs a reload; a
missing one would leave a client's list out of order).

Capture is subscriptions.capture's own (update_written, hand_over): it happens exactly
when a write session would capture (captures), and the changes are those the session's
flush events make of the same UPDATE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import class_mapper

import models
from models.base import UTCDateTime
from models.database import fetch_on_driver, read_retrying_stale
from models.driver_snapshot import DriverWrite
from models.realtime import BoardAudience
from schema.context import Context
from schema.errors import ConcurrentChange, bad_input, not_found
from schema.mutations.common import LOCKED_WITH_ROLE, check_version, race_as_conflict
from schema.permissions import EDIT_CARDS, ROLE_ON_BOARD, require_role
from subscriptions.capture import captures, hand_over, sink_of, update_written
from subscriptions.changelog import (
    LOG_CTES,
    ONE_CHANGE_LOG_CTES,
    apply_written,
    log_parameters,
    record_changes_on_driver,
)
from subscriptions.changes import Change, ChangeOp

_CARDS = cast("Table", models.Card.__table__)
# One UPDATE per set of columns changed (at most 2**5 for updateCard's five), built once:
# building a statement costs more CPU than running it.
_UPDATES: dict[frozenset[str], Update] = {}


def _update(columns: frozenset[str]) -> Update:
    statement = _UPDATES.get(columns)
    if statement is None:
        values: dict[str, Any] = {
            name: bindparam(f"new_{name}", type_=_CARDS.c[name].type) for name in sorted(columns)
        }
        statement = _UPDATES[columns] = (
            update(_CARDS)
            .where(_CARDS.c.id == bindparam("pk"), _CARDS.c.version == bindparam("old_version"))
            # What the session's flush sets besides: Record.updated_at's onupdate, and the
            # version_id_col's next value.
            .values(
                **values,
                updated_at=bindparam("now", type_=UTCDateTime),
                version=_CARDS.c.version + 1,
            )
            .returning(_CARDS.c.version)
        )
    return statement


@dataclass(frozen=True, slots=True)
class CardUpdate:
    """What an updateCard asks, validated (schema.mutations.cards)."""

    pk: int
    expected: int | None
    # The attributes given, by name, except the assignee's.
    changes: dict[str, object]
    assignee_sent: bool
    assignee_pk: int | None

    @property
    def given(self) -> dict[str, object]:
        """Every attribute given, the assignee's included."""
        if not self.assignee_sent:
            return self.changes
        return {**self.changes, "assignee_id": self.assignee_pk}


async def update_card_on_driver(
    ctx: Context, engine: AsyncEngine, request: CardUpdate
) -> models.Card:
    """The card after the update (not attached to any session), as the session path
    returns it, with its errors: NOT_FOUND, FORBIDDEN, CONFLICT, BAD_USER_INPUT."""
    if request.given:
        card = await _in_one_statement(ctx, engine, request)
        if card is not None:
            return card
    return await _in_a_transaction(ctx, engine, request)


async def _in_a_transaction(ctx: Context, engine: AsyncEngine, request: CardUpdate) -> models.Card:
    viewer_id = ctx.require_viewer()
    committed: list[Change] = []
    pk = request.pk
    async with race_as_conflict(ctx, models.Card, pk, "Card"):
        # The BEGIN is the connection's first use (no ping before it): on a connection
        # PostgreSQL dropped it fails, and runs again on a fresh one.
        write = await read_retrying_stale(lambda: DriverWrite.open(engine))
        try:
            found = await write.rows(
                LOCKED_WITH_ROLE[(models.Card, False)], {"pk": pk, "viewer_id": viewer_id}
            )
            if not found:
                raise not_found("Card")
            card: models.Card = found[0][0]
            role = found[0][1]
            require_role(role, EDIT_CARDS, "Card", "edit cards")
            check_version("Card", card, request.expected)
            if request.assignee_pk is not None and not await write.rows(
                ROLE_ON_BOARD, {"user_id": request.assignee_pk, "board_id": card.board_id}
            ):
                raise bad_input("assigneeId", "must be a member of the card's board")
            changed = {
                name: value for name, value in request.given.items() if getattr(card, name) != value
            }
            if changed:
                committed = await _write(ctx, write, card, changed)
            await write.commit()
        finally:
            await write.close()
    _committed(ctx, committed)
    await ctx.wrote()
    return card


def _committed(ctx: Context, changes: list[Change]) -> None:
    """Hand what a committed write changed to the relay, as capture does after COMMIT:
    the changes someone may see."""
    sink = sink_of(ctx.write_sessions)
    seen = [change for change in changes if change.audience]
    if seen and sink is not None:
        hand_over(sink, seen)


async def _write(
    ctx: Context, write: DriverWrite, card: models.Card, changed: dict[str, object]
) -> list[Change]:
    """UPDATE what changed, and log the change: what the changes to publish are."""
    now = models.utcnow()
    parameters = {f"new_{name}": value for name, value in changed.items()}
    parameters.update(pk=card.id, old_version=card.version, now=now)
    versions = await write.execute(_update(frozenset(changed)), parameters)
    if not versions:  # (the row is locked: only if it was deleted before the lock)
        raise ConcurrentChange()
    card.__dict__.update(changed, version=versions[0][0], updated_at=now)
    if not captures(ctx.write_sessions):
        return []
    moved = not models.Card.realtime_parent_attributes.isdisjoint(changed)
    # models.Card.audience: the board's members.
    changes = update_written(card, card.id, BoardAudience(card.board_id), moved)
    await record_changes_on_driver(write, changes)
    return changes


_EDITORS = sorted(role.value for role in EDIT_CARDS)
_COLUMNS = tuple(_CARDS.c)
# The attribute of each column, in _COLUMNS' order (models.Card's are the column names).
_KEYS = tuple(models.Card.__mapper__.get_property_by_column(c).key for c in _COLUMNS)


async def _in_one_statement(
    ctx: Context, engine: AsyncEngine, request: CardUpdate
) -> models.Card | None:
    """The card, updated and its change logged, in one statement; None where the update
    does not apply as given (no row changed, nothing written)."""
    given = request.given
    logged = captures(ctx.write_sessions)
    check_assignee = request.assignee_pk is not None
    statement, names = one_statement(tuple(sorted(given)), check_assignee, logged, engine.dialect)
    now = models.utcnow()
    arguments = one_statement_arguments(
        names,
        given,
        pk=request.pk,
        viewer_id=ctx.require_viewer(),
        expected=request.expected,
        now=now,
    )
    # (Outside read_retrying_stale: the pooled connection is checked before the write,
    # which is never sent twice.)
    rows = await fetch_on_driver(engine, statement, *arguments)
    if not rows:
        return None
    card = new_card(zip(_KEYS, rows[0], strict=False))
    written = [row[len(_KEYS) :] for row in rows if row["ord"] is not None]
    if logged:
        # (The board's row is there when its card moved: see the module docstring.)
        moved = any(ord_ == _BOARD_ORD for ord_, *_ in written)
        committed = update_written(card, card.id, BoardAudience(card.board_id), moved)
        apply_written(written, committed, now)
        _committed(ctx, committed)
    await ctx.wrote()
    return card


def new_card(values: Iterable[tuple[str, Any]]) -> models.Card:
    """A Card with these attribute values, made as the ORM makes a loaded one (not
    attached to any session)."""
    # class_mapper configures the mappers where nothing in this process has yet (a
    # fresh server's first request may be this one).
    card: models.Card = class_mapper(models.Card).class_manager.new_instance()
    card.__dict__.update(values)
    return card


_CARD_ORD, _BOARD_ORD = 1, 2
# What updateCard sets (schema.mutations.cards).
_WRITABLE = frozenset({"title", "description", "position", "done", "assignee_id"})


def one_statement_arguments(
    names: tuple[str, ...],
    given: Mapping[str, object],
    *,
    pk: int,
    viewer_id: int,
    expected: int | None,
    now: datetime,
) -> list[Any]:
    """The arguments of one_statement's statement (`names`: its parameters' names) for
    an update of card `pk` by `viewer_id` giving the values `given`, at `now`."""
    parameters: dict[str, Any] = {f"new_{name}": value for name, value in given.items()}
    parameters.update(
        log_parameters(now),
        pk=pk,
        viewer_id=viewer_id,
        roles=_EDITORS,
        expected=expected,
        now=now,
    )
    return [parameters[name] for name in names]


@cache
def one_statement(
    columns: tuple[str, ...], check_assignee: bool, logged: bool, dialect: Dialect
) -> tuple[str, tuple[str, ...]]:
    """The statement for an update giving `columns`, as asyncpg runs it (its text and
    its parameters' names in placeholder order): at most 2**5 * 2 * 2 of them. Only
    names of _WRITABLE and the models' own go into its text; values are parameters.
    (Public for bench/, which times it with and without the change log: `logged`.)"""
    if not _WRITABLE.issuperset(columns):
        raise ValueError(f"updateCard writes {sorted(_WRITABLE)}, not {columns}")
    sets = ", ".join(f"{name} = :new_{name}" for name in columns)
    differs = " OR ".join(f"cards.{name} IS DISTINCT FROM :new_{name}" for name in columns)
    assignee = (
        "AND EXISTS (SELECT FROM memberships WHERE memberships.board_id = cards.board_id"
        " AND memberships.user_id = :new_assignee_id)"
        if check_assignee
        else ""
    )
    returned = ", ".join(f"updated.{column.name}" for column in _COLUMNS)
    updated = ChangeOp.UPDATED.value
    sql = f"""
WITH target AS MATERIALIZED (
    SELECT cards.id, cards.position AS old_position, cards.version AS old_version
    FROM cards JOIN memberships ON memberships.board_id = cards.board_id
        AND memberships.user_id = :viewer_id
    WHERE cards.id = :pk AND memberships.role = ANY(CAST(:roles AS TEXT[]))
), updated AS (
    UPDATE cards SET {sets},
        updated_at = CAST(:now AS TIMESTAMPTZ), version = cards.version + 1
    FROM target
    WHERE cards.id = target.id
        AND (CAST(:expected AS INTEGER) IS NULL OR cards.version = CAST(:expected AS INTEGER))
        AND ({differs})
        {assignee}
    RETURNING cards.*, target.old_position, target.old_version
)"""  # noqa: S608 - names only from _WRITABLE and the models (docstring)
    if logged and "position" not in columns:
        # The card's change alone (its board is announced only when it moves).
        sql += f""", change AS (
    SELECT CAST('{models.Card.realtime_typename}' AS TEXT) AS typename,
        CAST(id AS BIGINT) AS record_id, CAST('{updated}' AS TEXT) AS op,
        CAST(version AS INTEGER) AS version
    FROM updated
), concerned AS MATERIALIZED (
    SELECT member.user_id FROM updated CROSS JOIN LATERAL (
        SELECT user_id FROM memberships WHERE memberships.board_id = updated.board_id
        OFFSET 0
    ) AS member
),{ONE_CHANGE_LOG_CTES}
SELECT {returned}, written.ord, written.id, written.users, written.previous
FROM updated LEFT JOIN written ON true
"""  # noqa: S608
    elif logged:
        # The card's change, and its board's when it moved (see the module docstring).
        sql += f""", input AS MATERIALIZED (
    SELECT CAST('{models.Card.realtime_typename}' AS TEXT) AS typename,
        CAST(id AS BIGINT) AS record_id, CAST('{updated}' AS TEXT) AS op,
        CAST(version AS INTEGER) AS version, CAST({_CARD_ORD} AS BIGINT) AS ord
    FROM updated
    UNION ALL
    SELECT '{models.Board.realtime_typename}', board_id, '{updated}', NULL, {_BOARD_ORD}
    FROM updated
    WHERE old_position IS DISTINCT FROM position OR version <> old_version + 1
), given AS (
    SELECT CAST(NULL AS BIGINT) AS ord, CAST(NULL AS INTEGER) AS user_id WHERE false
), pending_boards AS (
    SELECT input.ord, updated.board_id FROM input, updated
), pending_users AS (
    SELECT CAST(NULL AS BIGINT) AS ord, CAST(NULL AS INTEGER) AS user_id WHERE false
),{LOG_CTES}
SELECT {returned}, written.ord, written.id, written.users, written.previous
FROM updated LEFT JOIN written ON true
ORDER BY written.ord
"""  # noqa: S608
    else:
        sql += f"""
SELECT {returned}, CAST(NULL AS BIGINT) AS ord, NULL, NULL, NULL FROM updated
"""  # noqa: S608
    compiled = text(sql).compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ())
