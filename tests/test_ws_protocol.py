"""app/ws_protocol.py: uvicorn's WebSocket protocol keeping less per connection. Its
small queue and writable flag, the check of uvicorn's internals with its fallback, and
real traffic through it: a GraphQL subscription through `python -m app`, keepalive
pings, and write backpressure."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

import app.ws_protocol
from app.asgi import create_app
from app.cli import server_config
from app.settings import Settings
from app.timer_heap import HeapTimer
from app.ws_protocol import (
    LeanWebSocketProtocol,
    SmallQueue,
    WritableFlag,
    internals_problem,
    text_frame,
    websocket_protocol,
)
from tests.live import LiveServer, live_server, plain_server
from tests.servers import app_environment, free_port, running_server
from tests.support import eventually
from tests.ws_client import UPDATES, close_code, graphql_socket

TIMEOUT = 10.0

# --- the small queue and the writable flag ---------------------------------------------


async def test_the_queue_hands_items_over_in_order_to_a_waiting_reader() -> None:
    queue: SmallQueue[int] = SmallQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert (queue.qsize(), queue.empty()) == (2, False)
    assert await queue.get() == 1
    assert queue.get_nowait() == 2
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # the reader waits
    assert not reader.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(reader, TIMEOUT) == 3


async def test_an_item_a_cancelled_reader_was_woken_for_goes_to_the_next_one() -> None:
    queue: SmallQueue[str] = SmallQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("message")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it takes the item
    assert await asyncio.wait_for(second, TIMEOUT) == "message"
    assert first.cancelled()
    assert queue.empty()


async def test_the_queue_calls_its_on_take_hook_once_a_reader_took_an_item() -> None:
    queue: SmallQueue[int] = SmallQueue()
    seen: list[tuple[int, int]] = []
    queue.on_take = lambda: seen.append((queue.qsize(), len(seen)))
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await asyncio.wait_for(reader, TIMEOUT) == 1
    assert seen == [(1, 0)]  # after taking 1: one item left
    assert queue.get_nowait() == 2  # (not a reader's get: no hook)
    assert seen == [(1, 0)]


async def test_the_writable_flag_holds_writers_only_while_cleared() -> None:
    flag = WritableFlag()
    assert flag.is_set()
    assert await flag.wait()  # set: no waiting
    flag.clear()
    writers = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(writer.done() for writer in writers)
    writers[0].cancel()
    await asyncio.sleep(0)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*writers[1:]), TIMEOUT) == [True, True]
    assert writers[0].cancelled()


# --- uvicorn's internals ------------------------------------------------------------------


def test_the_installed_uvicorn_has_what_the_lean_protocol_relies_on() -> None:
    assert internals_problem() is None
    assert websocket_protocol() is LeanWebSocketProtocol


class QueueJoined:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    async def receive(self) -> None:
        self.queue.task_done()  # a method the small queue does not have


class RequestReadLater:
    def handle_connect(self) -> None:
        self.request = object()

    def send(self) -> object:
        return self.request


class ResponseReadElsewhere:
    def handle_connect(self) -> None:
        self.response = object()

    def send(self) -> object:
        return self.response

    def receive(self) -> object:
        return self.response


class WritableHandedOut:
    def __init__(self) -> None:
        self.writable = asyncio.Event()

    def handle_connect(self) -> None:
        pass

    async def send(self) -> None:
        await asyncio.wait_for(self.writable.wait(), 1)

    def receive(self) -> asyncio.Event:
        return self.writable  # used otherwise than by calling its methods


class PingTimerHandedOut:
    def handle_connect(self) -> None:
        self.ping_timer = object()

    def receive(self) -> object:
        return self.ping_timer  # used otherwise than cancelled, set or compared


class PingScheduledOtherwise(WebSocketsSansIOProtocol):
    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        self.ping_timer = self.loop.call_later(self.ping_interval, self.send_keepalive_ping)


class ReceivedOtherwise(WebSocketsSansIOProtocol):
    async def receive(self) -> Any:
        return await self.queue.get()  # never resumes reading


class SendsTextOtherwise(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self.close_sent and self.initial_response is None:  # noqa: SIM102 - uvicorn's shape
            if message["type"] == "websocket.send":
                self.conn.send_text(message["text"].encode(), fin=False)  # fragments
                output = self.conn.data_to_send()
                self.transport.write(b"".join(output))


class SendStartsOtherwise(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        if self.disconnected:  # no wait for the transport to take writes
            raise ClientDisconnected()


@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        (SendsTextOtherwise, "does not send text the way"),
        (SendStartsOtherwise, "does not start the way"),
        (PingTimerHandedOut, "self.ping_timer in receive()"),
        (PingScheduledOtherwise, "schedule_ping is not the one"),
        (ReceivedOtherwise, "receive is not the one"),
        (QueueJoined, "self.queue in receive()"),
        (RequestReadLater, "reads self.request in send()"),
        (ResponseReadElsewhere, "reads self.response in receive()"),
        (WritableHandedOut, "self.writable in receive()"),
    ],
)
def test_uvicorn_internals_it_does_not_know_are_refused(cls: type, problem: str) -> None:
    found = internals_problem(cls)
    assert found is not None
    assert problem in found


@pytest.fixture
def fresh_checks() -> Callable[[], None]:
    def clear() -> None:
        internals_problem.cache_clear()
        app.ws_protocol._warn_once.cache_clear()

    clear()
    return clear


def test_without_uvicorn_source_the_stock_protocol_is_used_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_checks: Callable[[], None],
) -> None:
    def no_source(_: object) -> str:
        raise OSError("could not get source code")

    monkeypatch.setattr(app.ws_protocol.inspect, "getsource", no_source)
    try:
        with caplog.at_level(logging.WARNING, logger="app.ws_protocol"):
            assert websocket_protocol() is WebSocketsSansIOProtocol
            assert websocket_protocol() is WebSocketsSansIOProtocol
    finally:
        monkeypatch.undo()
        fresh_checks()
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.ws_protocol"]
    assert len(warnings) == 1
    assert "stock WebSocket protocol" in warnings[0]
    assert "could not get source code" in warnings[0]


class OtherQueue(WebSocketsSansIOProtocol):
    """A uvicorn whose protocol builds something else than an asyncio.Queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _PlainQueue()  # type: ignore[assignment]


