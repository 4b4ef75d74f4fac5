"""What each viewer can read: board, node, nodes, viewer, User.email and User.boards."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from schema.ids import encode_id
from schema.validation import NODES_MAX_IDS
from tests.support import GraphQLClient
from tests.team import NODES, Team, forged_token, make_team, missing_id, signed_token

TYPENAMES = ("User", "Board", "Membership", "Card", "Comment")

# One field of each type beyond the id, so that resolving the record is exercised too.
NODE_FIELDS = """
  __typename id
  ... on User { name }
  ... on Board { name }
  ... on Membership { role }
  ... on Card { title }
  ... on Comment { body }
"""


def raw_id(text: str) -> str:
    """base64url of `text` without padding, the way the server encodes real ids."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
async def team(api: GraphQLClient) -> Team:
    return await make_team(api)


async def one_of_each(team: Team) -> dict[str, str]:
    """An id of each node type, all on the team's board."""
    card = await team.api.card(team.editor, team.board, "Visible card")
    comment = await team.api.comment(team.viewer, card, "Visible comment")
    return {
        "User": team.editor.id,
        "Board": team.board,
        "Membership": team.memberships["VIEWER"],
        "Card": card,
        "Comment": comment,
    }


async def nodes_as(team: Team, token: str, ids: list[str]) -> list[dict[str, Any] | None]:
    data = await team.api.data(
        f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ {NODE_FIELDS} }} }}", {"ids": ids}, token=token
    )
    nodes: list[dict[str, Any] | None] = data["nodes"]
    return nodes


async def node_each(team: Team, token: str, ids: list[str]) -> list[dict[str, Any] | None]:
    """node(id:) once per id, as aliases of one query."""
    params = ", ".join(f"$i{n}: ID!" for n in range(len(ids)))
    fields = " ".join(f"n{n}: node(id: $i{n}) {{ {NODE_FIELDS} }}" for n in range(len(ids)))
    data = await team.api.data(
        f"query({params}) {{ {fields} }}", {f"i{n}": i for n, i in enumerate(ids)}, token=token
    )
    return [data[f"n{n}"] for n in range(len(ids))]


# --- node and nodes ---------------------------------------------------------------------


async def test_node_and_nodes_resolve_every_type_for_members(team: Team) -> None:
    ids = await one_of_each(team)
    expected = [
        {"__typename": "User", "id": ids["User"], "name": "Edie"},
        {"__typename": "Board", "id": ids["Board"], "name": "Roadmap"},
        {"__typename": "Membership", "id": ids["Membership"], "role": "VIEWER"},
        {"__typename": "Card", "id": ids["Card"], "title": "Visible card"},
        {"__typename": "Comment", "id": ids["Comment"], "body": "Visible comment"},
    ]
    ordered = [ids[t] for t in TYPENAMES]
    for role in ("OWNER", "EDITOR", "VIEWER"):
        token = team.member(role).token
        assert await nodes_as(team, token, ordered) == expected, role
        assert await node_each(team, token, ordered) == expected, role


async def test_board_node_and_nodes_are_null_for_non_members_and_missing_ids(
    team: Team,
) -> None:
    for role in ("OWNER", "EDITOR", "VIEWER"):
        board = await team.board_as(team.member(role))
        assert board is not None, role
        assert board["id"] == team.board
    assert await team.board_as(team.outsider) is None
    for who in (team.owner, team.outsider):
        data = await team.api.data(
            "query($id: ID!) { board(id: $id) { id } }",
            {"id": missing_id("Board")},
            token=who.token,
        )
        assert data == {"board": None}

    ids = await one_of_each(team)
    hidden = [ids[t] for t in TYPENAMES]
    missing = [missing_id(t) for t in TYPENAMES]
    token = team.outsider.token
    assert await nodes_as(team, token, hidden) == [None] * len(TYPENAMES)
    assert await node_each(team, token, hidden) == [None] * len(TYPENAMES)
    # Missing ids look exactly like hidden ones, to members and non-members alike.
    for who in (team.owner, team.outsider):
        assert await nodes_as(team, who.token, missing) == [None] * len(TYPENAMES)
        assert await node_each(team, who.token, missing) == [None] * len(TYPENAMES)


