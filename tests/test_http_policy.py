"""What the endpoint accepts over HTTP: mutations only by POST with a JSON body, GET for
queries; refusals are JSON with a code; the graphql-http server audit passes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.datastructures import Headers
from strawberry.http.base import BaseView
from strawberry.http.parse_content_type import parse_content_type

import models
from app.graphql import GraphQLView
from app.http_policy import KNOWN_HEADER_VALUES, media_type_of
from app.settings import Settings
from schema import build_schema
from schema.errors import BAD_REQUEST
from tests.node_clients import CLIENTS, installed_package
from tests.realtime_support import Realtime
from tests.support import GraphQLClient

CREATE_BOARD = 'mutation { createBoard(input: {name: "Sneaky"}) { id } }'
AUDIT_TIMEOUT = 60.0


# HTTP handling does not depend on the database or broker: one deployment is enough.
@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def realtime_settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url)


def refusal(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": BAD_REQUEST}
    assert error["message"]
    return dict(error)


async def boards(api: GraphQLClient) -> int:
    async with api.runtime.read_sessions() as session:
        return await session.scalar(select(func.count()).select_from(models.Board)) or 0


async def test_a_mutation_over_get_is_405_and_changes_nothing(api: GraphQLClient) -> None:
    ann = await api.account("Ann")
    response = await api.http.get(
        "/graphql",
        params={"query": CREATE_BOARD},
        headers={"Authorization": f"Bearer {ann.token}", "Accept": "application/json"},
    )
    refusal(response, 405)
    assert response.headers["allow"] == "POST"
    assert await boards(api) == 0
    # Queries over GET are fine.
    ok = await api.http.get(
        "/graphql",
        params={"query": "{ viewer { name } }"},
        headers={"Authorization": f"Bearer {ann.token}", "Accept": "application/json"},
    )
    assert ok.json() == {"data": {"viewer": {"name": "Ann"}}}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "text/plain; application/json",
    ],
)
async def test_post_needs_a_json_content_type(api: GraphQLClient, content_type: str | None) -> None:
    """The content types an HTML form or a no-preflight fetch can send cannot mutate."""
    ann = await api.account("Ann")
    headers = {"Authorization": f"Bearer {ann.token}"}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"query": CREATE_BOARD}).encode()
    response = await api.http.post("/graphql", content=body, headers=headers)
    refusal(response, 415)
    assert await boards(api) == 0
    # The same body as JSON (with a charset parameter) is accepted.
    headers["Content-Type"] = "application/json; charset=utf-8"
    ok = await api.http.post("/graphql", content=body, headers=headers)
    assert ok.json()["data"]["createBoard"]["id"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b"0",
        b"null",
        b'"{ viewer { id } }"',
        b"\x80\xff",
        b'{"query": 42}',
        b'{"variables": "x", "query": "{ __typename }"}',
        b"",
    ],
)
async def test_malformed_requests_are_400_with_a_code(api: GraphQLClient, body: bytes) -> None:
    response = await api.http.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )
    refusal(response, 400)


async def test_graphql_http_audit_has_no_must_failures(realtime: Realtime) -> None:
    """graphql-http's serverAudits against the live server (clients/graphql-http-audit)."""
    client = installed_package(CLIENTS / "graphql-http-audit")
    process = await asyncio.create_subprocess_exec(
        client.node,
        "audit.mjs",
        cwd=client.directory,
        env={"COMMITCAST_GRAPHQL_URL": f"{realtime.server.http_url}/graphql", "PATH": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(AUDIT_TIMEOUT):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, (stdout.decode(), stderr.decode())
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    counts = report["counts"]
    assert counts["MUST"]["error"] == 0, report["failures"]
    assert counts["MUST"]["ok"] >= 13
    # Recorded in SECURITY.md; a change here means the audit or the server changed.
    print(f"graphql-http audit: {counts}")


ACCEPT_VALUES = [
    "",
    "application/json",
    "application/graphql-response+json, application/json",
    "text/event-stream",
    "multipart/mixed;subscriptionSpec=1.0, application/json",
    "multipart/mixed; subscriptionSpec='1.0'; boundary=graphql",
    "multipart/mixed; boundary=other; subscriptionSpec=1.0",
    "multipart/mixed",
    "Text/Event-Stream;q=0.9",
]


def test_content_types_read_as_strawberry_reads_them_once_per_value() -> None:
    for value in ["application/json", "Application/JSON; charset=utf-8", "text/plain; x=1", ""]:
        assert media_type_of(value) == parse_content_type(value)[0].strip().lower()
    media_type_of.cache_clear()
    for _ in range(3):
        media_type_of("application/json; charset=utf-8")
    assert media_type_of.cache_info().misses == 1


def test_accept_values_choose_the_transport_strawberry_would_once_per_value() -> None:
    view = GraphQLView(build_schema())
    kinds = set()
    for value in ACCEPT_VALUES * 2:
        chosen = view._get_stream_transport_from_headers(Headers({"accept": value}))
        expected = BaseView._get_stream_transport_from_headers(view, {"Accept": value})
        assert chosen is expected, value
        kinds.add(type(chosen).__name__)
    assert kinds == {"NoneType", "KeepAliveSSE", "HeartbeatMultipart"}  # (app.streaming)
    assert len(view._transports_by_accept) == len(ACCEPT_VALUES)
    # Bounded, whatever clients send.
    for n in range(3 * KNOWN_HEADER_VALUES):
        view._get_stream_transport_from_headers(Headers({"accept": f"application/x-{n}"}))
    assert len(view._transports_by_accept) <= KNOWN_HEADER_VALUES
