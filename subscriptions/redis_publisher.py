"""The relay's own Redis connection for PUBLISH and script calls.

Every committed change costs its process one publish, on the event loop that also runs
the mutations. Through the redis-py client, a PUBLISH cost 155 to 220 µs of CPU (one
core of the 2-core development VM, 2026-12-01): a pooled connection's checkout and its
readiness check, a task (`asyncio.wait_for`) around each socket write for
`socket_timeout`, a timeout context around each read, the retry wrapper, the checkin.
On a connection of its own, with one `asyncio.timeout` around the whole exchange, it
cost 80 to 110 µs.

The connection is made by the client's connection pool settings (TLS, AUTH, SELECT,
protocol version: whatever the URL says), so it connects exactly as the client would;
only its own per-command timeouts are left out, for the one around the exchange. Calls
take turns (a lock): the relay publishes from one task, the sweeper rarely.

A failure mid-exchange (timeout, cancellation, lost connection) may leave replies
unread, which the next call would take for its own: the connection is dropped then, and
the next call opens a new one. Error replies (NOSCRIPT after a script flush, say) are
read to the last before the first one is raised, so the connection stays in step.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

# Longest a publish may take, sending and reading its replies (the client's
# socket_timeout had bounded each of those on its own).
TIMEOUT = 5.0


class RedisPublisher:
    def __init__(self, client: redis.Redis, timeout: float = TIMEOUT) -> None:
        self._client = client
        self._timeout = timeout
        self._connection: AbstractConnection | None = None
        self._turn = asyncio.Lock()

    async def execute(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send `commands` in one write and return their replies, in order. An error
        reply is raised (the first one) once every reply has been read. A connection
        that fails is dropped; the caller may try again on a new one."""
        async with self._turn:
            connection = self._connection
            if connection is None:
                connection = self._connection = self._new_connection()
            try:
                async with asyncio.timeout(self._timeout):
                    if not connection.is_connected:
                        await connection.connect()  # type: ignore[no-untyped-call]
                    await connection.send_packed_command(
                        connection.pack_commands(commands), check_health=False
                    )
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await connection.read_response())
                        except ResponseError as error:
                            replies.append(error)
            except BaseException:
                # (Cancellation included: a reply may be on its way, for nobody.)
                self._connection = None
                await connection.disconnect(nowait=True)
                raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def aclose(self) -> None:
        async with self._turn:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.disconnect()

    def _new_connection(self) -> AbstractConnection:
        pool = self._client.connection_pool
        settings = {**pool.connection_kwargs, "socket_timeout": None}
        connection: AbstractConnection = pool.connection_class(**settings)
        return connection
