"""COMMITCAST_ENV=production: GraphiQL and introspection off unless enabled explicitly,
internal errors masked (the refused default secret is tested in test_settings and
test_cli)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text

from app.asgi import create_app
from app.settings import MIN_SECRET_KEY_LENGTH, Settings
from schema.errors import GRAPHQL_VALIDATION_FAILED, INTERNAL_SERVER_ERROR, NOT_FOUND
from tests.support import GraphQLClient

SECRET = "p" * MIN_SECRET_KEY_LENGTH
INTROSPECTION = "{ __schema { queryType { name } } }"


@asynccontextmanager
async def production(sqlite_url: str, **overrides: bool) -> AsyncIterator[GraphQLClient]:
    settings = Settings(
        database_url=sqlite_url, secret_key=SECRET, environment="production", **overrides
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield GraphQLClient(http, app.state.runtime)


async def graphiql(api: GraphQLClient) -> httpx.Response:
    return await api.http.get("/graphql", headers={"Accept": "text/html"})


async def test_production_serves_no_graphiql_and_no_introspection(sqlite_url: str) -> None:
    async with production(sqlite_url) as api:
        page = await graphiql(api)
        assert page.status_code == 404
        assert "graphiql" not in page.text.lower()
        assert page.json()["errors"][0]["extensions"]["code"] == NOT_FOUND

        body = await api.execute(INTROSPECTION)
        assert body["data"] is None
        assert body["errors"]
        for error in body["errors"]:
            assert error["extensions"]["code"] == GRAPHQL_VALIDATION_FAILED
            assert "introspection has been disabled" in error["message"]
        # __typename is not introspection: clients (Apollo) add it everywhere.
        assert await api.data("{ __typename }") == {"__typename": "Query"}


async def test_production_serves_graphiql_and_introspection_when_enabled(
    sqlite_url: str,
) -> None:
    async with production(sqlite_url, graphiql=True, introspection=True) as api:
        page = await graphiql(api)
        assert page.status_code == 200
        assert "graphiql" in page.text.lower()
        assert (await api.data(INTROSPECTION))["__schema"]["queryType"] == {"name": "Query"}


async def test_development_can_turn_them_off(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, graphiql=False, introspection=False)
    assert not settings.serves_graphiql
    assert not settings.allows_introspection
    assert Settings(database_url=sqlite_url).serves_graphiql


async def test_production_masks_a_database_failure(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real failure inside a resolver (the users table vanished under the server): the
    client sees a code and a reference, the log has the SQL and the traceback."""
    async with production(sqlite_url) as api:
        ann = await api.account("Ann")
        async with api.runtime.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE users RENAME TO users_gone"))
        with caplog.at_level(logging.ERROR, logger="commitcast.graphql"):
            response = await api.http.post(
                "/graphql",
                json={"query": "{ viewer { id name } }"},
                headers={"Authorization": f"Bearer {ann.token}"},
            )
    assert response.status_code == 200, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == INTERNAL_SERVER_ERROR
    for leak in ("Traceback", "no such table", "users", "sqlalchemy", "SELECT", 'File "'):
        assert leak not in response.text
    assert error["extensions"]["reference"] in caplog.text
    assert "SELECT" in caplog.text
    assert "Traceback" in caplog.text
