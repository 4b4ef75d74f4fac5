"""Logging: one line per event on stderr, as readable text or as one JSON object per line
(LOG_FORMAT), every line of a request or WebSocket connection carrying its ids.

The ids live in context variables set by app.correlation for each request and
connection; tasks started inside (a subscription's operation) inherit them, so every
line about a connection names it, whichever module logs it. uvicorn's own loggers
(startup, errors, access log) go through the same handler and format.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

request_id: ContextVar[str | None] = ContextVar("commitcast_request_id", default=None)
connection_id: ContextVar[str | None] = ContextVar("commitcast_connection_id", default=None)

# Everything a LogRecord has by itself; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured duplicate of the message
    "taskName",
}
# uvicorn.access logs '%s - "%s %s HTTP/%s" %d' with these arguments.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def current_ids() -> dict[str, str]:
    ids = {"request_id": request_id.get(), "connection_id": connection_id.get()}
    return {name: value for name, value in ids.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", request_id?, connection_id?, extras...,
    "exception"?} on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_ids(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(zip(_ACCESS_FIELDS, record.args, strict=False))
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [request_id=... connection_id=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = current_ids()
        if not ids:
            return line
        tags = " ".join(f"{name}={value}" for name, value in ids.items())
        head, newline, rest = line.partition("\n")  # keep a traceback below the ids
        return f"{head} [{tags}]{newline}{rest}"


def configure_logging(log_format: Literal["text", "json"], level: str) -> None:
    """Send every logger's records, uvicorn's included, to stderr in `log_format`.
    (Run uvicorn with log_config=None afterwards, so that it keeps this setup.)"""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        uvicorn_logger = logging.getLogger(name)
        for old in list(uvicorn_logger.handlers):
            uvicorn_logger.removeHandler(old)
        uvicorn_logger.propagate = True
