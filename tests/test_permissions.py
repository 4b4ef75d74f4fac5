"""The permission matrix of schema/permissions.py, through real mutations over HTTP.

Every denied attempt is also checked to have changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

import models
from schema.ids import decode_id
from tests.support import GraphQLClient
from tests.team import (
    ADD_COMMENT,
    ADD_MEMBER,
    CREATE_CARD,
    DELETE_BOARD,
    DELETE_CARD,
    DELETE_COMMENT,
    NODES,
    REMOVE_MEMBER,
    UPDATE_BOARD,
    UPDATE_CARD,
    UPDATE_COMMENT,
    Team,
    forged_token,
    make_team,
    missing_id,
)

Attempt = tuple[str, str, dict[str, Any], str]  # (actor role, query, variables, code)

DENIED_TO_NON_OWNERS = [("EDITOR", "FORBIDDEN"), ("VIEWER", "FORBIDDEN"), ("OUTSIDER", "NOT_FOUND")]
DENIED_TO_VIEWERS = [("VIEWER", "FORBIDDEN"), ("OUTSIDER", "NOT_FOUND")]


@pytest.fixture
async def team(api: GraphQLClient) -> Team:
    return await make_team(api)


async def expect_denied(team: Team, attempts: list[Attempt]) -> None:
    """Each attempt fails with its code, and none changes anything on the board."""
    before = await team.board_as()
    for actor, query, variables, code in attempts:
        error = await team.api.error(query, variables, token=team.member(actor).token)
        assert error["extensions"]["code"] == code, (actor, variables, error)
        assert error["message"]
    assert await team.board_as() == before


def each(roles: list[tuple[str, str]], query: str, variables: dict[str, Any]) -> list[Attempt]:
    return [(role, query, variables, code) for role, code in roles]


def member_ids(board: dict[str, Any] | None) -> set[str]:
    assert board is not None
    return {m["user"]["id"] for m in board["members"]}


# --- the board: rename, delete, add members (OWNER only) --------------------------------


async def test_only_the_owner_renames_the_board_adds_members_and_deletes_it(team: Team) -> None:
    api = team.api
    rename = {"id": team.board, "name": "Renamed"}
    await expect_denied(team, each(DENIED_TO_NON_OWNERS, UPDATE_BOARD, rename))
    data = await api.data(UPDATE_BOARD, rename, token=team.owner.token)
    assert data["updateBoard"]["name"] == "Renamed"
    board = await team.board_as(team.viewer)
    assert board is not None
    assert (board["name"], board["version"]) == ("Renamed", 2)

    newcomer = await api.account("Nina")
    add = {"b": team.board, "e": newcomer.email, "r": "VIEWER"}
    await expect_denied(team, each(DENIED_TO_NON_OWNERS, ADD_MEMBER, add))
    assert await team.board_as(newcomer) is None
    data = await api.data(ADD_MEMBER, add, token=team.owner.token)
    assert data["addMember"]["role"] == "VIEWER"
    assert data["addMember"]["user"] == {"id": newcomer.id}
    assert newcomer.id in member_ids(await team.board_as())
    assert await team.board_as(newcomer) is not None

    await api.card(team.editor, team.board)
    await expect_denied(team, each(DENIED_TO_NON_OWNERS, DELETE_BOARD, {"id": team.board}))
    data = await api.data(DELETE_BOARD, {"id": team.board}, token=team.owner.token)
    assert data["deleteBoard"] == team.board
    for who in (team.owner, team.editor, team.viewer, newcomer):
        assert await team.board_as(who) is None


# --- removing members: OWNER removes anyone but the board's owner; members leave ---------


async def test_who_can_remove_whom(team: Team) -> None:
    m = team.memberships
    await expect_denied(
        team,
        [
            ("EDITOR", REMOVE_MEMBER, {"id": m["VIEWER"]}, "FORBIDDEN"),
            ("VIEWER", REMOVE_MEMBER, {"id": m["EDITOR"]}, "FORBIDDEN"),
            # The board owner's membership stays, whoever asks (the owner included).
            ("OWNER", REMOVE_MEMBER, {"id": m["OWNER"]}, "FORBIDDEN"),
            ("EDITOR", REMOVE_MEMBER, {"id": m["OWNER"]}, "FORBIDDEN"),
            ("VIEWER", REMOVE_MEMBER, {"id": m["OWNER"]}, "FORBIDDEN"),
            ("OUTSIDER", REMOVE_MEMBER, {"id": m["EDITOR"]}, "NOT_FOUND"),
            ("OUTSIDER", REMOVE_MEMBER, {"id": m["OWNER"]}, "NOT_FOUND"),
        ],
    )

    # Members remove themselves; OWNER removes anyone else.
    api = team.api
    assigned = await api.data(
        CREATE_CARD, {"b": team.board, "t": "Edie's", "a": team.editor.id}, token=team.owner.token
    )
    memberships = dict(team.memberships)
    for actor, target in [
        ("EDITOR", "EDITOR"),
        ("VIEWER", "VIEWER"),
        ("OWNER", "EDITOR"),
        ("OWNER", "VIEWER"),
    ]:
        leaver = team.member(target)
        data = await api.data(
            REMOVE_MEMBER, {"id": memberships[target]}, token=team.member(actor).token
        )
        assert data["removeMember"] == memberships[target]
        assert leaver.id not in member_ids(await team.board_as()), (actor, target)
        assert await team.board_as(leaver) is None, (actor, target)
        if (actor, target) == ("EDITOR", "EDITOR"):
            # Leaving unassigns (test_a_removed_member_... has the details).
            card = await team.card_as(team.owner, assigned["createCard"]["id"])
            assert card is not None
            assert card["assignee"] is None
        # Back in for the next round, with a new membership.
        memberships[target] = await api.add_member(team.owner, team.board, leaver, target)


# --- cards: OWNER and EDITOR ------------------------------------------------------------


async def test_owners_and_editors_create_update_and_delete_cards(team: Team) -> None:
    api = team.api
    create = {"b": team.board, "t": "New card"}
    await expect_denied(team, each(DENIED_TO_VIEWERS, CREATE_CARD, create))
    created = []
    for role in ("OWNER", "EDITOR"):
        data = await api.data(CREATE_CARD, create, token=team.member(role).token)
        created.append(data["createCard"]["id"])
    board = await team.board_as(team.viewer)
    assert board is not None
    assert [c["id"] for c in board["cards"]] == created

    first = created[0]
    update = {"input": {"id": first, "title": "After", "done": True}}
    await expect_denied(team, each(DENIED_TO_VIEWERS, UPDATE_CARD, update))
    for role in ("OWNER", "EDITOR"):
        update = {"input": {"id": first, "title": f"By {role}"}}
        data = await api.data(UPDATE_CARD, update, token=team.member(role).token)
        assert data["updateCard"]["title"] == f"By {role}"
    stored = await team.card_as(team.viewer, first)
    assert stored is not None
    assert (stored["title"], stored["version"]) == ("By EDITOR", 3)

    comments = [await api.comment(team.viewer, card) for card in created]
    await expect_denied(team, each(DENIED_TO_VIEWERS, DELETE_CARD, {"id": first}))
    for role, card, comment in zip(("OWNER", "EDITOR"), created, comments, strict=True):
        data = await api.data(DELETE_CARD, {"id": card}, token=team.member(role).token)
        assert data["deleteCard"] == card
        assert await team.node_as(team.owner, card) is None, role
        assert await team.node_as(team.owner, comment) is None, role


# --- comments: any member adds; the author edits; the author or OWNER deletes -----------


async def test_every_member_comments_and_only_the_author_edits(team: Team) -> None:
    card = await team.api.card(team.owner, team.board)
    variables = {"c": card, "b": "Noted"}
    await expect_denied(team, [("OUTSIDER", ADD_COMMENT, variables, "NOT_FOUND")])
    by: dict[str, str] = {}  # comment ids by their author's role
    for role in ("OWNER", "EDITOR", "VIEWER"):
        data = await team.api.data(ADD_COMMENT, variables, token=team.member(role).token)
        by[role] = data["addComment"]["id"]
    stored = await team.card_as(team.viewer, card)
    assert stored is not None
    assert [c["id"] for c in stored["comments"]] == list(by.values())

    await expect_denied(
        team,
        [
            ("OWNER", UPDATE_COMMENT, {"id": by["EDITOR"], "b": "Edited"}, "FORBIDDEN"),
            ("OWNER", UPDATE_COMMENT, {"id": by["VIEWER"], "b": "Edited"}, "FORBIDDEN"),
            ("EDITOR", UPDATE_COMMENT, {"id": by["OWNER"], "b": "Edited"}, "FORBIDDEN"),
            ("EDITOR", UPDATE_COMMENT, {"id": by["VIEWER"], "b": "Edited"}, "FORBIDDEN"),
            ("VIEWER", UPDATE_COMMENT, {"id": by["EDITOR"], "b": "Edited"}, "FORBIDDEN"),
            ("OUTSIDER", UPDATE_COMMENT, {"id": by["EDITOR"], "b": "Edited"}, "NOT_FOUND"),
        ],
    )

    for role, comment in by.items():
        variables = {"id": comment, "b": f"Edited by {role}"}
        await team.api.data(UPDATE_COMMENT, variables, token=team.member(role).token)
        stored = await team.comment_as(team.owner, comment)
        assert stored is not None
        assert (stored["body"], stored["version"]) == (f"Edited by {role}", 2)


async def test_the_author_or_the_owner_deletes_a_comment(team: Team) -> None:
    card = await team.api.card(team.owner, team.board)
    editors = [await team.api.comment(team.editor, card) for _ in range(2)]
    viewers = [await team.api.comment(team.viewer, card) for _ in range(2)]
    owners = await team.api.comment(team.owner, card)
    await expect_denied(
        team,
        [
            ("EDITOR", DELETE_COMMENT, {"id": viewers[0]}, "FORBIDDEN"),
            ("EDITOR", DELETE_COMMENT, {"id": owners}, "FORBIDDEN"),
            ("VIEWER", DELETE_COMMENT, {"id": editors[0]}, "FORBIDDEN"),
            ("VIEWER", DELETE_COMMENT, {"id": owners}, "FORBIDDEN"),
            ("OUTSIDER", DELETE_COMMENT, {"id": editors[0]}, "NOT_FOUND"),
        ],
    )

    for role, comment in [
        ("EDITOR", editors[0]),
        ("VIEWER", viewers[0]),
        ("OWNER", editors[1]),
        ("OWNER", viewers[1]),
        ("OWNER", owners),
    ]:
        data = await team.api.data(DELETE_COMMENT, {"id": comment}, token=team.member(role).token)
        assert data["deleteComment"] == comment
        assert await team.comment_as(team.owner, comment) is None, (role, comment)
    stored = await team.card_as(team.owner, card)
    assert stored is not None
    assert stored["comments"] == []


# --- non-members cannot tell a record exists --------------------------------------------

Ids = dict[str, str]
Variables = Callable[[Team, Ids], dict[str, Any]]

# (mutation, variables from the team and a set of ids that either exist or do not).
HIDDEN_CASES: list[tuple[str, str, Variables]] = [
    ("updateBoard", UPDATE_BOARD, lambda t, ids: {"id": ids["Board"], "name": "Mine now"}),
    (
        "updateBoard-stale-version",
        UPDATE_BOARD,
        lambda t, ids: {"id": ids["Board"], "name": "Mine now", "v": 42},
    ),
    ("deleteBoard", DELETE_BOARD, lambda t, ids: {"id": ids["Board"]}),
    (
        "addMember",
        ADD_MEMBER,
        lambda t, ids: {"b": ids["Board"], "e": t.outsider.email, "r": "OWNER"},
    ),
    ("removeMember", REMOVE_MEMBER, lambda t, ids: {"id": ids["Membership"]}),
    ("createCard", CREATE_CARD, lambda t, ids: {"b": ids["Board"], "t": "Spam"}),
    (
        "createCard-assignee",
        CREATE_CARD,
        lambda t, ids: {"b": ids["Board"], "t": "Spam", "a": t.outsider.id},
    ),
    (
        "updateCard",
        UPDATE_CARD,
        lambda t, ids: {"input": {"id": ids["Card"], "title": "Spam", "expectedVersion": 42}},
    ),
    ("deleteCard", DELETE_CARD, lambda t, ids: {"id": ids["Card"]}),
    ("addComment", ADD_COMMENT, lambda t, ids: {"c": ids["Card"], "b": "Spam"}),
    (
        "updateComment",
        UPDATE_COMMENT,
        lambda t, ids: {"id": ids["Comment"], "b": "Spam", "v": 42},
    ),
    ("deleteComment", DELETE_COMMENT, lambda t, ids: {"id": ids["Comment"]}),
]


async def test_non_members_get_the_same_not_found_as_for_a_missing_id(team: Team) -> None:
    """For every mutation, an outsider's error for a record that exists equals, field for
    field, the error for an id that was never used (so a CONFLICT's currentVersion or a
    FORBIDDEN never tells an outsider that a board exists). Owning a board of their own
    gives the outsider nothing on this one."""
    await team.api.board(team.outsider, "Elsewhere")
    card = await team.api.card(team.owner, team.board)
    comment = await team.api.comment(team.owner, card)
    existing = {
        "Board": team.board,
        "Membership": team.memberships["EDITOR"],
        "Card": card,
        "Comment": comment,
    }
    missing = {kind: missing_id(kind) for kind in existing}
    before = await team.board_as()

    for name, query, variables in HIDDEN_CASES:
        token = team.outsider.token
        hidden = await team.api.error(query, variables(team, existing), token=token)
        absent = await team.api.error(query, variables(team, missing), token=token)
        assert hidden["extensions"]["code"] == "NOT_FOUND", (name, hidden)
        assert hidden == absent, name

    assert await team.board_as() == before


# --- no token ---------------------------------------------------------------------------


async def test_mutations_without_a_valid_token_are_unauthenticated(team: Team) -> None:
    card = await team.api.card(team.owner, team.board)
    comment = await team.api.comment(team.owner, card)
    ids = {
        "Board": team.board,
        "Membership": team.memberships["EDITOR"],
        "Card": card,
        "Comment": comment,
    }
    before = await team.board_as()
    cases = [
        ("createBoard", 'mutation { createBoard(input: {name: "Anon"}) { id } }', {}),
        *[(name, query, variables(team, ids)) for name, query, variables in HIDDEN_CASES],
    ]
    forged = forged_token(team.owner.pk)

    for name, query, variables in cases:
        error = await team.api.error(query, variables)
        assert error["extensions"]["code"] == "UNAUTHENTICATED", (name, error)
    # A token the server did not sign is no better than none.
    for name, query, variables in cases[:3]:
        error = await team.api.error(query, variables, token=forged)
        assert error["extensions"]["code"] == "UNAUTHENTICATED", (name, error)

    assert await team.board_as() == before
    data = await team.api.data("{ viewer { boards { id } } }", token=team.owner.token)
    assert data["viewer"]["boards"] == [{"id": team.board}]


# --- consequences of losing membership and of deleting a board --------------------------


async def test_a_removed_member_loses_access_and_their_cards(team: Team) -> None:
    api = team.api
    theirs = await api.data(
        CREATE_CARD, {"b": team.board, "t": "Theirs", "a": team.editor.id}, token=team.owner.token
    )
    theirs_id = theirs["createCard"]["id"]
    others = await api.data(
        CREATE_CARD, {"b": team.board, "t": "Others", "a": team.viewer.id}, token=team.owner.token
    )
    others_id = others["createCard"]["id"]
    own_comment = await api.comment(team.editor, theirs_id, "Mine")

    await api.data(REMOVE_MEMBER, {"id": team.memberships["EDITOR"]}, token=team.owner.token)

    # The leaver sees nothing of the board any more, and can change nothing on it.
    assert await team.board_as(team.editor) is None
    for hidden in (team.board, theirs_id, own_comment, team.memberships["OWNER"]):
        assert await team.node_as(team.editor, hidden) is None
    assert await team.node_as(team.editor, team.owner.id) is None
    for query, variables in [
        (UPDATE_CARD, {"input": {"id": theirs_id, "done": True}}),
        (ADD_COMMENT, {"c": theirs_id, "b": "Still here?"}),
        (UPDATE_COMMENT, {"id": own_comment, "b": "Mine, edited"}),
        (DELETE_COMMENT, {"id": own_comment}),
        (REMOVE_MEMBER, {"id": team.memberships["EDITOR"]}),
    ]:
        error = await api.error(query, variables, token=team.editor.token)
        assert error["extensions"]["code"] == "NOT_FOUND", (query, error)
    data = await api.data("{ viewer { boards { id } } }", token=team.editor.token)
    assert data["viewer"]["boards"] == []

    # Their cards are unassigned (a new version of the card); other cards keep theirs.
    board = await team.board_as()
    assert board is not None
    cards = {c["id"]: c for c in board["cards"]}
    assert cards[theirs_id]["assignee"] is None
    assert cards[theirs_id]["version"] == 2
    assert cards[others_id]["assignee"] == {"id": team.viewer.id}
    assert cards[others_id]["version"] == 1
    # What they wrote stays.
    assert [c["body"] for c in cards[theirs_id]["comments"]] == ["Mine"]
    assert await team.node_as(team.owner, team.editor.id) is None


async def _count(api: GraphQLClient, model: type[models.Record], *where: Any) -> int:
    async with api.runtime.read_sessions() as session:
        count = await session.scalar(select(func.count()).select_from(model).where(*where))
    assert count is not None
    return count


def pk(global_id: str) -> int:
    return decode_id(global_id, field="id")[1]


async def test_deleting_a_board_deletes_its_cards_comments_and_memberships(team: Team) -> None:
    api = team.api
    cards = [await api.card(team.editor, team.board, f"Card {i}") for i in range(2)]
    comments = [
        await api.comment(team.editor, cards[0]),
        await api.comment(team.viewer, cards[0]),
        await api.comment(team.owner, cards[1]),
    ]
    kept_board = await api.board(team.owner, "Kept")
    kept_card = await api.card(team.owner, kept_board)
    kept_comment = await api.comment(team.owner, kept_card)
    gone = [team.board, *team.memberships.values(), *cards, *comments]

    await api.data(DELETE_BOARD, {"id": team.board}, token=team.owner.token)

    data = await api.data(NODES, {"ids": gone}, token=team.owner.token)
    assert data["nodes"] == [None] * len(gone)
    for who in (team.editor, team.viewer):
        assert await team.node_as(who, cards[0]) is None
        data = await api.data("{ viewer { boards { id } } }", token=who.token)
        assert data["viewer"]["boards"] == []

    # Gone from the database, not merely hidden.
    board_pk = pk(team.board)
    assert await _count(api, models.Board, models.Board.id == board_pk) == 0
    assert await _count(api, models.Membership, models.Membership.board_id == board_pk) == 0
    assert await _count(api, models.Card, models.Card.board_id == board_pk) == 0
    assert await _count(api, models.Comment, models.Comment.id.in_([pk(c) for c in comments])) == 0

    # The owner's other board is untouched.
    data = await api.data(
        NODES, {"ids": [kept_board, kept_card, kept_comment]}, token=team.owner.token
    )
    assert [n["id"] for n in data["nodes"]] == [kept_board, kept_card, kept_comment]
