"""Property-based: malformed documents, wrongly typed variables, huge strings, unicode
edge cases and forged or other users' global IDs, sent to every query and mutation.
Each answer is well formed (JSON, never a 500, every error with a code) and a rejected
request changes nothing in the database.

Runs on SQLite in-process (ASGI), each example through the whole HTTP stack. Hypothesis
drives a sync test, so the app lives on an event loop of this module's own.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from starlette.applications import Starlette

from app.asgi import create_app
from app.settings import Settings
from schema.errors import (
    BAD_REQUEST,
    BAD_USER_INPUT,
    CONFLICT,
    FORBIDDEN,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    NOT_FOUND,
    QUERY_TOO_COMPLEX,
    UNAUTHENTICATED,
)
from schema.ids import encode_id
from tests.support import Account, GraphQLClient

# INTERNAL_SERVER_ERROR is deliberately missing: no input may provoke one.
EXPECTED_CODES = {
    BAD_REQUEST,
    BAD_USER_INPUT,
    CONFLICT,
    FORBIDDEN,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    NOT_FOUND,
    QUERY_TOO_COMPLEX,
    UNAUTHENTICATED,
}
TABLES = ("users", "boards", "memberships", "cards", "comments")
HUGE = 300_000
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every operation of the schema, each with one variable per argument or input field.
OPERATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "signUp": (
        "mutation($email: String!, $name: String!, $password: String!) "
        "{ signUp(input: {email: $email, name: $name, password: $password}) { token } }",
        {"email": "text", "name": "text", "password": "text"},
    ),
    "logIn": (
        "mutation($email: String!, $password: String!) "
        "{ logIn(input: {email: $email, password: $password}) { token } }",
        {"email": "text", "password": "text"},
    ),
    "createBoard": (
        "mutation($name: String!) { createBoard(input: {name: $name}) { id } }",
        {"name": "text"},
    ),
    "updateBoard": (
        "mutation($id: ID!, $name: String, $v: Int) "
        "{ updateBoard(input: {id: $id, name: $name, expectedVersion: $v}) { id } }",
        {"id": "id", "name": "text", "v": "int"},
    ),
    "deleteBoard": ("mutation($id: ID!) { deleteBoard(id: $id) }", {"id": "id"}),
    "addMember": (
        "mutation($b: ID!, $e: String!, $r: Role!) "
        "{ addMember(input: {boardId: $b, email: $e, role: $r}) { id } }",
        {"b": "id", "e": "text", "r": "role"},
    ),
    "removeMember": ("mutation($id: ID!) { removeMember(id: $id) }", {"id": "id"}),
    "createCard": (
        "mutation($b: ID!, $t: String!, $d: String, $p: Float, $a: ID) { createCard(input: "
        "{boardId: $b, title: $t, description: $d, position: $p, assigneeId: $a}) { id } }",
        {"b": "id", "t": "text", "d": "text", "p": "float", "a": "id"},
    ),
    "updateCard": (
        "mutation($id: ID!, $t: String, $d: String, $p: Float, $done: Boolean, $a: ID, $v: Int)"
        " { updateCard(input: {id: $id, title: $t, description: $d, position: $p, done: $done,"
        " assigneeId: $a, expectedVersion: $v}) { id } }",
        {"id": "id", "t": "text", "d": "text", "p": "float", "done": "bool", "a": "id", "v": "int"},
    ),
    "deleteCard": ("mutation($id: ID!) { deleteCard(id: $id) }", {"id": "id"}),
    "addComment": (
        "mutation($c: ID!, $b: String!) { addComment(input: {cardId: $c, body: $b}) { id } }",
        {"c": "id", "b": "text"},
    ),
    "updateComment": (
        "mutation($id: ID!, $b: String!, $v: Int) "
        "{ updateComment(input: {id: $id, body: $b, expectedVersion: $v}) { id } }",
        {"id": "id", "b": "text", "v": "int"},
    ),
    "deleteComment": ("mutation($id: ID!) { deleteComment(id: $id) }", {"id": "id"}),
    "viewer": ("{ viewer { id name email boards { id } } }", {}),
    "node": ("query($id: ID!) { node(id: $id) { id } }", {"id": "id"}),
    "nodes": ("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": "ids"}),
    "board": (
        "query($id: ID!) { board(id: $id) { id cards { id comments { id } } } }",
        {"id": "id"},
    ),
}


@dataclass
class Harness:
    """The app with an owner's board (card, comment, a member) and an outsider."""

    runner: asyncio.Runner
    app: Starlette
    http: httpx.AsyncClient
    owner: Account
    outsider: Account
    viewer_member: Account
    ids: list[str]

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.runner.run(self.http.post("/graphql", content=body, headers=headers))

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        """Row count, highest id and the sum of versions of every table, and the change
        log's length: a rejected request must leave all of them as they were."""

        async def read() -> dict[str, tuple[int, int, int]]:
            state = {}
            async with self.app.state.runtime.engine.connect() as connection:
                for table in TABLES:
                    # Table names are this module's constants, not input.
                    query = f"SELECT count(*), coalesce(max(id), 0), coalesce(sum(version), 0) FROM {table}"  # noqa: E501, S608
                    row = (await connection.execute(text(query))).one()
                    state[table] = (int(row[0]), int(row[1]), int(row[2]))
                changes = await connection.scalar(text("SELECT count(*) FROM change_log"))
                state["change_log"] = (int(changes or 0), 0, 0)
            return state

        return self.runner.run(read())


