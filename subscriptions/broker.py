"""The process's one broker connection with local fan-out, chosen by URL scheme.

`memory://` keeps messages inside this process (the embedded default); `redis://` and
`rediss://` connect processes through Redis pub/sub. Each channel is subscribed once
per process, however many local subscribers it has. A local subscriber either reads a
bounded queue of its own (`subscribe`), or has each message handed to a callback as the
broker receives it (`listen`: for consumers that only set flags, such as a user's hub,
which then hold no queue and no task). Interface after broadcaster's `Broadcast`
(connect, disconnect, publish, `async with subscribe(channel)`), made correct under
concurrency and faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from broadcaster._base import Event

from subscriptions.backends import GAP, MemoryBackend, RedisBackend, _Gap
from subscriptions.metrics import Metrics, unobserved
from subscriptions.small_queue import SmallQueue

logger = logging.getLogger("commitcast.broker")

SUPPORTED_SCHEMES = ("memory", "redis", "rediss")
DEFAULT_QUEUE_SIZE = 1000


S = TypeVar("S", bound="Subscriber | Callback")


class BrokerURLError(ValueError):
    """BROKER_URL names a scheme we have no backend for."""


def check_broker_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        choices = ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        raise BrokerURLError(f"BROKER_URL {url!r}: unsupported scheme {scheme!r} (use {choices})")
    return url


class Backend(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def ping(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def publish_many(self, messages: list[tuple[str, str]]) -> None: ...
    async def next_published(self) -> Event | _Gap: ...


class Subscriber:
    """One local subscription. Iterating yields message strings, or GAP when messages
    for this subscriber were lost (queue overflow, broker reconnect).

    Each user with a live subscription on this process has one (its hub's), idle nearly
    all the time: a small queue (subscriptions.small_queue, about 3 KiB less than an
    asyncio.Queue) and iteration without an async generator."""

    __slots__ = ("_queue",)

    def __init__(self, maxsize: int) -> None:
        self._queue: SmallQueue[str | _Gap] = SmallQueue(maxsize)

    def _deliver(self, message: str) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            # A consumer this far behind must refetch anyway: drop its backlog and tell
            # it so, instead of growing without bound or dropping silently.
            self._drain()
            self._signal_gap()

    def _signal_gap(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(GAP)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def get(self) -> Awaitable[str | _Gap]:
        return self._queue.get()

    def __aiter__(self) -> Subscriber:
        return self

    def __anext__(self) -> Awaitable[str | _Gap]:
        return self._queue.get()


class Callback:
    """A local subscription whose messages (and GAPs) are handed to `on_message` as the
    broker's listener receives them: no queue and no task on the receiving side. For
    consumers whose handling is short and never blocks (a user's hub, which only
    wakes its listeners)."""

    __slots__ = ("_on_message",)

    def __init__(self, on_message: Callable[[str | _Gap], None]) -> None:
        self._on_message = on_message

    def _deliver(self, message: str) -> None:
        try:
            self._on_message(message)
        except Exception:  # one consumer's bug must not stop the others' messages
            logger.exception("a broker subscriber's callback failed")

    def _drain(self) -> None:
        pass  # nothing is queued

    def _signal_gap(self) -> None:
        try:
            self._on_message(GAP)
        except Exception:
            logger.exception("a broker subscriber's callback failed")


LocalSubscriber = Subscriber | Callback


class Subscription(Generic[S]):
    """`async with broker.subscribe(channel) as subscriber` (or `broker.listen(...)`).
    An object rather than a generator-based context manager: a subscription may be
    held for as long as a user has a live subscription here."""

    __slots__ = ("_broker", "_channel", "_subscriber")

    def __init__(self, broker: Broker, channel: str, subscriber: S) -> None:
        self._broker = broker
        self._channel = channel
        self._subscriber = subscriber

    async def __aenter__(self) -> S:
        await self._broker._add(self._channel, self._subscriber)
        return self._subscriber

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._broker._remove(self._channel, self._subscriber)


class Broker:
    """`namespace` prefixes every channel on the wire. Redis pub/sub ignores the database
    number in the URL, so two deployments sharing one Redis would otherwise hear each
    other's notices; each deployment uses its own namespace (see app.runtime)."""

    def __init__(
        self,
        url: str,
        backend: Backend,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        namespace: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        self.url = url
        self._metrics = metrics or unobserved()
        self._backend = backend
        self._queue_size = queue_size
        self._prefix = f"{namespace}:" if namespace else ""
        self._subscribers: dict[str, set[LocalSubscriber]] = {}
        self._channel_locks: dict[str, ChannelLock] = {}
        self._listener: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self._backend.connect()
        self._listener = asyncio.create_task(self._listen(), name="broker-listener")

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._backend.disconnect()

    async def ping(self) -> None:
        await self._backend.ping()

    async def publish(self, channel: str, message: str) -> None:
        await self.publish_many([(channel, message)])

    async def publish_many(self, messages: list[tuple[str, str]]) -> None:
        if messages:
            await self._backend.publish_many(
                [(self._prefix + channel, message) for channel, message in messages]
            )

    def subscribe(self, channel: str) -> Subscription[Subscriber]:
        """`async with broker.subscribe(channel) as subscriber`: messages published on
        `channel` from the moment the `async with` body starts."""
        return Subscription(self, channel, Subscriber(self._queue_size))

    def listen(
        self, channel: str, on_message: Callable[[str | _Gap], None]
    ) -> Subscription[Callback]:
        """`async with broker.listen(channel, on_message)`: `on_message` is called, on
        the event loop, with each message published on `channel` (or GAP) from the
        moment the `async with` body starts. It must return quickly and not raise."""
        return Subscription(self, channel, Callback(on_message))

    async def _add(self, channel: str, subscriber: LocalSubscriber) -> None:
        # The lock makes concurrent first subscribers wait for the one SUBSCRIBE, so
        # none returns before the channel is live and none replaces another's queue.
        async with self._channel_lock(channel):
            subscribers = self._subscribers.setdefault(channel, set())
            subscribers.add(subscriber)
            if len(subscribers) == 1:
                try:
                    await self._backend.subscribe(self._prefix + channel)
                except BaseException:
                    self._forget(channel, subscriber)
                    raise

    async def _remove(self, channel: str, subscriber: LocalSubscriber) -> None:
        async with self._channel_lock(channel):
            if self._forget(channel, subscriber):
                with contextlib.suppress(Exception):
                    await self._backend.unsubscribe(self._prefix + channel)

    def _channel_lock(self, channel: str) -> ChannelLock:
        lock = self._channel_locks.get(channel)
        if lock is None:
            lock = self._channel_locks[channel] = ChannelLock(self, channel)
        return lock

    def _lock_unused(self, channel: str, lock: ChannelLock) -> None:
        """Called by a channel's lock once nobody holds or waits for it: it goes with
        the channel's last subscriber (one lock per channel ever used would grow with
        every user who ever connected)."""
        if channel not in self._subscribers and self._channel_locks.get(channel) is lock:
            del self._channel_locks[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    def _forget(self, channel: str, subscriber: LocalSubscriber) -> bool:
        """Remove a subscriber; True when it was the channel's last one."""
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            return False
        subscribers.discard(subscriber)
        if subscribers:
            return False
        # (The channel's lock goes once nobody holds or waits for it: ChannelLock.)
        del self._subscribers[channel]
        return True

    async def _listen(self) -> None:
        while True:
            try:
                item = await self._backend.next_published()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never die silently: log, pause, and tell every subscriber it may
                # have missed something.
                logger.exception("broker listener failed; restarting")
                self._broadcast_gap()
                await asyncio.sleep(1.0)
                continue
            if isinstance(item, _Gap):
                self._broadcast_gap()
                continue
            if not item.channel.startswith(self._prefix):
                continue  # another deployment's channel
            channel = item.channel[len(self._prefix) :]
            for subscriber in list(self._subscribers.get(channel, ())):
                subscriber._deliver(item.message)

    def _broadcast_gap(self) -> None:
        self._metrics.broker_gaps.inc()
        for subscribers in list(self._subscribers.values()):
            for subscriber in list(subscribers):
                subscriber._drain()
                subscriber._signal_gap()


class ChannelLock:
    """`async with`: one channel's SUBSCRIBE/UNSUBSCRIBE lock, counting who holds or
    waits for it, so that the broker can drop it once unused (and never hand out a
    second lock for a channel while the first has a waiter: two SUBSCRIBEs would race)."""

    __slots__ = ("_broker", "_channel", "_lock", "_users")

    def __init__(self, broker: Broker, channel: str) -> None:
        self._broker = broker
        self._channel = channel
        self._lock = asyncio.Lock()
        self._users = 0

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._left()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        self._lock.release()
        self._left()

    def _left(self) -> None:
        self._users -= 1
        if self._users == 0:
            self._broker._lock_unused(self._channel, self)


def broker_from_url(
    url: str,
    *,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    namespace: str = "",
    metrics: Metrics | None = None,
) -> Broker:
    scheme = urlsplit(check_broker_url(url)).scheme
    backend: Backend = MemoryBackend(url) if scheme == "memory" else RedisBackend(url, metrics)
    return Broker(url, backend, queue_size=queue_size, namespace=namespace, metrics=metrics)
