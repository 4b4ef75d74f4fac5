"""The context managers a subscription holds for its life are small classes, not
generator-based ones (subscriptions.feed.UserStream, subscriptions.delivery.Subscribed):
whatever ends the body (it returns, raises, or is cancelled), what they hold is given
back, as with the try/finally of the generators they replace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from models.database import create_engine
from subscriptions.broker import broker_from_url
from subscriptions.delivery import DeliveryObserver
from subscriptions.feed import UpdateFeed
from subscriptions.metrics import Metrics

TRANSPORT = "graphql-transport-ws"


@pytest.fixture
async def feed(database_url: str) -> AsyncIterator[UpdateFeed]:
    engine: AsyncEngine = create_engine(database_url)
    broker = broker_from_url("memory://")
    await broker.connect()
    try:
        yield UpdateFeed(broker, engine)
    finally:
        await broker.disconnect()
        await engine.dispose()


def listeners(feed: UpdateFeed, user_id: int) -> int:
    hub = feed.hubs.hub(user_id)
    return 0 if hub is None else len(hub.listeners)


async def test_a_stream_listens_while_open_and_detaches_at_exit(feed: UpdateFeed) -> None:
    async with feed.open(1, None) as stream, feed.open(1, None) as other:
        assert stream.start.resync is False
        assert listeners(feed, 1) == 2  # one hub for the user, a listener each
        assert other.start.position == stream.start.position
    assert feed.hubs.hub(1) is None  # the last listener left: the hub stopped
    assert len(feed.hubs) == 0


async def test_a_stream_detaches_when_the_body_raises(feed: UpdateFeed) -> None:
    async def failing_body() -> None:
        async with feed.open(1, None):
            assert listeners(feed, 1) == 2
            raise RuntimeError("body")

    async with feed.open(1, None):
        with pytest.raises(RuntimeError, match="body"):
            await failing_body()
        assert listeners(feed, 1) == 1  # the other stream still listens
    assert feed.hubs.hub(1) is None


async def test_a_stream_detaches_when_its_task_is_cancelled(feed: UpdateFeed) -> None:
    waiting = asyncio.Event()

    async def subscriber() -> None:
        async with feed.open(1, None) as stream:
            waiting.set()
            await stream.wait(stream.start.position)  # no wake-up comes

    task = asyncio.create_task(subscriber())
    await asyncio.wait_for(waiting.wait(), timeout=5)
    assert listeners(feed, 1) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert feed.hubs.hub(1) is None


async def test_a_malformed_cursor_opens_a_stream_that_must_resync(feed: UpdateFeed) -> None:
    async with feed.open(1, "not a cursor") as stream:
        assert stream.start.resync is True
        assert listeners(feed, 1) == 1


def active(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "commitcast_active_subscriptions", {"transport": TRANSPORT}
    )
    return value or 0.0


async def test_the_active_subscriptions_gauge_counts_while_the_body_runs() -> None:
    observer = DeliveryObserver(Metrics(), TRANSPORT)
    async with observer.subscribed():
        async with observer.subscribed():
            assert active(observer.metrics) == 2
        assert active(observer.metrics) == 1
    assert active(observer.metrics) == 0


async def test_the_gauge_goes_down_when_the_body_raises_or_is_cancelled() -> None:
    observer = DeliveryObserver(Metrics(), TRANSPORT)
    with pytest.raises(RuntimeError):
        async with observer.subscribed():
            raise RuntimeError("body")
    assert active(observer.metrics) == 0

    running = asyncio.Event()

    async def subscription() -> None:
        async with observer.subscribed():
            running.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(subscription())
    await asyncio.wait_for(running.wait(), timeout=5)
    assert active(observer.metrics) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert active(observer.metrics) == 0
