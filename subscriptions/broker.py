"""The process's one broker connection with local fan-out, chosen by URL scheme.

`memory://` keeps messages inside this process (the embedded default); `redis://` and
`rediss://` connect processes through Redis pub/sub. Each channel is subscribed once
per process, however many local subscribers it has; every local subscriber has a
bounded queue. Interface after broadcaster's `Broadcast` (connect, disconnect,
publish, `async with subscribe(channel)`), made correct under concurrency and faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlsplit

from broadcaster._base import Event

from subscriptions.backends import GAP, MemoryBackend, RedisBackend, _Gap
from subscriptions.metrics import Metrics, unobserved

logger = logging.getLogger("commitcast.broker")

SUPPORTED_SCHEMES = ("memory", "redis", "rediss")
DEFAULT_QUEUE_SIZE = 1000


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
    for this subscriber were lost (queue overflow, broker reconnect)."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[str | _Gap] = asyncio.Queue(maxsize)

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

    async def get(self) -> str | _Gap:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[str | _Gap]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | _Gap]:
        while True:
            yield await self.get()


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
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._channel_locks: dict[str, asyncio.Lock] = {}
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

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(self._queue_size)
        lock = self._channel_locks.setdefault(channel, asyncio.Lock())
        # The lock makes concurrent first subscribers wait for the one SUBSCRIBE, so
        # none returns before the channel is live and none replaces another's queue.
        async with lock:
            subscribers = self._subscribers.setdefault(channel, set())
            subscribers.add(subscriber)
            if len(subscribers) == 1:
                try:
                    await self._backend.subscribe(self._prefix + channel)
                except BaseException:
                    self._forget(channel, subscriber)
                    raise
        try:
            yield subscriber
        finally:
            async with lock:
                if self._forget(channel, subscriber):
                    with contextlib.suppress(Exception):
                        await self._backend.unsubscribe(self._prefix + channel)

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    def _forget(self, channel: str, subscriber: Subscriber) -> bool:
        """Remove a subscriber; True when it was the channel's last one."""
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            return False
        subscribers.discard(subscriber)
        if subscribers:
            return False
        # The channel's lock stays: a subscriber may be waiting on it right now, and a
        # second lock for the same channel would let two SUBSCRIBEs race.
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
