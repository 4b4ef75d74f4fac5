"""`python -m app` as a user runs it: a real process, real sockets, real shutdown."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import ENVIRONMENT_VARIABLES
from tests.servers import Server, app_environment, run_app, running_server


def graphql(
    server: Server,
    client: httpx.Client,
    query: str,
    variables: dict[str, Any],
    token: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    server_log = f"\n--- server stderr ---\n{server.stderr}"
    assert response.status_code == 200, response.text + server_log
    body: dict[str, Any] = response.json()
    assert not body.get("errors"), f"{body}{server_log}"
    data: dict[str, Any] = body["data"]
    return data


def readme_tour(server: Server) -> None:
    """Sign up, create a board and a card, and read the board back, over real HTTP."""
    email = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        signed_up = graphql(
            server,
            client,
            "mutation($i: SignUpInput!) { signUp(input: $i) { token user { id name } } }",
            {"i": {"email": email, "name": "Ann", "password": "correct horse battery"}},
        )["signUp"]
        token = signed_up["token"]
        board = graphql(
            server,
            client,
            'mutation { createBoard(input: {name: "Launch"}) { id name version } }',
            {},
            token,
        )["createBoard"]
        assert board["name"] == "Launch"
        card = graphql(
            server,
            client,
            'mutation($b: ID!) { createCard(input: {boardId: $b, title: "Write docs"}) {'
            " id title done } }",
            {"b": board["id"]},
            token,
        )["createCard"]
        assert card["title"] == "Write docs"
        assert card["done"] is False
        read = graphql(
            server,
            client,
            "query($id: ID!) { board(id: $id) { id name owner { id name email }"
            " cards { id title author { name } } } }",
            {"id": board["id"]},
            token,
        )["board"]
    assert read == {
        "id": board["id"],
        "name": "Launch",
        "owner": {"id": signed_up["user"]["id"], "name": "Ann", "email": email},
        "cards": [{"id": card["id"], "title": "Write docs", "author": {"name": "Ann"}}],
    }


def check_clean_shutdown(server: Server) -> None:
    exit_code = server.stop()
    stderr = server.stderr
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught so that a
    # supervisor sees why the process ended: -SIGTERM is the clean outcome here.
    assert exit_code in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete." in stderr
    assert "Traceback" not in stderr, stderr
    assert "ERROR" not in stderr, stderr


def test_server_creates_sqlite_database_and_serves_the_tour(tmp_path: Path) -> None:
    # A relative path: resolved against the working directory, and neither the file
    # nor its directories exist yet.
    database = tmp_path / "state" / "db" / "commitcast.db"
    env = app_environment(
        DATABASE_URL="sqlite+aiosqlite:///state/db/commitcast.db", BROKER_URL="memory://"
    )
    assert not database.parent.parent.exists()
    with running_server(env=env, cwd=tmp_path) as server:
        server.wait_until_healthy()
        port = server.base_url.rsplit(":", 1)[1]
        assert f"GraphiQL: http://localhost:{port}/graphql" in server.stdout
        assert database.is_file()
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            graphiql = client.get("/graphql", headers={"Accept": "text/html"})
            assert "graphiql" in graphiql.text.lower()
        readme_tour(server)
        check_clean_shutdown(server)


@pytest.mark.postgres
def test_server_on_an_already_migrated_postgres_database(tmp_path: Path, postgres_url: str) -> None:
    env = app_environment(DATABASE_URL=postgres_url, BROKER_URL="memory://")
    with running_server(env=env, cwd=tmp_path) as server:
        server.wait_until_healthy()
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["database"] == "ok"
        readme_tour(server)
        check_clean_shutdown(server)


def test_help_lists_every_environment_variable(tmp_path: Path) -> None:
    result = run_app(["--help"], env=app_environment(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout
    for name, _default, _meaning in ENVIRONMENT_VARIABLES:
        assert name in result.stdout


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"BROKER_URL": "kafka://x"}, "BROKER_URL"),
        ({"COMMITCAST_ENV": "production"}, "SECRET_KEY"),
        ({"TOKEN_TTL": "a week"}, "TOKEN_TTL"),
    ],
    ids=["unknown-broker", "production-without-secret", "bad-ttl"],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    result = run_app([], env=app_environment(**variables), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
    # It refused before serving: nothing announced, no database file created.
    assert "GraphiQL" not in result.stdout
    assert not (tmp_path / "commitcast.db").exists()
