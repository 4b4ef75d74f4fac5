"""Node.js clients under clients/: `npm ci` from the committed lockfile, once per
session and only when node_modules is missing or was built from another lockfile.
Without node/npm a test skips on a developer machine and fails in CI (CI=true), like
the PostgreSQL and Redis tests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

CLIENTS_DIR = Path(__file__).resolve().parent.parent / "clients"
NPM_CI_TIMEOUT = 300.0


@dataclass(frozen=True)
class NodeClient:
    node: str
    directory: Path


def tool_missing(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


def installed_node_client(name: str, purpose: str) -> NodeClient:
    """node, with clients/<name>/node_modules installed from its lockfile."""
    directory = CLIENTS_DIR / name
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, path in (("node", node), ("npm", npm)) if not path)
        tool_missing(f"{missing} not found on PATH: {purpose} needs Node.js 18+")
        raise AssertionError("unreachable: tool_missing skips or fails")
    lockfile = directory / "package-lock.json"
    # Written after a successful `npm ci`: the lockfile digest node_modules was built from.
    stamp = directory / "node_modules" / ".commitcast-lock-sha256"
    digest = hashlib.sha256(lockfile.read_bytes()).hexdigest()
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
