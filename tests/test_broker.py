"""The broker layer on real Redis (and memory:// where it applies).

Each test proves one of the broadcaster 0.3.1 traps fixed (DESIGN.md, "Known traps"):
ready-before-SUBSCRIBE, concurrent first subscribers, a listener that dies with the
connection or with an unexpected error, unbounded queues, plus cross-process delivery,
unsubscribe, and the relay retrying through a broker outage.

Redis pub/sub channels are global to the server (not per database), so every test uses
channels of its own. Outage tests run their own redis-server (tests/redis_server.py);
the shared one is never stopped. Waits are bounded polls, never sleeps used as proof.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Protocol
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from broadcaster._base import Event
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models import change_log
from models.database import create_engine
from models.realtime import RecordKey
from subscriptions.backends import GAP, MemoryBackend, RedisBackend, _Gap
from subscriptions.broker import (
    DEFAULT_QUEUE_SIZE,
    Backend,
    Broker,
    Subscriber,
    broker_from_url,
)
from subscriptions.changelog import record_changes
from subscriptions.changes import Change, ChangeOp, user_channel
from subscriptions.relay import Relay
from tests.redis_server import RedisServer, tcp_proxy
from tests.support import eventually

WAIT = 10.0
"""Upper bound for anything that should happen "soon" (typically milliseconds)."""

Item = str | _Gap


class OpenBroker(Protocol):
    def __call__(
        self, url: str, *, backend: Backend | None = None, queue_size: int = ...
    ) -> Awaitable[Broker]: ...


def unique_channel(label: str = "test") -> str:
    return f"commitcast:test:{label}:{uuid.uuid4().hex}"


def backend_for(url: str) -> Backend:
    return MemoryBackend(url) if url.startswith("memory:") else RedisBackend(url)


async def receive(subscriber: Subscriber, within: float = WAIT) -> Item:
    async with asyncio.timeout(within):
        return await subscriber.get()


async def receive_n(subscriber: Subscriber, count: int, within: float = WAIT) -> list[Item]:
    items: list[Item] = []
    async with asyncio.timeout(within):
        while len(items) < count:
            items.append(await subscriber.get())
    return items


def queued(subscriber: Subscriber) -> list[Item]:
    """What is waiting in a subscriber's queue right now, without blocking."""
    items: list[Item] = []
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            items.append(subscriber._queue.get_nowait())
    return items


