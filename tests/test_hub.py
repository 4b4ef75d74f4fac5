"""subscriptions.hub: a local subscription's wake-up signal (`Listener`), and a hub
keeping what its shared reads found (a batch, not the finished task) until the next
wake-up. Over the in-memory broker and a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from subscriptions.broker import Broker, broker_from_url
from subscriptions.changes import encode_wakeup, user_channel
from subscriptions.hub import Batch, Listener, LocalHubs

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
