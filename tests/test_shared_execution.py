"""Identical subscriptions execute each update once (issue 7; schema.execution).

A user's subscriptions in one process that read the same batch get the same update
object for a change; those with the same document, the same values for the variables
their selections use and the same viewer take one execution's result, encoded to JSON
once (app.encoding). What each of them receives must not change: these tests count
executions and check what every socket received.

Executions are counted by wrapping graphql-core's Executor.execute_operation (the
library's, not ours): SubscriptionSafeExecutionContext calls it only for an execution
it cannot share.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import graphql.execution.executor
import pytest
from graphql import OperationType
from graphql.execution.executor import Executor

from app.encoding import encode_json, next_message
from schema.json_text import EncodedOnce, compact_json
from schema.subscription import UserUpdate
from tests.realtime_support import Realtime
from tests.support import Account, subscriptions_started
from tests.ws_client import UPDATES, GraphQLSocket, graphql_socket

SOCKETS = 10

WITH_TITLE = """
subscription($after: String, $withTitle: Boolean!) {
  userUpdates(after: $after) {
    cursor op typename id
    node { __typename id ... on Card { version title @include(if: $withTitle) } }
  }
}
"""

MEMBER_EMAILS = """
subscription {
  userUpdates {
    cursor op typename id
    node { __typename id ... on Board { name members { user { id email } } } }
  }
}
"""


class Executions:
    """Executions of `userUpdates` events that were not shared."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def counting_executions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Executions]:
    executions = Executions()
    execute = Executor.execute_operation

    def counted(self: Executor, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.root_value, UserUpdate):
            executions.count += 1
        return execute(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Executor, "execute_operation", counted)
        yield executions


async def rename_card(realtime: Realtime, who: Account, card: str, title: str) -> None:
    await realtime.api.data(
        "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }",
        {"i": {"id": card, "title": title}},
        token=who.token,
    )


async def next_about(socket: GraphQLSocket, record: str) -> dict[str, Any]:
    """The next update about `record` (skipping others)."""
    while True:
        update = await socket.next_update()
        if update["id"] == record:
            return update


@asynccontextmanager
async def sockets(
    realtime: Realtime,
    who: Account,
    subscriptions: list[tuple[str, dict[str, Any] | None]],
) -> AsyncIterator[list[GraphQLSocket]]:
    async with AsyncExitStack() as stack:
        opened = []
        for query, variables in subscriptions:
            socket = await stack.enter_async_context(
                graphql_socket(realtime.server.ws_url, who.token)
            )
            await socket.subscribe(query, variables)
            opened.append(socket)
        await subscriptions_started(realtime.server.runtime, [who.pk] * len(opened))
        yield opened


async def live(realtime: Realtime, who: Account, card: str, opened: list[GraphQLSocket]) -> None:
    """Change the card until every socket received the change: from then on each
    subscription is live (and at the same position in the log)."""
    await rename_card(realtime, who, card, "live")
    await asyncio.gather(*(next_about(s, card) for s in opened))
    await realtime.server.runtime.relay.idle()


