"""No N+1: a large board loads in a small, constant number of SQL statements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

import models
from schema.ids import decode_typed_id
from tests.support import GraphQLClient, driver_statements

BOARD_QUERY = """
query($id: ID!) {
  board(id: $id) {
    name version owner { name email }
    members { role user { name email } board { name } }
    cards {
      title description position done version
      author { name } assignee { name }
      board { id }
      comments { body author { name } card { id } }
    }
  }
}
"""
# board + viewer role, owner/users, memberships, cards, comments: loader batches,
# not rows. The bound is independent of the number of cards and comments.
MAX_STATEMENTS = 10


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(connection: Any, _cursor: Any, statement: str, *args: Any) -> None:
        # The relay's bookkeeping (marking changes published, sweeping) runs on its own
        # schedule, and the token revocation check is one lookup per request whatever
        # it asks: neither is the query's cost.
        if connection.get_execution_options().get("logging_token") not in ("relay", "revocation"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_board_with_200_cards_and_1000_comments(api: GraphQLClient) -> None:
    owner = await api.account("Owner")
    members = [await api.account(f"Member{i}") for i in range(4)]
    board_id = await api.board(owner)
    for member in members:
        await api.add_member(owner, board_id, member, "EDITOR")
    board_pk = decode_typed_id(board_id, "Board", field="id")
    async with api.runtime.write_sessions() as session, session.begin():
        people = [owner, *members]
        cards = [
            models.Card(
                board_id=board_pk,
                title=f"Card {i}",
                description="",
                position=float(i),
                done=False,
                author_id=people[i % 5].pk,
                assignee_id=people[(i + 1) % 5].pk,
            )
            for i in range(200)
        ]
        session.add_all(cards)
        await session.flush()
        session.add_all(
            models.Comment(card_id=card.id, author_id=people[j % 5].pk, body=f"Comment {j}")
            for card in cards
            for j in range(5)
        )

    with count_statements(api.runtime.engine) as statements:
        data = await api.data(BOARD_QUERY, {"id": board_id}, token=owner.token)

    cards_out = data["board"]["cards"]
    assert len(cards_out) == 200
    assert sum(len(c["comments"]) for c in cards_out) == 1000
    assert [c["title"] for c in cards_out[:3]] == ["Card 0", "Card 1", "Card 2"]
    assert len(data["board"]["members"]) == 5
    assert len(statements) <= MAX_STATEMENTS, "\n".join(statements)


UPDATE_CARD = "mutation($i: UpdateCardInput!) { updateCard(input: $i) { version } }"
CREATE_CARD = "mutation($i: CreateCardInput!) { createCard(input: $i) { id } }"
ADD_COMMENT = "mutation($i: AddCommentInput!) { addComment(input: $i) { id } }"


async def test_a_write_reads_its_record_and_the_viewers_role_in_one_statement(
    api: GraphQLClient,
) -> None:
    owner = await api.account("Owner")
    board_id = await api.board(owner)
    card_id = await api.card(owner, board_id)
    writes = [
        (UPDATE_CARD, {"id": card_id, "title": "Renamed"}, "FROM cards"),
        (CREATE_CARD, {"boardId": board_id, "title": "New", "position": 9.0}, "FROM boards"),
        (ADD_COMMENT, {"cardId": card_id, "body": "Done?"}, "FROM cards"),
    ]
    for document, variables, record_read in writes:
        # (updateCard on PostgreSQL runs its statement on the driver, whose logger sees
        # a statement from its second run in the process: the first is prepared)
        warm_up = {**variables, "title": "Warm"} if "title" in variables else variables
        await api.data(document, {"i": warm_up}, token=owner.token)
        with count_statements(api.runtime.engine) as statements:
            async with driver_statements(api.runtime.engine, statements.append):
                await api.data(document, {"i": variables}, token=owner.token)
        roles = [s for s in statements if "memberships.role" in s]
        records = [s for s in statements if record_read in s]
        assert roles == records, "\n".join(statements)
        assert len(roles) == 1, "\n".join(statements)
