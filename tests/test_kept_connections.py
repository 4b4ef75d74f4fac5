"""models.kept_connections: a statement run on the driver (the revocation check,
`updateCard`, the change-log reads) keeps its connection for the next one instead of
giving it back to the pool; at most KEEP are kept, each given back once idle and all at
aclose(); a statement that must not run twice takes only a kept connection its server
has been quiet on; one that left its connection unsound does not keep it. The app keeps
them on PostgreSQL only, and gives them back when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app
from app.runtime import open_runtime
from app.settings import Settings
from models.database import fetch_on_driver, fetch_value_on_driver, read_retrying_stale
from models.kept_connections import KeptConnections, kept_for
from tests.support import GraphQLClient, eventually

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

PID = "SELECT pg_backend_pid()"
RETRIED = "dropped by the database; reading again"


def checked_out(engine: AsyncEngine) -> int:
    pool: Any = engine.sync_engine.pool
    return int(pool.checkedout())


@pytest.fixture
async def kept(engine: AsyncEngine) -> AsyncIterator[KeptConnections]:
    kept = KeptConnections.install(engine, keep=2, idle=0.3)
    try:
        yield kept
    finally:
        await kept.aclose()


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[Any]:
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()


async def end_backend(admin: Any, pid: int, kept: KeptConnections) -> None:
    """End the kept connection of backend `pid` from PostgreSQL's side, and wait until
    the connection has heard of it (its FATAL error or the end of its stream)."""
    (driver,) = kept.drivers()
    await admin.execute("SELECT pg_terminate_backend($1)", pid)

    async def heard() -> bool:
        return bool(driver.is_closed())

    await eventually(heard, "the kept connection to hear its end", within=5)


@on_postgresql
async def test_the_next_statement_runs_on_the_kept_connection_without_a_checkout(
    engine: AsyncEngine, kept: KeptConnections
) -> None:
    checkouts = 0

    def counted(*_args: Any) -> None:
        nonlocal checkouts
        checkouts += 1

    event.listen(engine.sync_engine.pool, "checkout", counted)
    try:
        first = await fetch_value_on_driver(engine, PID)
        assert (len(kept), checked_out(engine), checkouts) == (1, 1, 1)
        # A read that may run again, and one that may not (the check finds it quiet).
        assert await read_retrying_stale(lambda: fetch_value_on_driver(engine, PID)) == first
        assert (await fetch_on_driver(engine, PID))[0][0] == first
        assert (len(kept), checked_out(engine), checkouts) == (1, 1, 1)
    finally:
        event.remove(engine.sync_engine.pool, "checkout", counted)


@on_postgresql
async def test_at_most_keep_are_kept_and_idle_ones_go_back(
    engine: AsyncEngine, kept: KeptConnections
) -> None:
    reads = [
        fetch_value_on_driver(engine, "SELECT $1::int FROM pg_sleep(0.05)", n) for n in range(5)
    ]
    assert await asyncio.gather(*reads) == list(range(5))
    assert (len(kept), checked_out(engine)) == (2, 2)

    async def let_go() -> bool:
        return len(kept) == 0 and checked_out(engine) == 0

    await eventually(let_go, "idle kept connections back in the pool", within=5)
    # And kept again after that.
    await fetch_value_on_driver(engine, PID)
    assert (len(kept), checked_out(engine)) == (1, 1)


@on_postgresql
async def test_aclose_gives_them_back_and_keeps_none_after(
    engine: AsyncEngine, kept: KeptConnections
) -> None:
    await fetch_value_on_driver(engine, PID)
    assert kept_for(engine) is kept
    await kept.aclose()
    assert (len(kept), checked_out(engine), kept_for(engine)) == (0, 0, None)
    await fetch_value_on_driver(engine, PID)
    assert (len(kept), checked_out(engine)) == (0, 0)


@on_postgresql
async def test_a_statement_that_fails_keeps_its_sound_connection(
    engine: AsyncEngine, kept: KeptConnections
) -> None:
    first = await fetch_value_on_driver(engine, PID)
    with pytest.raises(DBAPIError, match="division by zero"):
        await fetch_value_on_driver(engine, "SELECT 1 / $1::int", 0)
    assert len(kept) == 1
    assert await fetch_value_on_driver(engine, PID) == first


@on_postgresql
async def test_a_statement_cancelled_mid_way_does_not_keep_its_connection(
    engine: AsyncEngine, kept: KeptConnections
) -> None:
    first = await fetch_value_on_driver(engine, PID)
    task = asyncio.create_task(fetch_value_on_driver(engine, "SELECT 1 FROM pg_sleep(10)"))

    async def running() -> bool:
        return len(kept) == 0  # (it took the kept one)

    await eventually(running, "the slow statement to take the kept connection")
    await asyncio.sleep(0.05)  # (its statement sent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(kept) == 0
    async with asyncio.timeout(5):
        assert await fetch_value_on_driver(engine, PID) != first


@on_postgresql
async def test_a_write_takes_no_kept_connection_postgresql_ended(
    engine: AsyncEngine, kept: KeptConnections, admin: Any
) -> None:
    """fetch_on_driver outside read_retrying_stale (`updateCard`'s one statement) must
    not run twice: it runs at once on a connection from the pool, without an error."""
    first = await fetch_value_on_driver(engine, PID)
    await end_backend(admin, first, kept)
    rows = await fetch_on_driver(engine, PID)
    assert rows[0][0] != first
    assert len(kept) == 1


@on_postgresql
async def test_a_read_on_a_kept_connection_postgresql_ended_runs_again(
    engine: AsyncEngine, kept: KeptConnections, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    first = await fetch_value_on_driver(engine, PID)
    await end_backend(admin, first, kept)
    with caplog.at_level(logging.INFO, logger="commitcast.database"):
        again = await read_retrying_stale(lambda: fetch_value_on_driver(engine, PID))
    assert again != first
    assert RETRIED in caplog.text


async def backends(admin: Any, url: str) -> set[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        make_url(url).database,
    )
    return {int(row[0]) for row in rows}


async def test_the_app_keeps_them_on_postgresql_and_gives_them_back_when_it_stops(
    empty_postgres_url: str, admin: Any
) -> None:
    settings = Settings(database_url=empty_postgres_url, broker_url="memory://")
    # (Other tests' connections may still be ending: only the app's are awaited.)
    before = await backends(admin, empty_postgres_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        kept = kept_for(runtime.engine)
        assert isinstance(kept, KeptConnections)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            api = GraphQLClient(http, runtime)
            ada = await api.account("Ada")
            board = await api.board(ada)
            card = await api.card(ada, board)
            checkouts = 0

            def counted(*_args: Any) -> None:
                nonlocal checkouts
                checkouts += 1

            pool = runtime.engine.sync_engine.pool
            event.listen(pool, "checkout", counted)
            try:
                for title in ("One", "Two", "Three"):
                    updated = await api.data(
                        "mutation($i: UpdateCardInput!) { updateCard(input: $i) { title } }",
                        {"i": {"id": card, "title": title}},
                        token=ada.token,
                    )
                    assert updated == {"updateCard": {"title": title}}
            finally:
                event.remove(pool, "checkout", counted)
            # Each request's revocation check and its one statement: on kept connections.
            assert checkouts == 0
            assert len(kept) >= 1
    assert kept_for(runtime.engine) is None

    async def none_left() -> bool:
        return not await backends(admin, empty_postgres_url) - before

    await eventually(none_left, "every connection closed", within=5)


async def test_the_app_keeps_none_on_sqlite(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, broker_url="memory://")
    async with open_runtime(settings) as runtime:
        assert kept_for(runtime.engine) is None
