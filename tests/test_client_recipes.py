"""The client recipes of docs/clients.md are the files under clients/, shown verbatim,
and each one works against a live server on both deployments: after another user
creates, edits and deletes cards, the recipe's normalized cache (Apollo, urql +
Graphcache, Relay) equals a fresh query and holds no deleted record; the Python `gql`
recipe receives the change and, restarted from its cursor, what it missed.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clients.python.commitcast_updates import follow_user_updates
from tests.node_clients import NodeClient, installed_package, run_node, shared_board_environment
from tests.realtime_support import Realtime, Update
from tests.redis_server import TcpProxy
from tests.support import Account, eventually
from tests.test_legacy_client import about, next_matching, until_live
from tests.ws_client import TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_DOC = ROOT / "docs" / "clients.md"
RECIPES = ROOT / "clients" / "recipes"
# Every file a recipe consists of; docs/clients.md shows each one whole.
RECIPE_FILES = (
    "clients/recipes/apollo.mjs",
    "clients/recipes/commitcast-link.mjs",
    "clients/recipes/urql.mjs",
    "clients/recipes/relay/RelayRecipe.js",
    "clients/recipes/relay.mjs",
    "clients/python/commitcast_updates.py",
)
# `<!-- recipe: path -->` followed by a fenced block holding that file (docs/clients.md
# is rendered from docs/_src/clients.md.in, which names the files instead).
SHOWN = re.compile(r"<!-- recipe: (\S+) -->\s*```\w*\n(.*?)```", flags=re.DOTALL)


@pytest.fixture(scope="session")
def recipes() -> NodeClient:
    """node, with clients/recipes/node_modules installed from the lockfile."""
    return installed_package(RECIPES)


def test_the_docs_show_every_recipe_file_verbatim() -> None:
    shown = {path: code for path, code in SHOWN.findall(CLIENTS_DOC.read_text())}
    assert sorted(shown) == sorted(RECIPE_FILES)
    for path, code in shown.items():
        assert code == (ROOT / path).read_text(), (
            f"docs/clients.md shows an old {path}: run `python3 docs/_src/render.py`"
        )


def test_the_relay_artifacts_are_compiled_from_the_documents(recipes: NodeClient) -> None:
    """relay/__generated__ is committed; `relay-compiler --validate` fails when the
    documents or schema.graphql changed since it was generated."""
    result = subprocess.run(
        [recipes.node, "node_modules/relay-compiler/cli.js", "--validate"],
        cwd=RECIPES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        "run `npx relay-compiler` in clients/recipes:\n" + result.stdout + result.stderr
    )


@pytest.mark.parametrize("recipe", ["apollo", "urql", "relay"])
async def test_a_js_recipe_keeps_its_cache_equal_to_a_fresh_query(
    realtime: Realtime, recipes: NodeClient, recipe: str
) -> None:
    environment = await shared_board_environment(realtime)
    code, output = await run_node(recipes, environment, "check.mjs", recipe)
    assert code == 0, f"the {recipe} recipe failed (exit {code}):\n{output}"
    summary = [line for line in output.splitlines() if line.startswith(f"{recipe} recipe:")]
    assert summary, output
    assert summary[-1].startswith(f"{recipe} recipe: OK"), output
    print(summary[-1])  # shown with `pytest -rP`


@dataclass
class App:
    """What an app using the Python recipe has applied, and the cursor it keeps."""

    applied: asyncio.Queue[Update] = field(default_factory=asyncio.Queue)
    cursor: str | None = None

    async def apply(self, update: Update) -> None:
        self.cursor = update["cursor"]
        await self.applied.put(update)


@asynccontextmanager
async def following(url: str, viewer: Account, app: App) -> AsyncIterator[None]:
    """The Python recipe running in a task from the app's cursor, until the block ends."""
    task = asyncio.create_task(
        follow_user_updates(
            url, lambda: viewer.token, app.apply, after=app.cursor, first_retry_wait=0.05
        )
    )
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def network(realtime: Realtime) -> AsyncIterator[TcpProxy]:
    """A network between the app and the server that the test can cut."""
    proxy = TcpProxy(int(urlsplit(realtime.server.http_url).port or 0))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def _connected(proxy: TcpProxy) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return proxy.connections == 1

    return check


async def test_the_python_recipe_resumes_from_its_cursor(realtime: Realtime) -> None:
    """After a dropped connection (the recipe reconnects by itself) and after a restart
    (the app passes the cursor it kept), the app receives exactly what it missed."""
    api = realtime.api
    ann = await api.account("Ann")
    bob = await api.account("Bob")
    board = await api.board(ann, "Shared")
    await api.add_member(ann, board, bob, "EDITOR")
    doomed = await api.card(ann, board, "Soon gone")
    app = App()

    async with (
        network(realtime) as proxy,
        following(f"ws://127.0.0.1:{proxy.port}/graphql", ann, app),
    ):
        # Connected first, so that the first probe is likely to find the subscription.
        await eventually(_connected(proxy), "the recipe to connect")
        await until_live(realtime, app.applied, ann)
        card = await api.card(bob, board, "From Bob")
        async with asyncio.timeout(TIMEOUT):
            created = await next_matching(app.applied, about("Card", card, op="CREATED"))
        assert created["node"]["title"] == "From Bob"
        assert created["node"]["board"] == {"id": board}

        # The network drops, and stays down while Bob renames the card.
        proxy.hold()
        assert proxy.cut() == 1
        await api.data(
            'mutation($c: ID!) { updateCard(input: {id: $c, title: "Renamed"}) { id } }',
            {"c": card},
            token=bob.token,
        )
        proxy.release()
        async with asyncio.timeout(TIMEOUT):
            renamed = await next_matching(app.applied, about("Card", card))
        assert (renamed["op"], renamed["node"]["title"]) == ("UPDATED", "Renamed")

    # The app has stopped; Bob changes things meanwhile.
    await api.data(
        "mutation($c: ID!) { updateCard(input: {id: $c, done: true}) { id } }",
        {"c": card},
        token=bob.token,
    )
    await api.data("mutation($c: ID!) { deleteCard(id: $c) }", {"c": doomed}, token=bob.token)

    # Started again from its cursor, the app first receives what it missed (no probe
    # needed: it is read from the change log).
    async with following(realtime.server.ws_url, ann, app), asyncio.timeout(TIMEOUT):
        done = await next_matching(app.applied, about("Card", card))
        deleted = await next_matching(app.applied, about("Card", doomed))
    assert done["op"] == "UPDATED"
    assert (done["node"]["title"], done["node"]["done"]) == ("Renamed", True)
    assert deleted == {
        "cursor": deleted["cursor"],
        "op": "DELETED",
        "typename": "Card",
        "id": doomed,
        "node": None,
    }
