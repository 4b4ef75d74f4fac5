"""The viewers of one change share its execution, each with their own cursor (issue 7;
schema.crowd_results), where the document selects nothing that depends on the viewer
(schema.viewer_free).

Executions are counted as in tests/test_shared_execution.py (graphql-core's own
Executor.execute_operation, wrapped); what every socket received is checked in full.
"""

from __future__ import annotations

import asyncio

import pytest
from graphql import (
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLObjectType,
    OperationDefinitionNode,
    parse,
)
from strawberry.types.field import StrawberryField

from schema import build_schema
from schema.crowd_results import PLACEHOLDER, Template
from schema.json_text import compact_json
from schema.subscription import ChangeOp, UserUpdate
from schema.types import Card
from schema.viewer_free import same_for_every_viewer, selects_only_viewer_free_fields
from subscriptions.cursors import decode_cursor
from tests.realtime_support import Realtime
from tests.support import Account
from tests.test_shared_execution import (
    MEMBER_EMAILS,
    counting_executions,
    live,
    next_about,
    rename_card,
    sockets,
)
from tests.ws_client import UPDATES, graphql_socket

# -- what each viewer receives -------------------------------------------------------


async def members(realtime: Realtime, count: int) -> tuple[list[Account], str, str]:
    """`count` accounts, all members of the first one's board; the board and a card."""
    accounts = [await realtime.api.account(f"Member{n}") for n in range(count)]
    board = await realtime.api.board(accounts[0])
    for member in accounts[1:]:
        await realtime.api.add_member(accounts[0], board, member, "EDITOR")
    card = await realtime.api.card(accounts[0], board)
    return accounts, board, card


async def test_members_of_a_board_share_one_execution_each_with_their_own_cursor(
    realtime: Realtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ann, bob, cid), _, card = await members(realtime, 3)
    wanted = [(UPDATES, None)]
    async with (
        sockets(realtime, ann, wanted * 2) as ann_sockets,
        sockets(realtime, bob, wanted) as bob_sockets,
        sockets(realtime, cid, wanted) as cid_sockets,
    ):
        opened = [*ann_sockets, *bob_sockets, *cid_sockets]
        owners = [ann, ann, bob, cid]
        await live(realtime, ann, card, opened)
        with counting_executions(monkeypatch) as executions:
            await rename_card(realtime, bob, card, "shared")
            received = await asyncio.gather(*(next_about(s, card) for s in opened))

    assert executions.count == 1, f"{executions.count} executions for 3 viewers"
    assert all(update["node"]["title"] == "shared" for update in received)
    assert all(update["node"] == received[0]["node"] for update in received)
    positions = set()
    for owner, update in zip(owners, received, strict=True):
        position = decode_cursor(update["cursor"], owner.pk)
        assert position is not None, f"{owner.name} received a cursor not issued to them"
        positions.add(position)
        for other in {ann, bob, cid} - {owner}:
            assert decode_cursor(update["cursor"], other.pk) is None
        assert {k: v for k, v in update.items() if k != "cursor"} == {
            k: v for k, v in received[0].items() if k != "cursor"
        }
    assert len(positions) == 1  # (one change)
    assert received[0]["cursor"] == received[1]["cursor"]  # (Ann's two sockets)

    # Bob's cursor resumes Bob's stream: from there, the next change, not a RESYNC.
    bob_cursor = received[2]["cursor"]
    async with graphql_socket(realtime.server.ws_url, bob.token) as socket:
        await socket.subscribe(UPDATES, {"after": bob_cursor})
        await rename_card(realtime, ann, card, "after the cursor")
        update = await next_about(socket, card)
    assert update["op"] == "UPDATED"
    assert update["node"]["title"] == "after the cursor"


async def test_a_member_removed_gets_nothing_of_the_others_shared_update(
    realtime: Realtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ann, bob, cid), board, card = await members(realtime, 3)
    own_board = await realtime.api.board(cid, "Cid's own")
    own_card = await realtime.api.card(cid, own_board)
    cid_membership = next(
        m["id"]
        for m in (
            await realtime.api.data(
                "query($id: ID!) { node(id: $id) { ... on Board { members { id user { id } } } } }",
                {"id": board},
                token=ann.token,
            )
        )["node"]["members"]
        if m["user"]["id"] == cid.id
    )
    async with (
        sockets(realtime, ann, [(UPDATES, None)]) as (ann_socket,),
        sockets(realtime, bob, [(UPDATES, None)]) as (bob_socket,),
        sockets(realtime, cid, [(UPDATES, None)]) as (cid_socket,),
    ):
        await live(realtime, ann, card, [ann_socket, bob_socket, cid_socket])
        await realtime.api.data(
            "mutation($id: ID!) { removeMember(id: $id) }", {"id": cid_membership}, token=ann.token
        )
        removed = await next_about(cid_socket, board)
        with counting_executions(monkeypatch) as executions:
            await rename_card(realtime, ann, card, "members only")
            shared = await asyncio.gather(
                next_about(ann_socket, card), next_about(bob_socket, card)
            )
        # Cid's next update is about Cid's own card: nothing about the board's came first.
        await rename_card(realtime, cid, own_card, "mine")
        after_removal = [await cid_socket.next_update()]
        while after_removal[-1]["id"] != own_card:
            after_removal.append(await cid_socket.next_update())

    assert removed["op"] == "DELETED"
    assert executions.count == 1
    assert [u["node"]["title"] for u in shared] == ["members only"] * 2
    assert [u["id"] for u in after_removal if u["id"] in (card, board)] == []


