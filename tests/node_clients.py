"""Real JavaScript clients (Node.js packages under clients/) run by the tests.

Each package's dependencies are installed with `npm ci` from its committed lockfile,
only when node_modules is missing or was built from another lockfile. Without
node/npm a test skips on a developer machine and fails in CI (CI=true), like the
PostgreSQL and Redis tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

CLIENTS_DIR = Path(__file__).resolve().parent.parent / "clients"
# Written after a successful `npm ci`: the lockfile digest node_modules was built from.
STAMP_NAME = ".commitcast-lock-sha256"
NPM_CI_TIMEOUT = 300.0


@dataclass(frozen=True)
class NodeClient:
    node: str
    directory: Path


def tool_missing(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


def installed_client(name: str) -> NodeClient:
    """node, with clients/<name>/node_modules installed from its lockfile."""
    directory = CLIENTS_DIR / name
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(tool for tool, path in (("node", node), ("npm", npm)) if not path)
        tool_missing(f"{missing} not found on PATH: clients/{name} needs Node.js 18+")
        raise AssertionError("unreachable: tool_missing skips or fails")
    digest = hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()
    stamp = directory / "node_modules" / STAMP_NAME
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
    client: NodeClient, script: Path, env: dict[str, str], within: float
) -> tuple[int, str]:
    """Run a script of the client's package; its exit code and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        client.node,
        str(script),
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
            f"{script.name} did not finish within {within:.0f} s:\n{text}"
        ) from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def code_blocks(markdown: str, language: str) -> list[str]:
    """The fenced ```<language> blocks of a Markdown text, stripped."""
    blocks = [block.strip() for block in markdown.split("```")[1::2]]
    return [block.removeprefix(language).strip() for block in blocks if block.startswith(language)]
