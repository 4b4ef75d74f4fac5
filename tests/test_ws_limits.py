"""WebSocket hardening on a real socket: the Origin allowlist, the connection_init
timeout, graphql-transport-ws misuse codes, the message size limit, no compression,
and the caps on operations per connection and sockets per user."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from app.settings import Settings
from schema.errors import RATE_LIMITED
from tests.live import LiveServer, live_server
from tests.support import Account, GraphQLClient, eventually
from tests.ws_client import (
    LEGACY_WS,
    TRANSPORT_WS,
    UPDATES,
    GraphQLSocket,
    close_code,
    graphql_socket,
)

LISTED_ORIGIN = "https://app.example.com"


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[LiveServer]:
    settings = Settings(
        database_url=sqlite_url,
        allowed_origins=(LISTED_ORIGIN,),
        ws_connection_init_timeout_seconds=0.5,
        ws_max_subscriptions=2,
        ws_max_sockets_per_user=2,
    )
    async with live_server(settings) as live:
        yield live


async def open_socket(
    server: LiveServer, protocol: str = TRANSPORT_WS, **options: Any
) -> ClientConnection:
    return await connect(server.ws_url, subprotocols=[protocol], open_timeout=10, **options)  # type: ignore[list-item]


async def account(server: LiveServer, name: str = "Ann") -> Account:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        return await GraphQLClient(http, server.runtime).account(name)


async def token(server: LiveServer, name: str = "Ann") -> str:
    return (await account(server, name)).token


async def test_a_foreign_origin_is_refused_at_the_handshake(server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(server, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403

    same_origin = server.http_url  # http://127.0.0.1:PORT, the Host the client sends
    # One user each: a closed socket's slot is freed a moment after the close.
    for name, origin in (("Listed", LISTED_ORIGIN), ("Same", same_origin), ("Native", None)):
        # Signed up first: the socket must send connection_init within the 0.5 s timeout.
        bearer = f"Bearer {await token(server, name)}"
        connection = await open_socket(server, origin=origin)
        async with connection:
            socket = GraphQLSocket(connection, TRANSPORT_WS)
            ack = await socket.init({"authorization": bearer})
            assert ack["type"] == "connection_ack", origin
        # (None: no Origin header at all, as mobile and server clients connect)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_acknowledged_socket_keeps_no_timeout_task(
    server: LiveServer, protocol: str
) -> None:
    # The connection_init timeout is a timer, cancelled at connection_init: no task
    # (strawberry's sleeps in one, and keeps it cancelled, with its traceback, for
    # the connection's life; memory per idle socket).
    async with graphql_socket(server.ws_url, await token(server), protocol=protocol):
        gc.collect()
        timeout_tasks = [
            task
            for task in gc.get_objects()
            if isinstance(task, asyncio.Task)
            and any(
                word in getattr(task.get_coro(), "__qualname__", "")
                for word in ("init_timeout", "initialised")
            )
        ]
        assert timeout_tasks == []


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_socket_that_never_sends_connection_init_is_closed_with_4408(
    server: LiveServer, protocol: str
) -> None:
    async with await open_socket(server, protocol) as connection:
        assert await close_code(connection) == 4408


async def test_graphql_transport_ws_misuse_closes_with_the_protocol_codes(
    server: LiveServer,
) -> None:
    ann = await token(server)
    auth = {"type": "connection_init", "payload": {"authorization": f"Bearer {ann}"}}
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": UPDATES}}

    async with await open_socket(server) as connection:  # not JSON
        await connection.send("hello")
        assert await close_code(connection) == 4400

    async with await open_socket(server) as connection:  # subscribe before the ack
        await connection.send(json.dumps(subscribe))
        assert await close_code(connection) == 4401

    async with await open_socket(server) as connection:  # the same id twice
        await connection.send(json.dumps(auth))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await connection.send(json.dumps(subscribe))
        await connection.send(json.dumps(subscribe))
        assert await close_code(connection) == 4409

    async with await open_socket(server) as connection:  # connection_init twice
        await connection.send(json.dumps(auth))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await connection.send(json.dumps(auth))
        assert await close_code(connection) == 4429


async def test_a_message_over_64_kib_closes_the_socket_with_1009(server: LiveServer) -> None:
    assert server.runtime.settings.ws_max_message_bytes == 64 * 1024
    async with graphql_socket(server.ws_url, await token(server)) as socket:
        small = {"type": "ping", "payload": {"pad": "x" * 60_000}}
        await socket.send(small)  # under the limit: answered
        assert json.loads(await socket.connection.recv()) == {"type": "pong"}
        await socket.send({"type": "ping", "payload": {"pad": "x" * (64 * 1024)}})
        assert await close_code(socket.connection) == 1009


async def test_per_message_deflate_is_never_negotiated(server: LiveServer) -> None:
    # websockets offers permessage-deflate by default.
    async with await open_socket(server, compression="deflate") as connection:
        assert connection.request is not None
        assert connection.response is not None
        assert "permessage-deflate" in connection.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in connection.response.headers


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_one_operation_over_the_cap_gets_a_rate_limited_error(
    server: LiveServer, protocol: str
) -> None:
    async with graphql_socket(server.ws_url, await token(server), protocol=protocol) as socket:
        await socket.subscribe(UPDATES)
        await socket.subscribe(UPDATES)
        third = await socket.subscribe(UPDATES)
        error = await socket.receive()
        assert error["type"] == "error"
        assert error["id"] == third
        payload = error["payload"][0] if protocol == TRANSPORT_WS else error["payload"]
        assert payload["extensions"] == {"code": RATE_LIMITED, "limit": 2}
        # The connection and its two subscriptions carry on.
        ping = {"type": "ping"} if protocol == TRANSPORT_WS else None
        if ping is not None:
            await socket.send(ping)
            assert json.loads(await socket.connection.recv()) == {"type": "pong"}


async def test_a_user_holds_at_most_the_cap_of_sockets_per_process(server: LiveServer) -> None:
    ann_account = await account(server, "Ann")
    ann, bob = ann_account.token, await token(server, "Bob")
    sockets = server.runtime.live_sockets
    async with (
        graphql_socket(server.ws_url, ann),
        graphql_socket(server.ws_url, ann) as second,
        graphql_socket(server.ws_url, bob),  # another user is not affected
    ):
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            async with await open_socket(server, protocol) as connection:
                socket = GraphQLSocket(connection, protocol)
                await socket.send(
                    {"type": "connection_init", "payload": {"authorization": f"Bearer {ann}"}}
                )
                assert await close_code(connection) == 4403
        await second.connection.close()

        async def slot_freed() -> bool:
            return sockets.count(ann_account.pk) == 1

        await eventually(slot_freed, "the closed socket to free its slot")
    # Closed sockets free their slots.
    async with graphql_socket(server.ws_url, ann), graphql_socket(server.ws_url, ann):
        pass


def test_settings_defaults() -> None:
    defaults = Settings()
    assert defaults.ws_connection_init_timeout_seconds == 10
    assert defaults.ws_max_message_bytes == 65536
    assert defaults.ws_max_subscriptions == 20
    assert defaults.ws_max_sockets_per_user == 50
    assert replace(defaults, ws_max_subscriptions=3).ws_max_subscriptions == 3
