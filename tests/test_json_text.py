"""schema.json_text.compact_json: compact JSON of the same values as the standard
library's, for everything the transports send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schema.json_text import compact_json

VALUES: list[Any] = [
    {"id": "1", "type": "next", "payload": {"data": {"a": [1, -2, 2.5, True, None, "x"]}}},
    {"data": {"card": {"title": 'quote " backslash \\ newline \n tab \t', "n": 0}}},
    {"errors": [{"message": "é ü 漢 \u2028 😀", "extensions": {"code": "BAD_USER_INPUT"}}]},
    [],
    {},
    "plain",
]


@pytest.mark.parametrize("value", VALUES)
def test_decodes_to_the_same_value(value: Any) -> None:
    assert json.loads(compact_json(value)) == value


def test_is_compact_and_leaves_non_ascii_as_it_is() -> None:
    ascii_only = {"a": [1, {"b": "c"}], "d": None}
    assert compact_json(ascii_only) == json.dumps(ascii_only, separators=(",", ":"))
    assert compact_json({"t": "é"}) == '{"t":"é"}'


def test_encodes_what_orjson_refuses_as_the_standard_library_does() -> None:
    """Integers beyond 64 bits and keys that are not strings (say, a custom scalar's
    value): encoded as before rather than failing the response."""
    assert compact_json({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert compact_json({1: "a", None: "b"}) == '{"1":"a","null":"b"}'
