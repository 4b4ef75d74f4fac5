"""The relay's publishing connection (subscriptions.redis_publisher) on a real
redis-server of the test's own: replies stay in step with their commands through error
replies, timeouts, cancellation and a restart.

Replies are how a test tells whose they are: PUBLISH answers with the number of
subscribers that received the message, so a command on a channel nobody listens to
(0) followed by one on a channel with a listener (1) shows a reply read by the wrong
call. Redis is stalled with CLIENT PAUSE from another connection (the server answers
nothing meanwhile, as a busy or distant one would).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from subscriptions.redis_publisher import RedisPublisher
from tests.redis_server import RedisServer

WAIT = 10.0
PAUSE_MS = 600


@pytest.fixture
async def client(own_redis: RedisServer) -> AsyncIterator[redis.Redis]:
    """Settings as subscriptions.backends.RedisBackend's client has them."""
    client = redis.Redis.from_url(own_redis.url(3), socket_connect_timeout=2, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def publisher(client: redis.Redis) -> AsyncIterator[RedisPublisher]:
    publisher = RedisPublisher(client)
    yield publisher
    await publisher.aclose()


@pytest.fixture
async def listened(client: redis.Redis) -> AsyncIterator[str]:
    """A channel with one subscriber (PUBLISH to it answers 1)."""
    channel = f"listened-{uuid.uuid4().hex}"
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    async with asyncio.timeout(WAIT):
        while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
            pass
    yield channel
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def pause(client: redis.Redis) -> None:
    """Redis runs no command of any client for PAUSE_MS (this one's answer comes
    first)."""
    await client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")


async def test_replies_come_back_in_order_for_one_write(
    publisher: RedisPublisher, listened: str
) -> None:
    replies = await publisher.execute(
        ("PUBLISH", "nobody-listens", "a"), ("PUBLISH", listened, "b"), ("PING",)
    )
    assert replies == [0, 1, b"PONG"]


async def test_an_error_reply_is_raised_after_the_rest_are_read(
    publisher: RedisPublisher, listened: str
) -> None:
    """As after every script flush or restart of Redis: NOSCRIPT costs no reconnect."""
    (connection_id,) = await publisher.execute(("CLIENT", "ID"))
    with pytest.raises(NoScriptError):
        await publisher.execute(
            ("EVALSHA", "0" * 40, 0), ("PUBLISH", "nobody-listens", "after the error")
        )
    # In step: this call reads its own reply, not the one left from the last call.
    replies = await publisher.execute(("PUBLISH", listened, "next"), ("CLIENT", "ID"))
    assert replies == [1, connection_id]


async def test_a_timed_out_exchange_leaves_no_reply_for_the_next_call(
    client: redis.Redis, listened: str
) -> None:
    impatient = RedisPublisher(client, timeout=0.1)
    try:
        await impatient.execute(("PING",))  # connected before Redis stalls
        await pause(client)
        with pytest.raises(TimeoutError):
            await impatient.execute(("PUBLISH", "nobody-listens", "stalled"))
        # Its reply (0) arrives once Redis goes on, on the connection that was dropped.
        patient = RedisPublisher(client)
        try:
            assert await patient.execute(("PING",)) == [b"PONG"]  # waits out the pause
        finally:
            await patient.aclose()
        assert await impatient.execute(("PUBLISH", listened, "after")) == [1]
    finally:
        await impatient.aclose()


async def test_a_cancelled_exchange_leaves_no_reply_for_the_next_call(
    client: redis.Redis, publisher: RedisPublisher, listened: str
) -> None:
    await publisher.execute(("PING",))
    await pause(client)
    stalled = asyncio.create_task(publisher.execute(("PUBLISH", "nobody-listens", "x")))
    await asyncio.sleep(0.05)  # (sent, waiting for Redis: what is cancelled)
    stalled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stalled
    async with asyncio.timeout(WAIT):
        assert await publisher.execute(("PUBLISH", listened, "after")) == [1]


async def test_after_a_restart_the_next_call_fails_once_then_reconnects(
    own_redis: RedisServer, client: redis.Redis, publisher: RedisPublisher
) -> None:
    assert await publisher.execute(("PING",)) == [b"PONG"]
    await own_redis.restart()
    # The idle connection died with the old server: that call fails (the broker tries
    # again once, and the relay with backoff)...
    with pytest.raises(RedisConnectionError):
        await publisher.execute(("PUBLISH", "nobody-listens", "x"))
    # ...and the next one goes out on a new connection, to the same database.
    assert await publisher.execute(("SET", "written-by-the-publisher", "1")) == [b"OK"]
    assert await client.get("written-by-the-publisher") == b"1"


async def test_calls_take_turns_on_the_one_connection(
    publisher: RedisPublisher, listened: str
) -> None:
    commands = [("PUBLISH", listened if n % 2 else "nobody-listens", str(n)) for n in range(40)]
    replies = await asyncio.gather(*(publisher.execute(c) for c in commands))
    assert replies == [[n % 2] for n in range(40)]
