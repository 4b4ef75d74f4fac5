"""uvicorn's sans-I/O WebSocket protocol, keeping less per open connection.

Every idle subscribed socket keeps one protocol object for its whole life, and the
stock one (uvicorn's `websockets-sansio`) carries things it only needs briefly or that
are bigger than their use:

- `queue`, an `asyncio.Queue` (three deques and an `asyncio.Event` with a fourth): the
  protocol puts at most a message or two in it before it pauses reading, and one reader
  (the app's `receive`) takes them out. A list and the waiting reader's future do. And
  `receive` returns the queue's own `get()`, which resumes reading once drained, as
  uvicorn's `receive` does after it: an idle socket's app waits without uvicorn's
  coroutine frame around the queue's (about 0.2 KiB).
- `writable`, an `asyncio.Event` (a deque of waiters) for write flow control: a flag,
  and waiter futures only while the transport is actually paused.
- `request` and `response`, the handshake's websockets objects with their headers:
  never read after the handshake; the scope keeps its own copy of the request headers.
  websockets' parser keeps the request too, in a local variable of its generator for
  the connection's life: its headers are emptied at once, and once the handshake is
  done the parser is replaced by its frame loop alone (`_restart_idle_parser`), and
  again after each message, which the loop would keep until the next one.
- `ping_timer`, a loop timer per socket until its next keepalive ping (about 0.8 KiB
  each): the sockets' ping timers share one loop timer here (app.timer_heap), with the
  same schedule.
- the scope's `headers`, a new pair of bytes per header per socket, although most of a
  socket's handshake headers are those of every other socket from the same kind of
  client (Host, Upgrade, Sec-WebSocket-Version, User-Agent, ...): such pairs are shared
  by the sockets of this process (`SharedHeaders`), about 0.6 KiB less per socket.
- the scope's `asgi` and `extensions`, three dicts per socket saying the same for
  every socket (the ASGI version; `{"websocket.http.response": {}}`): read-only
  mappings shared by all sockets (ASGI apps read them: Starlette looks the extension
  up), about 0.4 KiB less. Its `server` address and `subprotocols` (as a tuple) are
  shared too, about 0.2 KiB less.

It also sends a text message on an open connection itself, with the frame made in one
step (`text_frame`), where uvicorn's send goes through websockets' send_text, its Frame
object and serializer, and data_to_send: one such send per socket per delivered update,
so that path is the subscriptions' fan-out. Anything else (a binary message, a close,
the handshake, a closing or compressed connection) is uvicorn's send, unchanged.

This leans on uvicorn internals (our range is `uvicorn>=0.30`, unpinned), so the
subclass is only used when uvicorn's source uses those attributes the way this module
expects (read with `ast` once, at first use); otherwise `websocket_protocol()` returns
the stock class and logs one warning. Each object is checked again when built.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import logging
import textwrap
import weakref
from collections.abc import Awaitable
from types import MappingProxyType
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import Protocol, State

from app.shared_values import SharedValues
from app.source_check import code_dump, coroutine_tree, statements_dump
from app.timer_heap import TimerHeap
from subscriptions.small_queue import SmallQueue

logger = logging.getLogger(__name__)


class WritableFlag:
    """The part of `asyncio.Event` uvicorn's protocol uses for write flow control. Set
    nearly always; waiter futures exist only while the transport's buffer is full."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


# Headers whose values repeat from socket to socket, and reveal nothing secret: only
# these are shared. (Never credentials such as Cookie or Authorization: a shared pair
# outlives its socket. Never Sec-WebSocket-Key: unique to each handshake.)
SHAREABLE_HEADERS = frozenset(
    {
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"connection",
        b"host",
        b"origin",
        b"pragma",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-version",
        b"upgrade",
        b"user-agent",
    }
)
# Distinct shared pairs kept per process, at most (a few per kind of client).
SHARED_HEADERS_LIMIT = 1024