class _PlainQueue(asyncio.Queue[Any]):
    pass


class LeanOverOtherQueue(LeanWebSocketProtocol, OtherQueue):
    pass


async def test_a_protocol_whose_objects_are_not_the_expected_ones_keeps_them(
    caplog: pytest.LogCaptureFixture, fresh_checks: Callable[[], None]
) -> None:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        pass  # pragma: no cover - never called

    config = uvicorn.Config(asgi, ws=LeanOverOtherQueue)
    with caplog.at_level(logging.WARNING, logger="app.ws_protocol"):
        kept = LeanOverOtherQueue(config=config, server_state=ServerState(), app_state={})
        LeanOverOtherQueue(config=config, server_state=ServerState(), app_state={})
    fresh_checks()
    assert type(kept.queue) is _PlainQueue
    assert type(kept.writable) is asyncio.Event
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.ws_protocol"]
    assert len(warnings) == 1
    lean = LeanWebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    assert (type(lean.queue), type(lean.writable)) == (SmallQueue, WritableFlag)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_text_frame_is_the_bytes_websockets_makes(length: int) -> None:
    payload = ("é" * length).encode()[:length]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def test_python_m_app_serves_websockets_with_the_lean_protocol(sqlite_url: str) -> None:
    args = argparse.Namespace(host="127.0.0.1", port=free_port(), log_level="info")
    settings = Settings(database_url=sqlite_url)
    config = server_config(create_app(settings), args, settings)
    assert config.ws is LeanWebSocketProtocol
    assert config.ws_max_size == settings.ws_max_message_bytes


# --- real traffic ---------------------------------------------------------------------

SIGN_UP = """
mutation($email: String!) {
  signUp(input: {email: $email, name: "Ann", password: "correct horse"}) { token }
}
"""
CREATE_BOARD = 'mutation { createBoard(input: {name: "Roadmap"}) { id } }'