async def test_identical_subscriptions_execute_each_update_once(
    realtime: Realtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = await realtime.api.account("Ann")
    board = await realtime.api.board(ann)
    card = await realtime.api.card(ann, board)
    async with sockets(realtime, ann, [(UPDATES, None)]) as (first,):
        await live(realtime, ann, card, [first])
        await rename_card(realtime, ann, card, "earlier")
        cursor = (await next_about(first, card))["cursor"]
    # Half of them resume from a cursor: the root field's argument chooses where the
    # stream starts, not what an event's result is, so these are identical too.
    wanted = [(UPDATES, None if n % 2 else {"after": cursor}) for n in range(SOCKETS)]
    async with sockets(realtime, ann, wanted) as opened:
        await live(realtime, ann, card, opened)
        with counting_executions(monkeypatch) as executions:
            await rename_card(realtime, ann, card, "once")
            received = await asyncio.gather(*(next_about(s, card) for s in opened))

    assert executions.count == 1, (
        f"{executions.count} executions for {SOCKETS} identical subscriptions"
    )
    assert all(update["node"]["title"] == "once" for update in received)
    assert all(update == received[0] for update in received)


async def test_subscriptions_whose_selections_differ_by_a_variable_are_not_shared(
    realtime: Realtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = await realtime.api.account("Ann")
    board = await realtime.api.board(ann)
    card = await realtime.api.card(ann, board)
    wanted = [
        (WITH_TITLE, {"withTitle": True}),
        (WITH_TITLE, {"withTitle": False}),
        (WITH_TITLE, {"withTitle": True, "after": None}),
    ]
    async with sockets(realtime, ann, wanted) as opened:
        await live(realtime, ann, card, opened)
        with counting_executions(monkeypatch) as executions:
            await rename_card(realtime, ann, card, "titled")
            with_title, without_title, again_with_title = await asyncio.gather(
                *(next_about(s, card) for s in opened)
            )

    assert with_title["node"]["title"] == "titled"
    assert "title" not in without_title["node"]
    assert again_with_title == with_title
    assert executions.count == 2  # one per distinct value of $withTitle


async def test_each_viewer_gets_their_own_execution(
    realtime: Realtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ann's and Bob's subscriptions have the same document, but `email` is only the
    viewer's own: neither may receive the other's result (nor share its execution:
    schema.viewer_free)."""
    ann = await realtime.api.account("Ann")
    bob = await realtime.api.account("Bob")
    board = await realtime.api.board(ann)
    await realtime.api.add_member(ann, board, bob, "EDITOR")
    async with (
        sockets(realtime, ann, [(MEMBER_EMAILS, None)] * 3) as ann_sockets,
        sockets(realtime, bob, [(MEMBER_EMAILS, None)] * 3) as bob_sockets,
    ):
        everyone = [*ann_sockets, *bob_sockets]
        for n in range(2):  # the first one makes every subscription live
            with counting_executions(monkeypatch) as executions:
                await realtime.api.data(
                    "mutation($i: UpdateBoardInput!) { updateBoard(input: $i) { id } }",
                    {"i": {"id": board, "name": f"Renamed {n}"}},
                    token=ann.token,
                )
                received = await asyncio.gather(*(next_about(s, board) for s in everyone))
            await realtime.server.runtime.relay.idle()

    assert executions.count == 2  # one per viewer

    def emails(update: dict[str, Any]) -> dict[str, str | None]:
        return {m["user"]["id"]: m["user"]["email"] for m in update["node"]["members"]}

    for update in received[:3]:
        assert emails(update) == {ann.id: ann.email, bob.id: None}
    for update in received[3:]:
        assert emails(update) == {ann.id: None, bob.id: bob.email}


async def test_fields_are_collected_once_per_document_and_variables_not_per_event(
    realtime: Realtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each update is executed (with and without the title; Bob takes Ann's execution,
    schema.crowd_results), and what the selections collect for an UpdatedCard's types is
    worked out once per document and variables (schema.field_plans), at the first event:
    not again."""
    ann = await realtime.api.account("Ann")
    bob = await realtime.api.account("Bob")
    board = await realtime.api.board(ann)
    await realtime.api.add_member(ann, board, bob, "EDITOR")
    card = await realtime.api.card(ann, board)
    wanted = [(WITH_TITLE, {"withTitle": True}), (WITH_TITLE, {"withTitle": False})]
    collected: list[str] = []
    collect = graphql.execution.executor.collect_subfields

    def counted(
        schema: Any, fragments: Any, values: Any, operation: Any, return_type: Any, *rest: Any
    ) -> Any:
        if operation.operation is OperationType.SUBSCRIPTION:  # (not the renames)
            collected.append(return_type.name)
        return collect(schema, fragments, values, operation, return_type, *rest)

    monkeypatch.setattr(graphql.execution.executor, "collect_subfields", counted)
    async with (
        sockets(realtime, ann, wanted) as ann_sockets,
        sockets(realtime, bob, wanted) as bob_sockets,
    ):
        everyone = [*ann_sockets, *bob_sockets]
        await live(realtime, ann, card, everyone)
        assert collected  # (the first events collected)
        collected.clear()
        with counting_executions(monkeypatch) as executions:
            for n in range(3):
                await rename_card(realtime, ann, card, f"Title {n}")
                received = await asyncio.gather(*(next_about(s, card) for s in everyone))
                await realtime.server.runtime.relay.idle()
                titles = [update["node"].get("title") for update in received]
                assert titles == [f"Title {n}", None, f"Title {n}", None]
    assert executions.count == 3 * 2  # (two values of $withTitle, for both viewers)
    assert collected == []


@pytest.mark.parametrize(
    "message",
    [
        {"id": "1", "type": "next", "payload": {"data": {"a": [1, "é", None, {"b": 2.5}]}}},
        {"type": "data", "id": 'odd "id"\n', "payload": {"data": {"x": "\u2028"}}},
        {"payload": {"data": {}}},
        {"id": [1, {"a": 2}], "type": "next", "payload": {"data": {"n": 1}}},
        {"type": "next", "id": "2", "payload": {"data": {"n": 1}}},
        {"id": "3", "kind": "next", "payload": {"data": {"n": 1}}},
    ],
)
def test_a_shared_result_is_spliced_into_the_same_json(message: dict[str, Any]) -> None:
    shared = {**message, "payload": {"data": EncodedOnce(message["payload"]["data"])}}
    assert encode_json(shared) == compact_json(message)
    assert json.loads(encode_json(shared)) == message
    # Anything else is plain json.dumps.
    with_errors = {**shared, "payload": {**shared["payload"], "errors": [{"message": "x"}]}}
    assert json.loads(encode_json(with_errors))["payload"]["errors"] == [{"message": "x"}]


@pytest.mark.parametrize("operation_id", ["1", 'odd "id"\n\u2028', "é"])
def test_a_next_message_is_the_text_strawberrys_path_sends(operation_id: str) -> None:
    """What the graphql-transport-ws handler sends for a shared result without going
    through strawberry's message dict (app.graphql._send_next)."""
    data = {"userUpdates": {"cursor": "c", "node": {"title": "é \u2028", "n": [1, None]}}}
    message = {"id": operation_id, "type": "next", "payload": {"data": data}}
    assert next_message(operation_id, EncodedOnce(data)) == compact_json(message)
    assert next_message(operation_id, EncodedOnce(data)) == encode_json(
        {**message, "payload": {"data": EncodedOnce(data)}}
    )
