"""A real Apollo Client (Node.js) keeps its normalized cache equal to a fresh query, fed
only by `userUpdates`, with no cache code beyond evicting DELETED records
(clients/apollo-test/cache-convergence.mjs), and the documented resume recipe
(commitcast-link.mjs) carries it across a network drop and through RESYNC
(clients/apollo-test/resume.mjs). Both run against a live server on both deployments.

The JS dependencies are installed with `npm ci` from the committed lockfile, once per
session and only when node_modules is missing or older than the lockfile. Without
node/npm the test skips on a developer machine and fails in CI (CI=true), like the
PostgreSQL and Redis tests.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.node_clients import NodeClient, installed_node_client
from tests.realtime_support import Realtime

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "apollo-test"
SCRIPT = CLIENT_DIR / "cache-convergence.mjs"
RESUME_SCRIPT = CLIENT_DIR / "resume.mjs"
HELPER = CLIENT_DIR / "commitcast-link.mjs"
README = CLIENT_DIR / "README.md"
CONVERGENCE_TIMEOUT_MS = 15_000
SCRIPT_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def apollo_client() -> NodeClient:
    """node, with clients/apollo-test/node_modules installed from the lockfile."""
    return installed_node_client("apollo-test", "the Apollo client test")


async def run_node(
    client: NodeClient, env: dict[str, str], script: Path = SCRIPT
) -> tuple[int, str]:
    """Run a script of clients/apollo-test; its exit code and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        client.node,
        str(script),
        cwd=client.directory,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        raise AssertionError(
            f"{script.name} did not finish within {SCRIPT_TIMEOUT:.0f} s:\n{text}"
        ) from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def shared_board_environment(realtime: Realtime) -> dict[str, str]:
    """Ann (A, the Apollo app) and Bob (B, who changes things) on one board with a card:
    the environment the scripts read."""
    api = realtime.api
    ann = await api.account("Ann")
    bob = await api.account("Bob")
    board = await api.board(ann, "Launch")
    await api.add_member(ann, board, bob, "EDITOR")
    await api.card(ann, board, "Already there")
    return {
        "COMMITCAST_HTTP_URL": realtime.server.http_url,
        "COMMITCAST_WS_URL": realtime.server.ws_url,
        "COMMITCAST_TOKEN_A": ann.token,
        "COMMITCAST_TOKEN_B": bob.token,
        "COMMITCAST_BOARD_ID": board,
        "COMMITCAST_TIMEOUT_MS": str(CONVERGENCE_TIMEOUT_MS),
    }


async def test_apollo_cache_converges_to_a_fresh_query(
    realtime: Realtime, apollo_client: NodeClient
) -> None:
    code, output = await run_node(
        apollo_client,
        await shared_board_environment(realtime),
    )
    assert code == 0, f"the Apollo cache did not converge (exit {code}):\n{output}"
    summary = [line for line in output.splitlines() if line.startswith("apollo cache convergence:")]
    assert summary, output
    assert summary[-1].startswith("apollo cache convergence: OK"), output
    print(summary[-1])  # shown with `pytest -rP`


async def test_apollo_app_resumes_from_its_cursor_and_refetches_on_resync(
    realtime: Realtime, apollo_client: NodeClient
) -> None:
    """resume.mjs: across a network drop A's app resumes with its last cursor and its
    cache equals a fresh query without any refetch; from an unusable cursor it gets
    RESYNC, refetches its active query, and converges."""
    code, output = await run_node(
        apollo_client,
        await shared_board_environment(realtime),
        RESUME_SCRIPT,
    )
    assert code == 0, f"the resume recipe failed (exit {code}):\n{output}"
    summaries = [line for line in output.splitlines() if line.startswith("apollo res")]
    assert [line.split(":")[0] for line in summaries] == ["apollo resume", "apollo resync"], output
    assert all(": OK: " in line for line in summaries), output
    for line in summaries:
        print(line)  # shown with `pytest -rP`


def test_the_readme_shows_the_tested_helper() -> None:
    """The recipe in README.md is commitcast-link.mjs itself, not a paraphrase."""
    helper = HELPER.read_text().strip()
    blocks = [block.strip() for block in README.read_text().split("```")[1::2]]
    assert any(block.removeprefix("js").strip() == helper for block in blocks), (
        "README.md must show commitcast-link.mjs verbatim in a ```js block"
    )
