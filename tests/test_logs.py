"""Logs as an operator reads them: a real `python -m app` with LOG_FORMAT=json writes one
JSON object per stderr line, each line of a request or connection carries its id, and a
failed delivery is one line that says why. The formatters are checked on their own too."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx

from app.logs import JsonFormatter, TextFormatter, connection_id, request_id
from tests.servers import Server, app_environment, running_server
from tests.ws_client import UPDATES, graphql_socket

SIGN_UP = """
mutation { signUp(input: {email: "ann@example.com", name: "Ann", password: "correct horse"}) {
  token } }
"""
CREATE_BOARD = 'mutation { createBoard(input: {name: "Ops"}) { id } }'
CREATE_CARD = 'mutation($b: ID!) { createCard(input: {boardId: $b, title: "Logs"}) { id } }'
UPDATE_CARD = "mutation($id: ID!, $t: String!) { updateCard(input: {id: $id, title: $t}) { id } }"


async def post(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
    )
    assert response.status_code == 200, response.text
    assert not response.json().get("errors"), response.text
    return response


def json_lines(server: Server) -> list[dict[str, Any]]:
    lines = [line for line in server.stderr.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line, or the test fails here naming it
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    return entries


async def test_json_logs_carry_ids_and_explain_a_failed_delivery(tmp_path: Path) -> None:
    database = tmp_path / "commitcast.db"
    env = app_environment(
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        LOG_FORMAT="json",
        SECRET_KEY="a-test-secret-that-is-long-enough-for-production",
    )
    with running_server(env=env, cwd=tmp_path) as server:
        await asyncio.to_thread(server.wait_until_healthy)
        ws_url = server.base_url.replace("http://", "ws://") + "/graphql"
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            signed_up = await post(http, SIGN_UP, headers={"X-Request-ID": "signup-1"})
            # The caller's id comes back; an unusable one is replaced by a fresh id.
            assert signed_up.headers["x-request-id"] == "signup-1"
            token = signed_up.json()["data"]["signUp"]["token"]
            board = await post(http, CREATE_BOARD, token=token, headers={"X-Request-ID": "a b"})
            fresh_id = board.headers["x-request-id"]
            assert fresh_id != "a b"
            assert len(fresh_id) == 32
            board_id = board.json()["data"]["createBoard"]["id"]
            card = await post(http, CREATE_CARD, {"b": board_id}, token=token)
            card_id = card.json()["data"]["createCard"]["id"]

            # Connection 1: a cursor that cannot be served (RESYNC), then one update.
            async with graphql_socket(ws_url, token) as socket:
                await socket.subscribe(UPDATES, {"after": "not-a-cursor"})
                assert (await socket.next_update())["op"] == "RESYNC"
                await post(http, UPDATE_CARD, {"id": card_id, "t": "seen"}, token=token)
                seen = await socket.next_update()
                assert seen["id"] == card_id
                cursor = seen["cursor"]

            # While Ann is away the card changes, then its table disappears (a broken
            # database): her resume cannot reload the card.
            await post(http, UPDATE_CARD, {"id": card_id, "t": "missed"}, token=token)
            with sqlite3.connect(database) as db:
                db.execute("ALTER TABLE cards RENAME TO cards_gone")

            # Connection 2: the replay fails; the client gets an error, not the update.
            async with graphql_socket(ws_url, token) as socket:
                await socket.subscribe(UPDATES, {"after": cursor})
                failed = await socket.receive()
                assert failed["type"] == "next", failed
                assert failed["payload"]["errors"], failed
        assert server.stop() in (0, -15)

    entries = json_lines(server)

    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    sign_up_line = next(e for e in access if e.get("request_id") == "signup-1")
    assert (sign_up_line["method"], sign_up_line["path"], sign_up_line["status"]) == (
        "POST",
        "/graphql",
        200,
    )
    assert any(e.get("request_id") == fresh_id for e in access)
    # Every HTTP request's access line names its request id.
    assert all("request_id" in e for e in access), access

    [resync] = [e for e in entries if e.get("event") == "resync"]
    assert (resync["reason"], resync["logger"]) == ("invalid_cursor", "commitcast.delivery")
    assert "malformed" in resync["message"]

    [failure] = [e for e in entries if e.get("event") == "delivery_failed"]
    assert failure["level"] == "WARNING"
    assert failure["reason"] == "reload_error"
    assert failure["typename"] == "Card"
    assert failure["user_id"] == resync["user_id"]
    assert isinstance(failure["change_id"], int)
    assert failure["message"].endswith("no such table: cards)"), failure
    # Its traceback is on the operation's error line, under the same connection id.
    [error] = [e for e in entries if e["level"] == "ERROR"]
    assert error["connection_id"] == failure["connection_id"]
    assert "Traceback" in error["exception"]
    # Each line names its own connection; the two connections have different ids.
    assert failure["connection_id"] != resync["connection_id"]
    assert "request_id" not in failure  # a WebSocket without X-Request-ID
    # The ids appear on no line of another connection's business.
    assert {e["connection_id"] for e in entries if e.get("event")} == {
        failure["connection_id"],
        resync["connection_id"],
    }


def record(message: str, **extra: Any) -> logging.LogRecord:
    entry = logging.LogRecord("commitcast.test", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_json_lines_hold_ids_extras_and_the_exception_on_one_line() -> None:
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        exc_info = sys.exc_info()
    entry = record("it broke", user_id=7)
    entry.exc_info = exc_info
    tokens = (request_id.set("req-1"), connection_id.set("conn-1"))
    try:
        line = JsonFormatter().format(entry)
    finally:
        connection_id.reset(tokens[1])
        request_id.reset(tokens[0])
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "it broke"
    assert (parsed["request_id"], parsed["connection_id"], parsed["user_id"]) == (
        "req-1",
        "conn-1",
        7,
    )
    assert parsed["level"] == "INFO"
    assert parsed["time"].endswith("+00:00")
    assert "ValueError: line one\nline two" in parsed["exception"]


def test_text_lines_show_the_ids_only_when_there_are_some() -> None:
    assert TextFormatter().format(record("plain")).endswith("INFO commitcast.test: plain")
    token = connection_id.set("conn-9")
    try:
        line = TextFormatter().format(record("in a connection"))
    finally:
        connection_id.reset(token)
    assert line.endswith("commitcast.test: in a connection [connection_id=conn-9]")
