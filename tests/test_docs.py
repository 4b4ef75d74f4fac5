"""The README says what the service does: its tour runs, its tables list what exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.settings import ENVIRONMENT_VARIABLES
from tests.realtime_support import Realtime
from tests.support import subscriptions_live
from tests.ws_client import graphql_socket

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def graphql_blocks(markdown: str) -> list[str]:
    return re.findall(r"```graphql\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_configuration_table_lists_every_variable() -> None:
    rows = {m.group(1) for m in re.finditer(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE)}
    assert rows == {name for name, _, _ in ENVIRONMENT_VARIABLES}


def test_readme_commands_exist_and_are_executable() -> None:
    for command in ("scripts/serve", "scripts/test", ".ci/run"):
        path = ROOT / command
        assert path.is_file(), command
        assert os.access(path, os.X_OK), command
        if command.startswith("scripts/"):
            assert f"./{command}" in README


async def test_readme_tour_runs_as_written(realtime: Realtime) -> None:
    api = realtime.api
    sign_up, create_board, create_card, read_back, watch = graphql_blocks(README)

    signed_up = await api.data(sign_up)
    token = signed_up["signUp"]["token"]
    assert signed_up["signUp"]["user"]["email"] == "ann@example.com"

    board = (await api.data(create_board, token=token))["createBoard"]
    assert board["version"] == 1

    card = await api.data(create_card.replace("<board id>", board["id"]), token=token)
    assert card["createCard"]["title"] == "Write the announcement"
    card_id = card["createCard"]["id"]

    read = await api.data(read_back.replace("<board id>", board["id"]), token=token)
    assert read["board"] == {
        "name": "Launch",
        "owner": {"name": "Ann"},
        "members": [{"role": "OWNER", "user": {"name": "Ann"}}],
        "cards": [
            {
                "title": "Write the announcement",
                "done": False,
                "author": {"name": "Ann"},
                "comments": [],
            }
        ],
    }

    async with graphql_socket(realtime.server.ws_url, token, key="Authorization") as socket:
        await socket.subscribe(watch)
        await subscriptions_live(realtime.server.runtime, users=1)
        mark_done = re.search(r"\(`(mutation \{ updateCard.*?)`\)", README, flags=re.DOTALL)
        assert mark_done is not None
        await api.data(mark_done.group(1).replace("<card id>", card_id), token=token)
        # Notices of the card's creation may still be in flight: skip to the change.
        update = await socket.next_update()
        while not (update["op"] == "UPDATED" and update["typename"] == "Card"):
            update = await socket.next_update()
    assert update == {
        "op": "UPDATED",
        "typename": "Card",
        "id": card_id,
        "node": {"id": card_id, "title": "Write the announcement", "done": True},
    }
