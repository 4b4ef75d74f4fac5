"""SECURITY.md's threat model names a test on each line, and each named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.settings import Settings
from schema.limits import QueryLimits

ROOT = Path(__file__).resolve().parent.parent
SECURITY = ROOT / "SECURITY.md"
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def threat_model_rows() -> list[str]:
    text = SECURITY.read_text()
    section = text.split("## Threat model", 1)[1].split("\n## ", 1)[0]
    return [
        line
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| threat ", "|---"))
    ]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def test_every_threat_names_a_test_that_exists() -> None:
    rows = threat_model_rows()
    assert len(rows) >= 30
    for row in rows:
        references = TEST_REFERENCE.findall(row)
        assert references, f"threat model line without a test: {row}"
        for file, name in references:
            path = ROOT / file
            assert path.is_file(), f"{file} does not exist ({row})"
            assert name in defined_tests(path), f"{file} has no {name} ({row})"


def test_every_limit_setting_is_documented() -> None:
    text = SECURITY.read_text()
    for setting in (
        "MAX_QUERY_DEPTH",
        "MAX_QUERY_ALIASES",
        "MAX_QUERY_TOKENS",
        "MUTATION_RATE_LIMIT",
        "LOGIN_RATE_LIMIT",
        "SIGN_IN_ADDRESS_RATE_LIMIT",
        "WS_MAX_MESSAGE_SIZE",
        "WS_CONNECTION_INIT_TIMEOUT",
        "WS_MAX_SUBSCRIPTIONS",
        "WS_MAX_SOCKETS_PER_USER",
        "GRAPHIQL",
        "INTROSPECTION",
        "SECRET_KEY",
        "TOKEN_TTL",
    ):
        assert f"`{setting}" in text, setting


def test_documented_limit_defaults_are_the_real_ones() -> None:
    rows = {
        match.group(2): match.group(1).strip()
        for match in re.finditer(r"\| ([^|]+) \| `([A-Z_]+)` \|", SECURITY.read_text())
    }
    limits = QueryLimits()
    assert rows["MAX_QUERY_DEPTH"] == str(limits.max_depth)
    assert rows["MAX_QUERY_ALIASES"] == str(limits.max_aliases)
    assert rows["MAX_QUERY_TOKENS"] == str(limits.max_tokens)
    settings = Settings()
    for name, rate in (
        ("MUTATION_RATE_LIMIT", settings.mutation_rate),
        ("LOGIN_RATE_LIMIT", settings.login_rate),
        ("SIGN_IN_ADDRESS_RATE_LIMIT", settings.sign_in_address_rate),
    ):
        assert rate is not None
        assert rows[name] == f"{rate.limit} per {rate.window_seconds} s", name
