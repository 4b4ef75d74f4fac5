"""What the endpoint accepts over HTTP: mutations only by POST with a JSON body, GET for
queries; refusals are JSON with a code; the graphql-http server audit passes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import models
from app.settings import Settings
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