async def test_nodes_keeps_the_order_mixes_nulls_and_takes_at_most_100_ids(team: Team) -> None:
    ids = await one_of_each(team)
    elsewhere = await team.api.board(team.outsider, "Not yours")
    asked = [
        ids["Comment"],
        missing_id("Card"),
        ids["Board"],
        elsewhere,
        ids["Card"],
        ids["Comment"],
        team.owner.id,
        team.outsider.id,
    ]
    nodes = await nodes_as(team, team.viewer.token, asked)
    assert [n and (n["__typename"], n["id"]) for n in nodes] == [
        ("Comment", ids["Comment"]),
        None,
        ("Board", ids["Board"]),
        None,
        ("Card", ids["Card"]),
        ("Comment", ids["Comment"]),
        ("User", team.owner.id),
        None,
    ]

    at_limit = [team.board] + [missing_id("Card")] * (NODES_MAX_IDS - 1)
    data = await team.api.data(NODES, {"ids": at_limit}, token=team.owner.token)
    assert len(data["nodes"]) == NODES_MAX_IDS
    assert data["nodes"][0] == {"__typename": "Board", "id": team.board}
    assert data["nodes"][1:] == [None] * (NODES_MAX_IDS - 1)

    error = await team.api.error(NODES, {"ids": [*at_limit, team.board]}, token=team.owner.token)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "ids"
    assert str(NODES_MAX_IDS) in error["message"]


# --- malformed ids ----------------------------------------------------------------------

MALFORMED = [
    "",
    "garbage!",
    "not base64 at all",
    "////",
    "Qm9hcmQ6MQ==",  # padded "Board:1": the server never pads, and '=' is not allowed
    raw_id("Board"),
    raw_id("Board:"),
    raw_id("Widget:1"),
    raw_id("board:1"),
    raw_id("Board:-1"),
    raw_id("Board:0"),
    raw_id("Board:01"),
    raw_id("Board:1.5"),
    raw_id("Board: 1"),
    raw_id("Board:1:2"),
    raw_id(f"Board:{2**63}"),
    "x" * 65,
    base64.urlsafe_b64encode(b"Board:\xff1").decode().rstrip("="),
]


async def test_malformed_ids_are_bad_user_input_naming_the_field(team: Team) -> None:
    card = await team.api.card(team.owner, team.board)
    token = team.owner.token

    # Every malformed id, as node(id:) and board(id:): one aliased field per id, each
    # failing on its own (both fields are nullable).
    wrong_type = [card, team.owner.id]  # well-formed, but not Board ids
    for field, ids in [("node", MALFORMED), ("board", MALFORMED + wrong_type)]:
        params = ", ".join(f"$i{n}: ID!" for n in range(len(ids)))
        fields = " ".join(f"n{n}: {field}(id: $i{n}) {{ id }}" for n in range(len(ids)))
        body = await team.api.execute(
            f"query({params}) {{ {fields} }}", {f"i{n}": i for n, i in enumerate(ids)}, token=token
        )
        assert body["data"] == {f"n{n}": None for n in range(len(ids))}
        errors = {e["path"][0]: e for e in body["errors"]}
        assert sorted(errors) == sorted(f"n{n}" for n in range(len(ids)))
        for n, bad in enumerate(ids):
            error = errors[f"n{n}"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}, (bad, error)
            assert error["message"].startswith("id: "), error
    assert "expected a Board ID, got a Card ID" in errors[f"n{len(MALFORMED)}"]["message"]

    cases: list[tuple[str, dict[str, Any], str]] = [
        (NODES, {"ids": [team.board, team.board, "garbage!"]}, "ids[2]"),
        (NODES, {"ids": [raw_id("Board:0")]}, "ids[0]"),
        # Mutations name their own argument.
        (
            'mutation($b: ID!) { createCard(input: {boardId: $b, title: "t"}) { id } }',
            {"b": card},
            "boardId",
        ),
        (
            'mutation($c: ID!) { addComment(input: {cardId: $c, body: "b"}) { id } }',
            {"c": team.board},
            "cardId",
        ),
        ("mutation($id: ID!) { removeMember(id: $id) }", {"id": team.editor.id}, "id"),
        ("mutation($id: ID!) { deleteCard(id: $id) }", {"id": "garbage!"}, "id"),
        (
            "mutation($c: ID!, $a: ID) { updateCard(input: {id: $c, assigneeId: $a}) { id } }",
            {"c": card, "a": team.board},
            "assigneeId",
        ),
    ]
    for query, variables, field in cases:
        error = await team.api.error(query, variables, token=token)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (variables, error)
        assert error["message"].startswith(f"{field}: "), error


# --- users: email, boards, and who can see whom -----------------------------------------


