"""A delivered update's `next` message, sent the short way.

Over graphql-transport-ws, strawberry sends each result through its operation's
`send_next` (a message dict), `send_operation_message`, the handler's `send_message`,
the WebSocket adapter's `send_json` (the view's encoder) and Starlette's `send_text`.
For a result that is only data shared by identical subscriptions
(schema.json_text.EncodedOnce: a delivered update; `sent_the_short_way`), the handler
(app.graphql) makes the same text at once (app.encoding.next_message, from the JSON
encoded once for all of them) and hands it to Starlette's WebSocket itself: the same
bytes, the same checks on the way, without those layers for every socket and update.

The way replaces part of strawberry's code (our range is `strawberry-graphql>=0.341`,
unpinned), so it is only taken while strawberry's steps read as the copies below,
compared with `ast` once, at first use; otherwise `strawberry_send_problem()` says why,
every result goes strawberry's way, and one warning is logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types.execution import ExecutionResult

from app.source_check import code_dump
from schema.json_text import EncodedOnce

logger = logging.getLogger(__name__)

# Per step: the installed function, and the source the short way was written against.
Steps = dict[str, tuple[Callable[..., object], str]]

# strawberry 0.341's steps from a result to Starlette's WebSocket, which the short way
# takes in one: `next_message` for the message's text, then Starlette's
# `send({"type": "websocket.send", "text": ...})` (what its `send_text` does), with
# WebSocketDisconnect raised as WebSocketDisconnected, nothing sent once the operation
# completed.
_STRAWBERRY_STEPS: Steps = {
    "Operation.send_next": (
        Operation.send_next,
        """
async def send_next(self, execution_result: ExecutionResult) -> None:
    next_payload: NextMessagePayload = {"data": execution_result.data}

    if execution_result.errors:
        next_payload["errors"] = [err.formatted for err in execution_result.errors]

    if execution_result.extensions:
        next_payload["extensions"] = execution_result.extensions

    await self.send_operation_message(
        {"id": self.id, "type": "next", "payload": next_payload}
    )
""",
    ),
    "Operation.send_operation_message": (
        Operation.send_operation_message,
        """
async def send_operation_message(self, message: Message) -> None:
    if self.completed:
        return
    if message["type"] == "complete" or message["type"] == "error":
        self.completed = True
        # de-register the operation _before_ sending the final message
        self.handler.forget_id(self.id)
    await self.handler.send_message(message)
""",
    ),
    "BaseGraphQLTransportWSHandler.send_message": (
        BaseGraphQLTransportWSHandler.send_message,
        """
async def send_message(self, message: Message) -> None:
    await self.websocket.send_json(message)
""",
    ),
    "ASGIWebSocketAdapter.send_json": (
        ASGIWebSocketAdapter.send_json,
        """
async def send_json(self, message: Mapping[str, object]) -> None:
    try:
        encoded_data = self.view.encode_json(message)
        if isinstance(encoded_data, bytes):
            await self.ws.send_bytes(encoded_data)
        else:
            await self.ws.send_text(encoded_data)
    except WebSocketDisconnect as exc:
        raise WebSocketDisconnected from exc
""",
    ),
}


@functools.cache
def strawberry_send_problem() -> str | None:
    """Why the short way can't stand in for strawberry's steps, or None if it can."""
    return steps_problem(_STRAWBERRY_STEPS)


def steps_problem(steps: Steps) -> str | None:
    """The first of `steps` (name: the installed function, the source expected) whose
    source is not the one expected, and why; None if all are."""
    for name, (found, expected) in steps.items():
        try:
            source = inspect.getsource(found)
        except (OSError, TypeError) as exc:
            return f"cannot read strawberry's {name} ({exc})"
        try:
            same = code_dump(source) == code_dump(expected)
        except SyntaxError as exc:
            return f"cannot parse strawberry's {name} ({exc})"
        if not same:
            return f"strawberry's {name} is not the one app.send_next expects"
    return None


@functools.cache
def warn_once(problem: str) -> None:
    logger.warning("Sending every subscription result through strawberry's layers: %s", problem)


def sent_the_short_way(websocket: object, result: ExecutionResult) -> EncodedOnce | None:
    """`result`'s shared data when its `next` message may be sent the short way (only
    shared data, on strawberry's ASGI adapter, strawberry's steps as expected); None
    when it goes strawberry's way."""
    data = result.data
    if (
        type(data) is not EncodedOnce
        or result.errors
        or result.extensions
        or type(websocket) is not ASGIWebSocketAdapter
    ):
        return None
    problem = strawberry_send_problem()
    if problem is not None:
        warn_once(problem)
        return None
    return data