async def numsub(client: redis.Redis, channel: str) -> int:
    [(_, count)] = await client.pubsub_numsub(channel)
    return int(count)


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def open_broker() -> AsyncIterator[OpenBroker]:
    """Connect brokers (each one stands for one app process); disconnect them after."""
    opened: list[Broker] = []

    async def open_(
        url: str, *, backend: Backend | None = None, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> Broker:
        broker = Broker(url, backend or backend_for(url), queue_size=queue_size)
        await broker.connect()
        opened.append(broker)
        return broker

    yield open_
    for broker in reversed(opened):
        await broker.disconnect()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


class CountingBackend:
    """A real backend, counting the SUBSCRIBEs the broker asks of it, each one slowed
    down (network latency) so that anything returning before it completes shows."""

    SUBSCRIBE_LATENCY = 0.05

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.subscribes: dict[str, int] = {}
        self.live: set[str] = set()

    async def connect(self) -> None:
        await self.inner.connect()

    async def disconnect(self) -> None:
        await self.inner.disconnect()

    async def ping(self) -> None:
        await self.inner.ping()

    async def subscribe(self, channel: str) -> None:
        self.subscribes[channel] = self.subscribes.get(channel, 0) + 1
        await asyncio.sleep(self.SUBSCRIBE_LATENCY)
        await self.inner.subscribe(channel)
        self.live.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.live.discard(channel)
        await self.inner.unsubscribe(channel)

    async def publish_many(self, messages: list[tuple[str, str]]) -> None:
        await self.inner.publish_many(messages)

    async def next_published(self) -> Event | _Gap:
        return await self.inner.next_published()


# 1. Concurrent first subscribers; ready only after SUBSCRIBE ------------------------


async def test_fifty_concurrent_first_subscribers_all_receive_everything_in_order(
    broker_url: str, open_broker: OpenBroker
) -> None:
    backend = CountingBackend(backend_for(broker_url))
    broker = await open_broker(broker_url, backend=backend)
    channel = unique_channel("fifty")
    messages = [f"m{i}" for i in range(200)]
    subscribers = 50
    live = 0
    all_live = asyncio.Event()

    async def subscribe_and_read(number: int) -> list[Item]:
        nonlocal live
        async with broker.subscribe(channel) as subscriber:
            assert channel in backend.live, "subscribe() returned before the SUBSCRIBE"
            # Live as soon as subscribe() returns: a probe published right now arrives
            # (other subscribers' probes may arrive too, and are skipped).
            probe = f"probe {number}"
            await broker.publish(channel, probe)
            while (item := await receive(subscriber)) != probe:
                assert isinstance(item, str), item
                assert item.startswith("probe "), item
            live += 1
            if live == subscribers:
                all_live.set()
            received: list[Item] = []
            while len(received) < len(messages):
                item = await receive(subscriber)
                if not (isinstance(item, str) and item.startswith("probe ")):
                    received.append(item)
            return received

    readers = asyncio.gather(*(subscribe_and_read(n) for n in range(subscribers)))
    waiting = asyncio.ensure_future(all_live.wait())
    try:
        await asyncio.wait({waiting, readers}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if readers.done():
            readers.result()  # a subscriber failed: show why
        assert waiting.done(), f"only {live} of {subscribers} subscribers became live"
        assert broker.subscriber_count(channel) == subscribers
        for message in messages[:100]:  # one at a time, then one pipeline of 100
            await broker.publish(channel, message)
        await broker.publish_many([(channel, message) for message in messages[100:]])
        results = await readers
    finally:
        waiting.cancel()
        readers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readers

    assert len(results) == subscribers
    for received in results:
        assert received == messages
    assert backend.subscribes == {channel: 1}, "one backend SUBSCRIBE per channel"
    assert broker.subscriber_count(channel) == 0


async def test_lone_first_subscriber_receives_a_message_published_right_after_subscribe(
    broker_url: str, open_broker: OpenBroker
) -> None:
    # broadcaster 0.3.1 set "ready" before Redis confirmed the SUBSCRIBE: a message
    # published right after subscribe() returned was lost. Fresh brokers each round,
    # so each subscriber is the process's very first one.
    for round_ in range(5):
        broker = await open_broker(broker_url)
        for attempt in range(10):
            channel = unique_channel("lone")
            async with broker.subscribe(channel) as subscriber:
                await broker.publish(channel, f"hello {round_}.{attempt}")
                assert await receive(subscriber) == f"hello {round_}.{attempt}"


async def test_a_subscriber_far_from_redis_is_live_when_subscribe_returns(
    redis_url: str, open_broker: OpenBroker
) -> None:
    # Its SUBSCRIBE travels 50 ms; another process's PUBLISH, sent the moment
    # subscribe() returns, travels almost none. Only waiting for Redis's confirmation
    # makes the subscriber see it.
    target = urlsplit(redis_url)
    db = target.path.lstrip("/") or "0"
    near = await open_broker(redis_url)
    async with tcp_proxy(target.port or 6379, latency=0.05) as proxy:
        far = await open_broker(proxy.url(int(db)))
        try:
            for attempt in range(3):
                channel = unique_channel("far")
                async with far.subscribe(channel) as subscriber:
                    await near.publish(channel, f"right away {attempt}")
                    assert await receive(subscriber) == f"right away {attempt}"
        finally:
            await far.disconnect()


# 2. Across processes ------------------------------------------------------------------


async def test_messages_cross_between_broker_instances(
    redis_url: str, open_broker: OpenBroker
) -> None:
    first = await open_broker(redis_url)
    second = await open_broker(redis_url)
    channel = unique_channel("cross")
    async with first.subscribe(channel) as on_first, second.subscribe(channel) as on_second:
        await first.publish(channel, "from first")
        await second.publish_many([(channel, "from second 1"), (channel, "from second 2")])
        expected = ["from first", "from second 1", "from second 2"]
        assert await receive_n(on_first, 3) == expected
        assert await receive_n(on_second, 3) == expected


async def test_one_message_to_many_channels_reaches_each_even_after_a_script_flush(
    redis_url: str, open_broker: OpenBroker, redis_client: redis.Redis
) -> None:
    """publish_many sends a run of one message to many channels as one script call
    (the relay's wake-up for a change's whole audience); a Redis that lost the script
    (restarted, SCRIPT FLUSH) gets it again."""
    broker = await open_broker(redis_url)
    channels = [unique_channel(f"fan{n}") for n in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        subscribers = [await stack.enter_async_context(broker.subscribe(c)) for c in channels]
        for round_ in range(2):
            await redis_client.script_flush()
            await broker.publish_many(
                [(c, f"change {round_}") for c in channels] + [(channels[0], f"then {round_}")]
            )
            assert await receive_n(subscribers[0], 2) == [f"change {round_}", f"then {round_}"]
            for subscriber in subscribers[1:]:
                assert await receive(subscriber) == f"change {round_}"


async def evalsha_calls(redis_client: redis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_messages_of_their_own_go_out_in_order_as_few_script_calls(
    redis_url: str, open_broker: OpenBroker, redis_client: redis.Redis
) -> None:
    """Wake-ups that carry their change differ per user: a batch of them, around a run
    of one message to many channels, is three script calls (not one per message), and
    each channel still gets its messages in order, after a script flush too."""
    broker = await open_broker(redis_url)
    channels = [unique_channel(f"own{n}") for n in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        subscribers = [await stack.enter_async_context(broker.subscribe(c)) for c in channels]
        for round_ in range(2):
            if round_ == 0:
                await redis_client.script_flush()
            before = await evalsha_calls(redis_client)
            await broker.publish_many(
                [(c, f"own {n} {round_}") for n, c in enumerate(channels[:2])]
                + [(c, f"shared {round_}") for c in channels]
                + [(channels[0], f"last {round_}"), (channels[3], f"last {round_}!")]
            )
            expected = [
                [f"own 0 {round_}", f"shared {round_}", f"last {round_}"],
                [f"own 1 {round_}", f"shared {round_}"],
                [f"shared {round_}"],
                [f"shared {round_}", f"last {round_}!"],
            ]
            for subscriber, messages in zip(subscribers, expected, strict=True):
                assert await receive_n(subscriber, len(messages)) == messages
            if round_ == 1:  # (the first one also counts the calls the flush refused)
                assert await evalsha_calls(redis_client) - before == 3


async def test_namespaces_keep_deployments_on_one_redis_apart(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Redis pub/sub ignores the database number: the namespace is what separates them.
    channel = unique_channel("namespaced")
    blue = broker_from_url(redis_url, namespace="blue")
    green = broker_from_url(redis_url, namespace="green")
    await blue.connect()
    await green.connect()
    try:
        async with blue.subscribe(channel) as on_blue, green.subscribe(channel) as on_green:
            assert await numsub(redis_client, f"blue:{channel}") == 1
            assert await numsub(redis_client, channel) == 0
            # Each PUBLISH completes before the next is sent, so Redis would hand a
            # leaked message to the other namespace's subscriber before its own next one.
            await blue.publish(channel, "for blue")
            await green.publish(channel, "for green")
            await green.publish(channel, "for green 2")
            await blue.publish(channel, "for blue 2")
            assert await receive_n(on_blue, 2) == ["for blue", "for blue 2"]
            assert await receive_n(on_green, 2) == ["for green", "for green 2"]
    finally:
        await blue.disconnect()
        await green.disconnect()


# 3. Redis restarts --------------------------------------------------------------------


async def test_listener_survives_a_redis_restart(
    own_redis: RedisServer, open_broker: OpenBroker
) -> None:
    backend = RedisBackend(own_redis.url())
    broker = await open_broker(own_redis.url(), backend=backend)
    channel = unique_channel("restart")
    async with broker.subscribe(channel) as subscriber:
        await broker.publish(channel, "before")
        assert await receive(subscriber) == "before"
        reconnects = backend.reconnects

        await own_redis.stop()
        # Publishing fails loudly while Redis is down (the relay's job is to retry).
        with pytest.raises((RedisError, OSError)):
            await broker.publish(channel, "while down")
        with pytest.raises((RedisError, OSError)):
            await broker.publish_many([(channel, "while down 1"), (channel, "while down 2")])
        with pytest.raises((RedisError, OSError)):
            await broker.ping()

        await own_redis.start()  # same port, empty server: no subscriptions survive
        assert await receive(subscriber) is GAP, "a reconnect must be reported"
        assert backend.reconnects > reconnects

        # Redis is back (it answered PING before start() returned): the broker's very
        # first command works, though its pooled connections died with the old server.
        await broker.ping()

        # Publish until one arrives (bounded): the re-SUBSCRIBE is the listener's job.
        received: Item | None = None
        async with asyncio.timeout(WAIT):
            attempt = 0
            while received is None:
                attempt += 1
                await broker.publish(channel, f"after {attempt}")
                with contextlib.suppress(TimeoutError):
                    received = await receive(subscriber, within=0.1)
        assert isinstance(received, str)
        assert received.startswith("after ")
        # Live again: in order, with nothing but late copies of the probes before it.
        await broker.publish(channel, "steady")
        late: list[Item] = []
        while (item := await receive(subscriber)) != "steady":
            late.append(item)
        assert all(isinstance(i, str) and i.startswith("after ") for i in late), late
        assert queued(subscriber) == []


async def test_after_a_gap_the_subscription_is_live_again(
    own_redis: RedisServer, open_broker: OpenBroker
) -> None:
    # GAP tells the consumer to refetch and carry on with the stream, so the stream
    # must be live again when GAP arrives: a change published right after it (by a
    # process near Redis) must reach a subscriber whose re-SUBSCRIBE travels 50 ms.
    channel = unique_channel("gap-live")
    async with tcp_proxy(own_redis.port, latency=0.05) as proxy:
        far = await open_broker(proxy.url())
        try:
            async with far.subscribe(channel) as subscriber:
                await far.publish(channel, "before")
                assert await receive(subscriber) == "before"

                await own_redis.restart()
                near = await open_broker(own_redis.url())
                assert await receive(subscriber) is GAP
                await near.publish(channel, "right after the gap")
                assert await receive(subscriber) == "right after the gap"
        finally:
            await far.disconnect()


async def test_a_channel_subscribed_while_reconnecting_is_not_forgotten(
    own_redis: RedisServer, open_broker: OpenBroker
) -> None:
    # Freeze the broker in the middle of re-opening its pub/sub connection (the proxy
    # holds new connections), subscribe another channel right then, let it finish: the
    # new channel must be live too, not just the ones it had before.
    before, during = unique_channel("before"), unique_channel("during")
    near = await open_broker(own_redis.url())
    async with tcp_proxy(own_redis.port) as proxy:
        far = await open_broker(proxy.url())
        try:
            async with far.subscribe(before) as old:
                await near.publish(before, "up")
                assert await receive(old) == "up"

                proxy.hold()
                await own_redis.restart()

                async def reconnecting() -> bool:
                    return proxy.held > 0

                await eventually(reconnecting, "the broker to reconnect through the proxy")
                entering = far.subscribe(during)
                entered = asyncio.ensure_future(entering.__aenter__())
                # It may return at once (reporting GAP later) or wait for the connection.
                await asyncio.wait({entered}, timeout=1.0)
                proxy.release()
                async with asyncio.timeout(WAIT):
                    new = await entered
                try:
                    # Once the GAP is out, every channel is live, the new one included.
                    assert await receive(old) is GAP
                    await near.publish(during, "to the new channel")
                    while (item := await receive(new)) is GAP:
                        pass
                    assert item == "to the new channel"
                finally:
                    await entering.__aexit__(None, None, None)
        finally:
            await far.disconnect()


async def test_subscribing_while_redis_is_down_delivers_once_it_is_back(
    own_redis: RedisServer, open_broker: OpenBroker
) -> None:
    backend = RedisBackend(own_redis.url())
    broker = await open_broker(own_redis.url(), backend=backend)
    await own_redis.stop()
    channel = unique_channel("down")
    async with asyncio.timeout(WAIT):
        entered = broker.subscribe(channel)
        subscriber = await entered.__aenter__()
    try:
        await own_redis.start()
        # It could not be confirmed: the GAP after the reconnect says so, and by then
        # the channel is live.
        assert await receive(subscriber) is GAP
        await broker.publish(channel, "back")
        assert await receive(subscriber) == "back"
    finally:
        await entered.__aexit__(None, None, None)


# 4. Bounded queues ----------------------------------------------------------------------


async def test_a_stalled_subscriber_is_bounded_and_does_not_hold_back_others(
    broker_url: str, open_broker: OpenBroker
) -> None:
    queue_size = 10
    broker = await open_broker(broker_url, queue_size=queue_size)
    channel = unique_channel("bounded")
    total = 10_000
    batch = queue_size  # the reading subscriber has the same bound: never outrun it
    received: list[Item] = []
    progress = asyncio.Condition()

    async with broker.subscribe(channel) as stalled, broker.subscribe(channel) as reader:

        async def read() -> None:
            async for item in reader:
                async with progress:
                    received.append(item)
                    progress.notify_all()
                if len(received) >= total or item is GAP:
                    return

        reading = asyncio.create_task(read())
        try:
            async with asyncio.timeout(30):
                for start in range(0, total, batch):
                    await broker.publish_many(
                        [(channel, str(i)) for i in range(start, start + batch)]
                    )
                    async with progress:
                        await progress.wait_for(
                            lambda end=start + batch: len(received) >= end or reading.done()
                        )
                    assert not reading.done() or len(received) == total, received[-3:]
                await reading
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

        assert received == [str(i) for i in range(total)]

        # Every message was handed to both subscribers together, so the stalled one's
        # queue is final: at most queue_size items, among them a GAP, messages after
        # the last GAP only, in order.
        backlog = queued(stalled)
        assert GAP in backlog
        assert len(backlog) <= queue_size
        last_gap = max(i for i, item in enumerate(backlog) if item is GAP)
        tail = backlog[last_gap + 1 :]
        assert all(isinstance(item, str) for item in tail)
        assert [int(str(item)) for item in tail] == sorted(int(str(item)) for item in tail)
        assert all(int(str(item)) > total - 2 * queue_size for item in tail)

        # Once it reads again, it is an ordinary subscriber.
        await broker.publish(channel, "caught up")
        assert await receive(stalled) == "caught up"
        assert await receive(reader) == "caught up"


# 5. Unsubscribe -------------------------------------------------------------------------


async def test_unsubscribes_from_redis_when_the_last_local_subscriber_leaves(
    redis_url: str, redis_client: redis.Redis, open_broker: OpenBroker
) -> None:
    broker = await open_broker(redis_url)
    channel = unique_channel("unsubscribe")
    assert await numsub(redis_client, channel) == 0

    async with broker.subscribe(channel) as staying:
        async with broker.subscribe(channel) as leaving:
            assert await numsub(redis_client, channel) == 1
            await broker.publish(channel, "both")
            assert await receive(leaving) == "both"
            assert await receive(staying) == "both"
        assert broker.subscriber_count(channel) == 1
        # Published after the other left, through Redis: the subscription is still live.
        await broker.publish(channel, "one left")
        assert await receive(staying) == "one left"
        assert await numsub(redis_client, channel) == 1

    assert broker.subscriber_count(channel) == 0

    async def unsubscribed() -> bool:
        return await numsub(redis_client, channel) == 0

    await eventually(unsubscribed, "Redis to drop the channel's subscription")

    # The channel can be subscribed again afterwards, and is live when that returns.
    async with broker.subscribe(channel) as again:
        assert await numsub(redis_client, channel) == 1
        await broker.publish(channel, "again")
        assert await receive(again) == "again"


async def test_rapid_subscribe_unsubscribe_cycles_stay_live(
    broker_url: str, open_broker: OpenBroker
) -> None:
    broker = await open_broker(broker_url)
    channel = unique_channel("cycles")
    for i in range(30):
        async with broker.subscribe(channel) as subscriber:
            await broker.publish(channel, f"cycle {i}")
            assert await receive(subscriber) == f"cycle {i}"


# 6. The listener never dies silently ------------------------------------------------------


class FlakyBackend:
    """An in-process backend whose next_published() raises when told to."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event | Exception] = asyncio.Queue()
        self._channels: set[str] = set()

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish_many(self, messages: list[tuple[str, str]]) -> None:
        for channel, message in messages:
            self._events.put_nowait(Event(channel=channel, message=message))

    def fail_next_read(self, error: Exception) -> None:
        self._events.put_nowait(error)

    async def next_published(self) -> Event | _Gap:
        while True:
            item = await self._events.get()
            if isinstance(item, Exception):
                raise item
            if item.channel in self._channels:
                return item


class BackendExploded(RuntimeError):
    pass


async def test_listener_logs_unexpected_errors_reports_a_gap_and_keeps_delivering(
    open_broker: OpenBroker, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyBackend()
    broker = await open_broker("memory://", backend=backend)
    channel = unique_channel("flaky")
    async with broker.subscribe(channel) as subscriber:
        await broker.publish(channel, "before")
        assert await receive(subscriber) == "before"

        backend.fail_next_read(BackendExploded("boom"))
        assert await receive(subscriber) is GAP

        failures = [
            record
            for record in caplog.records
            if record.name == "commitcast.broker" and record.levelno >= logging.ERROR
        ]
        assert len(failures) == 1
        assert failures[0].exc_info is not None
        assert isinstance(failures[0].exc_info[1], BackendExploded)

        await broker.publish(channel, "after")
        assert await receive(subscriber) == "after"


# The relay -------------------------------------------------------------------------


async def logged(engine: AsyncEngine, *changes: Change) -> list[Change]:
    """Write `changes` to the change log, as a commit would, giving them their ids."""
    async with AsyncSession(engine) as session:
        await session.run_sync(lambda sync: record_changes(sync, list(changes)))
        await session.commit()
    return list(changes)


async def test_relay_retries_through_a_broker_outage_and_loses_nothing(
    own_redis: RedisServer,
    open_broker: OpenBroker,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="commitcast.relay")
    url = own_redis.url()
    engine = create_engine(sqlite_url)
    relay = Relay(await open_broker(url), engine, timedelta(days=1))
    await relay.start()
    try:
        # Up: a change wakes up its audience with its change id.
        listener = await open_broker(url)
        async with listener.subscribe(user_channel(1)) as ann:
            relay.submit(
                await logged(engine, Change(RecordKey("Card", 7), ChangeOp.UPDATED, 2, {1}))
            )
            assert await receive(ann) == "1"

        # Down: committed changes keep coming; the relay keeps them and retries.
        await own_redis.stop()
        relay.submit(
            await logged(engine, Change(RecordKey("Card", 7), ChangeOp.UPDATED, 3, {1, 2}))
        )
        relay.submit(
            await logged(engine, Change(RecordKey("Comment", 9), ChangeOp.CREATED, 1, {1}))
        )

        # Let the relay back off until its next attempt is 1.6 s away (five failures of
        # 0.1, 0.2, 0.4, 0.8, 1.6 s delays): room to bring Redis back and subscribe
        # before it retries. Pub/sub is at-most-once, so a subscriber must be live
        # before the publish to see it; one cut off by the outage gets GAP instead,
        # which test_listener_survives_a_redis_restart proves.
        def relay_failures() -> int:
            return sum(
                1
                for record in caplog.records
                if record.name == "commitcast.relay" and "retrying" in record.getMessage()
            )

        async def backed_off() -> bool:
            return relay_failures() >= 5

        await eventually(backed_off, "the relay to fail and back off", within=5.0)
        assert relay.published == 1

        failures = relay_failures()
        await own_redis.start()
        subscriber_broker = await open_broker(url)
        async with (
            subscriber_broker.subscribe(user_channel(1)) as ann,
            subscriber_broker.subscribe(user_channel(2)) as bob,
        ):
            to_ann = await receive_n(ann, 2)
            to_bob = await receive_n(bob, 1)
            await relay.idle()

        # Wake-ups in commit order, each naming the newest change for that user.
        assert to_ann == ["2", "3"]
        assert to_bob == ["2"]
        assert relay.published == 4
        # Its first attempt after Redis came back worked (no stale connection tripped it).
        assert relay_failures() == failures
        # Published changes are marked: the sweeper leaves them alone.
        async with engine.connect() as connection:
            unmarked = await connection.scalar(
                select(func.count()).where(change_log.c.published_at.is_(None))
            )
        assert unmarked == 0
    finally:
        await relay.stop()
        await engine.dispose()


# 7. Callback subscribers (Broker.listen) -----------------------------------------------


class Heard:
    """What a listen() callback was handed, with a way to wait for the n-th item."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._changed = asyncio.Event()

    def __call__(self, item: Item) -> None:
        self.items.append(item)
        self._changed.set()

    async def at_least(self, count: int) -> list[Item]:
        async with asyncio.timeout(WAIT):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


async def test_a_listening_callback_hears_what_a_queued_subscriber_receives(
    open_broker: OpenBroker, broker_url: str
) -> None:
    broker = await open_broker(broker_url)
    channel = unique_channel("listen")
    heard = Heard()
    async with broker.listen(channel, heard), broker.subscribe(channel) as subscriber:
        for n in range(5):
            await broker.publish(channel, f"m{n}")
        expected = [f"m{n}" for n in range(5)]
        assert await receive_n(subscriber, 5) == expected
        assert await heard.at_least(5) == expected
        assert broker.subscriber_count(channel) == 2
    assert broker.subscriber_count(channel) == 0


async def test_a_callback_hears_gaps_and_one_that_raises_does_not_stop_the_others(
    open_broker: OpenBroker, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyBackend()
    broker = await open_broker("memory://", backend=backend)
    channel = unique_channel("listen-flaky")
    heard = Heard()

    def failing(_item: Item) -> None:
        raise RuntimeError("a consumer's bug")

    async with broker.listen(channel, failing), broker.listen(channel, heard):
        await broker.publish(channel, "before")
        backend.fail_next_read(BackendExploded("boom"))
        await broker.publish(channel, "after")
        assert await heard.at_least(3) == ["before", GAP, "after"]
    callback_failures = [r for r in caplog.records if "callback failed" in r.getMessage()]
    assert len(callback_failures) == 3  # "before", the gap, "after": each logged


# 8. Per-channel locks go with their channel -----------------------------------------


async def test_a_channels_lock_goes_with_its_last_subscriber(
    open_broker: OpenBroker, broker_url: str
) -> None:
    backend = CountingBackend(backend_for(broker_url))
    broker = await open_broker(broker_url, backend=backend)
    channels = [unique_channel(f"lock{n}") for n in range(20)]

    async def cycle(channel: str) -> None:
        # Overlapping joins and leaves on one channel: one SUBSCRIBE while live.
        async with (
            broker.subscribe(channel),
            broker.listen(channel, lambda _item: None),
            broker.subscribe(channel) as third,
        ):
            await broker.publish(channel, "hello")
            assert await receive(third) == "hello"

    await asyncio.gather(*(cycle(channel) for channel in channels))
    assert all(backend.subscribes[channel] == 1 for channel in channels)
    assert broker._channel_locks == {}  # one per channel ever used would only grow
    assert broker._subscribers == {}


async def test_a_failed_subscribe_leaves_no_lock_and_the_next_one_works(
    open_broker: OpenBroker,
) -> None:
    backend = FlakyBackend()
    broker = await open_broker("memory://", backend=backend)
    channel = unique_channel("lock-failing")

    async def refuse(_channel: str) -> None:
        raise BackendExploded("no SUBSCRIBE")

    backend.subscribe = refuse  # type: ignore[method-assign]
    with pytest.raises(BackendExploded):
        async with broker.subscribe(channel):
            pass
    assert broker._channel_locks == {}
    del backend.subscribe  # the class's own again
    async with broker.subscribe(channel) as subscriber:
        await broker.publish(channel, "after")
        assert await receive(subscriber) == "after"
    assert broker._channel_locks == {}
