"""The HTTP surface: GraphiQL, health and readiness, and how errors leave the server."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from app.asgi import create_app
from app.auth import Authenticator
from app.settings import Settings
from app.web import DEFAULT_WEB_DIST, board_index
from schema import Context, build_schema
from schema.errors import (
    BAD_USER_INPUT,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_SERVER_ERROR,
)
from tests.servers import free_port
from tests.support import GraphQLClient

SECRET_IN_ERROR = "postgresql://admin:hunter2@db.internal/prod"


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """An app with its lifespan running, and a client speaking HTTP to it in-process."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield application, client


async def post_query(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    return error


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class BrokenSessions(async_sessionmaker[AsyncSession]):
    """A session factory that fails the way an unreachable database does."""

    def __call__(self, **_local_kw: Any) -> AsyncSession:
        raise ConnectionError(f"could not connect to {SECRET_IN_ERROR}")


# --- GraphiQL and health ---------------------------------------------------------------


async def test_graphiql_is_served_to_browsers(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_root_serves_the_built_board_or_leads_to_graphiql(http: httpx.AsyncClient) -> None:
    """Either way, depending on whether web/dist is built here (tests/test_web.py checks
    both cases on a directory of its own)."""
    response = await http.get("/")
    index = board_index(DEFAULT_WEB_DIST)
    if index is None:
        assert response.is_redirect
        assert response.headers["location"].endswith("/graphql")
    else:
        assert response.status_code == 200
        assert response.text == index.read_text()


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_memory_broker(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.redis
async def test_readyz_with_redis_broker(database_url: str, redis_url: str) -> None:
    async with serve(Settings(database_url=database_url, broker_url=redis_url)) as (_, http):
        response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


async def test_readyz_names_an_unreachable_broker(database_url: str) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with serve(Settings(database_url=database_url, broker_url=closed)) as (_, http):
        # Liveness does not depend on the broker; readiness does.
        assert (await http.get("/healthz")).status_code == 200
        response = await http.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"].startswith("error: ")


@pytest.mark.postgres
async def test_readyz_names_an_unreachable_database(postgres_url: str) -> None:
    # A throwaway database of this test's own, so that refusing connections to it
    # cannot disturb anything else using the run's database.
    name = f"commitcast_down_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url), timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        async with serve(Settings(database_url=url, broker_url="memory://")) as (_, http):
            assert (await http.get("/readyz")).status_code == 200

            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            down = await http.get("/readyz")
            assert down.status_code == 503, down.text
            body = down.json()
            assert body["status"] == "unavailable"
            assert body["database"].startswith("error: ")
            assert body["broker"] == "ok"

            # It recovers without a restart once the database is back.
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            up = await http.get("/readyz")
            assert up.status_code == 200, up.text
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- errors ------------------------------------------------------------------------------


async def test_syntax_error_has_a_code(http: httpx.AsyncClient) -> None:
    error = only_error(await post_query(http, "{ viewer { id "))
    assert error["extensions"]["code"] == GRAPHQL_PARSE_FAILED
    assert "Syntax Error" in error["message"]


@pytest.mark.parametrize(
    "query",
    ["{ viewer { id password } }", "{ nope }", "query($unused: Int) { viewer { id } }"],
)
async def test_validation_error_has_a_code(http: httpx.AsyncClient, query: str) -> None:
    body = await post_query(http, query)
    error = only_error(body)
    assert error["extensions"]["code"] == GRAPHQL_VALIDATION_FAILED
    assert body["data"] is None


async def test_missing_variable_is_bad_user_input(http: httpx.AsyncClient) -> None:
    error = only_error(await post_query(http, "query($id: ID!) { node(id: $id) { id } }"))
    assert error["extensions"]["code"] == BAD_USER_INPUT
    assert "$id" in error["message"]


async def test_unexpected_exception_is_masked_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Executing the schema with a session factory that fails like a bad connection."""

    context = Context(
        read_sessions=BrokenSessions(),
        write_sessions=BrokenSessions(),
        auth=Authenticator("k" * 40, 3600),
        viewer_id=1,
    )
    with caplog.at_level(logging.ERROR, logger="commitcast.graphql"):
        result = await build_schema().execute("{ viewer { id } }", context_value=context)

    assert result.errors is not None
    assert len(result.errors) == 1
    formatted = result.errors[0].formatted
    extensions = formatted.get("extensions") or {}
    assert extensions["code"] == INTERNAL_SERVER_ERROR
    reference = extensions["reference"]
    assert re.fullmatch(r"[0-9a-f]{12}", reference)
    assert formatted["message"] == f"Internal server error (ref {reference})."
    assert SECRET_IN_ERROR not in repr(formatted)

    [record] = [r for r in caplog.records if r.name == "commitcast.graphql"]
    assert record.levelno == logging.ERROR
    assert reference in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)
    assert SECRET_IN_ERROR in caplog.text  # the operator sees the cause, with traceback
    assert "Traceback" in caplog.text


async def test_database_failure_over_http_is_masked(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real failure inside a resolver: the users table vanished under the server."""
    async with serve(Settings(database_url=sqlite_url)) as (application, http):
        runtime = application.state.runtime
        ann = await GraphQLClient(http, runtime).account("Ann")
        async with runtime.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE users RENAME TO users_gone"))
        with caplog.at_level(logging.ERROR, logger="commitcast.graphql"):
            response = await http.post(
                "/graphql",
                json={"query": "{ viewer { id name } }"},
                headers={"Authorization": f"Bearer {ann.token}"},
            )

    assert response.status_code == 200, response.text
    error = only_error(response.json())
    assert error["extensions"]["code"] == INTERNAL_SERVER_ERROR
    assert error["message"] == f"Internal server error (ref {error['extensions']['reference']})."
    assert error["path"] == ["viewer"]
    for leak in ("Traceback", "no such table", "users", "sqlalchemy", "SELECT"):
        assert leak not in response.text
    assert error["extensions"]["reference"] in caplog.text
    assert "no such table: users" in caplog.text
    assert "Traceback" in caplog.text
