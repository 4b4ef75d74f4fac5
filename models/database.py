"""Engine and session factories (created by the app's lifespan, never at import time)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from asyncpg import introspection  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from models.connection_check import heard, open_and_quiet, watch
from models.kept_connections import give_back, kept_for

# Execution option that asks SQLite for BEGIN IMMEDIATE: a write transaction takes the
# write lock up front and waits for it (busy timeout) instead of failing with
# "database is locked" when it upgrades from a read lock half-way through.
SQLITE_IMMEDIATE = "commitcast_sqlite_immediate"

SQLITE_BUSY_TIMEOUT_SECONDS = 30

# PostgreSQL connections a process keeps open between uses, and how many more it may
# open for a burst (closed again when given back to a full pool). A request, a
# delivery's snapshot, the change-log reads and the relay each hold one for a few
# round trips. With SQLAlchemy's 5, bursts beyond it were served by new connections
# that were closed right after (each: a connection start-up, then every statement
# prepared again): at 170 to 200 changes/s with 1,000 subscriptions, about six a
# second, and mutations queued for connections (README, Performance).
DEFAULT_POOL_SIZE = 15
DEFAULT_MAX_OVERFLOW = 10

T = TypeVar("T")

logger = logging.getLogger("commitcast.database")

# Set while a read that can run again takes its connection (read_retrying_stale): the
# checkout skips its ping.
_RETRYABLE_READ: ContextVar[bool] = ContextVar("commitcast_retryable_read", default=False)
# Set while a write transaction takes its connection (begin_on_checkout): the checkout's
# liveness check is the transaction's own BEGIN.
_BEGIN_AT_CHECKOUT: ContextVar[bool] = ContextVar("commitcast_begin_at_checkout", default=False)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> AsyncEngine:
    """The process's engine. `pool_size` and `max_overflow` apply to PostgreSQL (SQLite
    keeps SQLAlchemy's pool: one writer at a time, and no connection start-up to save)."""
    if is_sqlite(url):
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
    _ping_on_checkout(engine)
    _plan_once_per_connection(engine)
    return engine


