"""Input limits (documented in the README) and the checks that enforce them."""

from __future__ import annotations

import math
import re

from schema.errors import bad_input

USER_NAME_MAX = 100
EMAIL_MAX = 254
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
BOARD_NAME_MAX = 100
CARD_TITLE_MAX = 200
CARD_DESCRIPTION_MAX = 10_000
COMMENT_BODY_MAX = 5_000
NODES_MAX_IDS = 100
POSITION_MAX_ABS = 1e15

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _storable(field: str, value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8:
    # refuse both here instead of failing in the driver.
    if "\x00" in value:
        raise bad_input(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_input(field, "must be valid Unicode text") from None
    return value


def required_text(field: str, value: str, max_length: int) -> str:
    """Strip surrounding white space; refuse empty and oversized values."""
    cleaned = _storable(field, value).strip()
    if not cleaned:
        raise bad_input(field, "must not be empty")
    if len(cleaned) > max_length:
        raise bad_input(field, f"must be at most {max_length} characters")
    return cleaned


def optional_text(field: str, value: str, max_length: int) -> str:
    """Like required_text, but empty is allowed (a card description)."""
    cleaned = _storable(field, value).strip()
    if len(cleaned) > max_length:
        raise bad_input(field, f"must be at most {max_length} characters")
    return cleaned


def email(field: str, value: str) -> str:
    cleaned = _storable(field, value).strip()
    if len(cleaned) > EMAIL_MAX or not _EMAIL.match(cleaned):
        raise bad_input(field, "must be an email address such as ann@example.com")
    return cleaned


def password(field: str, value: str) -> str:
    _storable(field, value)
    if len(value) < PASSWORD_MIN:
        raise bad_input(field, f"must be at least {PASSWORD_MIN} characters")
    if len(value) > PASSWORD_MAX:
        raise bad_input(field, f"must be at most {PASSWORD_MAX} characters")
    return value


def position(field: str, value: float) -> float:
    if not math.isfinite(value) or abs(value) > POSITION_MAX_ABS:
        raise bad_input(
            field, f"must be a finite number between -{POSITION_MAX_ABS:g} and {POSITION_MAX_ABS:g}"
        )
    return value


def expected_version(field: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise bad_input(field, "must be a positive version number")
    return value
