"""Opaque global IDs: base64url("<Type>:<primary key>") without padding.

Unique across types, so `node(id:)` can resolve any of them and Apollo's default
cache key `__typename:id` and Relay's store need no configuration.
"""

from __future__ import annotations

import base64
import binascii
import re

from schema.errors import bad_input

# Filled by schema.nodes.node_type: only ids of registered Node types decode.
_NODE_TYPES: set[str] = set()
_MAX_PK = 2**63 - 1
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def register_typename(typename: str) -> None:
    _NODE_TYPES.add(typename)


def forget_typename(typename: str) -> None:
    _NODE_TYPES.discard(typename)


def encode_id(typename: str, pk: int) -> str:
    raw = f"{typename}:{pk}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_id(global_id: str, *, field: str) -> tuple[str, int]:
    """Return (typename, pk), or raise BAD_USER_INPUT naming `field`."""
    if not _ALPHABET.match(global_id):
        raise bad_input(field, "not a valid ID")
    try:
        raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_input(field, "not a valid ID") from None
    typename, _, digits = raw.partition(":")
    if typename not in _NODE_TYPES or not digits.isdigit() or digits != str(int(digits)):
        raise bad_input(field, "not a valid ID")
    pk = int(digits)
    if not 0 < pk <= _MAX_PK:
        raise bad_input(field, "not a valid ID")
    return typename, pk


def decode_typed_id(global_id: str, typename: str, *, field: str) -> int:
    """Return the primary key of a `typename` ID, or raise BAD_USER_INPUT."""
    actual, pk = decode_id(global_id, field=field)
    if actual != typename:
        raise bad_input(field, f"expected a {typename} ID, got a {actual} ID")
    return pk
