"""app/socket_view.py and the graphql-transport-ws handler's receive loop: a GraphQL
WebSocket served by the view in one frame, reading the socket's ASGI `receive` itself.
On real sockets through `python -m app`'s server; and the check of strawberry's source,
with its fallback to strawberry's own path."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from websockets.asyncio.client import connect

import app.graphql
from app.settings import Settings
from app.socket_view import websocket_branch_problem
from app.ws_protocol import LeanWebSocketProtocol
from tests.live import LiveServer, live_server
from tests.support import Account, GraphQLClient, eventually, subscriptions_live
from tests.ws_client import TRANSPORT_WS, UPDATES, close_code, graphql_socket


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(Settings(database_url=sqlite_url)) as live:
        yield live


async def account(server: LiveServer) -> Account:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        return await GraphQLClient(http, server.runtime).account("Ann")


def waiting_coroutines() -> set[str]:
    """The qualified names of the coroutines suspended in this process."""
    gc.collect()
    return {
        obj.cr_code.co_qualname
        for obj in gc.get_objects()
        if type(obj).__name__ == "coroutine" and obj.cr_frame is not None
    }


def test_the_installed_strawberry_serves_websockets_as_the_view_expects() -> None:
    assert websocket_branch_problem() is None


def test_a_view_that_serves_websockets_otherwise_is_not_stood_in_for() -> None:
    class Other(AsyncBaseHTTPView):  # type: ignore[type-arg]
        async def run(self, request: Any, context: Any = None, root_value: Any = None) -> Any:
            return await self.reject_websocket(request)

    problem = websocket_branch_problem(Other)
    assert problem is not None
    assert "does not serve WebSockets the way" in problem


async def test_an_idle_subscription_waits_in_the_views_one_frame(server: LiveServer) -> None:
    ann = await account(server)
    async with graphql_socket(server.ws_url, ann.token) as socket:
        await socket.subscribe(UPDATES)
        await subscriptions_live(server.runtime, 1)
        waiting = waiting_coroutines()
    assert {"serve_websocket", "TransportProtocolHandler.handle"} <= waiting
    # strawberry's view (GraphQL.__call__, run), Starlette's and uvicorn's receive
    # around the socket's queue and uvicorn's proxy-headers middleware
    # (app.proxy_headers) are not kept waiting.
    assert not waiting & {
        "ProxyHeadersMiddleware.__call__",
        "WebSocketsSansIOProtocol.receive",
        "GraphQL.__call__",
        "AsyncBaseHTTPView.run",
        "WebSocket.receive",
        "WebSocket.receive_text",
    }


def suspended_locals(qualname: str) -> dict[str, Any]:
    """The local variables of the one coroutine or async generator `qualname` that is
    suspended in this process."""
    gc.collect()
    frames = []
    for obj in gc.get_objects():
        kind = type(obj).__name__
        if kind == "coroutine":
            code, frame = obj.cr_code, obj.cr_frame
        elif kind == "async_generator":
            code, frame = obj.ag_code, obj.ag_frame
        else:
            continue
        if code.co_qualname == qualname and frame is not None:
            frames.append(frame)
    (frame,) = frames
    return frame.f_locals


async def test_an_idle_subscription_keeps_no_message_or_resolve_info(server: LiveServer) -> None:
    ann = await account(server)
    async with graphql_socket(server.ws_url, ann.token) as socket:
        await socket.subscribe(UPDATES)
        await subscriptions_live(server.runtime, 1)
        # Waiting for the next message, the loop holds neither the subscribe message's
        # text nor what it parsed to.
        assert {"text", "message"}.isdisjoint(suspended_locals("TransportProtocolHandler.handle"))
        # Nor the handshake headers parsed for the origin check.
        request = suspended_locals("serve_websocket")["request"]
        assert "_headers" not in vars(request)
        # Nor does the subscription's resolver keep its field's resolve info.
        assert "info" not in suspended_locals("Subscription.user_updates")


def alive(*type_names: str) -> dict[str, int]:
    """How many objects of each type outlive a full collection (reachable ones)."""
    gc.collect()
    counts = dict.fromkeys(type_names, 0)
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in counts:
            counts[name] += 1
    return counts


async def test_an_idle_subscription_keeps_nothing_of_its_last_delivery(
    server: LiveServer,
) -> None:
    # What a delivery reads through and makes (shared reads and loaders, the records,
    # the update) forms reference cycles: kept while the subscription waited, it
    # outlived young collections and piled up for the older ones, which then stopped
    # the event loop for hundreds of ms under load. (The result sent stays as
    # strawberry keeps it, as the operation's last result: plain data, no cycles.)
    kinds = ("SharedReads", "Loaders", "DataLoader", "UserUpdate", "Card")
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        client = GraphQLClient(http, server.runtime)
        ann = await client.account("Ann")
        board = await client.board(ann)
        async with graphql_socket(server.ws_url, ann.token) as socket:
            await socket.subscribe(UPDATES)
            await subscriptions_live(server.runtime, 1)
            idle = alive(*kinds)
            card = await client.card(ann, board, "Delivered")
            while (await socket.next_update())["id"] != card:
                pass

            async def as_before() -> bool:
                # (The shared reads end a moment after their last use: LINGER. What
                # earlier tests left may be freed meanwhile: no more than before.)
                now = alive(*kinds)
                return all(now[kind] <= idle[kind] for kind in kinds)

            await eventually(as_before, "nothing of the delivery kept")


async def test_a_binary_message_closes_the_socket_with_4400(server: LiveServer) -> None:
    async with connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as connection:  # type: ignore[list-item]
        await connection.send(b"\x00\x01")
        assert await close_code(connection) == 4400


async def test_a_subprotocol_the_view_does_not_speak_closes_with_4406(server: LiveServer) -> None:
    async with connect(server.ws_url, subprotocols=["mqtt"]) as connection:  # type: ignore[list-item]
        assert await close_code(connection) == 4406


async def test_a_client_that_leaves_is_forgotten_by_the_live_sockets(server: LiveServer) -> None:
    ann = await account(server)
    async with graphql_socket(server.ws_url, ann.token) as socket:
        await socket.subscribe(UPDATES)
        await subscriptions_live(server.runtime, 1)
        assert server.runtime.live_sockets.count(ann.pk) == 1

    async def forgotten() -> bool:
        return server.runtime.live_sockets.count(ann.pk) == 0

    await eventually(forgotten, "the socket forgotten")


async def test_where_strawberry_differs_its_own_path_serves_with_one_warning(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app.graphql, "websocket_branch_problem", lambda: "a test's strawberry")
    ann = await account(server)
    with caplog.at_level(logging.WARNING, logger="app.socket_view"):
        async with graphql_socket(server.ws_url, ann.token) as socket:
            await socket.subscribe(UPDATES)
            await subscriptions_live(server.runtime, 1)
            assert "AsyncBaseHTTPView.run" in waiting_coroutines()
    assert [r.getMessage() for r in caplog.records if r.name == "app.socket_view"] == [
        "Serving GraphQL WebSockets through strawberry's view (more memory per "
        "connection): a test's strawberry"
    ]

    async def forgotten() -> bool:
        return server.runtime.live_sockets.count(ann.pk) == 0

    await eventually(forgotten, "the socket forgotten")


async def test_sockets_share_their_repeated_handshake_headers_and_scope_values(
    server: LiveServer,
) -> None:
    ann = await account(server)
    async with (
        graphql_socket(server.ws_url, ann.token) as first,
        graphql_socket(server.ws_url, ann.token) as second,
    ):
        await first.subscribe(UPDATES)
        await second.subscribe(UPDATES)
        gc.collect()
        protocols = [o for o in gc.get_objects() if type(o) is LeanWebSocketProtocol]
        port = int(server.http_url.rsplit(":", 1)[1])
        scopes = [
            p.scope for p in protocols if p.server[1] == port and not p.transport.is_closing()
        ]
        assert len(scopes) == 2
        a, b = ({pair[0].lower(): pair for pair in scope["headers"]} for scope in scopes)
        assert a[b"host"] is b[b"host"]  # one tuple for both sockets
        assert a[b"user-agent"] is b[b"user-agent"]
        assert a[b"sec-websocket-key"] != b[b"sec-websocket-key"]  # unique: never shared
        assert scopes[0]["extensions"] is scopes[1]["extensions"]
        assert scopes[0]["asgi"] is scopes[1]["asgi"]
        assert scopes[0]["asgi"]["version"] == "3.0"
        assert "websocket.http.response" in scopes[0]["extensions"]
        with pytest.raises(TypeError):
            scopes[0]["extensions"]["x"] = {}  # read-only
        assert scopes[0]["server"] is scopes[1]["server"]
        assert all(p.server is scopes[0]["server"] for p in protocols if p.scope in scopes)
        assert scopes[0]["server"] == ("127.0.0.1", port)
        assert scopes[0]["subprotocols"] is scopes[1]["subprotocols"]
        assert scopes[0]["subprotocols"] == ("graphql-transport-ws",)
        assert scopes[0]["client"] != scopes[1]["client"]  # each its own

        # And their operations, the same query text.
        def queries() -> list[str]:
            return [o.query for o in gc.get_objects() if type(o) is Operation]

        async def both_running() -> bool:
            return len(queries()) == 2

        await eventually(both_running, "both operations running")
        first_query, second_query = queries()
        assert first_query is second_query
