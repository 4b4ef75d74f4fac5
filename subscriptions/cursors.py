"""Resume cursors: opaque to clients, bound to the user they were issued to."""

from __future__ import annotations

import base64
import binascii
import re

_VERSION = "1"
_SHAPE = re.compile(r"^1:(\d{1,19}):(\d{1,19})$")


def encode_cursor(user_id: int, change_id: int) -> str:
    raw = f"{_VERSION}:{user_id}:{change_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, user_id: int) -> int | None:
    """The change id of a cursor issued to `user_id`; None when it is malformed or was
    issued to someone else."""
    if len(cursor) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    match = _SHAPE.match(raw)
    if match is None or int(match.group(1)) != user_id:
        return None
    return int(match.group(2))


# Why a cursor cannot be served: the reason of a RESYNC, in logs and metrics.
INVALID_CURSOR = "invalid_cursor"
"""Malformed, or issued to another user."""
EXPIRED_CURSOR = "expired_cursor"
"""Older than the change log's retention (CHANGE_LOG_RETENTION)."""
AHEAD_OF_LOG = "ahead_of_log"
"""Beyond the newest change: the database was restored or replaced since it was issued."""
RESYNC_REASONS = (INVALID_CURSOR, EXPIRED_CURSOR, AHEAD_OF_LOG)
