"""models.kept_snapshots: a delivery snapshot's connection is kept for the next one with
its BEGIN already sent, and the next snapshot still sees everything committed before its
first read; at most KEEP are kept, each given back, rolled back, once idle, and all at
aclose(). The app keeps them on PostgreSQL and not on SQLite."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import literal, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

import models
from app.runtime import open_runtime
from app.settings import Settings
from models.database import create_engine, create_sessionmakers
from models.driver_snapshot import DriverSnapshot
from models.kept_snapshots import KeptSnapshots
from schema.loaders import _by_ids
from schema.shared_reads import SharedReads
from subscriptions.hub import Batch
from tests.support import eventually
from tests.test_driver_snapshot import (
    no_connection_out_nor_transaction_open,
    two_members_and_a_comment,
)

# The tests that take `engine` run on PostgreSQL (conftest's, on the emptied run database).
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

CARDS = _by_ids(models.Card)


def checked_out(engine: AsyncEngine) -> int:
    pool: Any = engine.sync_engine.pool
    return int(pool.checkedout())


async def backend_of(snapshot: DriverSnapshot) -> tuple[int, str, str]:
    """The snapshot's server process, and its transaction's isolation and read-only
    setting, as PostgreSQL reports them inside the snapshot."""
    driver: Any = snapshot._driver
    row = await driver.fetchrow(
        "SELECT pg_backend_pid(), current_setting('transaction_isolation'),"
        " current_setting('transaction_read_only')"
    )
    return int(row[0]), str(row[1]), str(row[2])


@on_postgresql
async def test_the_next_snapshot_runs_on_the_kept_connection_in_the_same_transaction_kind(
    engine: AsyncEngine,
) -> None:
    kept = KeptSnapshots(engine)
    try:
        first = await kept.open()
        pid, isolation, read_only = await backend_of(first)
        assert (isolation, read_only) == ("repeatable read", "on")
        await kept.close(first)
        assert len(kept) == 1
        assert checked_out(engine) == 1

        second = await kept.open()
        assert second is first
        assert await backend_of(second) == (pid, "repeatable read", "on")
        await kept.close(second)
    finally:
        await kept.aclose()
    await no_connection_out_nor_transaction_open(engine)


@on_postgresql
async def test_a_kept_snapshot_sees_what_was_committed_before_its_first_read(
    engine: AsyncEngine,
) -> None:
    """Its BEGIN went out with the previous snapshot's ROLLBACK; its snapshot is taken at
    its first read, so a change committed in between is in it."""
    ids = await two_members_and_a_comment(engine)
    kept = KeptSnapshots(engine)
    try:
        snapshot = await kept.open()
        ((card,),) = await snapshot.rows(CARDS, {"keys": [ids["card"]]})
        assert card.title == "Ship"
        await kept.close(snapshot)

        async with engine.begin() as connection:
            await connection.execute(update(models.Card).values(title="Shipped"))

        snapshot = await kept.open()
        ((card,),) = await snapshot.rows(CARDS, {"keys": [ids["card"]]})
        assert card.title == "Shipped"
        async with engine.begin() as connection:
            await connection.execute(update(models.Card).values(title="Shipped twice"))
        ((again,),) = await snapshot.rows(CARDS, {"keys": [ids["card"]]})
        assert again.title == "Shipped"  # still one snapshot
        await kept.close(snapshot)
    finally:
        await kept.aclose()


@on_postgresql
async def test_at_most_keep_are_kept_and_idle_ones_go_back_rolled_back(
    engine: AsyncEngine,
) -> None:
    kept = KeptSnapshots(engine, keep=2, idle=0.2)
    try:
        snapshots = [await kept.open() for _ in range(3)]
        for snapshot in snapshots:
            await snapshot.rows(CARDS, {"keys": [1]})
        for snapshot in snapshots:
            await kept.close(snapshot)
        assert len(kept) == 2
        assert checked_out(engine) == 2

        async def let_go() -> bool:
            return len(kept) == 0 and checked_out(engine) == 0

        await eventually(let_go, "idle kept connections back in the pool", within=5)
    finally:
        await kept.aclose()
    await no_connection_out_nor_transaction_open(engine)


@on_postgresql
async def test_aclose_gives_every_kept_connection_back_and_keeps_none_after(
    engine: AsyncEngine,
) -> None:
    kept = KeptSnapshots(engine)
    one, two = await kept.open(), await kept.open()
    await kept.close(one)
    await kept.aclose()
    assert (len(kept), checked_out(engine)) == (0, 1)
    await kept.close(two)
    assert (len(kept), checked_out(engine)) == (0, 0)
    await no_connection_out_nor_transaction_open(engine)


@on_postgresql
async def test_release_gives_them_back_now_and_keeps_again_after(engine: AsyncEngine) -> None:
    kept = KeptSnapshots(engine)
    try:
        first = await kept.open()
        await kept.close(first)
        await kept.release()
        assert (len(kept), checked_out(engine)) == (0, 0)
        await no_connection_out_nor_transaction_open(engine)
        second = await kept.open()
        await kept.close(second)
        assert (len(kept), checked_out(engine)) == (1, 1)
    finally:
        await kept.aclose()


@on_postgresql
async def test_a_snapshot_whose_statement_failed_is_kept_and_reads_again(
    engine: AsyncEngine,
) -> None:
    """A failed statement aborts the transaction, not the connection: the ROLLBACK sent
    with the next BEGIN ends it."""
    await two_members_and_a_comment(engine)
    users = models.User.__table__
    failing = select(users.c.id).where(users.c.id / literal(0) > 0)
    kept = KeptSnapshots(engine)
    try:
        snapshot = await kept.open()
        with pytest.raises(DBAPIError, match="division by zero"):
            await snapshot.rows(failing, {})
        await kept.close(snapshot)
        assert len(kept) == 1
        again = await kept.open()
        assert len(await again.rows(select(users.c.id), {})) == 2
        await kept.close(again)
    finally:
        await kept.aclose()
    await no_connection_out_nor_transaction_open(engine)


@on_postgresql
async def test_a_fresh_open_lets_every_kept_one_go(engine: AsyncEngine) -> None:
    kept = KeptSnapshots(engine)
    try:
        old = await kept.open()
        await kept.close(old)
        new = await kept.open(fresh=True)
        assert new is not old
        await kept.close(new)
        assert len(kept) == 1
        assert await kept.open() is new
        await kept.close(new)

        async def one_out() -> bool:
            return checked_out(engine) == 1

        await eventually(one_out, "the one let go back in the pool", within=5)
    finally:
        await kept.aclose()


@on_postgresql
async def test_shared_reads_keep_their_snapshot_connection_for_the_next(
    engine: AsyncEngine,
) -> None:
    read_sessions, _ = create_sessionmakers(engine)
    kept = KeptSnapshots(engine)
    try:
        for _ in range(3):
            reads = SharedReads(read_sessions, kept=kept)
            assert await reads.acquire(1).user.load(1) is None
            reads.release()
            reads.supersede()  # its snapshot ends now

            async def back() -> bool:
                return len(kept) == 1

            await eventually(back, "the snapshot's connection kept", within=5)
            assert checked_out(engine) == 1
    finally:
        await kept.aclose()
    await no_connection_out_nor_transaction_open(engine)


@on_postgresql
async def test_they_are_kept_where_snapshots_run_on_the_driver_only(
    engine: AsyncEngine, sqlite_url: str
) -> None:
    postgresql_reads, _ = create_sessionmakers(engine)
    assert isinstance(KeptSnapshots.for_sessions(postgresql_reads), KeptSnapshots)
    sqlite = create_engine(sqlite_url)
    try:
        sqlite_reads, _ = create_sessionmakers(sqlite)
        assert KeptSnapshots.for_sessions(sqlite_reads) is None
    finally:
        await sqlite.dispose()


async def idle_in_transaction(url: str) -> tuple[int, int]:
    """Connections to `url`'s database idle in a transaction: all, and those holding no
    snapshot (no xmin), which hold back no vacuum."""
    database = make_url(url).database
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        row = await admin.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE backend_xmin IS NULL)"
            " FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'",
            database,
        )
        return int(row[0]), int(row[1])
    finally:
        await admin.close()


async def test_the_app_gives_its_kept_connections_back_when_it_stops(
    empty_postgres_url: str,
) -> None:
    settings = Settings(database_url=empty_postgres_url, broker_url="memory://")
    async with open_runtime(settings) as runtime:
        reads = runtime.read_groups.join(Batch(0, []))
        assert await reads.acquire(1).user.load(1) is None
        reads.release()
        reads.supersede()

        async def kept() -> bool:
            return await idle_in_transaction(empty_postgres_url) == (1, 1)

        await eventually(kept, "the delivery snapshot's connection kept, its BEGIN sent")
    assert await idle_in_transaction(empty_postgres_url) == (0, 0)