async def test_user_email_and_boards_are_only_for_the_user_themself(team: Team) -> None:
    query = """
    query($id: ID!, $owner: ID!) {
      viewer { id email }
      board(id: $id) { owner { email } members { user { id email } } }
      node(id: $owner) { ... on User { email } }
    }"""
    for role in ("OWNER", "EDITOR", "VIEWER"):
        me = team.member(role)
        data = await team.api.data(
            query, {"id": team.board, "owner": team.owner.id}, token=me.token
        )
        assert data["viewer"] == {"id": me.id, "email": me.email}
        emails = {m["user"]["id"]: m["user"]["email"] for m in data["board"]["members"]}
        assert emails == {
            account.id: (account.email if account == me else None)
            for account in (team.owner, team.editor, team.viewer)
        }
        owner_email = team.owner.email if role == "OWNER" else None
        assert data["board"]["owner"] == {"email": owner_email}
        assert data["node"] == {"email": owner_email}

    # User.boards: only for the viewer themself.
    second = await team.api.board(team.editor, "Editor's own")
    solo = await team.api.board(team.outsider, "Solo")

    async def own_boards(token: str) -> list[str]:
        data = await team.api.data("{ viewer { boards { id } } }", token=token)
        return sorted(b["id"] for b in data["viewer"]["boards"])

    assert await own_boards(team.owner.token) == [team.board]
    assert await own_boards(team.editor.token) == sorted([team.board, second])
    assert await own_boards(team.viewer.token) == [team.board]
    assert await own_boards(team.outsider.token) == [solo]

    data = await team.api.data(
        "query($id: ID!, $u: ID!) {"
        " board(id: $id) { owner { boards { id } } members { user { id boards { id } } } }"
        " node(id: $u) { ... on User { boards { id } } } }",
        {"id": team.board, "u": team.editor.id},
        token=team.viewer.token,
    )
    assert data["board"]["owner"]["boards"] == []
    boards = {m["user"]["id"]: m["user"]["boards"] for m in data["board"]["members"]}
    assert boards == {
        team.owner.id: [],
        team.editor.id: [],
        team.viewer.id: [{"id": team.board}],
    }
    assert data["node"] == {"boards": []}


async def test_node_gives_users_who_share_a_board_and_null_for_strangers(team: Team) -> None:
    # The outsider shares a board with the editor only.
    shared = await team.api.board(team.outsider, "Shared")
    await team.api.add_member(team.outsider, shared, team.editor, "VIEWER")

    def users(*accounts: Any) -> list[dict[str, str] | None]:
        return [a and {"__typename": "User", "id": a.id} for a in accounts]

    everyone = [team.owner.id, team.editor.id, team.viewer.id, team.outsider.id]
    seen = {
        "OWNER": users(team.owner, team.editor, team.viewer, None),
        "EDITOR": users(team.owner, team.editor, team.viewer, team.outsider),
        "OUTSIDER": users(None, team.editor, None, team.outsider),
    }
    for role, expected in seen.items():
        data = await team.api.data(NODES, {"ids": everyone}, token=team.member(role).token)
        assert data["nodes"] == expected, role
        assert await team.node_as(team.member(role), team.outsider.id) == expected[3]
    stranger = encode_id("User", team.outsider.pk + 1000)
    assert await team.node_as(team.owner, stranger) is None


# --- viewer and tokens ------------------------------------------------------------------

VIEWER = "{ viewer { id name } }"


async def unauthenticated_because(api: GraphQLClient, authorization: str) -> str:
    response = await api.http.post(
        "/graphql", json={"query": VIEWER}, headers={"Authorization": authorization}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED", error
    message: str = error["message"]
    return message


async def test_viewer_needs_a_valid_token_and_errors_say_why(team: Team) -> None:
    api = team.api
    data = await api.data(VIEWER, token=team.viewer.token)
    assert data == {"viewer": {"id": team.viewer.id, "name": "Vera"}}

    # No token at all.
    anonymous: list[tuple[str, dict[str, Any]]] = [
        (VIEWER, {}),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": team.board}),
        (NODES, {"ids": [team.board]}),
        ("query($id: ID!) { board(id: $id) { id } }", {"id": team.board}),
    ]
    for query, variables in anonymous:
        error = await team.api.error(query, variables)
        assert error["extensions"]["code"] == "UNAUTHENTICATED", (query, error)
        assert "Authorization: Bearer" in error["message"]

    # A token that cannot be used: the message says why.
    key = api.runtime.settings.secret_key
    expired = signed_token(team.owner.pk, key, expires_in=-60)
    assert "expired" in await unauthenticated_because(api, f"Bearer {expired}")
    forged = forged_token(team.owner.pk)
    assert "invalid" in await unauthenticated_because(api, f"Bearer {forged}")
    assert "invalid" in await unauthenticated_because(api, "Bearer not.a.jwt")
    assert "Bearer" in await unauthenticated_because(api, f"Token {team.owner.token}")
    # A well-signed token whose account does not exist is no viewer either.
    ghost = signed_token(team.outsider.pk + 1000, key)
    assert "no longer exists" in await unauthenticated_because(api, f"Bearer {ghost}")
    # The same key and claims, unexpired, is accepted: the checks above are about the token.
    data = await api.data(VIEWER, token=signed_token(team.owner.pk, key))
    assert data["viewer"]["id"] == team.owner.id
