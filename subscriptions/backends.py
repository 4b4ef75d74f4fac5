"""Broker backends, behind broadcaster's BroadcastBackend interface.

Both return `GAP` from next_published() when messages may have been lost (the Redis
connection dropped and was re-established), so that subscribers can repair instead of
silently missing updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio as redis
from broadcaster._backends.memory import MemoryBackend as BroadcasterMemoryBackend
from broadcaster._base import Event
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from subscriptions.metrics import Metrics, unobserved
from subscriptions.redis_publisher import RedisPublisher

logger = logging.getLogger("commitcast.broker")


class _Gap:
    def __repr__(self) -> str:
        return "GAP"


GAP: Final = _Gap()
"""Returned by next_published(): messages may have been lost since the last one."""

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# PUBLISH one message (ARGV[1]) to every channel that follows it; returns how many
# subscribers received it, like PUBLISH.
FAN_OUT = """
local received = 0
for i = 2, #ARGV do
  received = received + redis.call('PUBLISH', ARGV[i], ARGV[1])
end
return received
"""
FAN_OUT_SHA = hashlib.sha1(FAN_OUT.encode()).hexdigest()  # noqa: S324 - Redis's script id
# Channel, message, channel, message...: messages that differ per channel (a wake-up
# that carries its change names the user's previous one) in one call all the same.
PUBLISH_EACH = """
local received = 0
for i = 1, #ARGV, 2 do
  received = received + redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return received
"""
PUBLISH_EACH_SHA = hashlib.sha1(PUBLISH_EACH.encode()).hexdigest()  # noqa: S324
# Channels per script call: each call runs alone on the Redis server, briefly.
FAN_OUT_CHUNK = 500


def _publish_calls(messages: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(script, arguments) calls that publish `messages` in their order: a run of one
    message to several channels is a FAN_OUT call (per chunk of channels), and
    consecutive messages to one channel each are PUBLISH_EACH calls (per chunk of
    them)."""
    runs: list[tuple[str, list[str]]] = []
    for channel, message in messages:
        if runs and runs[-1][0] == message:
            runs[-1][1].append(channel)
        else:
            runs.append((message, [channel]))
    calls: list[tuple[str, list[str]]] = []
    for message, channels in runs:
        if len(channels) > 1:
            calls.extend(
                (FAN_OUT_SHA, [message, *channels[at : at + FAN_OUT_CHUNK]])
                for at in range(0, len(channels), FAN_OUT_CHUNK)
            )
            continue
        last = calls[-1] if calls else None
        if last is None or last[0] != PUBLISH_EACH_SHA or len(last[1]) >= 2 * FAN_OUT_CHUNK:
            calls.append((PUBLISH_EACH_SHA, []))
        calls[-1][1].extend((channels[0], message))
    return calls


class MemoryBackend(BroadcasterMemoryBackend):
    """broadcaster's in-process backend (one process; nothing is ever lost)."""

    async def ping(self) -> None:
        return None

    async def publish_many(self, messages: list[tuple[str, str]]) -> None:
        for channel, message in messages:
            await self.publish(channel, message)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)


