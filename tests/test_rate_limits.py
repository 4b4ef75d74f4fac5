"""Rate limits: logIn per email, signUp/logIn per client address, mutations per user;
RATE_LIMITED with retryAfter; counted in Redis so that processes share them."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import models
from app.auth import Authenticator
from app.rate_limit import MemoryCounter, Rate, RateLimiter, RedisCounter
from app.settings import Settings
from models.database import create_engine
from schema.errors import RATE_LIMITED, UNAUTHENTICATED
from tests.live import live_server
from tests.servers import app_environment, free_port, running_servers
from tests.support import PASSWORD, GraphQLClient, eventually, password_hash
from tests.ws_client import graphql_socket

LOG_IN = "mutation($e: String!, $p: String!) { logIn(input: {email: $e, password: $p}) { token } }"
SIGN_UP = (
    "mutation($e: String!) { signUp(input: "
    f'{{email: $e, name: "N", password: "{PASSWORD}"}}) {{ token }} }}'
)
SECRET = "rate-limit-test-secret-0123456789abcdef"
CREATE_BOARD = 'mutation { createBoard(input: {name: "B"}) { id } }'


def code(body: dict[str, Any]) -> str:
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    value: str = errors[0]["extensions"]["code"]
    return value


def retry_after(body: dict[str, Any], window: int) -> int:
    extensions = body["errors"][0]["extensions"]
    assert extensions["code"] == RATE_LIMITED, body
    seconds: int = extensions["retryAfter"]
    assert isinstance(seconds, int)
    assert 1 <= seconds <= window
    assert f"{seconds} s" in body["errors"][0]["message"]
    return seconds


async def board_count(api: GraphQLClient) -> int:
    async with api.runtime.read_sessions() as session:
        count = await session.scalar(select(func.count()).select_from(models.Board))
    return count or 0


@pytest.fixture
async def limited(sqlite_url: str) -> AsyncIterator[tuple[GraphQLClient, str]]:
    """A live server with small limits. (Every logIn and signUp costs an argon2 hash,
    so these stay few; Redis is covered by the two-process test below.)"""
    settings = Settings(
        database_url=sqlite_url,
        login_rate=Rate(2, 60),
        mutation_rate=Rate(3, 60),
        sign_in_address_rate=Rate(5, 60),
    )
    async with (
        live_server(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        yield GraphQLClient(http, server.runtime), server.ws_url


async def test_log_in_attempts_are_limited_per_email(
    limited: tuple[GraphQLClient, str],
) -> None:
    api, _ = limited
    ann = await api.account("Ann")
    bob = await api.account("Bob")
    for _ in range(2):
        assert code(await api.execute(LOG_IN, {"e": ann.email, "p": "wrong password"})) == (
            UNAUTHENTICATED
        )
    # Past the limit even the right password is refused, whatever the letter case.
    refused = await api.execute(LOG_IN, {"e": ann.email.upper(), "p": PASSWORD})
    retry_after(refused, 60)
    assert refused["data"] is None
    # Another address is counted on its own.
    assert (await api.data(LOG_IN, {"e": bob.email, "p": PASSWORD}))["logIn"]["token"]


async def test_unknown_emails_are_limited_like_known_ones(
    limited: tuple[GraphQLClient, str],
) -> None:
    api, _ = limited
    for _ in range(2):
        body = await api.execute(LOG_IN, {"e": "nobody@example.com", "p": "whatever123"})
        assert code(body) == UNAUTHENTICATED
    retry_after(await api.execute(LOG_IN, {"e": "nobody@example.com", "p": "x" * 9}), 60)


async def test_sign_ups_and_log_ins_are_limited_per_client_address(
    limited: tuple[GraphQLClient, str],
) -> None:
    api, _ = limited
    assert (await api.data(SIGN_UP, {"e": "user0@example.com"}))["signUp"]["token"]
    # Malformed logIns cost no hashing, and still count.
    for _ in range(4):
        body = await api.execute(LOG_IN, {"e": "not an email", "p": "x"})
        assert code(body) == UNAUTHENTICATED
    refused = await api.execute(SIGN_UP, {"e": "user1@example.com"})
    retry_after(refused, 60)
    async with api.runtime.read_sessions() as session:
        users = await session.scalar(select(func.count()).select_from(models.User))
    assert users == 1  # the refused signUp created nothing
    retry_after(await api.execute(LOG_IN, {"e": "user0@example.com", "p": PASSWORD}), 60)


async def test_mutations_are_limited_per_user_over_http_and_websocket(
    limited: tuple[GraphQLClient, str],
) -> None:
    api, ws_url = limited
    ann = await api.account("Ann")
    bob = await api.account("Bob")
    # Two root fields count two.
    await api.data(
        'mutation { a: createBoard(input: {name: "A"}) { id }'
        ' b: createBoard(input: {name: "B"}) { id } }',
        token=ann.token,
    )
    async with graphql_socket(ws_url, ann.token) as socket:
        await socket.subscribe(CREATE_BOARD)
        assert (await socket.next_payload())["data"]["createBoard"]["id"]
        refused_id = await socket.subscribe(CREATE_BOARD)
        message = await socket.receive()
        while message["type"] == "complete" or message.get("id") != refused_id:
            message = await socket.receive()
        payload = message["payload"]
        errors = payload if isinstance(payload, list) else payload["errors"]
        assert errors[0]["extensions"]["code"] == RATE_LIMITED, message
    refused = await api.execute(CREATE_BOARD, token=ann.token)
    retry_after(refused, 60)
    assert refused["data"] is None
    assert await board_count(api) == 3
    # Queries are not counted, and Bob has his own budget.
    assert (await api.data("{ viewer { name } }", token=ann.token))["viewer"] == {"name": "Ann"}
    assert (await api.data(CREATE_BOARD, token=bob.token))["createBoard"]["id"]


@pytest.fixture(params=["memory", "redis"])
def counter(request: pytest.FixtureRequest) -> MemoryCounter | RedisCounter:
    if request.param == "redis":
        return RedisCounter(request.getfixturevalue("redis_url"))
    return MemoryCounter()


async def test_a_window_ends_and_attempts_are_allowed_again(
    counter: MemoryCounter | RedisCounter,
) -> None:
    limiter = RateLimiter(counter, {"s": Rate(2, 1), "free": None}, namespace="commitcast:test")
    key = f"window-{time.time_ns()}"
    try:
        assert await limiter.hit("s", key) is None
        assert await limiter.hit("s", key) is None
        wait = await limiter.hit("s", key)
        assert wait is not None
        assert 0 < wait <= 1
        assert await limiter.hit("free", key, cost=1000) is None

        async def allowed_again() -> bool:
            return await limiter.hit("s", key, cost=0) is None

        await eventually(allowed_again, "the window to end", within=5)
        assert await limiter.hit("s", key) is None
    finally:
        await limiter.close()


async def test_processes_behind_a_load_balancer_share_the_limits(
    empty_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Attempts spread over two processes on PostgreSQL + Redis are counted together."""
    env = app_environment(
        DATABASE_URL=empty_postgres_url,
        BROKER_URL=redis_url,
        SECRET_KEY=SECRET,
        LOGIN_RATE_LIMIT="2/60",
        MUTATION_RATE_LIMIT="4/60",
    )
    # Ann is inserted directly, with a token signed by the servers' key: signUp would
    # cost an argon2 hash and count against the address limit.
    engine = create_engine(empty_postgres_url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            ann = models.User(email="ann@example.com", name="Ann", password_hash=password_hash())
            session.add(ann)
            await session.flush()
            ann_pk = ann.id
    finally:
        await engine.dispose()
    token = Authenticator(SECRET, 3600).issue_token(ann_pk)
    with running_servers(env=env, workdir=tmp_path) as servers:
        async with (
            httpx.AsyncClient(base_url=servers[0].base_url, timeout=10) as one,
            httpx.AsyncClient(base_url=servers[1].base_url, timeout=10) as two,
        ):
            clients = [one, two]

            async def post(i: int, query: str, variables: dict[str, Any], token: str = "") -> Any:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await clients[i % 2].post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                )
                assert response.status_code == 200, response.text
                return response.json()

            for i in range(2):
                assert code(await post(i, LOG_IN, {"e": "ann@example.com", "p": "nope" * 3})) == (
                    UNAUTHENTICATED
                )
            retry_after(await post(0, LOG_IN, {"e": "ann@example.com", "p": PASSWORD}), 60)
            retry_after(await post(1, LOG_IN, {"e": "ann@example.com", "p": PASSWORD}), 60)

            for i in range(4):
                assert not (await post(i, CREATE_BOARD, {}, token)).get("errors")
            retry_after(await post(0, CREATE_BOARD, {}, token), 60)
            retry_after(await post(1, CREATE_BOARD, {}, token), 60)


async def test_an_unreachable_redis_lets_attempts_through_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Limits must not take the API down with Redis (like publishing, see
    test_a_mutation_commits_and_answers_while_the_broker_is_down)."""
    limiter = RateLimiter(
        RedisCounter(f"redis://127.0.0.1:{free_port()}/0"), {"s": Rate(1, 60)}, namespace="x"
    )
    try:
        with caplog.at_level(logging.WARNING, logger="commitcast.rate_limit"):
            started = time.monotonic()
            for _ in range(3):
                assert await limiter.hit("s", "key") is None
            elapsed = time.monotonic() - started
    finally:
        await limiter.close()
    assert elapsed < 3 * RedisCounter.TIMEOUT_SECONDS + 1
    warnings = [r for r in caplog.records if r.name == "commitcast.rate_limit"]
    assert len(warnings) == 1  # once a minute, not once per attempt
    assert "not enforced" in warnings[0].getMessage()
