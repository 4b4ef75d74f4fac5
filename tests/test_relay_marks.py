"""The relay marks what it published in few statements, soon, and without idle()'s help,
on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models import change_log
from models.database import create_engine
from models.realtime import RecordKey
from subscriptions.broker import broker_from_url
from subscriptions.changelog import record_changes
from subscriptions.changes import Change, ChangeOp
from subscriptions.relay import MARK_DELAY, SWEEP_AGE, Relay
from tests.support import eventually
from tests.test_connection_pool import Wire

# The relay's tests run on PostgreSQL (conftest's `engine`, on that database only).
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
async def relay(engine: AsyncEngine, redis_url: str) -> AsyncIterator[Relay]:
    broker = broker_from_url(redis_url)
    await broker.connect()
    relay = Relay(broker, engine, timedelta(days=1))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await broker.disconnect()


async def committed(engine: AsyncEngine, record: int) -> list[Change]:
    changes = [Change(RecordKey("Card", record), ChangeOp.UPDATED, 2, {1, 2})]
    async with AsyncSession(engine) as session:
        await session.run_sync(lambda sync: record_changes(sync, changes))
        await session.commit()
    return changes


async def unmarked(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).where(change_log.c.published_at.is_(None))
        )
    return int(count or 0)


@on_postgresql
async def test_publishes_close_together_are_marked_in_one_update_soon(
    engine: AsyncEngine, relay: Relay
) -> None:
    updates: list[str] = []

    def count_marks(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CHANGE_LOG"):
            updates.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count_marks)
    try:
        for record in range(5):
            relay.submit(await committed(engine, record))
            await asyncio.sleep(MARK_DELAY / 20)  # each published before the next commit

        async def all_marked() -> bool:
            return await unmarked(engine) == 0

        # Well before the sweeper would take them for orphans, with nobody calling idle().
        await eventually(all_marked, "the published changes to be marked", within=1.0)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count_marks)
    assert relay.published == 5 * 2  # one wake-up per user and publish
    assert len(updates) <= 2, updates  # not one per publish
    assert SWEEP_AGE.total_seconds() > 10 * MARK_DELAY


@on_postgresql
async def test_idle_returns_once_published_changes_are_marked(
    engine: AsyncEngine, relay: Relay
) -> None:
    relay.submit(await committed(engine, 1))
    async with asyncio.timeout(MARK_DELAY * 5):
        await relay.idle()
    assert await unmarked(engine) == 0


async def test_a_mark_on_postgresql_is_one_statement_on_its_connection(
    empty_postgres_url: str, redis_url: str
) -> None:
    """No checkout ping, BEGIN or COMMIT around the UPDATE: each would be a round trip,
    and a mark runs for every few mutations."""
    engine = create_engine(empty_postgres_url)
    wire = Wire(engine)
    broker = broker_from_url(redis_url)
    await broker.connect()
    relay = Relay(broker, engine, timedelta(days=1))
    await relay.start()
    try:
        changes = await committed(engine, 1)
        wire.by_connection.clear()
        relay.submit(changes)
        async with asyncio.timeout(MARK_DELAY * 5):
            await relay.idle()
        sent = {key: list(queries) for key, queries in wire.by_connection.items()}
        assert await unmarked(engine) == 0
    finally:
        await relay.stop()
        await broker.disconnect()
        await engine.dispose()
    # (The relay's first sweep comes SWEEP_INTERVAL after its start, later than this.)
    assert list(sent.values()) == [
        [
            "UPDATE change_log SET published_at=$1::TIMESTAMP WITH TIME ZONE "
            "WHERE change_log.id = ANY ($2::BIGINT[])"
        ]
    ]
