"""Shared fixtures: both databases, a migrated schema per run, and an app per test.

PostgreSQL and Redis come from TEST_POSTGRES_URL / TEST_REDIS_URL (defaults: the local
test services). When one is unreachable its tests skip with the reason, except in CI
(CI=true or COMMITCAST_REQUIRE_SERVICES=1), where they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.asgi import create_app
from app.runtime import Runtime, open_runtime
from app.settings import Settings
from models.database import create_engine
from models.migrate import upgrade
from tests.live import live_server
from tests.realtime_support import Realtime
from tests.redis_server import RedisServer, redis_server
from tests.support import GraphQLClient

TEST_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = (
    os.environ.get("CI", "").lower() in ("1", "true", "yes")
    or os.environ.get("COMMITCAST_REQUIRE_SERVICES") == "1"
)
TABLES = (
    "token_revocations",
    "change_audience",
    "change_log",
    "comments",
    "cards",
    "memberships",
    "boards",
    "users",
)


def service_missing(name: str, url: str, error: BaseException) -> None:
    message = f"{name} is not reachable at {url}: {type(error).__name__}: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


def tool_missing(message: str) -> None:
    """A tool a test needs (node, chromium) is absent: skip, or fail in CI."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A database of this run's own, migrated once and dropped at the end."""
    try:
        admin = await asyncpg.connect(_asyncpg_dsn(TEST_POSTGRES_URL), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("PostgreSQL", TEST_POSTGRES_URL, exc)
        raise  # unreachable: service_missing skips or fails
    name = f"commitcast_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(TEST_POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    await engine.dispose()
    return path


@pytest.fixture
async def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "commitcast.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def empty_postgres_url(postgres_url: str) -> str:
    """The run's database with every table emptied, ids restarting at 1."""
    engine = create_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        # Change ids restart at 1: so must the retention watermark.
        await conn.execute(text("UPDATE commitcast_deployment SET trimmed_through = 0"))
    await engine.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test that uses it runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "empty_postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `database_url` (migrated, empty), disposed after the test."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        await client.aclose()
        service_missing("Redis", TEST_REDIS_URL, exc)
    # Rate limit counters live in Redis under the deployment's namespace, which on
    # PostgreSQL outlives a test (the tables are emptied, the deployment stays): each
    # test starts with none.
    async for key in client.scan_iter(match="commitcast:*:ratelimit:*", count=500):
        await client.delete(key)
    await client.aclose()
    return TEST_REDIS_URL


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, broker_url="memory://")


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings) as rt:
        yield rt


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def api(http: httpx.AsyncClient, app: Starlette) -> GraphQLClient:
    return GraphQLClient(http, app.state.runtime)


@pytest.fixture(params=["sqlite+memory", "postgresql+redis"])
def realtime_settings(request: pytest.FixtureRequest) -> Settings:
    """The two deployments: SQLite with the in-memory broker, PostgreSQL with Redis."""
    if request.param == "sqlite+memory":
        return Settings(database_url=request.getfixturevalue("sqlite_url"))
    return Settings(
        database_url=request.getfixturevalue("empty_postgres_url"),
        broker_url=request.getfixturevalue("redis_url"),
    )


@pytest.fixture
async def realtime(realtime_settings: Settings) -> AsyncIterator[Realtime]:
    """A live server on a real socket, for each deployment."""
    async with (
        live_server(realtime_settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        yield Realtime(server, GraphQLClient(http, server.runtime))


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill, stall and restart
    (tests/redis_server.py); the shared one is never disturbed."""
    async with redis_server(tmp_path) as server:
        yield server
