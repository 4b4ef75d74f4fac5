"""subscriptions.hub: a local subscription's wake-up signal (`Listener`), a hub keeping
what its shared reads found (a batch, not the finished task) until the next wake-up,
and a wake-up that carries its change standing in for a read (subscriptions.wakeups).
Over the in-memory broker and a real database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models.realtime import RecordKey
from subscriptions.broker import Broker, broker_from_url
from subscriptions.changelog import LoggedChange, changes_since, record_changes
from subscriptions.changes import Change, ChangeOp, user_channel
from subscriptions.hub import Batch, Listener, LocalHubs
from subscriptions.wakeups import Wakeup, decode_wakeup, encode_wakeup
from tests.support import driver_statements

TIMEOUT = 5.0


async def test_a_listener_wakes_for_a_newer_change_only() -> None:
    listener = Listener()
    waiter = listener.wait(after=5)
    assert not waiter.done()
    listener.notify(4)  # older than what it has: no reason to look
    listener.notify(5)
    assert not waiter.done()
    listener.notify(6)
    assert waiter.done()
    # Already seen: a later wait beyond an older position does not block.
    assert listener.wait(after=5).done()
    assert not listener.wait(after=6).done()


async def test_a_gap_wakes_one_wait_whatever_its_position() -> None:
    listener = Listener()
    waiter = listener.wait(after=10)
    listener.notify(None)  # messages may have been lost: look
    assert waiter.done()
    second = listener.wait(after=10)
    assert not second.done()  # the gap was looked at once
    listener.notify(None)
    assert second.done()
    listener.notify(None)  # with nobody waiting: kept for the next wait
    assert listener.wait(after=10).done()
    assert not listener.wait(after=10).done()


async def test_a_cancelled_wait_is_not_woken() -> None:
    listener = Listener()
    waiter = listener.wait(after=0)
    waiter.cancel()
    listener.notify(1)  # no InvalidStateError
    assert waiter.cancelled()
    assert listener.wait(after=0).done()


async def test_an_awaited_wait_returns_on_its_wake_up() -> None:
    listener = Listener()
    waiting = asyncio.ensure_future(listener.wait(after=0))
    await asyncio.sleep(0)
    listener.notify(1)
    await asyncio.wait_for(waiting, TIMEOUT)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    broker = broker_from_url("memory://")
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.disconnect()


async def test_a_hub_keeps_its_reads_results_until_the_next_wake_up(
    engine: AsyncEngine, broker: Broker
) -> None:
    hubs = LocalHubs(broker, engine)
    async with hubs.join(1) as (hub, listener):
        first, second = await asyncio.gather(hub.read(0), hub.read(0))
        assert first is second  # one read for both
        # Kept as its batch (a done task would keep its coroutine too).
        assert isinstance(hub._reads[0], Batch)
        assert await hub.read(0) is first
        # A wake-up: reads from before it may miss its change.
        await broker.publish(user_channel(1), encode_wakeup(1))
        await asyncio.wait_for(listener.wait(after=0), TIMEOUT)
        assert not hub._reads  # (cleared before the listeners are woken)
        assert await hub.read(0) is not first


async def logged_changes_of(engine: AsyncEngine, user_id: int, count: int) -> list[LoggedChange]:
    """`count` changes concerning `user_id`, each committed on its own, as the log has
    them."""
    for n in range(count):
        change = Change(RecordKey("Card", 500 + n), ChangeOp.UPDATED, n + 1, {user_id})
        async with AsyncSession(engine) as session, session.begin():
            await session.run_sync(lambda sync, c=change: record_changes(sync, [c]))
    async with engine.connect() as connection:
        return await changes_since(connection, user_id, 0, 100)


@contextlib.asynccontextmanager
async def log_reads(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """The change-log reads run on `engine` meanwhile (on the driver on PostgreSQL,
    through SQLAlchemy on SQLite)."""
    seen: list[str] = []

    def on_cursor(*args: Any) -> None:
        statement = args[2]
        if "change_audience" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_cursor)
    try:
        async with driver_statements(
            engine, lambda s: seen.append(s) if "change_audience" in s else None
        ):
            yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_cursor)


async def test_a_read_joined_by_another_subscription_is_theirs_too_if_its_first_reader_leaves(
    engine: AsyncEngine, broker: Broker
) -> None:
    """The first subscription to ask reads in its own task; one that asks the same
    meanwhile waits for that read, and reads again itself if the first one's task is
    cancelled (its subscription ended) before the read finished."""
    changes = await logged_changes_of(engine, 1, 2)
    hubs = LocalHubs(broker, engine)
    async with hubs.join(1) as (hub, _listener):
        first = asyncio.create_task(hub.read(0))
        await asyncio.sleep(0)  # the first has asked the log reader
        joining = asyncio.create_task(hub.read(0))
        await asyncio.sleep(0)  # the second waits for the first's read
        first.cancel()
        batch = await asyncio.wait_for(joining, TIMEOUT)
        assert first.cancelled()
        assert batch.changes == changes
        assert hub._reads[0] is batch  # kept for whoever asks next
        async with log_reads(engine) as reads:
            assert await hub.read(0) is batch
            await asyncio.sleep(0)
        assert reads == []


async def test_a_wake_up_carrying_its_change_answers_reads_from_its_position_unread(
    engine: AsyncEngine, broker: Broker
) -> None:
    first, second, third = await logged_changes_of(engine, 1, 3)
    hubs = LocalHubs(broker, engine)
    async with hubs.join(1) as (hub, listener):
        # The third change, carried, with the user's change before it: the second.
        await broker.publish(user_channel(1), encode_wakeup(third.id, third, second.id))
        await asyncio.wait_for(listener.wait(after=second.id), TIMEOUT)
        async with log_reads(engine) as reads:
            at_second = await hub.read(second.id)
            # Every position from the previous change up to the carried one, included.
            between = await hub.read(third.id - 1) if third.id - 1 > second.id else at_second
            await asyncio.sleep(0)  # (asyncpg's logger reports on the next tick)
        assert reads == []
        assert at_second.changes == [third] == between.changes
        assert at_second.caught_up
        assert at_second.read_at > 0
        assert await hub.read(second.id) is at_second  # shared, as a read would be
        # An older position may have more to read: the log says what.
        async with log_reads(engine) as reads:
            assert (await hub.read(first.id)).changes == [second, third]
            await asyncio.sleep(0)
        assert len(reads) == 1
        # The next wake-up, carrying nothing: positions read again.
        await broker.publish(user_channel(1), encode_wakeup(third.id))
        await asyncio.wait_for(listener.wait(after=second.id), TIMEOUT)
        assert not hub._reads
        async with log_reads(engine) as reads:
            assert (await hub.read(second.id)).changes == [third]
            await asyncio.sleep(0)
        assert len(reads) == 1


def test_wake_ups_round_trip_and_anything_else_is_not_one() -> None:
    committed = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=UTC)
    carried = LoggedChange(42, "Card", 7, ChangeOp.DELETED, None, committed)
    assert decode_wakeup(encode_wakeup(42)) == Wakeup(42)
    assert decode_wakeup(encode_wakeup(42, carried, 40)) == Wakeup(42, carried, 40)
    versioned = LoggedChange(43, "Board", 8, ChangeOp.CREATED, 3, committed)
    assert decode_wakeup(encode_wakeup(43, versioned, 0)) == Wakeup(43, versioned, 0)
    for message in [
        "",
        "x",
        "-1",
        "42 40 Card 7",
        "42 40 Card 7 REMOVED - 1796121534547997",  # no such op
        "42 42 Card 7 UPDATED 1 1796121534547997",  # previous not below the change
        "42 40  7 UPDATED 1 1796121534547997",  # no typename
        "42 40 Card seven UPDATED 1 1796121534547997",
    ]:
        assert decode_wakeup(message) is None, message
    assert not Wakeup(42).covers(41)
    wakeup = Wakeup(42, carried, 40)
    assert [wakeup.covers(after) for after in (39, 40, 41, 42)] == [False, True, True, False]