# -- which documents are the same for every viewer -----------------------------------


def judged(document: str) -> bool:
    schema = build_schema()._schema
    parsed = parse(document)
    operations = [d for d in parsed.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = [d for d in parsed.definitions if isinstance(d, FragmentDefinitionNode)]
    return selects_only_viewer_free_fields(schema, operations[0], fragments)


@pytest.mark.parametrize(
    ("document", "same"),
    [
        (UPDATES, True),
        ("subscription { userUpdates { node { __typename } } }", True),
        ("subscription { userUpdates { c: cursor d: cursor op } }", True),
        ("subscription { userUpdates { node { ... on Card { author { name } } } } }", True),
        (MEMBER_EMAILS, False),
        ("subscription { userUpdates { node { ... on Card { author { email } } } } }", False),
        ("subscription { userUpdates { node { ... on User { boards { id } } } } }", False),
        (
            "subscription { userUpdates { node { ...F } } }"
            " fragment F on Card { comments { author { ...G } } }"
            " fragment G on User { name email }",
            False,
        ),
        (
            "subscription { userUpdates { node { ...F } } } fragment F on Card { title }"
            " fragment Unused on User { email }",
            False,  # (every fragment of the document is judged: never too generous)
        ),
    ],
)
def test_a_document_is_shared_across_viewers_only_without_viewer_dependent_fields(
    document: str, same: bool
) -> None:
    assert judged(document) is same


def test_the_fields_that_depend_on_the_viewer_are_the_users_email_and_boards() -> None:
    """Every record field with a resolver says whether it reads the viewer: a new one
    that does not is treated as reading it; this lists the ones that do."""
    schema = build_schema()._schema
    roots = {schema.query_type, schema.mutation_type, schema.subscription_type}
    depending = set()
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type in roots:
            continue
        if graphql_type.name.startswith("__"):
            continue
        for name, field in graphql_type.fields.items():
            definition = field.extensions.get("strawberry-definition")
            assert isinstance(definition, StrawberryField)
            if not same_for_every_viewer(definition):
                depending.add(f"{graphql_type.name}.{name}")
    assert depending == {"User.email", "User.boards"}


# -- the template -------------------------------------------------------------------


def card(title: str = "A card") -> Card:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 2, tzinfo=UTC)
    return Card(
        id="Q2FyZDox",
        pk=1,
        board_id=1,
        author_id=1,
        assignee_id=None,
        title=title,
        description="",
        position=1.0,
        done=False,
        version=2,
        created_at=now,
        updated_at=now,
    )


def update(cursor: str, node: Card | None, op: ChangeOp = ChangeOp.UPDATED) -> UserUpdate:
    return UserUpdate(cursor=cursor, op=op, typename="Card", id="Q2FyZDox", node=node)


def result(cursor: str, title: str = "A card") -> ExecutionResult:
    return ExecutionResult(
        data={"u": {"c": cursor, "op": "UPDATED", "again": cursor, "node": {"title": title}}}
    )


def test_a_template_gives_each_viewer_their_cursor_wherever_the_cursor_was() -> None:
    template = Template.of(update("first", card()), result("first"))
    assert template is not None
    mine = template.for_cursor("bXktY3Vyc29y")
    expected = {
        "u": {
            "c": "bXktY3Vyc29y",
            "op": "UPDATED",
            "again": "bXktY3Vyc29y",
            "node": {"title": "A card"},
        }
    }
    assert mine.data == expected
    assert mine.errors is None
    assert mine.data.json == compact_json(expected)
    # A cursor JSON would escape is encoded, not pasted in.
    odd = template.for_cursor('a"b')
    assert odd.data.json == compact_json({"u": {**expected["u"], "c": 'a"b', "again": 'a"b'}})


def test_a_result_quoting_the_placeholder_is_not_shared() -> None:
    template = Template.of(update("first", card()), result("first", PLACEHOLDER))
    assert template is not None
    assert template.for_cursor("c2Vjb25k") is None
    assert template.for_cursor("dGhpcmQ") is None


def test_a_result_with_errors_is_not_a_template() -> None:
    from graphql import GraphQLError

    failed = ExecutionResult(data={"u": None}, errors=[GraphQLError("no")])
    assert Template.of(update("first", card()), failed) is None


def test_a_template_admits_only_an_update_equal_but_for_the_cursor() -> None:
    template = Template.of(update("first", card()), result("first"))
    assert template is not None
    assert template.admits(update("second", card()))
    assert not template.admits(update("second", card("Another title")))
    assert not template.admits(update("second", None))
    assert not template.admits(update("second", card(), ChangeOp.CREATED))
