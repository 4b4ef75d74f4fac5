"""A request's committed changes wait for its response (subscriptions.hold): held while
the operation runs, handed to the relay when the response is about to be written, never
longer than HOLD_LIMIT, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from models.realtime import RecordKey
from subscriptions.changes import Change, ChangeOp
from subscriptions.hold import HOLD_LIMIT, current_hold, holding
from tests.support import GraphQLClient


def change(record: int) -> list[Change]:
    return [Change(RecordKey("Card", record), ChangeOp.UPDATED, 1, {1})]


class HandedOver:
    """A hand-over target that keeps what it got, and says when it got something."""

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self.arrived = asyncio.Event()

    def __call__(self, changes: list[Change]) -> None:
        self.batches.append(changes)
        self.arrived.set()

    @property
    def records(self) -> list[int]:
        return [c.key.id for batch in self.batches for c in batch]


OWNER = object()


async def test_what_is_committed_in_the_block_is_handed_over_when_it_ends_in_order() -> None:
    handed = HandedOver()
    with holding(OWNER, handed) as hold:
        assert current_hold(OWNER) is hold
        hold.add(change(1))
        hold.add(change(2))
        assert handed.records == []
    assert handed.records == [1, 2]
    assert current_hold(OWNER) is None


async def test_another_owners_submissions_are_not_held() -> None:
    with holding(OWNER, HandedOver()):
        assert current_hold(object()) is None


async def test_release_hands_over_at_once_and_later_changes_go_straight_on() -> None:
    handed = HandedOver()
    with holding(OWNER, handed) as hold:
        hold.add(change(1))
        hold.release()
        assert handed.records == [1]
        hold.add(change(2))  # e.g. a task the request started, committing after
        assert handed.records == [1, 2]
    assert handed.records == [1, 2]


async def test_a_block_that_fails_still_hands_over_what_it_held() -> None:
    handed = HandedOver()

    def fail_after_a_commit() -> None:
        with holding(OWNER, handed) as hold:
            hold.add(change(1))
            raise RuntimeError("the response failed after the commit")

    with pytest.raises(RuntimeError):
        fail_after_a_commit()
    assert handed.records == [1]


async def test_nothing_is_held_longer_than_the_limit_however_long_the_block_runs() -> None:
    handed = HandedOver()
    with holding(OWNER, handed) as hold:
        started = asyncio.get_running_loop().time()
        hold.add(change(1))
        async with asyncio.timeout(HOLD_LIMIT + 5):
            await handed.arrived.wait()
        waited = asyncio.get_running_loop().time() - started
        assert handed.records == [1]
        assert waited >= HOLD_LIMIT * 0.9
        hold.add(change(2))  # past the limit the hold is let go: straight on
        assert handed.records == [1, 2]


@pytest.fixture
async def published_at_response(
    app: Starlette,
) -> AsyncIterator[tuple[httpx.AsyncClient, list[int]]]:
    """A client of `app` that notes the relay's publish count whenever a response body
    is written."""
    relay = app.state.runtime.relay
    noted: list[int] = []

    async def noting(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_noting(message: Message) -> None:
            if message["type"] == "http.response.body":
                noted.append(relay.published)
            await send(message)

        await app(scope, receive, send_noting)

    transport = httpx.ASGITransport(app=noting)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, noted


async def test_a_mutations_response_is_written_before_its_change_is_published(
    app: Starlette, api: GraphQLClient, published_at_response: tuple[httpx.AsyncClient, list[int]]
) -> None:
    relay = app.state.runtime.relay
    ann = await api.account("Ann")
    board = await api.board(ann)
    await relay.idle()
    client, noted = published_at_response
    before = relay.published

    response = await client.post(
        "/graphql",
        json={
            "query": 'mutation($b: ID!) { createCard(input: {boardId: $b, title: "Held"}) { id } }',
            "variables": {"b": board},
        },
        headers={"Authorization": f"Bearer {ann.token}"},
    )

    assert response.status_code == 200
    assert "errors" not in response.json(), response.text
    assert noted == [before]  # nothing of it was published when its response went out
    async with asyncio.timeout(10):
        await relay.idle()
    assert relay.published > before  # and it was published right after