class RedisBackend:
    """Redis pub/sub that stays subscribed.

    Fixes what broadcaster 0.3.1's Redis backend gets wrong: subscribe() returns only
    once Redis has confirmed the SUBSCRIBE (so nothing published afterwards is missed);
    a dropped connection is re-opened with backoff, every channel re-subscribed, and
    GAP reported; the reader never dies silently.
    """

    SUBSCRIBE_TIMEOUT = 5.0
    READ_TIMEOUT = 1.0
    MAX_RECONNECT_DELAY = 2.0

    def __init__(self, url: str, metrics: Metrics | None = None) -> None:
        self._url = url
        self._metrics = metrics or unobserved()
        self._client: redis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._channels: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # Channels re-subscribed on a new connection that Redis has not confirmed yet;
        # the GAP for a reconnect waits for them (see next_published).
        self._unconfirmed: set[str] = set()
        self._gap_pending = False
        # Publishes go out on a connection of their own (subscriptions.redis_publisher).
        self._publisher: RedisPublisher | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        # No retries inside redis-py: a failure must surface here, where the reader
        # re-opens the subscription and reports the gap.
        self._client = redis.Redis.from_url(
            self._url,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
        )
        self._publisher = RedisPublisher(self._client)
        try:
            await self._open()
        except CONNECTION_ERRORS as exc:
            logger.warning("Redis is not reachable yet (%s); will keep trying", exc)

    async def disconnect(self) -> None:
        await self._close_pubsub()
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        client = self._require_client()
        await _once_more_on_a_dropped_connection(client.ping)

    async def publish(self, channel: str, message: Any) -> None:
        await self._publish([("PUBLISH", channel, message)])

    async def publish_many(self, messages: list[tuple[str, str]]) -> None:
        """Publish each (channel, message). A change's wake-up goes to every member of
        its audience with the same text: those go out as one script call per message
        (FAN_OUT), not one PUBLISH each, so a change 1,000 users see costs this process
        one command to encode and one reply to read, not 1,000. Messages of their own
        (one channel each: wake-ups that carry their change, or the changes of several
        commits) go out together in one script call too (PUBLISH_EACH). The usual case,
        one commit whose audience is one user, is a plain PUBLISH."""
        calls = _publish_calls(messages)
        if len(calls) == 1 and calls[0][0] == PUBLISH_EACH_SHA and len(calls[0][1]) == 2:
            await self._publish([("PUBLISH", *calls[0][1])])
            return
        # All of them script calls, sent together: after a script flush every one fails
        # and they are all sent again, in order (a PUBLISH among them would get ahead).
        # A Redis that knows only one of the scripts (loaded by an older version) gets
        # the other one's messages again: a repeated wake-up is harmless.
        commands = [("EVALSHA", sha, 0, *arguments) for sha, arguments in calls]
        try:
            await self._publish(commands)
        except NoScriptError:
            # A new (or restarted, or flushed) Redis does not know them yet.
            await self._publish([("SCRIPT", "LOAD", FAN_OUT), ("SCRIPT", "LOAD", PUBLISH_EACH)])
            await self._publish(commands)

    async def _publish(self, commands: list[tuple[Any, ...]]) -> None:
        publisher = self._publisher
        if publisher is None:
            raise RuntimeError("the Redis broker is not connected")
        await _once_more_on_a_dropped_connection(lambda: publisher.execute(*commands))

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # the reader subscribes every channel when it reconnects
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            await pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(waiter), self.SUBSCRIBE_TIMEOUT)
        except (TimeoutError, *CONNECTION_ERRORS) as exc:
            # The reader notices the broken connection, re-subscribes and reports GAP.
            logger.warning("SUBSCRIBE %s not confirmed (%s)", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._unconfirmed.discard(channel)
        if self._pubsub is not None:
            # On failure, nothing to do: a new connection will not subscribe it again.
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._pubsub.unsubscribe(channel)

    async def next_published(self) -> Event | _Gap:
        delay = 0.05
        while True:
            if self._pubsub is None:
                try:
                    await self._open()
                except CONNECTION_ERRORS as exc:
                    logger.warning("Redis pub/sub reconnect failed (%s); retrying", exc)
                    await asyncio.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter
                    delay = min(delay * 2, self.MAX_RECONNECT_DELAY)
                    continue
                self.reconnects += 1
                self._metrics.broker_reconnects.inc()
                logger.warning(
                    "Redis pub/sub reconnected; re-subscribed %d channels", len(self._channels)
                )
                delay = 0.05
                if self._channels:
                    self._gap_pending = True  # whatever was published meanwhile is lost
            if self._gap_pending and not self._unconfirmed:
                # Only once Redis has confirmed every re-SUBSCRIBE: a consumer repairs on
                # GAP and then relies on the stream, which must be live by then.
                self._gap_pending = False
                return GAP
            pubsub = self._pubsub
            assert pubsub is not None
            try:
                message = await pubsub.get_message(timeout=self.READ_TIMEOUT)
            except CONNECTION_ERRORS as exc:
                logger.warning("lost the Redis pub/sub connection (%s); reconnecting", exc)
                await self._close_pubsub()
                continue
            if message is None:
                continue
            kind = message["type"]
            channel = _text(message["channel"])
            if kind == "subscribe":
                self._unconfirmed.discard(channel)
                for waiter in self._waiters.pop(channel, []):
                    if not waiter.done():
                        waiter.set_result(None)
            elif kind == "message":
                return Event(channel=channel, message=_text(message["data"]))

    async def _open(self) -> None:
        pubsub = self._require_client().pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
            self._unconfirmed = set(self._channels)
            if self._channels:
                await pubsub.subscribe(*self._channels)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _require_client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("the Redis broker is not connected")
        return self._client


async def _once_more_on_a_dropped_connection(run: Callable[[], Awaitable[object]]) -> None:
    """Run `run`, and once more if its connection turned out dropped. An idle connection
    may have died with a restarted server, and redis-py 8 (RESP3 with maintenance
    notifications) no longer checks for that before using it; the failed one has been
    closed (the publisher's is dropped), so the second try goes out on a fresh one.
    Redis really down fails again, here, for the caller (the relay: with backoff)."""
    try:
        await run()
    except RedisConnectionError:
        await run()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