async def gql(http: httpx.AsyncClient, query: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    variables = {"email": "ann@example.com"}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def test_a_subscription_through_python_m_app(sqlite_url: str, tmp_path: Path) -> None:
    """Connect, init, subscribe, an update, a ping answered, a message over the limit
    closed with 1009, and a client close, all through the CLI's server."""
    env = app_environment(DATABASE_URL=sqlite_url)
    with running_server(env=env, cwd=tmp_path) as server:
        await asyncio.to_thread(server.wait_until_healthy)
        ws_url = server.base_url.replace("http://", "ws://") + "/graphql"
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
            token = (await gql(http, SIGN_UP))["signUp"]["token"]
            async with graphql_socket(ws_url, token) as socket:
                await socket.subscribe(UPDATES)
                # The subscription is live once a change made after it arrives; retry
                # until then (the server starts it asynchronously).
                board_id = None
                async with asyncio.timeout(TIMEOUT):
                    while board_id is None:
                        created = (await gql(http, CREATE_BOARD, token))["createBoard"]["id"]
                        try:
                            update = await socket.next_update(within=1.0)
                        except TimeoutError:
                            continue
                        board_id = created if update["id"] == created else None
                pong = await socket.connection.ping(b"are you there")
                async with asyncio.timeout(TIMEOUT):
                    await pong
                await socket.connection.send("x" * (64 * 1024 + 1))
                assert await close_code(socket.connection) == 1009
            # A client that closes is gone from the server's open sockets.
            async with graphql_socket(ws_url, token) as socket:
                await socket.subscribe(UPDATES)

            async def none_open() -> bool:
                metrics = await http.get("/metrics")
                return "\ncommitcast_websocket_connections 0.0\n" in metrics.text

            await eventually(none_open, "the server to count no open socket", TIMEOUT)


def lean_connections(live: LiveServer) -> list[LeanWebSocketProtocol]:
    return [
        connection
        for connection in live.server.server_state.connections
        if isinstance(connection, LeanWebSocketProtocol)
    ]


async def test_the_test_servers_use_the_lean_protocol_and_a_close_code_reaches_the_client(
    sqlite_url: str,
) -> None:
    settings = Settings(database_url=sqlite_url, ws_connection_init_timeout_seconds=0.3)
    async with (
        live_server(settings) as live,
        connect(live.ws_url, subprotocols=["graphql-transport-ws"]) as connection,  # type: ignore[list-item]
    ):
        (protocol,) = lean_connections(live)
        assert (type(protocol.queue), type(protocol.writable)) == (SmallQueue, WritableFlag)
        # No handshake objects kept once the socket is open.
        assert not hasattr(protocol, "request")
        assert not hasattr(protocol, "response")
        # Few enough instance attributes for CPython to share their keys across
        # connections (past 30, each object gets a dict of its own, about 1.6 KiB).
        # (vars() builds this one's dict: the test's cost, not the server's.)
        assert len(vars(protocol)) <= 30
        # The server closes with its code: no connection_init in time.
        assert await close_code(connection) == 4408


# --- the parser, keepalive and backpressure, on a plain ASGI app ----------------------------------


async def echo(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message["text"]})


@asynccontextmanager
async def client_reading_nothing(asgi: Any) -> AsyncIterator[ClientConnection]:
    """`asgi` served, with a client that has read nothing yet: yielded once the
    server's writes to it are paused (the transport's buffer is full)."""
    async with (
        plain_server(asgi) as (url, server),
        connect(url, max_size=None, max_queue=1) as connection,
    ):
        protocol = only_protocol(server)

        async def paused() -> bool:
            return not protocol.writable.is_set()

        await eventually(paused, "the server to stop writing", TIMEOUT)
        yield connection


def only_protocol(server: uvicorn.Server) -> LeanWebSocketProtocol:
    (protocol,) = server.server_state.connections
    assert isinstance(protocol, LeanWebSocketProtocol)
    return protocol


def kept_by_the_parser(protocol: LeanWebSocketProtocol) -> list[Request | Frame]:
    """websockets' handshake requests and frames in the local variables of the
    connection's parser (and of the generators it waits in)."""
    kept = []
    generator: Any = protocol.conn.parser
    while generator is not None:
        frame = generator.gi_frame
        if frame is not None:
            kept += [v for v in frame.f_locals.values() if isinstance(v, Request | Frame)]
        generator = generator.gi_yieldfrom
    return kept


async def test_once_open_the_parser_keeps_no_handshake_request_and_still_parses() -> None:
    async with plain_server(echo) as (url, server), connect(url) as connection:
        await connection.send("first")
        assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "first"
        protocol = only_protocol(server)
        # Neither the handshake request nor the last message, while it waits.
        assert kept_by_the_parser(protocol) == []
        # The new parser reads what comes next as the old one would: a long message, a
        # fragmented one, a ping (answered by the protocol), then a clean close.
        await connection.send("second " * 1000)
        assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "second " * 1000
        await connection.send(["frag", "mented"])
        assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "fragmented"
        await asyncio.wait_for(await connection.ping(), TIMEOUT)
    assert connection.close_code == 1000


