"""Input limits (schema/validation.py): BAD_USER_INPUT naming the field, and nothing changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

import models
from schema import validation
from tests.support import PASSWORD, GraphQLClient
from tests.team import (
    ADD_COMMENT,
    ADD_MEMBER,
    CREATE_CARD,
    UPDATE_BOARD,
    UPDATE_CARD,
    UPDATE_COMMENT,
    Team,
    make_team,
    missing_id,
)

SIGN_UP = """
mutation($e: String!, $n: String!, $p: String!) {
  signUp(input: {email: $e, name: $n, password: $p}) { user { name email } }
}"""
CREATE_BOARD = "mutation($n: String!) { createBoard(input: {name: $n}) { id name } }"


async def post(
    api: GraphQLClient, query: str, variables: dict[str, Any], token: str | None
) -> dict[str, Any]:
    """POST with the standard library's JSON encoder, which (unlike httpx's) can send a
    lone surrogate as a \\udxxx escape."""
    response = await api.http.post(
        "/graphql",
        content=json.dumps({"query": query, "variables": variables}),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def bad_input(
    api: GraphQLClient, query: str, variables: dict[str, Any], token: str | None
) -> dict[str, Any]:
    body = await post(api, query, variables, token)
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", (variables, error)
    extensions: dict[str, Any] = error["extensions"]
    return {"message": error["message"], **extensions}


@pytest.fixture
async def team(api: GraphQLClient) -> Team:
    return await make_team(api)


async def user_count(api: GraphQLClient) -> int:
    async with api.runtime.read_sessions() as session:
        count = await session.scalar(select(func.count()).select_from(models.User))
    assert count is not None
    return count


async def snapshot(team: Team) -> tuple[Any, ...]:
    """Everything a rejected mutation might have touched."""
    data = await team.api.data("{ viewer { boards { id name version } } }", token=team.owner.token)
    return (await team.board_as(), data, await user_count(team.api))


# --- text fields ------------------------------------------------------------------------


@dataclass(frozen=True)
class TextField:
    """A text input: how to send a value, and how to read back what was stored."""

    field: str
    max_length: int
    required: bool
    send: Callable[[Team, dict[str, str], str], tuple[str, dict[str, Any], str | None]]
    # The stored value, from the response data of an accepted value.
    stored: Callable[[dict[str, Any]], str]


TEXT_FIELDS = {
    "createBoard.name": TextField(
        "name",
        validation.BOARD_NAME_MAX,
        True,
        lambda t, ids, v: (CREATE_BOARD, {"n": v}, t.owner.token),
        lambda d: d["createBoard"]["name"],
    ),
    "updateBoard.name": TextField(
        "name",
        validation.BOARD_NAME_MAX,
        True,
        lambda t, ids, v: (UPDATE_BOARD, {"id": t.board, "name": v}, t.owner.token),
        lambda d: d["updateBoard"]["name"],
    ),
    "createCard.title": TextField(
        "title",
        validation.CARD_TITLE_MAX,
        True,
        lambda t, ids, v: (CREATE_CARD, {"b": t.board, "t": v}, t.editor.token),
        lambda d: d["createCard"]["title"],
    ),
    "updateCard.title": TextField(
        "title",
        validation.CARD_TITLE_MAX,
        True,
        lambda t, ids, v: (UPDATE_CARD, {"input": {"id": ids["card"], "title": v}}, t.editor.token),
        lambda d: d["updateCard"]["title"],
    ),
    "createCard.description": TextField(
        "description",
        validation.CARD_DESCRIPTION_MAX,
        False,
        lambda t, ids, v: (CREATE_CARD, {"b": t.board, "t": "T", "d": v}, t.editor.token),
        lambda d: d["createCard"]["description"],
    ),
    "updateCard.description": TextField(
        "description",
        validation.CARD_DESCRIPTION_MAX,
        False,
        lambda t, ids, v: (
            UPDATE_CARD,
            {"input": {"id": ids["card"], "description": v}},
            t.editor.token,
        ),
        lambda d: d["updateCard"]["description"],
    ),
    "addComment.body": TextField(
        "body",
        validation.COMMENT_BODY_MAX,
        True,
        lambda t, ids, v: (ADD_COMMENT, {"c": ids["card"], "b": v}, t.viewer.token),
        lambda d: d["addComment"]["body"],
    ),
    "updateComment.body": TextField(
        "body",
        validation.COMMENT_BODY_MAX,
        True,
        lambda t, ids, v: (UPDATE_COMMENT, {"id": ids["comment"], "b": v}, t.viewer.token),
        lambda d: d["updateComment"]["body"],
    ),
    "signUp.name": TextField(
        "name",
        validation.USER_NAME_MAX,
        True,
        lambda t, ids, v: (SIGN_UP, {"e": "newt@example.com", "n": v, "p": PASSWORD}, None),
        lambda d: d["signUp"]["user"]["name"],
    ),
}


RECORDS = {
    "board": ["createBoard.name", "updateBoard.name"],
    "card": [
        "createCard.title",
        "updateCard.title",
        "createCard.description",
        "updateCard.description",
    ],
    "comment": ["addComment.body", "updateComment.body"],
    "user": ["signUp.name"],
}


@pytest.mark.parametrize("record", RECORDS)
async def test_text_limits(team: Team, record: str) -> None:
    card = await team.api.card(team.owner, team.board, "Card")
    ids = {"card": card, "comment": await team.api.comment(team.viewer, card, "Comment")}
    before = await snapshot(team)

    for name in RECORDS[record]:
        spec = TEXT_FIELDS[name]
        refused = ["x" * (spec.max_length + 1)]
        if spec.required:
            refused.append(" \t\n\r ")
        if not name.startswith("update"):
            # The update of a field goes through the same check as its creation.
            refused += ["a\x00b", "bad \ud800 surrogate"] + ([""] if spec.required else [])
        for value in refused:
            query, variables, token = spec.send(team, ids, value)
            error = await bad_input(team.api, query, variables, token)
            assert error["field"] == spec.field, (name, value[:20], error)
            assert error["message"].startswith(f"{spec.field}: "), error
    assert await snapshot(team) == before

    for name in RECORDS[record]:
        spec = TEXT_FIELDS[name]
        # The limit counts what is stored: surrounding white space is stripped first.
        limit = spec.max_length
        accepted = [("  " + "y" * limit + "\n", "y" * limit)]
        if name.startswith("create") or name.startswith("add"):
            accepted.append((" héllo wörld ✓ ", "héllo wörld ✓"))
        if not spec.required:
            accepted.append((" \t\n ", ""))
        for value, stored in accepted:
            query, variables, token = spec.send(team, ids, value)
            body = await post(team.api, query, variables, token)
            assert "errors" not in body, (name, body)
            assert spec.stored(body["data"]) == stored, name


# --- accounts: emails and passwords -----------------------------------------------------

BAD_EMAILS = [
    "",
    "   ",
    "plain",
    "ann@",
    "@example.com",
    "ann@example",
    "ann smith@example.com",
    "ann@exa mple.com",
    "ann@@example.com",
    "ann@example.com\x00",
    "x" * (validation.EMAIL_MAX - len("@example.com") + 1) + "@example.com",
]
BAD_PASSWORDS = [
    "",
    "x" * (validation.PASSWORD_MIN - 1),
    "x" * (validation.PASSWORD_MAX + 1),
    "long enough\x00",
]


async def test_sign_up_refuses_bad_emails_and_passwords(api: GraphQLClient) -> None:
    for email in BAD_EMAILS:
        variables = {"e": email, "n": "Newt", "p": PASSWORD}
        error = await bad_input(api, SIGN_UP, variables, None)
        assert error["field"] == "email", (email, error)
    for password in BAD_PASSWORDS:
        variables = {"e": "newt@example.com", "n": "Newt", "p": password}
        error = await bad_input(api, SIGN_UP, variables, None)
        assert error["field"] == "password", (password[:20], error)
    assert await user_count(api) == 0


async def test_add_member_refuses_bad_unknown_and_existing_emails(team: Team) -> None:
    before = await snapshot(team)
    cases = [
        *[(email, "email: ") for email in BAD_EMAILS],
        ("nobody@example.com", "no account"),
        (team.editor.email, "already a member"),
        (team.editor.email.upper(), "already a member"),
        (f"  {team.viewer.email}  ", "already a member"),
        (team.owner.email, "already a member"),
    ]
    for email, reason in cases:
        variables = {"b": team.board, "e": email, "r": "EDITOR"}
        error = await bad_input(team.api, ADD_MEMBER, variables, team.owner.token)
        assert error["field"] == "email", (email, error)
        assert reason in error["message"], (email, error)
    assert await snapshot(team) == before


# --- numbers, assignees -----------------------------------------------------------------


async def test_numbers_must_be_within_their_limits(team: Team) -> None:
    card = await team.api.card(team.owner, team.board)
    huge = validation.POSITION_MAX_ABS * 10
    before = await snapshot(team)
    for value in (huge, -huge, 1e300, -1e300):
        attempts: list[tuple[str, dict[str, Any]]] = [
            (CREATE_CARD, {"b": team.board, "t": "T", "p": value}),
            (UPDATE_CARD, {"input": {"id": card, "position": value, "title": "Changed"}}),
        ]
        for query, variables in attempts:
            error = await bad_input(team.api, query, variables, team.owner.token)
            assert error["field"] == "position", (value, error)
    # Infinity written as a literal in the document parses as a float too.
    error = await bad_input(
        team.api,
        "mutation($c: ID!) { updateCard(input: {id: $c, position: 1e400}) { id } }",
        {"c": card},
        team.owner.token,
    )
    assert error["field"] == "position"
    # JSON has no Infinity or NaN, but Python's parser accepts them (and 1e400): refused
    # when variables are coerced, never stored or turned into a 500.
    for literal in ("1e400", "-1e400", "Infinity", "-Infinity", "NaN"):
        content = (
            '{"query": "mutation($c: ID!, $p: Float) { updateCard(input: {id: $c, position: $p})'
            ' { id } }", "variables": {"c": "' + card + '", "p": ' + literal + "}}"
        )
        response = await team.api.http.post(
            "/graphql",
            content=content,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {team.owner.token}",
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"] is None, (literal, body)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", (literal, error)
        assert error["message"].startswith("Variable '$p'"), (literal, error)

    for version in (0, -1):
        error = await bad_input(
            team.api,
            UPDATE_CARD,
            {"input": {"id": card, "title": "x", "expectedVersion": version}},
            team.owner.token,
        )
        assert error["field"] == "expectedVersion"
    assert await snapshot(team) == before

    for value in (validation.POSITION_MAX_ABS, -validation.POSITION_MAX_ABS, -0.5):
        data = await team.api.data(
            UPDATE_CARD, {"input": {"id": card, "position": value}}, token=team.owner.token
        )
        assert data["updateCard"]["position"] == value


async def test_assignee_must_be_a_member_of_the_board(team: Team) -> None:
    card = await team.api.card(team.owner, team.board, "Keep me")
    before = await snapshot(team)
    for assignee in (team.outsider.id, missing_id("User")):
        attempts: list[tuple[str, dict[str, Any]]] = [
            (CREATE_CARD, {"b": team.board, "t": "T", "a": assignee}),
            (UPDATE_CARD, {"input": {"id": card, "title": "Changed", "assigneeId": assignee}}),
        ]
        for query, variables in attempts:
            error = await bad_input(team.api, query, variables, team.owner.token)
            assert error["field"] == "assigneeId", error
            assert "member" in error["message"]
    assert await snapshot(team) == before

    # A viewer can be assigned: assignees need to be members, not editors.
    data = await team.api.data(
        UPDATE_CARD, {"input": {"id": card, "assigneeId": team.viewer.id}}, token=team.owner.token
    )
    assert data["updateCard"]["assignee"] == {"id": team.viewer.id}


async def test_a_rejected_update_changes_nothing(team: Team) -> None:
    """Validation that fails inside the write transaction (the assignee check runs after
    the card was loaded) rolls back every change of the same input."""
    card = await team.api.card(team.owner, team.board, "Original")
    await team.api.data(UPDATE_BOARD, {"id": team.board, "name": "Named"}, token=team.owner.token)
    await bad_input(team.api, UPDATE_BOARD, {"id": team.board, "name": " "}, team.owner.token)
    await bad_input(
        team.api,
        UPDATE_CARD,
        {"input": {"id": card, "title": "Changed", "done": True, "assigneeId": team.outsider.id}},
        team.owner.token,
    )
    board = await team.board_as()
    assert board is not None
    assert (board["name"], board["version"]) == ("Named", 2)
    assert board["cards"] == [
        {
            "id": card,
            "title": "Original",
            "description": "",
            "position": 1.0,
            "done": False,
            "version": 1,
            "assignee": None,
            "comments": [],
        }
    ]


# --- wrongly typed variables ------------------------------------------------------------

TYPED_CASES: list[tuple[str, Callable[[Team, str], tuple[str, dict[str, Any]]]]] = [
    ("string for Float", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "position": "high"}})),
    ("string for Boolean", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "done": "yes"}})),
    ("string for Int", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "expectedVersion": "1"}})),
    ("float for Int", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "expectedVersion": 1.5}})),
    ("Int overflow", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "expectedVersion": 2**31}})),
    ("number for String", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "title": 123}})),
    ("object for String", lambda t, c: (CREATE_BOARD, {"n": {"name": "x"}})),
    ("list for ID", lambda t, c: (UPDATE_CARD, {"input": {"id": [c]}})),
    ("unknown input field", lambda t, c: (UPDATE_CARD, {"input": {"id": c, "colour": "red"}})),
    ("missing input field", lambda t, c: (UPDATE_CARD, {"input": {"title": "x"}})),
    ("null for non-null", lambda t, c: (UPDATE_CARD, {"input": {"id": None}})),
    ("missing variable", lambda t, c: (CREATE_BOARD, {})),
    ("unknown enum value", lambda t, c: (ADD_MEMBER, {"b": t.board, "e": "x@y.io", "r": "ADMIN"})),
]


async def test_wrongly_typed_variables_are_bad_user_input(team: Team) -> None:
    card = await team.api.card(team.owner, team.board, "Card")
    before = await snapshot(team)
    for case, build in TYPED_CASES:
        query, variables = build(team, card)
        error = await bad_input(team.api, query, variables, team.owner.token)
        assert error["message"].startswith("Variable '$"), (case, error)
    assert await snapshot(team) == before
