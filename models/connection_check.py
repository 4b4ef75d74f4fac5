"""Whether a pooled PostgreSQL connection is still open, told without a round trip.

The pool checks a connection before handing it out (models.database's checkout ping,
`SELECT 1`): one round trip, paid by every write sent as one statement on the driver
(schema.mutations.card_update) and every other checkout that cannot simply run again.
At 20 mutations/s on the development machine it was 0.18 to 0.27 ms of the update's
1.1 to 1.5 ms on the driver.

A healthy pooled connection hears nothing while it waits in the pool: PostgreSQL
sends only what it is asked for on it. A connection PostgreSQL ends (a restart, an
administrator, an idle timeout) gets a FATAL error and the end of the stream. So the
check is whether anything came from the server since the connection went back to the
pool:
- what asyncpg has already read: a tap between the transport and asyncpg's protocol
  (`watch`, once per connection) counts what arrives, and the count is noted when the
  connection goes back to the pool (`note_returned`). asyncpg itself may not say: one
  that read the FATAL error but not yet the end of the stream still takes itself for
  open, and refuses the next statement;
- what has arrived and not been read yet: a non-blocking peek at the socket (MSG_PEEK,
  nothing consumed) sees bytes or the end of the stream waiting.
Nothing on either count is the ping's answer without its round trip; anything else,
and anything this cannot look at (a connection not watched, a transport without a
socket, a platform without MSG_DONTWAIT), is "cannot tell": the checkout pings, as
before. Go's MySQL driver checks pooled connections the same way (connCheck).

What neither tells: a connection whose server vanished without a word (a network cut;
the ping would then wait as long as the statement) and one the server ends between the
check and the statement (as it may between the ping and the statement).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

# Not on every platform (Windows has no MSG_DONTWAIT): there the checkout always pings.
_PEEK_FLAGS: int | None = (
    socket.MSG_PEEK | socket.MSG_DONTWAIT if hasattr(socket, "MSG_DONTWAIT") else None
)


class _Tap(asyncio.Protocol):
    """asyncpg's protocol, behind a count of the events the server caused."""

    __slots__ = ("heard", "inner")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.heard = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.heard += 1
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.heard += 1
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self.heard += 1
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _transport(driver: Any) -> Any:
    # (asyncpg's Connection keeps its transport as `_transport`; an asyncpg without it:
    # nothing is watched, and every checkout pings.)
    return getattr(driver, "_transport", None)


def watch(driver: Any) -> None:
    """Put the tap between the asyncpg connection `driver`'s transport and protocol
    (once, on a new connection; asyncpg keeps its own reference to its protocol)."""
    transport = _transport(driver)
    if transport is None or isinstance(transport.get_protocol(), _Tap):
        return
    transport.set_protocol(_Tap(transport.get_protocol()))


def heard(driver: Any) -> int | None:
    """How many times the server has been heard from on `driver` (None: not watched)."""
    transport = _transport(driver)
    tap = transport.get_protocol() if transport is not None else None
    return tap.heard if isinstance(tap, _Tap) else None


def open_and_quiet(driver: Any, heard_when_returned: int | None) -> bool:
    """True when the asyncpg connection `driver` is open and its server has sent nothing
    since it was heard from `heard_when_returned` times (when it went back to the pool):
    nothing read, nothing waiting. False when that cannot be told (then ping)."""
    is_closed = getattr(driver, "is_closed", None)
    if _PEEK_FLAGS is None or is_closed is None or is_closed():
        return False
    if heard_when_returned is None or heard(driver) != heard_when_returned:
        return False
    sock = _transport(driver).get_extra_info("socket")
    if sock is None:
        return False
    try:
        # A duplicate of the descriptor: closing it leaves the connection's own open.
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
            duplicate.recv(1, _PEEK_FLAGS)
    except BlockingIOError:
        return True  # nothing waiting, and not the end of the stream
    except OSError:
        return False  # (a reset connection; a descriptor already closed)
    return False  # bytes waiting (a FATAL error, as a rule) or the end of the stream
