"""Connections PostgreSQL dropped (a restart, an idle timeout, an administrator) cost no
request and no delivery an error: the pool checks a connection before handing it out
(whether the server sent anything since it came back to the pool, and a round trip
where it did), except to reads that can simply run again, which skip the check and run
again on a checked connection when theirs turns out dead (read_retrying_stale), and to
write transactions, whose BEGIN is the check (begin_on_checkout)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.runtime import open_runtime
from app.settings import Settings
from models.connection_check import heard, open_and_quiet
from models.database import (
    begin_on_checkout,
    create_engine,
    create_sessionmakers,
    fetch_in_transaction,
    fetch_on_driver,
    fetch_value_on_driver,
    read_retrying_stale,
)
from models.driver_snapshot import DriverWrite
from models.kept_snapshots import KeptSnapshots
from models.migrate import upgrade
from schema.shared_reads import SharedReads
from subscriptions.log_reader import LogReader
from tests.live import live_server
from tests.support import GraphQLClient, eventually

PING = "SELECT 1"
RETRIED = "dropped by the database; reading again"


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def own_database(postgres_url: str) -> AsyncIterator[tuple[str, Any]]:
    """A throwaway database, so that killing its connections disturbs nothing else;
    with an admin connection to do the killing."""
    name = f"commitcast_pool_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url), timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False), admin
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)


async def test_connections_postgresql_dropped_are_replaced_without_an_error(
    own_database: tuple[str, Any],
) -> None:
    url, admin = own_database
    engine = create_engine(url)
    try:
        # Two pooled connections, both idle in the pool.
        async def hold() -> int:
            async with engine.connect() as connection:
                await asyncio.sleep(0.05)
                return int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)

        before = set(await asyncio.gather(hold(), hold()))
        assert len(before) == 2
        # (Once they have ended: a connection whose backend is still on its way out
        # when it is handed out may fail its statement, as one ended between the
        # checkout's check and the statement always could.)
        await drop_connections(admin, make_url(url).database or "")
        # Every request after the drop succeeds, on new connections.
        after = set(await asyncio.gather(hold(), hold()))
        assert after.isdisjoint(before)
        assert await backend_pid(engine) not in before
    finally:
        await engine.dispose()


class Wire:
    """Every statement the engine's connections sent, as asyncpg saw it: `statements`
    has those asyncpg logs (the simple-protocol ones: pings, BEGIN, COMMIT, ROLLBACK);
    `by_connection`, per connection (by id) and in order, those and the statements
    SQLAlchemy ran through a cursor (prepared by asyncpg, which does not log them)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements: list[str] = []
        self.by_connection: dict[int, list[str]] = {}

        @event.listens_for(engine.sync_engine, "connect")
        def log(dbapi_connection: Any, _record: Any) -> None:
            def record(query: Any) -> None:
                self.statements.append(query.query)
                self.by_connection.setdefault(id(dbapi_connection), []).append(query.query)

            dbapi_connection.driver_connection.add_query_logger(record)

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def prepared(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            key = id(connection.connection.dbapi_connection)
            self.by_connection.setdefault(key, []).append(statement.strip())


async def drop_connections(admin: Any, database: str) -> None:
    """Terminate every connection to `database` and wait until they are gone."""
    pids = await admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    assert pids, "nothing to drop: the pool held no connection"

    async def gone() -> bool:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return bool(count == 0)

    await eventually(gone, "the dropped connections to end")


def idle(engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        pool: Any = engine.sync_engine.pool
        return bool(pool.checkedout() == 0)

    return check


async def pid_read(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)


async def test_a_connection_that_heard_nothing_since_its_return_is_handed_out_unpinged(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    wire = Wire(engine)
    try:
        first = await pid_read(engine)  # a new connection: pinged (nothing noted yet)
        assert wire.statements.count(PING) == 1
        assert await pid_read(engine) == first
        assert await fetch_on_driver(engine, "SELECT 2") == [(2,)]
        assert wire.statements.count(PING) == 1  # the same connection, not pinged again
    finally:
        await engine.dispose()


async def speak_to_the_pooled_connection(engine: AsyncEngine, url: str) -> None:
    """Have PostgreSQL send something unasked (a notification) to the connection `engine`
    keeps in its pool, and wait until asyncpg has read it."""
    channel = f"commitcast_{uuid.uuid4().hex[:10]}"
    async with engine.connect() as connection:
        await connection.exec_driver_sql(f"LISTEN {channel}")
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        await connection.commit()
    returned = heard(driver)
    assert returned is not None
    notifier = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        await notifier.execute(f"NOTIFY {channel}")
    finally:
        await notifier.close()

    async def notified() -> bool:
        return heard(driver) != returned

    await eventually(notified, "the notification to reach the pooled connection")


async def test_a_connection_the_server_spoke_on_in_the_pool_is_pinged(
    postgres_url: str,
) -> None:
    """Anything PostgreSQL sends to a connection waiting in the pool (here a
    notification; as a rule a FATAL error) makes its checkout ping it: asyncpg, having
    read a FATAL error but not yet the end of the stream, takes itself for open."""
    engine = create_engine(postgres_url)
    wire = Wire(engine)
    try:
        await speak_to_the_pooled_connection(engine, postgres_url)
        pings = wire.statements.count(PING)
        await pid_read(engine)
        assert wire.statements.count(PING) == pings + 1
    finally:
        await engine.dispose()


async def test_a_connection_whose_end_waits_unread_is_pinged_and_replaced(
    own_database: tuple[str, Any],
) -> None:
    """PostgreSQL ended the connection while the event loop did not run: its FATAL error
    and the end of the stream wait in the socket, unread; asyncpg takes the connection
    for open, and nothing was heard. The checkout's peek at the socket sees them and
    pings; the ping fails, and the read runs on a fresh connection."""
    url, _ = own_database
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            before = int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)
        returned = heard(driver)
        assert open_and_quiet(driver, returned)

        async def end_backend() -> None:
            killer = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
            try:
                await killer.execute("SELECT pg_terminate_backend($1)", before)
                ended = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
                async with asyncio.timeout(10):
                    while not await killer.fetchval(ended, before):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            finally:
                await killer.close()

        # In a thread with an event loop of its own: this one does not run meanwhile.
        ender = threading.Thread(target=lambda: asyncio.run(end_backend()))
        ender.start()
        ender.join(15)
        assert not ender.is_alive()
        assert not driver.is_closed()  # asyncpg has read nothing of it
        assert heard(driver) == returned
        assert not open_and_quiet(driver, returned)  # the socket tells
        after = await pid_read(engine)
        assert after != before
    finally:
        await engine.dispose()


async def test_reads_that_can_run_again_skip_the_checkout_check(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    wire = Wire(engine)
    try:
        await speak_to_the_pooled_connection(engine, postgres_url)
        pings = wire.statements.count(PING)
        await read_retrying_stale(lambda: pid_read(engine))
        assert wire.statements.count(PING) == pings
        await speak_to_the_pooled_connection(engine, postgres_url)
        await pid_read(engine)  # (and the check is back for the rest)
        assert wire.statements.count(PING) == pings + 1
    finally:
        await engine.dispose()


async def driver_write_pid(engine: AsyncEngine) -> int:
    """A write transaction as updateCard runs it on PostgreSQL: its backend's pid."""
    write = await read_retrying_stale(lambda: DriverWrite.open(engine))
    try:
        ((pid,),) = await write.fetch("SELECT pg_backend_pid()")
        await write.commit()
    finally:
        await write.close()
    return int(pid)


@pytest.mark.parametrize("transaction", ["read", "driver write"])
async def test_a_read_that_found_its_connection_dropped_runs_again(
    own_database: tuple[str, Any], caplog: pytest.LogCaptureFixture, transaction: str
) -> None:
    """(A driver write's BEGIN is such a read: nothing was written on a dead connection.)"""
    url, admin = own_database
    engine = create_engine(url)

    async def pid() -> int:
        if transaction == "read":
            return await read_retrying_stale(lambda: pid_read(engine))
        return await driver_write_pid(engine)

    try:
        before = await pid()
        await drop_connections(admin, make_url(url).database or "")
        with caplog.at_level(logging.INFO, logger="commitcast.database"):
            after = await pid()
        assert after != before
        assert RETRIED in caplog.text
    finally:
        await engine.dispose()


async def test_a_read_that_fails_otherwise_runs_once(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    runs = 0

    async def failing() -> None:
        nonlocal runs
        runs += 1
        async with engine.connect() as connection:
            await connection.scalar(text("SELECT 1 / 0"))

    try:
        with pytest.raises(DBAPIError, match="division by zero"):
            await read_retrying_stale(failing)
        assert runs == 1
    finally:
        await engine.dispose()


@pytest.fixture
async def migrated(own_database: tuple[str, Any]) -> tuple[str, Any]:
    url, admin = own_database
    engine = create_engine(url)
    await upgrade(engine)
    await engine.dispose()
    return url, admin


async def test_change_log_reads_and_delivery_snapshots_survive_dropped_connections(
    migrated: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, admin = migrated
    name = make_url(url).database or ""
    engine = create_engine(url)
    read_sessions, _ = create_sessionmakers(engine)
    log = LogReader(engine, limit=10)
    try:
        with caplog.at_level(logging.INFO, logger="commitcast.database"):
            assert await log.read(1, 0) == []
            await drop_connections(admin, name)
            assert await log.read(1, 0) == []
            assert caplog.text.count(RETRIED) == 1

            reads = SharedReads(read_sessions)
            assert await reads.acquire(1).user.load(1) is None
            reads.release()
            reads.supersede()  # its session ends now, back into the pool
            await eventually(idle(engine), "the snapshot's connection back in the pool")
            await drop_connections(admin, name)
            reads = SharedReads(read_sessions)
            assert await reads.acquire(1).user.load(1) is None
            reads.release()
            assert caplog.text.count(RETRIED) == 2
    finally:
        await engine.dispose()


async def read_and_keep(
    read_sessions: async_sessionmaker[AsyncSession], kept: KeptSnapshots
) -> None:
    """One delivery's read through `kept`: its snapshot ended, its connection kept."""
    reads = SharedReads(read_sessions, kept=kept)
    assert await reads.acquire(1).user.load(1) is None
    reads.release()
    reads.supersede()

    async def one_kept() -> bool:
        return len(kept) == 1

    await eventually(one_kept, "the snapshot's connection kept")


async def test_a_delivery_snapshot_on_a_kept_connection_postgresql_dropped_reads_again(
    migrated: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A kept snapshot connection (models.kept_snapshots) has sent its BEGIN and waits;
    dropped meanwhile, the first read on it fails and runs again on a pooled connection,
    whose snapshot is then kept in its place."""
    url, admin = migrated
    name = make_url(url).database or ""
    engine = create_engine(url)
    read_sessions, _ = create_sessionmakers(engine)
    kept = KeptSnapshots(engine)
    try:
        with caplog.at_level(logging.INFO, logger="commitcast.database"):
            await read_and_keep(read_sessions, kept)
            await drop_connections(admin, name)
            await read_and_keep(read_sessions, kept)
            assert caplog.text.count(RETRIED) == 1
    finally:
        await kept.aclose()
        await engine.dispose()
    await eventually(lambda: _none_left(admin, name), "no connection left behind")


async def test_a_kept_snapshot_connection_ended_by_an_idle_in_transaction_timeout_reads_again(
    migrated: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md: an idle_in_transaction_session_timeout shorter than a kept
    connection's wait ends it harmlessly; the next delivery reads again on a fresh one."""
    url, admin = migrated
    name = make_url(url).database or ""
    await admin.execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 200')
    engine = create_engine(url)
    read_sessions, _ = create_sessionmakers(engine)
    kept = KeptSnapshots(engine, idle=30)

    async def ended() -> bool:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = $1 AND state = 'idle in transaction'",
            name,
        )
        return int(count) == 0

    try:
        with caplog.at_level(logging.INFO, logger="commitcast.database"):
            await read_and_keep(read_sessions, kept)
            await eventually(ended, "PostgreSQL ending the idle transaction")
            await read_and_keep(read_sessions, kept)
            assert caplog.text.count(RETRIED) == 1
    finally:
        await kept.aclose()
        await engine.dispose()


async def _none_left(admin: Any, database: str) -> bool:
    count = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
    )
    return int(count) == 0


async def test_requests_survive_dropped_connections(
    migrated: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, admin = migrated
    settings = Settings(database_url=url, broker_url="memory://")
    async with (
        live_server(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        api = GraphQLClient(http, server.runtime)
        ada = await api.account("Ada")
        await api.board(ada)
        query = "{ viewer { name boards { name } } }"
        expected = {"viewer": {"name": "Ada", "boards": [{"name": "Roadmap"}]}}
        assert await api.data(query, token=ada.token) == expected
        await drop_connections(admin, make_url(url).database or "")
        with caplog.at_level(logging.INFO, logger="commitcast.database"):
            # The revocation check is the request's first read: it finds its connection
            # dropped and runs again; the rest of the request gets checked ones.
            assert await api.data(query, token=ada.token) == expected
        assert RETRIED in caplog.text


async def write_pid(engine: AsyncEngine) -> int:
    """A write transaction as mutations run them (Context.write): its backend's pid."""
    _, write_sessions = create_sessionmakers(engine)
    async with write_sessions() as session, session.begin():
        await begin_on_checkout(session)
        return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


async def test_a_write_transaction_checks_its_connection_with_its_own_begin(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    wire = Wire(engine)
    try:
        first = await write_pid(engine)
        assert await write_pid(engine) == first  # (the pooled connection, checked again)
        # No ping, and one BEGIN per transaction: the driver did not send its own.
        assert wire.statements == ["BEGIN;", "COMMIT;"] * 2
    finally:
        await engine.dispose()


@pytest.mark.parametrize("write", ["transaction", "one statement on the driver"])
async def test_a_write_whose_connection_was_dropped_runs_once_on_a_fresh_one(
    own_database: tuple[str, Any], write: str
) -> None:
    """(Without the checkout's check, the one statement failed here about one run in
    three: asyncpg had read PostgreSQL's FATAL message but not yet the end of the
    connection, so the connection looked open and refused the statement.)"""
    url, admin = own_database
    engine = create_engine(url)
    _, write_sessions = create_sessionmakers(engine)
    insert = "INSERT INTO written (n) VALUES ($1) RETURNING pg_backend_pid()"

    async def written_by(n: int) -> int:
        """Insert `n` as mutations write on PostgreSQL; the backend's pid."""
        if write == "one statement on the driver":  # (schema.mutations.card_update's)
            [(pid,)] = await fetch_on_driver(engine, insert, n)
            return int(pid)
        async with write_sessions() as session, session.begin():
            await begin_on_checkout(session)
            statement = text("INSERT INTO written (n) VALUES (:n) RETURNING pg_backend_pid()")
            return int(await session.scalar(statement, {"n": n}) or 0)

    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE written (n integer)"))
        before = await written_by(1)
        await drop_connections(admin, make_url(url).database or "")
        after = await written_by(2)
        assert after != before
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT n FROM written ORDER BY n"))).all()
        assert [n for (n,) in rows] == [1, 2]  # each sent once
    finally:
        await engine.dispose()


async def test_a_driver_write_checks_its_connection_with_its_own_begin(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    wire = Wire(engine)
    try:
        first = await driver_write_pid(engine)
        assert await driver_write_pid(engine) == first
        assert [s for s in wire.statements if s != "SELECT pg_backend_pid()"] == [
            "BEGIN ISOLATION LEVEL READ COMMITTED;",
            "COMMIT;",
        ] * 2
    finally:
        await engine.dispose()


async def backends(admin: Any, database: str) -> int:
    return int(
        await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)
    )


async def test_reads_on_the_driver_give_back_their_connections_beyond_the_pool_size(
    own_database: tuple[str, Any],
) -> None:
    url, admin = own_database
    name = make_url(url).database or ""
    engine = create_engine(url, pool_size=3, max_overflow=10)
    pool: Any = engine.sync_engine.pool
    try:
        # More at once than the pool keeps: the extra connections are closed on return.
        reads = [
            fetch_value_on_driver(engine, "SELECT $1::int FROM pg_sleep(0.05)", n)
            for n in range(12)
        ]
        assert await asyncio.gather(*reads) == list(range(12))
        assert pool.checkedout() == 0
        assert pool.checkedin() == 3

        async def only_the_kept_ones_remain() -> bool:
            return await backends(admin, name) == pool.checkedin()

        await eventually(only_the_kept_ones_remain, "the extra connections to close")
    finally:
        await engine.dispose()


async def cancel_mid_statement(engine: AsyncEngine, slow: Coroutine[Any, Any, Any]) -> None:
    """Run `slow` (one long statement on `engine`'s only checked-out connection) and
    cancel it once its statement has been sent."""
    task = asyncio.create_task(slow)

    async def running() -> bool:
        pool: Any = engine.sync_engine.pool
        return bool(pool.checkedout() == 1)

    await eventually(running, "the slow statement to take its connection")
    await asyncio.sleep(0.05)  # (its statement sent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_read_on_the_driver_cancelled_mid_statement_does_not_pass_its_connection_on(
    own_database: tuple[str, Any],
) -> None:
    url, _admin = own_database
    engine = create_engine(url)
    pid = "SELECT pg_backend_pid()"
    try:
        first = await fetch_value_on_driver(engine, pid)
        await cancel_mid_statement(
            engine, fetch_value_on_driver(engine, "SELECT 1 FROM pg_sleep(10)")
        )
        # The pooled connection it held is gone; the next read gets a fresh one at once.
        async with asyncio.timeout(5):
            assert await fetch_value_on_driver(engine, pid) != first
    finally:
        await engine.dispose()


async def test_the_pool_keeps_its_size_and_opens_its_overflow_only_for_a_burst(
    own_database: tuple[str, Any],
) -> None:
    url, admin = own_database
    name = make_url(url).database or ""
    engine = create_engine(url, pool_size=2, max_overflow=1)
    try:
        held = [await engine.connect() for _ in range(3)]  # the pool's 2 and its 1 more
        for connection in held:
            assert await connection.scalar(text("SELECT 1")) == 1
        assert await backends(admin, name) == 3

        # A fourth waits for one of them rather than opening a connection of its own.
        async def connect() -> AsyncConnection:
            return await engine.connect()

        fourth = asyncio.create_task(connect())
        done, _ = await asyncio.wait({fourth}, timeout=0.5)
        assert not done
        await held.pop().close()
        held.append(await asyncio.wait_for(fourth, 10))
        for connection in held:
            await connection.close()

        async def the_pool_size_remains() -> bool:
            return await backends(admin, name) == 2

        await eventually(the_pool_size_remains, "the burst's connection to close")
    finally:
        await engine.dispose()


async def test_the_app_sizes_its_pool_from_the_settings(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, database_pool_size=7, database_max_overflow=3)
    async with open_runtime(settings) as runtime:
        pool: Any = runtime.engine.sync_engine.pool
        assert (pool.size(), pool._max_overflow) == (7, 3)


async def in_transaction(connection: AsyncConnection, statement: str, *args: Any) -> Any:
    """fetch_in_transaction on `connection`, after a first statement has begun its
    transaction (as a flush has by the time the change log is written)."""
    await connection.execute(text("SELECT 1"))
    return await connection.run_sync(lambda sync: fetch_in_transaction(sync, statement, *args))


async def test_a_statement_in_a_transaction_on_the_driver_fails_as_sqlalchemys_would(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            rows = await in_transaction(connection, "SELECT $1::int + 1", 41)
            assert [tuple(row) for row in rows] == [(42,)]
            await connection.rollback()
            with pytest.raises(DBAPIError, match="division by zero") as failed:
                await in_transaction(connection, "SELECT 1 / $1::int", 0)
            assert not failed.value.connection_invalidated
            await connection.rollback()
            # The connection goes on, as after any failed statement and its rollback.
            assert await connection.scalar(text("SELECT 7")) == 7
    finally:
        await engine.dispose()


async def test_a_statement_in_a_transaction_on_a_dropped_connection_invalidates_it(
    own_database: tuple[str, Any],
) -> None:
    url, admin = own_database
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(DBAPIError) as failed:
                # (Its transaction is open: straight to the driver.)
                await connection.run_sync(lambda sync: fetch_in_transaction(sync, "SELECT 1"))
            assert failed.value.connection_invalidated
            assert connection.invalidated
        assert await backend_pid(engine) != pid
    finally:
        await engine.dispose()


async def test_a_statement_in_a_transaction_cancelled_on_the_driver_does_not_pass_its_connection_on(
    own_database: tuple[str, Any],
) -> None:
    url, _admin = own_database
    engine = create_engine(url)
    try:
        first = await backend_pid(engine)

        async def slow() -> None:
            async with engine.connect() as connection:
                await in_transaction(connection, "SELECT 1 FROM pg_sleep(10)")

        await cancel_mid_statement(engine, slow())
        async with asyncio.timeout(5):
            assert await backend_pid(engine) != first
    finally:
        await engine.dispose()
