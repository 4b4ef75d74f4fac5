"""This process's authenticated WebSockets: who holds them with which token, so that a
user's sockets can be counted (WS_MAX_SOCKETS_PER_USER), closed when their token
expires, and closed when logOut revokes the token (on this or another process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.auth import TokenClaims
from app.timer_heap import HeapTimer, TimerHeap

logger = logging.getLogger("commitcast.sockets")

CLOSE_TOKEN_UNUSABLE = 4403
EXPIRED_REASON = "The access token has expired; reconnect with a fresh token."
REVOKED_REASON = "The access token was revoked (logOut); log in again."

CloseSocket = Callable[[int, str], Awaitable[None]]


@dataclass(eq=False, slots=True)  # one per open socket: no dict per instance
class LiveSocket:
    claims: TokenClaims
    close: CloseSocket
    owner: LiveSockets
    # Closes it when its token expires (on LiveSockets' timer heap).
    expiry: HeapTimer | None = None

    @property
    def user_id(self) -> int:
        return self.claims.user_id

    def expire(self) -> None:
        """The expiry's callback (a bound method: smaller than a partial with its
        arguments, for every open socket)."""
        self.owner._close_soon(self, CLOSE_TOKEN_UNUSABLE, EXPIRED_REASON)


class LiveSockets:
    """Keyed by the connection's ASGI scope (one per socket). Not thread-safe: every
    call runs on the event loop."""

    def __init__(self, max_per_user: int) -> None:
        self._max_per_user = max_per_user
        self._sockets: dict[int, LiveSocket] = {}
        self._per_user: dict[int, int] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # The token stops being valid at `exp`: so does the socket it opened. One loop
        # timer for all of them (a loop timer each was about 0.8 KiB per idle socket).
        self._expiries = TimerHeap(time.time)

    def admit(self, key: object, claims: TokenClaims, close: CloseSocket) -> bool:
        """Register a socket authenticated with `claims`; False when its user already
        holds the maximum number of sockets on this process."""
        self.discard(key)  # a repeated connection_init (legacy graphql-ws) replaces it
        if self._per_user.get(claims.user_id, 0) >= self._max_per_user:
            return False
        socket = LiveSocket(claims, close, self)
        socket.expiry = self._expiries.call_at(claims.expires_at, socket.expire)
        self._sockets[id(key)] = socket
        self._per_user[claims.user_id] = self._per_user.get(claims.user_id, 0) + 1
        return True

    def discard(self, key: object) -> None:
        socket = self._sockets.pop(id(key), None)
        if socket is None:
            return
        self._stop_expiry(socket)
        left = self._per_user.get(socket.user_id, 1) - 1
        if left > 0:
            self._per_user[socket.user_id] = left
        else:
            self._per_user.pop(socket.user_id, None)

    def count(self, user_id: int) -> int:
        return self._per_user.get(user_id, 0)

    def sockets(self) -> list[LiveSocket]:
        return list(self._sockets.values())

    def close_where(self, revoked: Callable[[TokenClaims], bool]) -> int:
        """Close (4403) every socket whose token `revoked` says is no longer valid."""
        doomed = [s for s in self._sockets.values() if revoked(s.claims)]
        for socket in doomed:
            self._close_soon(socket, CLOSE_TOKEN_UNUSABLE, REVOKED_REASON)
        return len(doomed)

    async def aclose(self) -> None:
        """Wait (briefly) for the closes in progress; at shutdown."""
        self._expiries.clear()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=2.0)

    @staticmethod
    def _stop_expiry(socket: LiveSocket) -> None:
        if socket.expiry is not None:
            socket.expiry.cancel()
            socket.expiry = None  # (its callback refers to the socket)

    def _close_soon(self, socket: LiveSocket, code: int, reason: str) -> None:
        self._stop_expiry(socket)
        task = asyncio.get_running_loop().create_task(self._close(socket, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(socket: LiveSocket, code: int, reason: str) -> None:
        # The socket may be closing already (the client left, another close won).
        with contextlib.suppress(Exception):
            await socket.close(code, reason)
        logger.info("closed a WebSocket of user %s with %s: %s", socket.user_id, code, reason)
