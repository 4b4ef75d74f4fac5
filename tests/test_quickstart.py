"""docs/quickstart.md runs as written: its GraphQL operations, in order, against a live
server (both deployments), the subscription seeing what the page says it sees, and its
curl command answering from a shell."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import tool_missing
from tests.realtime_support import Realtime, Update, collect_until
from tests.test_docs import graphql_blocks
from tests.ws_client import GraphQLSocket, graphql_socket

QUICKSTART = (Path(__file__).resolve().parent.parent / "docs" / "quickstart.md").read_text()
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", QUICKSTART, flags=re.DOTALL)


def card_update(op: str) -> Callable[[Update], bool]:
    return lambda update: update["typename"] == "Card" and update["op"] == op


def board_update(update: Update) -> bool:
    return bool(update["typename"] == "Board" and update["op"] == "UPDATED")


async def test_the_quickstart_runs_as_written(realtime: Realtime) -> None:
    api = realtime.api
    (
        sign_up_ann,
        sign_up_bob,
        create_board,
        add_member,
        subscribe,
        create_card,
        mark_done,
        delete_card,
        read_board,
    ) = graphql_blocks(QUICKSTART)
    assert SHELL_BLOCKS[0].strip() == "./scripts/serve"

    ann = (await api.data(sign_up_ann))["signUp"]
    bob = (await api.data(sign_up_bob))["signUp"]
    assert (ann["user"]["name"], bob["user"]["name"]) == ("Ann", "Bob")
    board = (await api.data(create_board, token=ann["token"]))["createBoard"]
    assert board["version"] == 1
    with_board = lambda text: text.replace("<board id>", board["id"])  # noqa: E731
    member = await api.data(with_board(add_member), token=ann["token"])
    assert member["addMember"] == {"role": "EDITOR", "user": {"name": "Bob"}}

    # GraphiQL sends its Headers tab as the connection_init payload.
    async with graphql_socket(realtime.server.ws_url, ann["token"], key="Authorization") as tab:
        await tab.subscribe(subscribe)
        # The page's subscription starts "now"; make sure the server has it before Bob
        # writes (a change committed earlier is not part of "from now on").
        await _until_live(realtime, tab, ann["token"])

        card = (await api.data(with_board(create_card), token=bob["token"]))["createCard"]
        assert card == {
            "id": card["id"],
            "title": "Write the announcement",
            "done": False,
            "version": 1,
        }
        created, listed = await _each(tab, card_update("CREATED"), board_update)
        assert created["node"] == {
            "id": card["id"],
            "title": "Write the announcement",
            "done": False,
            "version": 1,
        }
        assert listed["node"]["cards"] == [{"title": "Write the announcement"}]

        with_card = lambda text: text.replace("<card id>", card["id"])  # noqa: E731
        await api.data(with_card(mark_done), token=bob["token"])
        done = (await collect_until(tab, card_update("UPDATED")))[-1]
        assert done["node"]["done"] is True
        assert done["node"]["version"] == 2

        await api.data(with_card(delete_card), token=bob["token"])
        deleted, emptied = await _each(tab, card_update("DELETED"), board_update)
        assert (deleted["id"], deleted["node"]) == (card["id"], None)
        assert emptied["node"]["cards"] == []

    read = await api.data(with_board(read_board), token=ann["token"])
    assert read["board"] == {
        "name": "Launch",
        "members": [
            {"role": "OWNER", "user": {"name": "Ann"}},
            {"role": "EDITOR", "user": {"name": "Bob"}},
        ],
        "cards": [],
    }

    await _curl_answers(realtime, SHELL_BLOCKS[1], ann["token"], board["id"])


async def _each(tab: GraphQLSocket, *wanted: Callable[[Update], bool]) -> list[Update]:
    """The first update matching each predicate, in the order of the predicates (one
    commit's updates may arrive in any order)."""
    found: list[Update | None] = [None] * len(wanted)
    while None in found:
        update = await tab.next_update()
        for i, matches in enumerate(wanted):
            if found[i] is None and matches(update):
                found[i] = update
    return [update for update in found if update is not None]


async def _until_live(realtime: Realtime, tab: GraphQLSocket, token: str) -> None:
    for attempt in range(1, 7):
        created = await realtime.api.data(
            "mutation($n: String!) { createBoard(input: {name: $n}) { id } }",
            {"n": f"probe {attempt}"},
            token=token,
        )
        probe: str = created["createBoard"]["id"]
        try:
            async with asyncio.timeout(1.0):
                await collect_until(tab, lambda u, probe=probe: u["id"] == probe)
            return
        except TimeoutError:
            continue
    raise AssertionError("the subscription never became live")


async def _curl_answers(realtime: Realtime, command: str, token: str, board: str) -> None:
    curl = shutil.which("curl")
    if curl is None:
        tool_missing("curl not found on PATH: the quickstart's shell example needs it")
    command = command.replace("http://localhost:8000", realtime.server.http_url)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        env={**os.environ, "TOKEN": token, "BOARD": board},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out) == {"data": {"board": {"name": "Launch", "cards": []}}}
