"""Record versions, optimistic concurrency (expectedVersion -> CONFLICT) and timestamps."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import GraphQLClient
from tests.team import UPDATE_BOARD, UPDATE_CARD, UPDATE_COMMENT, Team, make_team

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(\+00:00|Z)$")

READ = """
query($id: ID!) {
  node(id: $id) {
    ... on Board { version createdAt updatedAt text: name }
    ... on Card { version createdAt updatedAt text: title }
    ... on Comment { version createdAt updatedAt text: body }
  }
}"""


@dataclass(frozen=True)
class Kind:
    """How to update one record type's text field (name, title or body)."""

    query: str
    variables: Callable[[str, str | None, int | None], dict[str, Any]]
    result: str


KINDS = {
    "Board": Kind(UPDATE_BOARD, lambda i, text, v: {"id": i, "name": text, "v": v}, "updateBoard"),
    "Card": Kind(
        UPDATE_CARD,
        lambda i, text, v: {"input": {"id": i, "title": text, "expectedVersion": v}},
        "updateCard",
    ),
    "Comment": Kind(
        UPDATE_COMMENT,
        # body is required: "unchanged" resends the current one.
        lambda i, text, v: {"id": i, "b": text if text is not None else "Comment", "v": v},
        "updateComment",
    ),
}


@dataclass(frozen=True)
class Records:
    team: Team
    ids: dict[str, str]  # by kind
    texts: dict[str, str]  # the text each starts with

    async def read(self, kind: str) -> dict[str, Any]:
        data = await self.team.api.data(READ, {"id": self.ids[kind]}, token=self.team.owner.token)
        record: dict[str, Any] = data["node"]
        return record

    async def update(
        self, kind: str, text: str | None, expected: int | None = None
    ) -> dict[str, Any]:
        spec = KINDS[kind]
        data = await self.team.api.data(
            spec.query, spec.variables(self.ids[kind], text, expected), token=self.team.owner.token
        )
        record: dict[str, Any] = data[spec.result]
        return record

    async def conflict(self, kind: str, text: str | None, expected: int) -> dict[str, Any]:
        spec = KINDS[kind]
        error = await self.team.api.error(
            spec.query, spec.variables(self.ids[kind], text, expected), token=self.team.owner.token
        )
        assert error["extensions"]["code"] == "CONFLICT", error
        return error


@pytest.fixture
async def records(api: GraphQLClient) -> Records:
    team = await make_team(api)
    card = await api.card(team.owner, team.board, "Card")
    comment = await api.comment(team.owner, card, "Comment")
    return Records(
        team,
        {"Board": team.board, "Card": card, "Comment": comment},
        {"Board": "Roadmap", "Card": "Card", "Comment": "Comment"},
    )


def parse_time(value: str) -> datetime:
    assert ISO_UTC.match(value), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


# --- versions ---------------------------------------------------------------------------


async def test_versions_start_at_1_and_each_update_adds_exactly_1(records: Records) -> None:
    team = records.team
    data = await team.api.data(
        "query($id: ID!) { viewer { version } board(id: $id) { version"
        " members { version user { version } } cards { version comments { version } } } }",
        {"id": team.board},
        token=team.owner.token,
    )
    board = data["board"]
    versions = [
        data["viewer"]["version"],
        board["version"],
        *[m["version"] for m in board["members"]],
        *[m["user"]["version"] for m in board["members"]],
        *[c["version"] for c in board["cards"]],
        *[c["version"] for c in board["cards"][0]["comments"]],
    ]
    assert versions == [1] * 10

    for kind in KINDS:
        for n in range(2, 5):
            updated = await records.update(kind, f"Text {n}")
            assert updated["version"] == n, kind
            stored = await records.read(kind)
            assert (stored["version"], stored["text"]) == (n, f"Text {n}"), kind


async def test_an_update_that_changes_nothing_keeps_the_version(records: Records) -> None:
    for kind in KINDS:
        await records.update(kind, "Changed once")
        before = await records.read(kind)
        assert before["version"] == 2
        # (A comment's body is required, so it cannot be left out.)
        texts = ["Changed once", "  Changed once \n"] + ([None] if kind != "Comment" else [])
        for text in texts:
            after = await records.update(kind, text)
            assert after["version"] == 2, (kind, text)
            assert after["updatedAt"] == before["updatedAt"], (kind, text)
        # ...also with a matching expectedVersion.
        assert (await records.update(kind, "Changed once", 2))["version"] == 2
        assert await records.read(kind) == before