def single_statement_reads(engine: AsyncEngine) -> AsyncEngine:
    """`engine`, for connections that run one read-only statement each (the change-log
    reads, the revocation check): on PostgreSQL without a transaction around it (one
    statement sees one snapshot anyway), which saves the BEGIN and ROLLBACK round trips
    the driver would add to every such read. SQLite keeps its explicit BEGIN (see
    _configure_sqlite), so it is left as it is."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def read_retrying_stale(read: Callable[[], Awaitable[T]]) -> T:
    """Run `read` (which checks out a pooled connection, reads and gives it back) on a
    connection handed out without the checkout ping; if that connection turns out to
    have been dropped by PostgreSQL, run `read` again on one that passed the ping.

    Only for reads that may simply run again: nothing was read on a dead connection (and
    for statements whose second run changes nothing, such as the relay's marks).
    `read` runs again from its start, so it must clean up after its failed run (close a
    session it left open). The ping is one round trip per checkout; this is one per dropped
    connection, which is why the change-log reads, the delivery snapshots, the
    revocation check and the requests' read sessions take their connections this way.
    """
    token = _RETRYABLE_READ.set(True)
    try:
        return await read()
    except DBAPIError as exc:
        # Set by SQLAlchemy when the dialect recognised a lost connection (the pool then
        # also discards every connection older than this one).
        if not exc.connection_invalidated:
            raise
        logger.info("a pooled connection had been dropped by the database; reading again")
    finally:
        _RETRYABLE_READ.reset(token)
    return await read()


async def fetch_value_on_driver(engine: AsyncEngine, statement: str, *args: Any) -> Any:
    """PostgreSQL only: run one read-only `statement` (asyncpg's `$1, $2, ...`
    placeholders) straight on a pooled connection's asyncpg driver, outside a
    transaction as single_statement_reads does, and return the first column of its
    first row (None without a row).

    For the hottest single-statement reads: SQLAlchemy's execution around a statement
    (its Connection, execution context and result, each entered through a greenlet)
    costs more CPU than the statement itself: the revocation check took 0.56 ms of CPU
    through SQLAlchemy Core and takes 0.20 ms here (the pool, and its checkout event,
    are still SQLAlchemy's). Errors come as SQLAlchemy's would, as DBAPIError: one on a
    connection PostgreSQL dropped invalidates it and says so (connection_invalidated),
    so that read_retrying_stale runs the read again on a fresh one. No type processing:
    values come as asyncpg decodes them.
    """
    return await _on_driver(engine, "fetchval", statement, args)


async def fetch_on_driver(engine: AsyncEngine, statement: str, *args: Any) -> list[Any]:
    """fetch_value_on_driver, for every row (asyncpg Records: by index or column name).
    Also for one statement that writes (schema.mutations.card_update), which PostgreSQL
    commits as it ends: outside read_retrying_stale, whose second try would send it
    twice, so that the checkout checks the connection first."""
    rows: list[Any] = await _on_driver(engine, "fetch", statement, args)
    return rows


def fetch_in_transaction(connection: Connection, statement: str, *args: Any) -> list[Any] | None:
    """PostgreSQL: run `statement` (asyncpg's `$1, $2, ...` placeholders) straight on
    the asyncpg driver of `connection`, inside the transaction it has open, from
    synchronous SQLAlchemy code (an ORM event) as SQLAlchemy's own statements run; its
    rows (asyncpg Records). None, having run nothing, when the driver has no
    transaction open (or is not asyncpg): the caller runs the statement through
    SQLAlchemy instead.

    For a statement in every write's path (the change-log write): SQLAlchemy's
    execution around it costs more CPU than the round trip (fetch_value_on_driver).
    Errors come as DBAPIError; a connection PostgreSQL dropped, or a statement
    interrupted (cancelled), invalidates the connection, as SQLAlchemy does."""
    dbapi_connection: Any = connection.connection.dbapi_connection
    driver: Any = getattr(dbapi_connection, "driver_connection", None)
    if not hasattr(driver, "is_in_transaction") or not driver.is_in_transaction():
        return None
    with errors_as_sqlalchemys(statement, args, driver, connection.invalidate):
        rows: list[Any] = dbapi_connection.run_async(
            lambda asyncpg_connection: asyncpg_connection.fetch(statement, *args)
        )
    return rows


def is_driver_statement(query: str) -> bool:
    """Whether a query asyncpg's query logger saw is a statement someone ran on the driver
    directly (fetch_on_driver and its like): not the transaction control and pings
    SQLAlchemy sends that way (its own statements are prepared ones, which asyncpg does
    not log), nor asyncpg's own type lookups (once per connection and type, with the
    JIT setting turned off around them). For counting statements (bench/, tests)."""
    text = query.strip()
    control = text.upper()
    if control.startswith(("BEGIN", "COMMIT", "ROLLBACK")) or control == "SELECT 1":
        return False
    return text not in _ASYNCPG_TYPE_LOOKUPS and "set_config('jit'" not in text


_ASYNCPG_TYPE_LOOKUPS = {
    query.strip()
    for query in (
        introspection.INTRO_LOOKUP_TYPES,
        introspection.INTRO_LOOKUP_TYPES_13,
        introspection.TYPE_BY_NAME,
    )
}


@contextmanager
def errors_as_sqlalchemys(
    statement: str, args: Any, driver: Any, invalidate: Callable[[BaseException], None]
) -> Iterator[None]:
    """Errors of a statement run on the asyncpg `driver` as SQLAlchemy's would come: as
    DBAPIError, and a connection PostgreSQL dropped (what SQLAlchemy's asyncpg dialect
    asks too: is_disconnect) invalidated and said so. A statement interrupted (cancelled,
    a shutdown) also invalidates its connection: it may still be busy with it, so it is
    closed rather than handed to the next caller."""
    try:
        yield
    except Exception as exc:
        dropped = bool(driver.is_closed())
        if dropped:
            invalidate(exc)
        raise DBAPIError(statement, args, exc, connection_invalidated=dropped) from exc
    except BaseException as exc:
        invalidate(exc)
        raise


async def _on_driver(engine: AsyncEngine, method: str, statement: str, args: Any) -> Any:
    # A connection kept from the last such statement where the app keeps them
    # (models.kept_connections), checked unless the read may simply run again.
    kept = kept_for(engine)
    raw = None if kept is None else kept.take(checked=not _RETRYABLE_READ.get())
    if raw is None:
        raw = await engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        with errors_as_sqlalchemys(statement, args, driver, raw.invalidate):
            return await getattr(driver, method)(statement, *args)
    finally:
        if kept is None or not kept.keep(raw):
            await give_back(raw)


async def begin_on_checkout(session: AsyncSession) -> None:
    """Take `session`'s connection now, for a write transaction about to run: on
    PostgreSQL, the checkout sends the transaction's BEGIN instead of the ping (see
    _ping_on_checkout), and the driver does not send it again before the first
    statement. A dropped connection fails its BEGIN as it would fail the ping, and the
    pool hands out a fresh one: one round trip per write instead of two, and still no
    error. (SQLite: the write transaction's BEGIN IMMEDIATE is sent now.)"""
    token = _BEGIN_AT_CHECKOUT.set(True)
    try:
        await session.connection()
    finally:
        _BEGIN_AT_CHECKOUT.reset(token)


def _ping_on_checkout(engine: AsyncEngine) -> None:
    """Check a pooled connection is alive before handing it out, so that a restarted
    PostgreSQL (or a connection it dropped) costs no request an error.

    This is pool_pre_ping in one round trip instead of three: SQLAlchemy's asyncpg
    ping is BEGIN, a prepared ";", ROLLBACK (the transaction keeps the prepare and the
    execute on one server behind pgbouncer's transaction pooling), paid by every request
    and every relay write. SELECT 1 over the simple query protocol is one message: no
    prepared statement, so no transaction needed either. (Not ";": asyncpg fails on the
    empty query's missing command tag.) A failure does what a failed pre_ping does: the
    pool discards its connections (a dead one usually means PostgreSQL restarted) and
    this checkout gets a fresh one. Reads that can run again skip it
    (read_retrying_stale), and a write transaction's BEGIN is its ping
    (begin_on_checkout).

    And it is sent only where the connection cannot tell by itself: one from which the
    server has sent nothing since it went back to the pool, read or waiting
    (models.connection_check), is handed out without a round trip; one that got
    PostgreSQL's FATAL error or the end of the stream meanwhile is pinged, fails, and is
    replaced as before.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def start_watching(dbapi_connection: Any, _record: Any) -> None:
        watch(dbapi_connection.driver_connection)

    @event.listens_for(engine.sync_engine, "checkin")
    def note_returned(dbapi_connection: Any, record: Any) -> None:
        # (After the pool's reset on return: its ROLLBACK's answer is counted.)
        if dbapi_connection is not None:
            record.info[_HEARD_WHEN_RETURNED] = heard(dbapi_connection.driver_connection)

    @event.listens_for(engine.sync_engine, "checkout")
    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if _RETRYABLE_READ.get():
            return  # (a ContextVar: SQLAlchemy runs this in the awaiting task's context)
        # SQLAlchemy's asyncpg adapter starts its transaction lazily, before the first
        # statement, unless one was started (a private method, in SQLAlchemy 2.0 and
        # 2.1; without it, the plain ping).
        begin = (
            getattr(dbapi_connection, "_start_transaction", None)
            if _BEGIN_AT_CHECKOUT.get()
            else None
        )
        returned = record.info.pop(_HEARD_WHEN_RETURNED, None)
        if begin is None and open_and_quiet(dbapi_connection.driver_connection, returned):
            return
        try:
            if begin is not None:
                dbapi_connection.run_async(lambda _driver: begin())
            else:
                dbapi_connection.run_async(lambda driver: driver.execute("SELECT 1"))
        except Exception as exc:
            raise InvalidatePoolError(f"pooled connection failed its ping: {exc!r}") from exc


# Where a pooled connection's record keeps how often its server had been heard from
# when it went back to the pool (models.connection_check).
_HEARD_WHEN_RETURNED = "commitcast_heard_when_returned"


# Sent once on each new PostgreSQL connection (a session setting; the pool's ROLLBACK on
# return keeps it).
PLAN_ONCE = "SET plan_cache_mode = force_generic_plan"


def _plan_once_per_connection(engine: AsyncEngine) -> None:
    """Plan each prepared statement once per connection, not at every run.

    asyncpg prepares every statement; PostgreSQL then plans it again at each run for as
    long as it estimates that a plan made for the values at hand beats the one made for
    any values. Statements that take their inputs as arrays (the change-log write, the
    batched log reads) never pass that test: without the values, the planner guesses
    10 elements per array, and the plan looks several times as dear as the one for the
    one element a commit usually brings (planner cost 358 against 82 for the change-log
    write). Planning the change-log write took about 0.6 ms at every commit, more than
    running it. Commitcast's statements are key lookups whose best plan does not depend
    on the values, so the generic plan is the one wanted. A SET after connecting rather
    than a startup parameter: connection poolers such as pgbouncer refuse startup
    parameters they do not know."""

    @event.listens_for(engine.sync_engine, "connect")
    def plan_once(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(lambda driver: driver.execute(PLAN_ONCE))


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, emit BEGIN: pysqlite's own
        # transaction handling breaks SAVEPOINT and delays BEGIN unpredictably.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(SQLITE_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_sessionmakers(
    engine: AsyncEngine, **options: Any
) -> tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]]:
    """Return (read sessions, write sessions); `options` go to both sessionmakers.

    A read session sees one snapshot for its whole transaction (REPEATABLE READ on
    PostgreSQL; SQLite's WAL readers already do): a query resolves over several
    statements, and a record deleted half-way must not leave a dangling reference in
    the answer. Write sessions begin IMMEDIATE on SQLite. Objects stay usable after
    commit (expire_on_commit=False) because resolvers build the response from them
    after the transaction has ended.
    """
    read_engine = (
        engine
        if is_sqlite(str(engine.url))
        else engine.execution_options(isolation_level="REPEATABLE READ")
    )
    read = async_sessionmaker(read_engine, expire_on_commit=False, **options)
    write = async_sessionmaker(
        engine.execution_options(**{SQLITE_IMMEDIATE: True}), expire_on_commit=False, **options
    )
    return read, write
