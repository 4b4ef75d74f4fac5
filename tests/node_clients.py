"""Node.js client packages under clients/: installed from their committed lockfiles and
run as scripts against a live server (tests/test_apollo_client.py,
tests/test_client_recipes.py).

`npm ci` runs at most once per package per lockfile: a stamp in node_modules records the
lockfile digest it was installed from. Without node/npm the tests skip on a developer
machine and fail in CI (CI=true), like the PostgreSQL and Redis tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import tool_missing
from tests.realtime_support import Realtime

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
NPM_CI_TIMEOUT = 300.0
SCRIPT_TIMEOUT = 30.0
CONVERGENCE_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class NodeClient:
    node: str
    directory: Path


def installed_package(directory: Path) -> NodeClient:
    """node, with `directory`/node_modules installed from its package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        tool_missing(f"{missing} not found on PATH: the client tests need Node.js 18+")
        raise AssertionError("unreachable: tool_missing skips or fails")
    digest = hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()
    stamp = directory / "node_modules" / ".commitcast-lock-sha256"
    if not stamp.is_file() or stamp.read_text().strip() != digest:
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            tool_missing(f"`npm ci` in {directory} took longer than {NPM_CI_TIMEOUT:.0f} s")
            raise AssertionError("unreachable: tool_missing skips or fails") from None
        if result.returncode != 0:
            tool_missing(
                f"`npm ci` in {directory} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        stamp.write_text(digest)
    return NodeClient(node, directory)


async def run_node(
    client: NodeClient, env: dict[str, str], *args: str, within: float = SCRIPT_TIMEOUT
) -> tuple[int, str]:
    """Run `node <args>` in the package's directory (at most `within` seconds); its exit
    code and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        client.node,
        *args,
        cwd=client.directory,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(within):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        raise AssertionError(
            f"node {' '.join(args)} did not finish within {within:.0f} s:\n{text}"
        ) from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def shared_board_environment(realtime: Realtime) -> dict[str, str]:
    """Ann (A, the app under test) and Bob (B, who changes things) on one board with a
    card: the environment the client scripts read."""
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


def code_blocks(markdown: str, language: str) -> list[str]:
    """The fenced ```<language> blocks of a Markdown text, stripped."""
    blocks = [block.strip() for block in markdown.split("```")[1::2]]
    return [block.removeprefix(language).strip() for block in blocks if block.startswith(language)]
