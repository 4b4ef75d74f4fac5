"""The graphql-transport-ws transcript of docs/clients.md ("Mobile clients") is what the
server does: its client lines, sent as written over a raw WebSocket, get exactly its
server lines back, and resubscribing with the last cursor replays what was missed.
Both deployments.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.realtime_support import Realtime
from tests.support import Account
from tests.ws_client import TIMEOUT, TRANSPORT_WS

DOC = Path(__file__).resolve().parent.parent / "docs" / "clients.md"
TRANSCRIPT = re.compile(r"<!-- transcript: ([^>]+?) -->\s*```text\n(.*?)```", flags=re.DOTALL)
PLACEHOLDER = re.compile(r"<[a-z ]+>")
# Stands for any cursor; every other placeholder is one value throughout a transcript.
ANY_CURSOR = "<cursor>"
PROBE_WAIT = 1.0
PROBES = 6


def transcripts() -> dict[str, list[tuple[str, str]]]:
    """Each transcript's lines as (direction, JSON text)."""
    found = {}
    for name, block in TRANSCRIPT.findall(DOC.read_text()):
        lines = [line for line in block.splitlines() if line.strip()]
        assert all(line[:2] in ("> ", "< ") for line in lines), block
        found[name] = [(line[0], line[2:]) for line in lines]
    return found


def matches(expected: Any, actual: Any, bound: dict[str, str]) -> bool:
    """Whether `actual` has exactly the shape and values of `expected`, placeholders
    standing for values (bound on first use; `bound` is only updated on a match)."""
    trial = dict(bound)
    if not _match(expected, actual, trial):
        return False
    bound.update(trial)
    return True


def _match(expected: Any, actual: Any, bound: dict[str, str]) -> bool:
    if isinstance(expected, str) and PLACEHOLDER.fullmatch(expected):
        if expected == ANY_CURSOR:
            return isinstance(actual, str) and bool(actual)
        return bound.setdefault(expected, actual) == actual
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(_match(value, actual[key], bound) for key, value in expected.items())
        )
    return bool(expected == actual)


class Conversation:
    """One socket following a transcript; `bound` carries placeholder values."""

    def __init__(self, connection: ClientConnection, bound: dict[str, str]) -> None:
        self.connection = connection
        self.bound = bound
        self.last_cursor: str | None = None
        self.skipped: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        for name, value in self.bound.items():
            text = text.replace(name, value)  # tokens, ids and cursors need no escaping
        assert not PLACEHOLDER.search(text), f"unbound placeholder in {text}"
        await self.connection.send(text)

    async def expect(self, text: str) -> None:
        """The next message matching `text`; updates about other records come first
        (the transcript leaves them out), anything else fails."""
        expected = json.loads(text)
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = json.loads(await self.connection.recv())
                self._note_cursor(message)
                if matches(expected, message, self.bound):
                    return
                if not self._about_another_record(expected, message):
                    raise AssertionError(f"expected {text}\n     got {message}")
                self.skipped.append(message)

    async def follow(self, lines: list[tuple[str, str]]) -> None:
        for direction, text in lines:
            await (self.send(text) if direction == ">" else self.expect(text))

    def _about_another_record(self, expected: dict[str, Any], message: dict[str, Any]) -> bool:
        if expected.get("type") != "next" or message.get("type") != "next":
            return False
        wanted = expected["payload"]["data"]["userUpdates"]
        update = message["payload"]["data"]["userUpdates"]
        return bool(
            update["typename"] != wanted["typename"]
            or update["id"] != self.bound.get(wanted["id"], update["id"])
        )

    def _note_cursor(self, message: dict[str, Any]) -> None:
        if message.get("type") == "next":
            self.last_cursor = message["payload"]["data"]["userUpdates"]["cursor"]


async def probe_until_live(realtime: Realtime, conversation: Conversation, ann: Account) -> None:
    """Neither side confirms a subscription: Ann makes boards until one's CREATED
    arrives. Those updates are not part of the transcript."""
    for attempt in range(1, PROBES + 1):
        board = await realtime.api.board(ann, f"probe {attempt}")
        try:
            async with asyncio.timeout(PROBE_WAIT):
                while True:
                    message = json.loads(await conversation.connection.recv())
                    conversation._note_cursor(message)
                    update = message["payload"]["data"]["userUpdates"]
                    if (update["op"], update["id"]) == ("CREATED", board):
                        return
        except TimeoutError:
            continue
    raise AssertionError("no probe came back: the subscription is not live")


async def test_the_documented_transcript_is_what_the_server_does(realtime: Realtime) -> None:
    api = realtime.api
    ann = await api.account("Ann")
    bob = await api.account("Bob")
    board = await api.board(ann, "Print run")
    await api.add_member(ann, board, bob, "EDITOR")
    first, after_reconnecting = transcripts().values()
    bound: dict[str, str] = {"<token>": ann.token}

    subscribe_at = next(i for i, (d, text) in enumerate(first) if '"subscribe"' in text) + 1
    async with connect(realtime.server.ws_url, subprotocols=[TRANSPORT_WS]) as connection:  # type: ignore[list-item]
        assert connection.subprotocol == TRANSPORT_WS
        conversation = Conversation(connection, bound)
        await conversation.follow(first[:subscribe_at])
        await probe_until_live(realtime, conversation, ann)
        card = await api.card(bob, board, "Call the printer")
        await conversation.follow(first[subscribe_at:])
        assert bound["<card id>"] == card
        last_cursor = conversation.last_cursor
    # The connection has dropped; meanwhile the card is marked done.
    await api.data(
        "mutation($c: ID!) { updateCard(input: {id: $c, done: true}) { id } }",
        {"c": card},
        token=bob.token,
    )

    assert last_cursor is not None
    bound["<last cursor>"] = last_cursor
    async with connect(realtime.server.ws_url, subprotocols=[TRANSPORT_WS]) as connection:  # type: ignore[list-item]
        conversation = Conversation(connection, bound)
        await conversation.follow(after_reconnecting)
    # Replayed before it at most: the board's notice of the card, if the first
    # connection dropped before it arrived.
    assert all(m["payload"]["data"]["userUpdates"]["id"] == board for m in conversation.skipped)


def test_the_placeholder_matching_is_strict() -> None:
    """The matcher the transcript test relies on refuses what differs."""
    expected = {"id": "<card id>", "op": "CREATED", "cursor": ANY_CURSOR}
    bound: dict[str, str] = {}
    assert matches(expected, {"id": "Q2FyZDox", "op": "CREATED", "cursor": "c1"}, bound)
    assert bound == {"<card id>": "Q2FyZDox"}
    assert not matches(expected, {"id": "other", "op": "CREATED", "cursor": "c2"}, bound)
    assert not matches(expected, {"id": "Q2FyZDox", "op": "UPDATED", "cursor": "c2"}, bound)
    assert not matches(expected, {"id": "Q2FyZDox", "op": "CREATED", "cursor": ""}, bound)
    assert not matches(expected, {"id": "Q2FyZDox", "op": "CREATED", "cursor": "c", "x": 1}, bound)
