"""Cost limits (depth, aliases, tokens) refuse a document over HTTP and over a real
WebSocket alike, with QUERY_TOO_COMPLEX; errors of subscription events are coded and
masked like HTTP ones."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import (
    MaxIntrospectionDepthRule,
    OperationType,
    get_introspection_query,
    specified_rules,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.types import ExecutionContext

import models
from app.runtime import open_runtime
from app.settings import Settings
from schema import Context, build_schema
from schema.errors import INTERNAL_SERVER_ERROR, QUERY_TOO_COMPLEX
from schema.limits import QueryLimits, ValidationRules
from subscriptions.cursors import encode_cursor
from tests.live import live_server
from tests.support import GraphQLClient
from tests.ws_client import graphql_socket

LIMITS = QueryLimits(max_depth=4, max_aliases=3, max_tokens=60)

# board > cards > comments > author > name: five levels.
TOO_DEEP = "query($id: ID!) { board(id: $id) { cards { comments { author { name } } } } }"
DEEP_ENOUGH = "query($id: ID!) { board(id: $id) { cards { comments { body } } } }"
# Nesting hidden in fragments counts the same.
TOO_DEEP_BY_FRAGMENTS = """
query($id: ID!) { board(id: $id) { ...B } }
fragment B on Board { cards { ...C } }
fragment C on Card { comments { author { name } } }
"""
TOO_MANY_ALIASES = "{ a: viewer { id } b: viewer { id } c: viewer { id } d: viewer { id } }"
ALIASES_BY_FRAGMENT = "{ ...V ...V } fragment V on Query { a: viewer { id } b: viewer { id } }"
TOO_MANY_TOKENS = "{ viewer { " + "id " * 60 + "} }"
ONLY_COMMENTS = "{ viewer { id } }\n" + "# padding\n" * 80


def limited_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, query_limits=LIMITS)


def too_complex(body: dict[str, Any], limit: str, maximum: int) -> dict[str, Any]:
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    assert error["extensions"]["code"] == QUERY_TOO_COMPLEX, error
    assert error["extensions"]["limit"] == limit
    assert error["extensions"]["maximum"] == maximum
    assert not body.get("data")
    return error


@pytest.fixture
async def limited(sqlite_url: str) -> AsyncIterator[tuple[GraphQLClient, str]]:
    async with (
        live_server(limited_settings(sqlite_url)) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        yield GraphQLClient(http, server.runtime), server.ws_url


async def test_limits_refuse_documents_over_http(limited: tuple[GraphQLClient, str]) -> None:
    api, _ = limited
    ann = await api.account("Ann")
    board = await api.board(ann)
    variables = {"id": board}

    error = too_complex(await api.execute(TOO_DEEP, variables, token=ann.token), "depth", 4)
    assert "5 levels" in error["message"]
    too_complex(await api.execute(TOO_DEEP_BY_FRAGMENTS, variables, token=ann.token), "depth", 4)
    assert (await api.data(DEEP_ENOUGH, variables, token=ann.token))["board"] == {"cards": []}

    too_complex(await api.execute(TOO_MANY_ALIASES, token=ann.token), "aliases", 3)
    too_complex(await api.execute(ALIASES_BY_FRAGMENT, token=ann.token), "aliases", 3)
    three = "{ a: viewer { id } b: viewer { id } c: viewer { id } }"
    assert (await api.data(three, token=ann.token))["c"] == {"id": ann.id}

    too_complex(await api.execute(TOO_MANY_TOKENS, token=ann.token), "tokens", 60)
    too_complex(await api.execute(ONLY_COMMENTS, token=ann.token), "tokens", 60)


async def test_limits_refuse_subscribe_messages_on_a_real_socket(
    limited: tuple[GraphQLClient, str],
) -> None:
    api, ws_url = limited
    ann = await api.account("Ann")
    deep_subscription = (
        "subscription { userUpdates { node { ... on Board"
        " { cards { comments { author { name } } } } } } }"
    )
    aliased = "subscription { userUpdates { a: op b: op c: op d: op } }"
    async with graphql_socket(ws_url, ann.token) as socket:
        for document, limit, maximum in (
            (deep_subscription, "depth", 4),
            (TOO_MANY_TOKENS.replace("{ viewer", "subscription { userUpdates", 1), "tokens", 60),
            (aliased, "aliases", 3),
            ("query " + TOO_MANY_ALIASES, "aliases", 3),
        ):
            operation_id = await socket.subscribe(document, {"id": "x"})
            message = await socket.receive()
            assert message["type"] == "error", message
            assert message["id"] == operation_id
            too_complex({"errors": message["payload"]}, limit, maximum)
        # The connection is still usable afterwards.
        await socket.subscribe("{ viewer { name } }")
        assert (await socket.next_payload())["data"] == {"viewer": {"name": "Ann"}}


async def test_introspection_query_of_graphiql_passes_the_default_limits(
    api: GraphQLClient,
) -> None:
    body = await api.execute(get_introspection_query(descriptions=True))
    assert not body.get("errors"), body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


class BrokenReads(async_sessionmaker[AsyncSession]):
    """Record reloads fail the way an unreachable database does."""

    def __call__(self, **_local_kw: Any) -> AsyncSession:
        raise ConnectionError("could not connect to postgresql://admin:hunter2@db/prod")


async def test_subscription_event_errors_are_coded_and_masked(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A change arrives, but reloading its record fails unexpectedly: the event carries
    INTERNAL_SERVER_ERROR with a reference, not the exception's text."""
    async with open_runtime(Settings(database_url=sqlite_url)) as runtime:
        api = GraphQLClient(httpx.AsyncClient(), runtime)
        ann = await api.account("Ann")
        context = Context(
            read_sessions=BrokenReads(),
            write_sessions=runtime.write_sessions,
            auth=runtime.authenticator,
            viewer_id=ann.pk,
            feed=runtime.feed,
        )
        async with runtime.write_sessions() as session, session.begin():
            board = models.Board(name="Trigger", owner_id=ann.pk)
            session.add(board)
            session.add(models.Membership(board=board, user_id=ann.pk, role=models.Role.OWNER))
        # Resuming from the start of the log replays the board's creation.
        stream = await build_schema().subscribe(
            "subscription($after: String) { userUpdates(after: $after) { op node { id } } }",
            variable_values={"after": encode_cursor(ann.pk, 0)},
            context_value=context,
        )
        assert not hasattr(stream, "errors"), stream
        with caplog.at_level(logging.ERROR, logger="commitcast.graphql"):
            async with asyncio.timeout(10):
                result = await anext(stream)  # type: ignore[arg-type]
        await stream.aclose()  # type: ignore[union-attr]
    assert result.errors, result
    formatted = result.errors[0].formatted
    extensions = formatted["extensions"] or {}
    assert extensions["code"] == INTERNAL_SERVER_ERROR
    assert re.fullmatch(r"Internal server error \(ref [0-9a-f]{12}\)\.", formatted["message"])
    assert "hunter2" not in repr(formatted)
    assert extensions["reference"] in caplog.text
    assert "hunter2" in caplog.text


def test_operations_share_one_tuple_of_validation_rules() -> None:
    """An operation keeps its validation rules for its life: every operation gets the
    same tuple (strawberry's defaults and ours), not one of its own."""
    schema = build_schema()
    contexts = []
    for _ in range(2):
        context = ExecutionContext(
            query="{ __typename }", schema=schema, allowed_operations=[OperationType.QUERY]
        )
        extension = ValidationRules([MaxIntrospectionDepthRule])
        extension.execution_context = context
        extension.start_operation()
        contexts.append(context)

    first, second = (context.validation_rules for context in contexts)
    assert first is second
    assert first == (*specified_rules, MaxIntrospectionDepthRule)
