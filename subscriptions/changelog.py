"""Reading and writing the change log (models.changelog).

Commit order: on PostgreSQL, sequence values are handed out before commit, so a
transaction that took id 10 can commit after one that took id 11, and a reader that saw
11 would skip 10 forever. Here ids are taken only at the very end of a transaction,
under a transaction-scoped advisory lock that is held until COMMIT: the next
transaction's ids come after this one's commit. So every id a reader can see has all
smaller ids of the log committed before it, and "everything after N" has no holes.
SQLite has one writer at a time, which gives the same order by itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CompoundSelect,
    Select,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session

from models import change_audience, change_log, utcnow
from models.database import fetch_in_transaction, fetch_on_driver
from models.deployment import deployment
from models.driver_snapshot import DriverWrite
from models.keys import in_keys
from models.realtime import BoardAudience, RecordKey
from subscriptions.changes import Change, ChangeOp

# Any constant: it only has to be the same for every process of a deployment.
_COMMIT_ORDER_LOCK = 0x636F6D6D6974_01
# Changes concerning more users than this are written without their users' previous
# change (see _WRITE_POSTGRESQL): their subscribers read the log, in batched reads.
PREVIOUS_LIMIT = 32


@dataclass(frozen=True, slots=True)
class LoggedChange:
    id: int
    typename: str
    record_id: int
    op: ChangeOp
    version: int | None
    # When the change was written, just before its COMMIT (the writing process's clock).
    committed_at: datetime | None = None


def resolves_audiences(session: Session) -> bool:
    """Whether record_changes resolves Change.pending itself (in its one statement)."""
    return session.connection().dialect.name == "postgresql"


def record_changes(session: Session, changes: Sequence[Change]) -> None:
    """Write `changes` (and who they concern) in the session's transaction, just before
    COMMIT, and give each its change id. Runs inside a SQLAlchemy event: synchronous.

    Pending audiences (only where resolves_audiences) become users in `audience`. A
    change that concerns nobody is not written: it keeps no id and an empty audience."""
    connection = session.connection()
    now = utcnow()
    if connection.dialect.name == "postgresql":
        _write_postgresql(connection, changes, now)
    else:
        if any(change.pending for change in changes):
            raise ValueError("pending audiences are resolved on PostgreSQL only")
        _write_generic(connection, [c for c in changes if c.audience], now)


# One round trip instead of four (audience query, lock, INSERT ... RETURNING, audience
# INSERT):
# - `concerned` is who each change concerns: the users given, plus the members of
#   pending board audiences and the board peers of pending user audiences (the queries
#   of subscriptions.capture._resolve_audiences, run in the same transaction). Each
#   lookup is a LATERAL subquery that OFFSET 0 keeps from being flattened into a join:
#   the statement runs as a generic plan, which guesses 10 rows for each unnest(), and
#   as a join the planner hashed them against a scan of all of memberships (0.3 of the
#   statement's 0.45 ms with 1,200 memberships, and growing with the table). This way
#   each pending audience is an index lookup, whatever the table's size.
# - Only changes that concern someone (`kept`) are written, numbered in input order.
# - change_log_id_seq is the sequence of change_log.id (a BIGSERIAL, migration 0003;
#   a test checks the name): ids are taken explicitly so that they can follow the lock.
# - `locked` is MATERIALIZED and `ids` reads it, so every nextval() runs after the lock
#   is held (held until COMMIT): the module docstring says why that order matters.
# - The ids are paired with the kept rows by rank, smallest id to the first change, so
#   they follow the order of `changes` whatever order nextval() ran in.
# - Both INSERTs are data-modifying CTEs of one statement: a change and its audience
#   are written together or not at all (change_audience has no foreign key to check,
#   see models.changelog).
# - `previous` is, per change and user, the user's change right before it (NULL where
#   not looked up, 0 where there is none): this statement's own earlier change for the
#   user, or else the newest committed one below it, which commitcast_previous_change
#   (migration 0006) looks up. That function sees what committed while this statement
#   waited for the lock (a subquery here would not: its snapshot predates the lock).
#   It runs after the lock (`concerns` reads `numbered`), and only for changes that
#   concern at most PREVIOUS_LIMIT users: one index lookup each, under the lock. The
#   relay sends it with the wake-up, so a subscriber at that position needs no log
#   read (subscriptions.wakeups).
#
# What the change-log write reads (CTEs of the same statement): `input` (typename,
# record_id, op, version, ord: the changes, ord counting from 1), `given` (ord, user_id:
# users given), `pending_boards` (ord, board_id) and `pending_users` (ord, user_id): the
# audiences it resolves. Here from parameters; schema.mutations.card_update makes them
# from the rows its UPDATE returns, in one statement with the write (LOG_CTES).
_FROM_PARAMETERS = """
input AS MATERIALIZED (
    SELECT * FROM unnest(
        CAST(:typenames AS TEXT[]),
        CAST(:record_ids AS BIGINT[]),
        CAST(:ops AS TEXT[]),
        CAST(:versions AS INTEGER[])
    ) WITH ORDINALITY AS input(typename, record_id, op, version, ord)
), given AS (
    SELECT * FROM unnest(CAST(:audience_ords AS BIGINT[]), CAST(:audience_users AS INTEGER[]))
        AS given(ord, user_id)
), pending_boards AS (
    SELECT * FROM unnest(CAST(:board_ords AS BIGINT[]), CAST(:board_ids AS INTEGER[]))
        AS pending(ord, board_id)
), pending_users AS (
    SELECT * FROM unnest(CAST(:user_ords AS BIGINT[]), CAST(:user_ids AS INTEGER[]))
        AS pending(ord, user_id)
)"""

# Both forms of the write below log the changes `numbered` holds (id and the `input`
# columns) the same way.
_LOGGED = """logged AS (
    INSERT INTO change_log (id, committed_at, typename, record_id, op, version)
    SELECT id, CAST(:committed_at AS TIMESTAMPTZ), typename, record_id, op, version
    FROM numbered
)"""

# The write itself, as CTEs ending in `written` (ord, id, users, previous: one row per
# change kept). Parameters :lock_key, :committed_at and :previous_limit.
# `locked` reads `kept`: the lock is taken once every change and audience is known (in
# a statement that also updates, once its UPDATE is done: a row lock it waits for is
# not waited for holding the commit-order lock), and not at all when nothing is kept.
LOG_CTES = f"""
concerned AS MATERIALIZED (
    SELECT ord, user_id FROM given
    UNION
    SELECT pending_boards.ord, member.user_id
    FROM pending_boards CROSS JOIN LATERAL (
        SELECT user_id FROM memberships WHERE memberships.board_id = pending_boards.board_id
        OFFSET 0
    ) AS member
    UNION
    SELECT ord, user_id FROM pending_users
    UNION
    SELECT pending_users.ord, peer.user_id
    FROM pending_users CROSS JOIN LATERAL (
        SELECT board_id FROM memberships WHERE memberships.user_id = pending_users.user_id
        OFFSET 0
    ) AS mine CROSS JOIN LATERAL (
        SELECT user_id FROM memberships WHERE memberships.board_id = mine.board_id
        OFFSET 0
    ) AS peer
), kept AS MATERIALIZED (
    SELECT input.*, row_number() OVER (ORDER BY input.ord) AS rank
    FROM input
    WHERE EXISTS (SELECT FROM concerned WHERE concerned.ord = input.ord)
), locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(:lock_key) FROM (SELECT FROM kept LIMIT 1) AS any_kept
), ids AS MATERIALIZED (
    SELECT nextval('change_log_id_seq'::regclass) AS id FROM locked, kept
), ranked AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY id) AS rank FROM ids
), numbered AS MATERIALIZED (
    SELECT ranked.id, kept.* FROM kept JOIN ranked USING (rank)
), {_LOGGED}, audience AS (
    INSERT INTO change_audience (user_id, change_id)
    SELECT concerned.user_id, numbered.id FROM concerned JOIN numbered USING (ord)
), concerns AS MATERIALIZED (
    SELECT numbered.ord, numbered.id, concerned.user_id,
        lag(numbered.id) OVER (PARTITION BY concerned.user_id ORDER BY numbered.id) AS earlier,
        count(*) OVER (PARTITION BY numbered.ord) AS audience_size
    FROM numbered JOIN concerned USING (ord)
), written AS (
    SELECT ord, id, array_agg(user_id ORDER BY user_id) AS users,
        array_agg(
            CASE WHEN audience_size <= :previous_limit
                THEN COALESCE(earlier, commitcast_previous_change(user_id, id))
            END
            ORDER BY user_id
        ) AS previous
    FROM concerns
    GROUP BY ord, id
)"""  # noqa: S608 - constants only

# LOG_CTES for a statement that logs at most one change (schema.mutations.card_update's
# update that does not move its card): the same `written` row, without what ordering and
# numbering several changes takes (`kept`, `ranked` and `concerns`: each sort and window
# a plan node of its own, which PostgreSQL sets up and tears down at every run). With a
# single change, its id follows the lock as there, and each user's previous change is
# the newest committed one below it (no `earlier` of the statement's own). It reads
# `change` (typename, record_id, op, version: at most one row) and `concerned`
# (user_id: each user the change concerns, once). Measured (PostgreSQL 15, one user's
# card renamed back to back): the UPDATE alone 0.31 ms, with LOG_CTES 0.48 ms, with
# these 0.38 ms.
ONE_CHANGE_LOG_CTES = f"""
locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(:lock_key) FROM (SELECT FROM concerned LIMIT 1) AS any_concerned
), numbered AS MATERIALIZED (
    SELECT nextval('change_log_id_seq'::regclass) AS id, change.* FROM locked, change
), {_LOGGED}, audience AS (
    INSERT INTO change_audience (user_id, change_id)
    SELECT concerned.user_id, numbered.id FROM concerned, numbered
), written AS (
    SELECT CAST(1 AS BIGINT) AS ord, numbered.id, array_agg(user_id ORDER BY user_id) AS users,
        array_agg(
            CASE WHEN (SELECT count(*) FROM concerned) <= :previous_limit
                THEN commitcast_previous_change(user_id, numbered.id)
            END
            ORDER BY user_id
        ) AS previous
    FROM numbered, concerned
    GROUP BY numbered.id
)"""  # noqa: S608 - constants only

_WRITE_POSTGRESQL = text(
    "WITH"
    + _FROM_PARAMETERS
    + ","
    + LOG_CTES
    + "\nSELECT ord, id, users, previous FROM written ORDER BY ord\n"
)


@cache
def _write_postgresql_on_driver(dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    """_WRITE_POSTGRESQL as asyncpg runs it: its text and its parameters' names in
    placeholder order."""
    compiled = _WRITE_POSTGRESQL.compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ())


def _write_postgresql(connection: Connection, changes: Sequence[Change], now: datetime) -> None:
    statement, names = _write_postgresql_on_driver(connection.dialect)
    parameters = _write_parameters(changes, now)
    rows: Iterable[Any] | None = fetch_in_transaction(
        connection, statement, *(parameters[name] for name in names)
    )
    if rows is None:  # (no transaction open on the driver: SQLAlchemy begins one)
        rows = connection.execute(_WRITE_POSTGRESQL, parameters)
    apply_written(rows, changes, now)


async def record_changes_on_driver(write: DriverWrite, changes: Sequence[Change]) -> None:
    """record_changes, in a DriverWrite's transaction (PostgreSQL): the same statement,
    the same ids, audiences and previous changes. Just before its COMMIT, as there."""
    now = utcnow()
    statement, names = _write_postgresql_on_driver(write.dialect)
    parameters = _write_parameters(changes, now)
    rows = await write.fetch(statement, *(parameters[name] for name in names))
    apply_written(rows, changes, now)


def log_parameters(now: datetime) -> dict[str, Any]:
    """The parameters of LOG_CTES besides its inputs (`now`: the commit time to log)."""
    return {"lock_key": _COMMIT_ORDER_LOCK, "committed_at": now, "previous_limit": PREVIOUS_LIMIT}


def _write_parameters(changes: Sequence[Change], now: datetime) -> dict[str, Any]:
    given: list[tuple[int, int]] = []
    boards: list[tuple[int, int]] = []
    users: list[tuple[int, int]] = []
    for ord_, change in enumerate(changes, start=1):  # WITH ORDINALITY counts from 1
        given.extend((ord_, user) for user in change.audience)
        for audience in change.pending:
            if isinstance(audience, BoardAudience):
                boards.append((ord_, audience.board_id))
            else:
                users.append((ord_, audience.user_id))
    return {
        **log_parameters(now),
        "typenames": [change.key.typename for change in changes],
        "record_ids": [change.key.id for change in changes],
        "ops": [change.op.value for change in changes],
        "versions": [change.version for change in changes],
        "audience_ords": [o for o, _ in given],
        "audience_users": [u for _, u in given],
        "board_ords": [o for o, _ in boards],
        "board_ids": [b for _, b in boards],
        "user_ords": [o for o, _ in users],
        "user_ids": [u for _, u in users],
    }


def apply_written(rows: Iterable[Any], changes: Sequence[Change], now: datetime) -> None:
    """Give each change what the write returned for it (`written`'s rows: ord, id, users,
    previous): its id, users and previous changes; `now` is its commit time."""
    written = {
        ord_: (change_id, set(seen_by), _known(seen_by, previous))
        for ord_, change_id, seen_by, previous in rows
    }
    for ord_, change in enumerate(changes, start=1):
        change.change_id, change.audience, change.previous = written.get(ord_, (None, set(), {}))
        change.pending = set()
        change.committed_at = now


def _known(users: Sequence[int], previous: Sequence[int | None]) -> dict[int, int]:
    """{user: the user's change before this one (0: none)} where the write looked it
    up; NULL is "not looked up"."""
    return {
        user: earlier for user, earlier in zip(users, previous, strict=True) if earlier is not None
    }


def _write_generic(connection: Connection, changes: Sequence[Change], now: datetime) -> None:
    """SQLite: one writer at a time already gives commit order; two statements."""
    if not changes:
        return
    ids = (
        connection.execute(
            insert(change_log).returning(change_log.c.id, sort_by_parameter_order=True),
            [
                {
                    "committed_at": now,
                    "typename": change.key.typename,
                    "record_id": change.key.id,
                    "op": change.op.value,
                    "version": change.version,
                }
                for change in changes
            ],
        )
        .scalars()
        .all()
    )
    audience: list[dict[str, int]] = []
    for change, change_id in zip(changes, ids, strict=True):
        change.change_id = change_id
        change.committed_at = now
        audience.extend({"user_id": user, "change_id": change_id} for user in change.audience)
    if audience:
        connection.execute(insert(change_audience), audience)


async def changes_since(
    connection: AsyncConnection, user_id: int, after: int, limit: int
) -> list[LoggedChange]:
    """The user's changes with ids above `after`, oldest first, at most `limit`."""
    rows = await connection.execute(
        select(*_COLUMNS)
        .join(change_audience, change_audience.c.change_id == change_log.c.id)
        .where(change_audience.c.user_id == user_id, change_audience.c.change_id > after)
        .order_by(change_audience.c.change_id)
        .limit(limit)
    )
    return [_logged(row) for row in rows]


def _logged(row: Any) -> LoggedChange:
    return LoggedChange(
        row.id, row.typename, row.record_id, ChangeOp(row.op), row.version, row.committed_at
    )


_COLUMNS = (
    change_log.c.id,
    change_log.c.typename,
    change_log.c.record_id,
    change_log.c.op,
    change_log.c.version,
    change_log.c.committed_at,
)

# (user id, after): one request to changes_since_each.
LogRequest = tuple[int, int]


async def changes_since_each(
    connection: AsyncConnection, requests: Collection[LogRequest], limit: int
) -> dict[LogRequest, list[LoggedChange]]:
    """changes_since(connection, user, after, limit) for each (user, after) request, in
    one statement (subscriptions.log_reader batches the requests of many users).

    PostgreSQL: the requests travel as two array parameters, unnested into rows, and
    each row finds its user's change ids in a LATERAL subquery: the same range scan of
    change_audience's primary key (user_id, change_id) as changes_since, with its own
    LIMIT; one statement text whatever the number of requests (prepared once).
    SQLite (embedded, small): each request's changes_since query, joined by UNION ALL;
    keep requests to a few hundred (its compound-select and parameter limits).
    """
    keys = list(dict.fromkeys(requests))
    if not keys:
        return {}
    statement: Select[Any] | CompoundSelect[Any]
    parameters: dict[str, Any] = {}
    if connection.dialect.name == "postgresql":
        statement = _each_postgresql(limit)
        parameters = {"users": [user for user, _ in keys], "afters": [after for _, after in keys]}
    else:
        parts = [
            select(
                literal(user, BigInteger).label("req_user"),
                literal(after, BigInteger).label("req_after"),
                *_COLUMNS,
            )
            .join(change_audience, change_audience.c.change_id == change_log.c.id)
            .where(change_audience.c.user_id == user, change_audience.c.change_id > after)
            .order_by(change_audience.c.change_id)
            .limit(limit)
            .subquery()
            for user, after in keys
        ]
        statement = union_all(*(select(part) for part in parts))
    return _answers(keys, await connection.execute(statement, parameters))


async def changes_since_each_on_driver(
    engine: AsyncEngine, requests: Collection[LogRequest], limit: int
) -> dict[LogRequest, list[LoggedChange]]:
    """changes_since_each on PostgreSQL, its statement run on asyncpg directly
    (models.database.fetch_on_driver): the same answers, for about 0.4 ms of CPU less
    per read (one per woken user hub and change, as a rule)."""
    keys = list(dict.fromkeys(requests))
    if not keys:
        return {}
    statement, names, constants = _each_postgresql_on_driver(limit, engine.dialect)
    parameters = {
        **constants,
        "users": [user for user, _ in keys],
        "afters": [after for _, after in keys],
    }
    rows = await fetch_on_driver(engine, statement, *(parameters[name] for name in names))
    # (asyncpg decodes TIMESTAMPTZ as an aware UTC datetime, as UTCDateTime gives it.)
    return _answers(keys, rows)


def _answers(keys: list[LogRequest], rows: Iterable[Any]) -> dict[LogRequest, list[LoggedChange]]:
    """Each request's changes, from rows of (req_user, req_after, *_COLUMNS)."""
    found: dict[LogRequest, list[LoggedChange]] = {key: [] for key in keys}
    for user, after, change_id, typename, record_id, op, version, committed_at in rows:
        found[(user, after)].append(
            LoggedChange(change_id, typename, record_id, ChangeOp(op), version, committed_at)
        )
    for listed in found.values():
        listed.sort(key=lambda change: change.id)  # rows come in order per request only
    return found


@cache
def _each_postgresql_on_driver(
    limit: int, dialect: Dialect
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """_each_postgresql(limit) as asyncpg runs it: its text, its parameters' names in
    placeholder order, and the values fixed in it (the limit)."""
    compiled = _each_postgresql(limit).compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    constants = {name: value for name, value in compiled.params.items() if value is not None}
    return compiled.string, names, constants


@cache
def _each_postgresql(limit: int) -> Select[Any]:
    """changes_since_each's PostgreSQL statement, built once per limit (building it cost
    several times what running it does, per py-spy; a reused statement also keeps its
    cache key). Parameters: `users` and `afters`, the requests as two arrays."""
    wanted = (
        func.unnest(
            cast(bindparam("users", type_=ARRAY(BigInteger)), ARRAY(BigInteger)),
            cast(bindparam("afters", type_=ARRAY(BigInteger)), ARRAY(BigInteger)),
        )
        .table_valued(column("user_id", BigInteger), column("after_id", BigInteger))
        .render_derived(name="wanted")
    )
    # Per request, only the positions (an index-only scan of the primary key, in order,
    # stopping at the limit); change_log is joined once, outside: inside the LATERAL,
    # the planner (which cannot know how many changes a user has after a position) may
    # pick a hash join that scans change_log once per request.
    positions = (
        select(change_audience.c.change_id)
        .where(
            change_audience.c.user_id == wanted.c.user_id,
            change_audience.c.change_id > wanted.c.after_id,
        )
        .order_by(change_audience.c.change_id)
        .limit(limit)
        .lateral("positions")
    )
    return select(
        wanted.c.user_id.label("req_user"), wanted.c.after_id.label("req_after"), *_COLUMNS
    ).select_from(
        wanted.join(positions, true()).join(change_log, change_log.c.id == positions.c.change_id)
    )


@dataclass(frozen=True, slots=True)
class LogBounds:
    """`head`: the newest change id (resume from here = "from now on").
    `trimmed_through`: retention deleted every change up to here."""

    head: int
    trimmed_through: int


async def bounds(connection: AsyncConnection) -> LogBounds:
    trimmed = int(await connection.scalar(select(deployment.c.trimmed_through)) or 0)
    newest = await connection.scalar(select(func.max(change_log.c.id)))
    return LogBounds(head=max(int(newest or 0), trimmed), trimmed_through=trimmed)


# Ids per UPDATE when marking, however many publishes a relay gathered into one mark:
# PostgreSQL takes them as one array (models.keys), SQLite as one parameter each, well
# under its limit (32766).
MARK_CHUNK = 5000
# Built once: one statement text (and one prepared statement) for any number of ids.
_MARK = (
    update(change_log).where(in_keys(change_log.c.id, "ids")).values(published_at=bindparam("now"))
)


async def mark_published(connection: AsyncConnection, ids: Sequence[int]) -> None:
    now = utcnow()
    for start in range(0, len(ids), MARK_CHUNK):
        chunk = ids[start : start + MARK_CHUNK]
        await connection.execute(_MARK, {"ids": chunk, "now": now})


async def unpublished(
    connection: AsyncConnection, older_than: datetime, limit: int
) -> list[Change]:
    """Committed changes nobody published (their process died between commit and
    publish), locked against other sweepers where the database can (SKIP LOCKED)."""
    rows = (
        await connection.execute(
            select(*_COLUMNS)
            .where(change_log.c.published_at.is_(None), change_log.c.committed_at < older_than)
            .order_by(change_log.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not rows:
        return []
    audiences: dict[int, set[int]] = {row.id: set() for row in rows}
    for change_id, user_id in await connection.execute(
        select(change_audience.c.change_id, change_audience.c.user_id).where(
            in_keys(change_audience.c.change_id, "ids")
        ),
        {"ids": list(audiences)},
    ):
        audiences[change_id].add(user_id)
    return [
        Change(
            RecordKey(row.typename, row.record_id),
            ChangeOp(row.op),
            row.version,
            audiences[row.id],
            change_id=row.id,
            committed_at=row.committed_at,
        )
        for row in rows
    ]


async def trim(engine: AsyncEngine, retention: timedelta) -> int:
    """Delete changes older than `retention`; return how many. The watermark makes a
    cursor into the deleted range answer RESYNC instead of silently skipping."""
    cutoff = utcnow() - retention
    async with engine.begin() as connection:
        last = await connection.scalar(
            select(func.max(change_log.c.id)).where(change_log.c.committed_at < cutoff)
        )
        if last is None:
            return 0
        await connection.execute(
            change_audience.delete().where(change_audience.c.change_id <= last)
        )
        deleted = await connection.execute(change_log.delete().where(change_log.c.id <= last))
        await connection.execute(
            update(deployment)
            .where(deployment.c.trimmed_through < last)
            .values(trimmed_through=last)
        )
        return deleted.rowcount
