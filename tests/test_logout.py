"""Tokens on live sockets: expiry closes the socket (4403); logOut revokes the token
durably and closes its sockets on every process within a second."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from app.auth import TokenClaims
from app.settings import DEVELOPMENT_SECRET_KEY, Settings
from models import token_revocations
from schema.errors import UNAUTHENTICATED
from tests.live import LiveServer, live_server
from tests.servers import app_environment, running_servers
from tests.support import GraphQLClient, subscriptions_started
from tests.team import signed_token
from tests.test_scale_out import SIGN_UP, gql
from tests.ws_client import (
    LEGACY_WS,
    TRANSPORT_WS,
    UPDATES,
    GraphQLSocket,
    close_code,
    graphql_socket,
)

LOG_OUT = "mutation($all: Boolean!) { logOut(allSessions: $all) }"
VIEWER = "{ viewer { id } }"


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(Settings(database_url=sqlite_url)) as live:
        yield live


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[GraphQLClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        yield GraphQLClient(http, server.runtime)


async def refused_at_init(url: str, token: str) -> int | None:
    async with connect(url, subprotocols=[TRANSPORT_WS], open_timeout=10) as connection:  # type: ignore[list-item]
        await GraphQLSocket(connection, TRANSPORT_WS).send(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        )
        return await close_code(connection, 5)


async def still_open(socket: GraphQLSocket) -> bool:
    """A graphql-transport-ws socket answers a ping."""
    await socket.send({"type": "ping"})
    async with asyncio.timeout(2):
        answer: dict[str, object] = json.loads(await socket.connection.recv())
    return answer == {"type": "pong"}


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_socket_is_closed_with_4403_when_its_token_expires(
    server: LiveServer, api: GraphQLClient, protocol: str
) -> None:
    ann = await api.account("Ann")
    short_lived = signed_token(ann.pk, DEVELOPMENT_SECRET_KEY, expires_in=2)
    async with graphql_socket(server.ws_url, short_lived, protocol=protocol) as socket:
        await socket.subscribe(UPDATES)
        assert await close_code(socket.connection, 4) == 4403
    # The client reconnects with a fresh token.
    async with graphql_socket(server.ws_url, ann.token, protocol=protocol) as socket:
        await socket.subscribe(UPDATES)
        await subscriptions_started(server.runtime, [ann.pk])
        card = await api.card(ann, await api.board(ann))
        assert (await socket.next_update())["typename"] in ("Board", "Card", "Membership")
        assert card


async def test_log_out_revokes_the_token_and_closes_its_sockets(
    server: LiveServer, api: GraphQLClient
) -> None:
    ann = await api.account("Ann")
    other_session = server.runtime.authenticator.issue_token(ann.pk)
    url = server.ws_url
    async with (
        graphql_socket(url, ann.token) as transport,
        graphql_socket(url, ann.token, protocol=LEGACY_WS) as legacy,
        graphql_socket(url, other_session) as other,
    ):
        assert (await api.data(LOG_OUT, {"all": False}, token=ann.token)) == {"logOut": True}
        logged_out = time.monotonic()
        assert await close_code(transport.connection, 1.0) == 4403
        assert await close_code(legacy.connection, 1.0) == 4403
        assert time.monotonic() - logged_out < 1.0
        assert await still_open(other)  # another session of the same user

        error = await api.error(VIEWER, token=ann.token)
        assert error["extensions"]["code"] == UNAUTHENTICATED
        assert "revoked" in error["message"]
        assert await refused_at_init(url, ann.token) == 4403

        # allSessions: every token issued so far, including the one it is sent with.
        await api.data(LOG_OUT, {"all": True}, token=other_session)
        assert await close_code(other.connection, 1.0) == 4403
    assert (await api.error(VIEWER, token=other_session))["extensions"]["code"] == UNAUTHENTICATED
    # Logging in again right away works.
    fresh = server.runtime.authenticator.issue_token(ann.pk)
    assert (await api.data(VIEWER, token=fresh))["viewer"]["id"] == ann.id
    async with graphql_socket(url, fresh) as socket:
        assert await still_open(socket)


async def test_log_out_needs_a_token(api: GraphQLClient) -> None:
    error = await api.error(LOG_OUT, {"all": False})
    assert error["extensions"]["code"] == UNAUTHENTICATED


async def test_expired_revocations_are_trimmed(server: LiveServer, api: GraphQLClient) -> None:
    ann = await api.account("Ann")
    runtime = server.runtime
    now = time.time()
    expired = TokenClaims(ann.pk, "gone", int(now) - 1, now - 60)
    live = TokenClaims(ann.pk, "live", int(now) + 3600, now)
    await runtime.authenticator.revoke(expired, all_sessions=False)
    await runtime.authenticator.revoke(live, all_sessions=False)
    revocations = runtime.authenticator._revocations
    assert revocations is not None
    assert await revocations.trim() == 1  # type: ignore[attr-defined]
    async with runtime.engine.connect() as connection:
        left = await connection.scalar(select(func.count()).select_from(token_revocations))
    assert left == 1


async def test_log_out_closes_sockets_on_another_process_within_a_second(
    empty_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = app_environment(DATABASE_URL=empty_postgres_url, BROKER_URL=redis_url)
    with running_servers(env=env, workdir=tmp_path) as servers:
        one, two = servers
        async with httpx.AsyncClient(base_url=two.base_url, timeout=10) as via_two:
            signed_up = await gql(via_two, SIGN_UP, {"email": "ann@example.com", "name": "Ann"})
            token = signed_up["signUp"]["token"]  # type: ignore[index]
            url_one = one.base_url.replace("http://", "ws://") + "/graphql"
            async with graphql_socket(url_one, token) as socket:
                await socket.subscribe(UPDATES)
                assert await gql(via_two, LOG_OUT, {"all": False}, token) == {"logOut": True}
                assert await close_code(socket.connection, 1.0) == 4403
            assert await refused_at_init(url_one, token) == 4403