class SharedHeaders:
    """One `(name, value)` tuple per distinct shareable header, used by every socket's
    scope that has it: a scope's headers list then holds mostly shared tuples. Once
    `limit` distinct pairs are kept, new ones are simply not shared."""

    __slots__ = ("_pairs",)

    def __init__(self, limit: int = SHARED_HEADERS_LIMIT) -> None:
        self._pairs: SharedValues[tuple[bytes, bytes]] = SharedValues(limit)

    def __len__(self) -> int:
        return len(self._pairs)

    def share(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`headers` (in the same order), with shareable pairs replaced by the kept
        equal ones."""
        share = self._pairs.share
        return [share(pair) if pair[0].lower() in SHAREABLE_HEADERS else pair for pair in headers]


_SHARED_HEADERS = SharedHeaders()

# What uvicorn 0.54 puts in every WebSocket scope's `asgi` and `extensions`, as
# read-only mappings shared by all scopes that have these very values (compared, so
# another uvicorn's are left as they are).
_SHARED_SCOPE_ENTRIES: dict[str, MappingProxyType[str, object]] = {
    "asgi": MappingProxyType({"version": "3.0", "spec_version": "2.4"}),
    "extensions": MappingProxyType({"websocket.http.response": MappingProxyType({})}),
}


# The server's own address and the subprotocols a client offers, the same for most
# sockets: one equal object for all of them (a tuple for the subprotocols, which ASGI
# apps only read). Distinct values kept per process, at most.
SHARED_SCOPE_VALUES_LIMIT = 256
_SHARED_SCOPE_VALUES: SharedValues[tuple[object, ...]] = SharedValues(SHARED_SCOPE_VALUES_LIMIT)


# The keepalive pings' timers, one heap per event loop (on the loop's clock).
_KEEPALIVE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerHeap] = (
    weakref.WeakKeyDictionary()
)


def keepalive_timers(loop: asyncio.AbstractEventLoop) -> TimerHeap:
    timers = _KEEPALIVE.get(loop)
    if timers is None:
        timers = _KEEPALIVE[loop] = TimerHeap(loop.time)
    return timers


# What the replacements offer, and where uvicorn may read the handshake objects.
_QUEUE_METHODS = frozenset({"put_nowait", "get", "get_nowait", "empty", "qsize"})
_FLAG_METHODS = frozenset({"set", "clear", "wait", "is_set"})
_RESPONSE_READERS = frozenset({"handle_connect", "send"})
# uvicorn's methods that LeanWebSocketProtocol does otherwise (schedule_ping on the
# shared timers, receive without a frame of its own): if uvicorn's differ, the stock
# protocol is used.
_REPLACED_METHODS = {
    "schedule_ping": """
def schedule_ping(self) -> None:
    assert self.ping_interval is not None
    delay = max(0.0, self.ping_interval - self.last_ping_rtt)
    self.ping_timer = self.loop.call_later(delay, self.send_keepalive_ping)
""",
    "receive": """
async def receive(self) -> ASGIReceiveEvent:
    message = await self.queue.get()
    if self.read_paused and self.queue.empty():
        self.read_paused = False
        self.transport.resume_reading()
    return message
""",
}


# uvicorn's `send`, as far as LeanWebSocketProtocol.send takes its place for a text
# message on an open connection: its first steps, and its branch for that message (in
# the handshake-complete case). If uvicorn's differ, the stock protocol is used.
_SEND_START = """
await self.writable.wait()
if self.disconnected:
    raise ClientDisconnected()
"""
_SEND_OPEN_CASE = "not self.close_sent and self.initial_response is None"
_SEND_TEXT_BRANCH = """
if message["type"] == "websocket.send":
    bytes_data = message.get("bytes")
    text_data = message.get("text")
    if bytes_data is not None:
        self.conn.send_binary(bytes_data)
    elif text_data is not None:
        self.conn.send_text(text_data.encode())
    output = self.conn.data_to_send()
    self.transport.write(b"".join(output))
"""


def _send_problem(cls: type[Any]) -> str | None:
    """Why LeanWebSocketProtocol.send's text branch would not do what `cls.send` does."""
    send = coroutine_tree(getattr(cls, "send", None), "uvicorn's send")
    if isinstance(send, str):
        return send
    start = ast.parse(textwrap.dedent(_SEND_START)).body
    if statements_dump(send.body[: len(start)]) != statements_dump(start):
        return "uvicorn's send does not start the way app.ws_protocol expects"
    open_case = ast.dump(ast.parse(_SEND_OPEN_CASE, mode="eval").body)
    branch = statements_dump(ast.parse(textwrap.dedent(_SEND_TEXT_BRANCH)).body)
    for node in ast.walk(send):
        if isinstance(node, ast.If) and ast.dump(node.test) == open_case:
            for inner in ast.walk(node):
                if isinstance(inner, ast.If) and statements_dump([_without_else(inner)]) == branch:
                    return None
    return "uvicorn's send does not send text the way app.ws_protocol expects"


def _without_else(node: ast.If) -> ast.If:
    return ast.If(test=node.test, body=node.body, orelse=[])


def _uses_of_self_attributes(cls: type) -> list[tuple[str, str, ast.AST | None]]:
    """(function, attribute, parent node) for every `self.<attribute>` in the class."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    uses: list[tuple[str, str, ast.AST | None]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(function):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                uses.append((function.name, node.attr, parents.get(node)))
    return uses


@functools.cache
def internals_problem(cls: type = WebSocketsSansIOProtocol) -> str | None:
    """Why the lean protocol can't stand in for `cls` (uvicorn's), or None if it can."""
    try:
        uses = _uses_of_self_attributes(cls)
    except (OSError, TypeError, SyntaxError) as exc:
        return f"cannot read uvicorn's WebSocket protocol source ({exc})"
    for function, attribute, parent in uses:
        if attribute in ("queue", "writable"):
            methods = _QUEUE_METHODS if attribute == "queue" else _FLAG_METHODS
            called = (
                isinstance(parent, ast.Attribute) and parent.attr in methods
            ) or function == "__init__"
            if not called:
                return f"uvicorn uses self.{attribute} in {function}() in an unexpected way"
        elif attribute == "request" and function != "handle_connect":
            return f"uvicorn reads self.request in {function}()"
        elif attribute == "response" and function not in _RESPONSE_READERS:
            return f"uvicorn reads self.response in {function}()"
        elif attribute == "ping_timer" and not (
            isinstance(parent, ast.Assign | ast.AnnAssign | ast.Compare)
            or (isinstance(parent, ast.Attribute) and parent.attr == "cancel")
        ):
            return f"uvicorn uses self.ping_timer in {function}() in an unexpected way"
    for name, expected in _REPLACED_METHODS.items():
        try:
            source = inspect.getsource(getattr(cls, name))
        except (AttributeError, OSError, TypeError) as exc:
            return f"cannot read uvicorn's {name} ({exc})"
        if code_dump(source) != code_dump(expected):
            return f"uvicorn's {name} is not the one app.ws_protocol expects"
    for method in ("handle_connect", "send", "receive", "data_received"):
        if not callable(getattr(cls, method, None)):
            return f"uvicorn's WebSocket protocol has no {method}()"
    return _send_problem(cls)


@functools.cache
def _warn_once(problem: str) -> None:
    logger.warning(
        "Using uvicorn's stock WebSocket protocol (more memory per connection): %s", problem
    )


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol with smaller per-connection state and a
    shorter path for text messages."""

    # uvicorn sets 37 attributes on each protocol object; past 30, CPython stops sharing
    # the class's attribute keys and gives every instance a dict of its own (about 1.6
    # KiB, per connection). Held in slots, these (set once per connection, mostly
    # server-wide settings) leave the rest in shared-key storage. Behaviour is the same:
    # a slot reads and writes like an instance attribute.
    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "close_timeout",
        "config",
        "connections",
        "default_headers",
        "logger",
        "loop",
        "ping_interval",
        "ping_timeout",
        "root_path",
        "tasks",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # uvicorn's own arguments (config, server_state, app_state), passed on unchanged.
        super().__init__(*args, **kwargs)
        # Only replace what is still what this module expects (nothing queued, not
        # paused); otherwise this connection keeps uvicorn's own objects.
        queue: Any = self.queue
        writable: Any = self.writable
        if (
            type(queue) is asyncio.Queue
            and queue.empty()
            and type(writable) is asyncio.Event
            and writable.is_set()
        ):
            queue = SmallQueue()
            queue.on_take = self._resume_reading_when_drained
            self.queue = queue
            self.writable = WritableFlag()  # type: ignore[assignment]
        else:
            _warn_once("its queue or writable flag are not the expected asyncio objects")

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # (The app has not started yet: it runs in a task, from the next loop turn.)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # (None: the handshake was refused)
            scope["headers"] = _SHARED_HEADERS.share(scope["headers"])
            for key, shared in _SHARED_SCOPE_ENTRIES.items():
                if scope.get(key) == shared:
                    scope[key] = shared
            _share_scope_values(scope)
            self.server = scope["server"]  # (the shared tuple, not uvicorn's own copy)
        # The scope has its own copy of the headers, for the app; uvicorn never reads
        # the request again. websockets keeps it too, in a local variable of its
        # suspended parser for the connection's life: empty its headers, the bulk of it.
        del self.request
        event.headers.clear()

    def receive(self) -> Awaitable[ASGIReceiveEvent]:  # type: ignore[override]
        # uvicorn's (checked by internals_problem): the queue resumes reading itself.
        queue: Any = self.queue
        if type(queue) is SmallQueue:
            result: Awaitable[ASGIReceiveEvent] = queue.get()
            return result
        return super().receive()  # (this connection kept uvicorn's queue)

    def _resume_reading_when_drained(self) -> None:
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()

    def schedule_ping(self) -> None:
        # uvicorn's (checked by internals_problem), on the loop's shared timers.
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        timer: Any = keepalive_timers(self.loop).call_later(delay, self.send_keepalive_ping)
        self.ping_timer = timer  # (only ever cancelled, like the loop's TimerHandle)

    async def send(self, message: ASGISendEvent) -> None:
        # A text message on an open connection (nearly every send: the updates): its
        # frame written here, as uvicorn's branch for it would (websockets' send_text,
        # data_to_send, transport.write), without those layers. Anything else, or any
        # state that branch would treat otherwise, goes to uvicorn.
        if message["type"] == "websocket.send":
            text = message.get("text")
            if type(text) is str and message.get("bytes") is None:
                await self.writable.wait()
                conn = self.conn
                if (
                    self.handshake_complete
                    and not self.close_sent
                    and self.initial_response is None
                    and not self.disconnected
                    and conn.state is State.OPEN
                    and not conn.expect_continuation_frame
                    and not conn.extensions
                    and not conn.writes
                    and not conn.debug
                ):
                    self.transport.write(text_frame(text.encode()))
                    return
        await super().send(message)
        # The handshake response (and its headers) is only read until it is sent.
        # (Not `self.__dict__`: reading it would build the instance's own dict.)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            del self.response
            _restart_idle_parser(self.conn)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The parser keeps the last frame it parsed (a local variable of its loop) until
        # the next one: for an idle subscription, its subscribe message.
        _restart_idle_parser(self.conn)