async def test_a_card_update_is_one_version_however_many_fields_it_changes(
    records: Records,
) -> None:
    team = records.team
    card = records.ids["Card"]
    everything = {
        "title": "New title",
        "description": "New description",
        "position": 7.5,
        "done": True,
        "assigneeId": team.editor.id,
    }
    data = await team.api.data(
        UPDATE_CARD, {"input": {"id": card, **everything}}, token=team.owner.token
    )
    assert data["updateCard"]["version"] == 2
    data = await team.api.data(
        UPDATE_CARD, {"input": {"id": card, "assigneeId": None}}, token=team.owner.token
    )
    assert (data["updateCard"]["version"], data["updateCard"]["assignee"]) == (3, None)

    # Resending what the card already has, in any combination, is no update.
    everything["assigneeId"] = None
    before = await team.card_as(team.owner, card)
    assert before is not None
    same_values: list[dict[str, Any]] = [
        {},
        everything,
        {"assigneeId": None},
        {"title": "  New title  "},
        {"title": None, "description": None, "position": None, "done": None},
    ]
    for same in same_values:
        data = await team.api.data(
            UPDATE_CARD, {"input": {"id": card, **same}}, token=team.owner.token
        )
        assert data["updateCard"]["version"] == 3, same
    assert await team.card_as(team.owner, card) == before


# --- expectedVersion --------------------------------------------------------------------


async def test_a_stale_expected_version_conflicts_and_changes_nothing(records: Records) -> None:
    for kind in KINDS:
        await records.update(kind, "Second")
        await records.update(kind, "Third")
        before = await records.read(kind)
        assert before["version"] == 3

        # Older, newer, and (with no change asked for) still a conflict.
        for stale, text in [(2, "Lost update"), (99, "Lost update"), (1, None)]:
            error = await records.conflict(kind, text, stale)
            assert error["extensions"]["currentVersion"] == 3, (kind, error)
            assert "version 3" in error["message"]
        assert await records.read(kind) == before

        updated = await records.update(kind, "Fourth", 3)
        assert updated["version"] == 4
        stored = await records.read(kind)
        assert (stored["text"], stored["version"]) == ("Fourth", 4)


# --- timestamps -------------------------------------------------------------------------


async def test_updated_at_moves_and_created_at_stays(records: Records) -> None:
    for kind in KINDS:
        first = await records.read(kind)
        created = parse_time(first["createdAt"])
        assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
        assert parse_time(first["updatedAt"]) >= created

        previous = parse_time(first["updatedAt"])
        for n in range(2):
            updated = await records.update(kind, f"Edit {n}")
            assert updated["createdAt"] == first["createdAt"], kind
            now = parse_time(updated["updatedAt"])
            assert now > previous, kind
            stored = await records.read(kind)
            assert (stored["createdAt"], stored["updatedAt"]) == (
                first["createdAt"],
                updated["updatedAt"],
            )
            previous = now

    # Records made through the API carry the same format.
    data = await records.team.api.data(
        'mutation { createBoard(input: {name: "B"}) { createdAt updatedAt } }',
        token=records.team.owner.token,
    )
    born = parse_time(data["createBoard"]["createdAt"])
    assert abs(datetime.now(UTC) - born) < timedelta(minutes=5)
    assert abs(parse_time(data["createBoard"]["updatedAt"]) - born) < timedelta(seconds=5)


# --- concurrent writers -----------------------------------------------------------------


async def test_concurrent_updates_with_the_same_expected_version_one_wins(
    records: Records,
) -> None:
    team = records.team
    card = records.ids["Card"]
    for version in range(1, 4):

        async def update(title: str, version: int = version) -> dict[str, Any]:
            return await team.api.execute(
                UPDATE_CARD,
                {"input": {"id": card, "title": title, "expectedVersion": version}},
                token=team.owner.token,
            )

        results = await asyncio.gather(update(f"A{version}"), update(f"B{version}"))
        won = [r["data"]["updateCard"] for r in results if not r.get("errors")]
        lost = [r["errors"] for r in results if r.get("errors")]
        assert len(won) == 1, results
        assert len(lost) == 1, results
        (error,) = lost[0]
        assert error["extensions"]["code"] == "CONFLICT", error
        assert error["extensions"]["currentVersion"] == version + 1
        assert won[0]["version"] == version + 1
        stored = await team.card_as(team.owner, card)
        assert stored is not None
        assert (stored["title"], stored["version"]) == (won[0]["title"], version + 1)


async def test_concurrent_updates_without_expected_version_both_apply(
    records: Records,
) -> None:
    """Without expectedVersion a client asks for last-writer-wins, not for CONFLICT."""
    team = records.team
    card = records.ids["Card"]
    results = await asyncio.gather(
        team.api.execute(
            UPDATE_CARD, {"input": {"id": card, "title": "Retitled"}}, token=team.owner.token
        ),
        team.api.execute(
            UPDATE_CARD, {"input": {"id": card, "done": True}}, token=team.editor.token
        ),
    )
    assert [r.get("errors") for r in results] == [None, None], results
    stored = await team.card_as(team.owner, card)
    assert stored is not None
    assert (stored["title"], stored["done"], stored["version"]) == ("Retitled", True, 3)
