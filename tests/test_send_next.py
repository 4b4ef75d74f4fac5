"""app/send_next.py: a delivered update's `next` message sent the short way, the check
of strawberry's steps it stands in for, and strawberry's own way when that check fails,
over a real socket."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation

import app.send_next
from app.send_next import steps_problem, strawberry_send_problem
from app.settings import Settings
from tests.live import live_server
from tests.support import GraphQLClient, subscriptions_live
from tests.ws_client import UPDATES, graphql_socket

RENAME = "mutation($id: ID!, $t: String!) { updateCard(input: {id: $id, title: $t}) { id } }"


def test_the_installed_strawberry_sends_the_way_the_short_way_expects() -> None:
    assert strawberry_send_problem() is None


async def changed_send_next(self: Any, execution_result: Any) -> None:
    await self.send_operation_message({"id": self.id, "type": "next", "payload": {}})


def test_a_strawberry_step_it_does_not_know_is_refused() -> None:
    found = steps_problem(
        {
            "Operation.send_operation_message": (
                Operation.send_operation_message,
                app.send_next._STRAWBERRY_STEPS["Operation.send_operation_message"][1],
            ),
            "Operation.send_next": (
                changed_send_next,
                app.send_next._STRAWBERRY_STEPS["Operation.send_next"][1],
            ),
        }
    )
    assert found == "strawberry's Operation.send_next is not the one app.send_next expects"
    unreadable = steps_problem({"Operation.send_next": (len, "def len(x): pass")})
    assert unreadable is not None
    assert unreadable.startswith("cannot read strawberry's Operation.send_next")


@pytest.fixture
def strawberry_sends() -> Iterator[list[object]]:
    """The results strawberry's own `Operation.send_next` is asked to send."""
    assert strawberry_send_problem() is None  # (checked before send_next is wrapped)
    sent: list[object] = []
    original = Operation.send_next

    async def counting(self: Operation[Any, Any], execution_result: Any) -> None:
        sent.append(execution_result)
        await original(self, execution_result)

    Operation.send_next = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        Operation.send_next = original  # type: ignore[method-assign]


async def two_updates(sqlite_url: str) -> list[dict[str, Any]]:
    """Two renames of a card, as received by a subscription over a real socket."""
    async with (
        live_server(Settings(database_url=sqlite_url)) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        api = GraphQLClient(http, server.runtime)
        ann = await api.account("Ann")
        card = await api.card(ann, await api.board(ann))
        async with graphql_socket(server.ws_url, ann.token) as socket:
            await socket.subscribe(UPDATES)
            await subscriptions_live(server.runtime, 1)
            received = []
            for title in ("First", "Second é \u2028 end"):
                await api.data(RENAME, {"id": card, "t": title}, token=ann.token)
                received.append(await socket.next_update())
            return received


async def test_updates_go_the_short_way_with_the_same_content(
    sqlite_url: str, strawberry_sends: list[object]
) -> None:
    first, second = await two_updates(sqlite_url)
    assert strawberry_sends == []  # neither went through strawberry's send_next
    assert (first["op"], first["node"]["title"]) == ("UPDATED", "First")
    assert (second["op"], second["node"]["title"]) == ("UPDATED", "Second é \u2028 end")


async def test_when_strawberry_sends_otherwise_updates_go_its_way_with_one_warning(
    sqlite_url: str,
    strawberry_sends: list[object],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(app.send_next, "strawberry_send_problem", lambda: "a newer strawberry")
    app.send_next.warn_once.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="app.send_next"):
            first, second = await two_updates(sqlite_url)
    finally:
        app.send_next.warn_once.cache_clear()
    assert len(strawberry_sends) == 2
    assert (first["node"]["title"], second["node"]["title"]) == ("First", "Second é \u2028 end")
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.send_next"]
    assert warnings == [
        "Sending every subscription result through strawberry's layers: a newer strawberry"
    ]