def text_frame(payload: bytes) -> bytes:
    """A server's unfragmented, unmasked, uncompressed WebSocket text frame (RFC 6455
    5.2), the bytes websockets' Frame(TEXT, payload).serialize(mask=False) makes."""
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 0x10000:
        header = bytes((_FIN_TEXT, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((_FIN_TEXT, 127)) + length.to_bytes(8, "big")
    return header + payload


# FIN set, opcode 1 (text).
_FIN_TEXT = 0x81


def _share_scope_values(scope: Any) -> None:
    """The scope's `server` address and `subprotocols` replaced by the equal ones other
    sockets' scopes hold (about 0.2 KiB less per socket)."""
    share = _SHARED_SCOPE_VALUES.share
    server = scope.get("server")
    if type(server) is tuple:
        scope["server"] = share(server)
    subprotocols = scope.get("subprotocols")
    if type(subprotocols) is list and all(type(p) is str for p in subprotocols):
        scope["subprotocols"] = share(tuple(subprotocols))


# websockets' parser (ServerProtocol.parse) waiting for a frame's first byte: the
# handshake's branch is behind it, and Protocol.parse waits at the top of its loop.
_IDLE_PARSER = ("ServerProtocol.parse", "Protocol.parse", "StreamReader.at_eof")
# The frame loop alone, at the same point.
_IDLE_FRAME_LOOP = _IDLE_PARSER[1:]


def _restart_idle_parser(conn: Any) -> None:
    """Replace the open connection's parser by a new frame loop, if it is waiting for a
    frame with nothing read. That is what ServerProtocol.parse runs once the handshake
    is behind it (`yield from super().parse()`), without what the old one keeps in
    local variables until it parses the next frame, for an idle socket its whole life:
    the handshake request and its own first frame (about 0.7 KiB together), the last
    frame it parsed (an idle subscription's subscribe message). Otherwise (in the middle
    of a frame, closing, or websockets' parser is not the one this expects) the parser
    is left as it is."""
    parser = getattr(conn, "parser", None)
    reader = getattr(conn, "reader", None)
    if (
        getattr(conn, "state", None) is not State.OPEN
        or getattr(conn, "events", None) != []
        or getattr(reader, "buffer", None) != b""
        or getattr(reader, "eof", None) is not False
        or _generator_chain(parser) not in (_IDLE_PARSER, _IDLE_FRAME_LOOP)
    ):
        return
    frame_loop = Protocol.parse(conn)
    next(frame_loop)  # runs to the loop's first wait, where the old one stands
    if _generator_chain(frame_loop) == _IDLE_FRAME_LOOP:
        conn.parser = frame_loop
    else:  # pragma: no cover - the chain above says this cannot happen
        frame_loop.close()


def _generator_chain(generator: Any) -> tuple[str, ...]:
    """The qualified names of `generator` and those it waits in (`yield from`)."""
    names: list[str] = []
    while generator is not None and len(names) < 8:
        names.append(getattr(generator, "__qualname__", type(generator).__name__))
        generator = getattr(generator, "gi_yieldfrom", None)
    return tuple(names)


def websocket_protocol() -> type[WebSocketsSansIOProtocol]:
    """The WebSocket protocol class to give uvicorn (`ws=`)."""
    problem = internals_problem()
    if problem is not None:
        _warn_once(problem)
        return WebSocketsSansIOProtocol
    return LeanWebSocketProtocol
