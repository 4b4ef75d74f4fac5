"""app/graphql_entry.py: GraphQL WebSockets and requests skip Starlette's stack, and
lose nothing they need: a socket's ids are set and it is counted while open (also
covered by test_logs and test_metrics over the real app), a request's id is set and
returned, an exception is still logged and ends the socket or answers 500, other paths
and methods still route."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.correlation import CorrelationIds
from app.graphql_entry import GraphQLFirst, route_path
from app.logs import connection_id, request_id
from tests.live import plain_server
from tests.support import eventually

TIMEOUT = 10.0


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/graphql", "", "/graphql"),
        ("/api/graphql", "/api", "/graphql"),
        ("/graphql", "/api", "/graphql"),
        ("/apigraphql", "/api", "/apigraphql"),
    ],
)
def test_the_route_path_drops_the_root_path_as_starlette_does(
    path: str, root_path: str, expected: str
) -> None:
    assert route_path({"path": path, "root_path": root_path}) == expected


def app_with(socket_app: Any, gauge: Gauge | None = None) -> GraphQLFirst:
    async def elsewhere(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"routed, app: {type(websocket.app).__name__}")
        await websocket.close()

    async def routed(request: Request) -> Response:
        return PlainTextResponse(f"routed {request.method}")

    return GraphQLFirst(
        graphql_path="/graphql",
        graphql_app=socket_app,
        socket_gauge=gauge or a_gauge(),
        routes=[
            WebSocketRoute("/other", elsewhere),
            Route("/graphql", routed, methods=["GET", "POST"]),
            Route("/other", routed),
        ],
        middleware=[Middleware(CorrelationIds)],
    )


def a_gauge() -> Gauge:
    return Gauge("sockets", "open sockets", registry=CollectorRegistry())


async def test_the_socket_app_runs_with_its_ids_set_and_is_counted_while_open() -> None:
    gauge = a_gauge()
    seen: list[tuple[str | None, str | None, float]] = []

    async def socket_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.append((connection_id.get(), request_id.get(), gauge._value.get()))
        await send({"type": "websocket.send", "text": "counted"})
        await receive()  # until the client closes

    async with plain_server(app_with(socket_app, gauge)) as (url, _):
        headers = {"X-Request-ID": "trace-7"}
        async with connect(url + "graphql", additional_headers=headers) as first:
            assert await asyncio.wait_for(first.recv(), TIMEOUT) == "counted"
            async with connect(url + "graphql") as second:
                assert await asyncio.wait_for(second.recv(), TIMEOUT) == "counted"
                assert gauge._value.get() == 2

        async def none_open() -> bool:
            return bool(gauge._value.get() == 0)

        await eventually(none_open, "both sockets to be uncounted")
    (first_ids, second_ids) = seen
    assert first_ids[1] == "trace-7"
    assert second_ids[1] is None
    assert first_ids[0]
    assert second_ids[0]
    assert first_ids[0] != second_ids[0]
    assert [count for *_, count in seen] == [1, 2]


async def test_the_socket_path_goes_straight_to_its_app_and_others_are_routed() -> None:
    async def socket_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send(
            {"type": "websocket.send", "text": f"direct, app: {type(scope['app']).__name__}"}
        )
        await send({"type": "websocket.close", "code": 4000})

    async with plain_server(app_with(socket_app)) as (url, _):
        async with connect(url + "graphql") as direct:
            assert await asyncio.wait_for(direct.recv(), TIMEOUT) == "direct, app: GraphQLFirst"
        async with connect(url + "other") as routed:
            assert await asyncio.wait_for(routed.recv(), TIMEOUT) == "routed, app: GraphQLFirst"
        with pytest.raises(InvalidStatus):  # no route: refused at the handshake
            await connect(url + "nowhere", open_timeout=TIMEOUT)


async def test_an_exception_in_the_socket_app_is_logged_and_ends_the_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["query_string"] != b"early":
            await send({"type": "websocket.accept"})
            await receive()  # fails once the client has said something
        raise RuntimeError("view failed")

    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        async with plain_server(app_with(failing), log_config=None) as (url, _):
            # Before the handshake: a 500, as Starlette's ServerErrorMiddleware would.
            with pytest.raises(InvalidStatus) as refused:
                await connect(url + "graphql?early", open_timeout=TIMEOUT)
            assert refused.value.response.status_code == 500
            async with connect(url + "graphql") as connection:
                await connection.send("hello")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(connection.recv(), TIMEOUT)
    failures = [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
    assert failures
    assert failures[-1].exc_info is not None
    assert "view failed" in str(failures[-1].exc_info[1])


async def graphql_over_http(scope: Any, receive: Any, send: Any) -> None:
    """Says how it was reached: straight (no router in the scope) or not."""
    assert scope["type"] == "http"
    await receive()
    how = "routed" if "router" in scope else "direct"
    text = f"{how} {scope['method']} {type(scope['app']).__name__} {request_id.get()}"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text.encode()})


async def test_graphql_requests_go_straight_to_the_app_with_their_request_id() -> None:
    transport = httpx.ASGITransport(app=app_with(graphql_over_http))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        traced = await http.post("/graphql", headers={"X-Request-ID": "trace-8"})
        assert traced.text == "direct POST GraphQLFirst trace-8"
        assert traced.headers["x-request-id"] == "trace-8"
        fresh = await http.get("/graphql")
        assert fresh.text.startswith("direct GET GraphQLFirst ")
        assert fresh.headers["x-request-id"] == fresh.text.rsplit(" ", 1)[1]
        assert len(fresh.headers["x-request-id"]) == 32
        # Other methods and paths: Starlette's middleware and router, as before.
        assert (await http.put("/graphql")).status_code == 405
        head = await http.head("/graphql")
        assert (head.status_code, head.headers["x-request-id"] != "") == (200, True)
        other = await http.get("/other")
        assert other.text == "routed GET"
        assert other.headers["x-request-id"]


async def test_an_exception_in_a_graphql_request_is_logged_and_answers_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("view failed over HTTP")

    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        async with plain_server(app_with(failing), log_config=None) as (url, _):
            http_url = url.replace("ws://", "http://")
            async with httpx.AsyncClient(base_url=http_url, timeout=TIMEOUT) as http:
                response = await http.post("/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 500
    failures = [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
    assert failures
    assert failures[-1].exc_info is not None
    assert "view failed over HTTP" in str(failures[-1].exc_info[1])