async def test_binary_messages_and_sends_after_the_close_are_uvicorns_as_before() -> None:
    """Text messages on an open connection are framed by the lean protocol itself; a
    binary message goes through uvicorn's send as before, and so does a text message
    after the app's close, which uvicorn refuses."""
    after_close: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"\x00binary"})
        await send({"type": "websocket.send", "text": "text"})
        await send({"type": "websocket.close", "code": 4000})
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except BaseException as exc:
            after_close.set_result(exc)
            return
        after_close.set_result(None)

    async with plain_server(app) as (url, _server), connect(url) as connection:
        assert await asyncio.wait_for(connection.recv(), TIMEOUT) == b"\x00binary"
        assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "text"
        assert await close_code(connection) == 4000
        refused = await asyncio.wait_for(after_close, TIMEOUT)
    assert isinstance(refused, RuntimeError)
    assert "after sending 'websocket.close'" in str(refused)


async def test_a_frame_begun_before_the_socket_opened_is_read_to_its_end() -> None:
    """A client that sends the start of a frame before the app accepted the socket:
    the parser is in the middle of that frame when the socket opens, and is left as it
    is (a new one would read the rest of the frame as a frame of its own)."""
    accept = asyncio.Event()

    async def echo_once_allowed(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await accept.wait()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})

    frame = Frame(Opcode.TEXT, b"sent early").serialize(mask=True)
    async with plain_server(echo_once_allowed) as (url, server):
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )

            async def upgraded() -> bool:
                return len(server.server_state.connections) == 1 and isinstance(
                    next(iter(server.server_state.connections)), LeanWebSocketProtocol
                )

            await eventually(upgraded, "the WebSocket protocol to take over", TIMEOUT)
            protocol = only_protocol(server)
            writer.write(frame[:2])  # the frame's first two bytes: its header

            async def mid_frame() -> bool:
                return "Frame.parse" in app.ws_protocol._generator_chain(protocol.conn.parser)

            await eventually(mid_frame, "the parser to read the frame's header", TIMEOUT)
            accept.set()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(frame[2:])
            # The echo: an unmasked text frame, FIN set, its length in the second byte.
            echoed = await asyncio.wait_for(reader.readexactly(2 + len(b"sent early")), TIMEOUT)
            assert echoed == b"\x81" + bytes([len(b"sent early")]) + b"sent early"
        finally:
            writer.close()


async def test_keepalive_pings_are_answered_and_an_unanswered_one_closes_with_1011() -> None:
    async with (
        plain_server(echo, ws_ping_interval=0.05, ws_ping_timeout=0.5) as (url, server),
        connect(url, ping_interval=None) as connection,
    ):
        protocol = only_protocol(server)

        async def answered() -> bool:
            return protocol.last_ping_rtt > 0

        await eventually(answered, "a keepalive ping answered", TIMEOUT)

        async def on_shared_timers() -> bool:
            return isinstance(protocol.ping_timer, HeapTimer)

        # The next ping waits on the loop's shared keepalive timers.
        await eventually(on_shared_timers, "the next ping to be scheduled", TIMEOUT)
        await connection.send("still here")
        assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "still here"
        # A client that stops reading answers no ping: closed after ping_timeout.
        connection.transport.pause_reading()

        async def closed() -> bool:
            return not server.server_state.connections

        await eventually(closed, "the server to close the silent socket", TIMEOUT)
        connection.transport.resume_reading()
        assert await close_code(connection) == 1011


CHUNK = "x" * (256 * 1024)
CHUNKS = 64  # 16 MiB: more than the kernel's socket buffers and uvicorn's write buffer


async def test_writes_wait_while_the_client_reads_nothing_and_resume_in_order() -> None:
    sent: list[int] = []
    finished: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def firehose(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            for n in range(CHUNKS):
                await send({"type": "websocket.send", "text": f"{n:04d}{CHUNK}"})
                sent.append(n)
            finished.set_result(None)
        except BaseException as exc:
            finished.set_result(exc)
            raise

    async with client_reading_nothing(firehose) as connection:
        assert not finished.done()
        assert len(sent) < CHUNKS
        received = []
        async with asyncio.timeout(TIMEOUT * 3):
            for _ in range(CHUNKS):
                received.append(int(str(await connection.recv())[:4]))
        assert received == list(range(CHUNKS))
        assert await asyncio.wait_for(finished, TIMEOUT) is None


async def test_a_client_gone_while_writes_wait_ends_the_waiting_send() -> None:
    finished: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def firehose(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": CHUNK})
        except BaseException as exc:
            finished.set_result(exc)
            raise

    async with client_reading_nothing(firehose) as connection:
        connection.transport.abort()
        error = await asyncio.wait_for(finished, TIMEOUT)
    assert type(error).__name__ == "ClientDisconnected"