@pytest.fixture
def harness(sqlite_url: str) -> Iterator[Harness]:
    # Rate limits off: hypothesis sends hundreds of signUps and mutations.
    app = create_app(
        Settings(
            database_url=sqlite_url, mutation_rate=None, login_rate=None, sign_in_address_rate=None
        )
    )
    lifespan = app.router.lifespan_context(app)
    with asyncio.Runner() as runner:
        runner.run(lifespan.__aenter__())
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        api = GraphQLClient(http, app.state.runtime)
        owner = runner.run(api.account("Ann"))
        member = runner.run(api.account("Vic"))
        outsider = runner.run(api.account("Mallory"))
        board = runner.run(api.board(owner))
        membership = runner.run(api.add_member(owner, board, member, "VIEWER"))
        card = runner.run(api.card(owner, board))
        comment = runner.run(api.comment(owner, card))
        ids = [board, membership, card, comment, owner.id, member.id]
        try:
            yield Harness(runner, app, http, owner, outsider, member, ids)
        finally:
            runner.run(http.aclose())
            runner.run(lifespan.__aexit__(None, None, None))


UNICODE_EDGES = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "\udfff x",
        "\u202eevil",
        "\ufeff",
        "e\u0301",
        "🙂" * 500,
        "\U0010ffff",
        "\r\n\t",
        "'; DROP TABLE users; --",
        "${jndi:ldap://x}",
        "<script>alert(1)</script>",
    ]
)
HUGE_STRINGS = st.sampled_from(["x" * HUGE, "🙂" * (HUGE // 2), " " * HUGE + "a"])
TEXT = st.one_of(st.text(max_size=300), UNICODE_EDGES, HUGE_STRINGS)
# Anything JSON can carry, for variables of the wrong type.
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def id_strategy(known: list[str]) -> st.SearchStrategy[Any]:
    forged = st.builds(
        encode_id,
        st.sampled_from(["Board", "Card", "Comment", "Membership", "User", "Query", "Nope"]),
        st.integers(min_value=-5, max_value=2**64),
    )
    raw = st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))
    return st.one_of(st.sampled_from(known), forged, raw, TEXT)


def variable(kind: str, known: list[str]) -> st.SearchStrategy[Any]:
    typed: dict[str, st.SearchStrategy[Any]] = {
        "text": TEXT,
        "id": id_strategy(known),
        "ids": st.lists(id_strategy(known), max_size=120),
        "int": st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40)),
        "float": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "bool": st.one_of(st.none(), st.booleans()),
        "role": st.sampled_from(["OWNER", "EDITOR", "VIEWER", "ADMIN", ""]),
    }
    # Mostly the right type with bad values; sometimes the wrong type or nothing.
    return st.one_of(typed[kind], typed[kind], JSON_VALUES)


def well_formed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 500, response.text[:500]
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        assert isinstance(error["message"], str)
        assert error["extensions"]["code"] in EXPECTED_CODES, error
        assert "Traceback" not in error["message"]
    if response.status_code != 200:
        assert body["errors"]
    return body


def headers_for(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@given(data=st.data())
@PROPERTY_SETTINGS
def test_every_operation_answers_bad_variables_with_coded_errors_and_no_change(
    harness: Harness, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(OPERATIONS)), label="operation")
    document, kinds = OPERATIONS[name]
    variables = {
        key: data.draw(variable(kind, harness.ids), label=key)
        for key, kind in kinds.items()
        if data.draw(st.booleans(), label=f"send {key}") or kind != "int"
    }
    # The outsider or the VIEWER member acting on the owner's records, or no one.
    token = data.draw(
        st.sampled_from([harness.outsider.token, harness.viewer_member.token, None, "not-a-token"]),
        label="token",
    )
    before = harness.snapshot()
    body = json.dumps({"query": document, "variables": variables}).encode()
    answer = well_formed(harness.post(body, headers_for(token)))
    if answer.get("errors"):
        assert harness.snapshot() == before, (name, variables, answer)


GRAPHQL_WORDS = st.sampled_from(
    [
        "{",
        "}",
        "(",
        ")",
        ":",
        "...",
        "query",
        "mutation",
        "subscription",
        "fragment",
        "on",
        "viewer",
        "node",
        "board",
        "createBoard",
        "deleteBoard",
        "id",
        "input",
        "$id",
        "ID!",
        '"x"',
        '"""block"""',
        "1e999",
        "@skip",
        "__schema",
        "#",
        "\n",
        "\x00",
    ]
)
DOCUMENTS = st.one_of(
    st.text(max_size=400),
    st.lists(GRAPHQL_WORDS, max_size=60).map(" ".join),
    UNICODE_EDGES,
    HUGE_STRINGS,
    st.integers(min_value=1, max_value=400).map(lambda n: "{ viewer " * n + "}" * n),
)


@given(
    query=st.one_of(DOCUMENTS, JSON_VALUES),
    extra=st.dictionaries(
        st.sampled_from(["variables", "operationName", "extensions"]), JSON_VALUES, max_size=3
    ),
    raw=st.one_of(st.none(), st.binary(max_size=200)),
)
@PROPERTY_SETTINGS
def test_malformed_documents_and_bodies_get_coded_errors_and_change_nothing(
    harness: Harness, query: Any, extra: dict[str, Any], raw: bytes | None
) -> None:
    before = harness.snapshot()
    body = raw if raw is not None else json.dumps({"query": query, **extra}).encode()
    answer = well_formed(harness.post(body, headers_for(harness.owner.token)))
    if answer.get("errors"):
        assert harness.snapshot() == before
