"""The ASGI app: Starlette, with GraphQL WebSockets dispatched before its stack.

An idle subscription keeps its whole ASGI call chain suspended for the connection's
life, one coroutine frame (and what it holds) per layer. For a WebSocket to the GraphQL
path, six of Starlette's layers do nothing but pass the socket on: ServerErrorMiddleware
lets websocket scopes through, ExceptionMiddleware (with its WebSocket object) only
handles Starlette's HTTPException and WebSocketException, which the view never raises,
and the router (three frames) only matches the path. Skipping them saves about 2 KiB per
idle socket. What matters for a socket stays: the correlation ids and the open-sockets
gauge are set around the view here as the middleware sets them for everything else
(app.correlation.ConnectionIds, app.metrics.CountingSend), in this one frame instead of
four (about 1 KiB less per idle socket), and an exception still reaches uvicorn, which
logs it and closes the socket (or answers 500 before the handshake).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from app.correlation import ConnectionIds
from app.metrics import CountingSend


def route_path(scope: Scope) -> str:
    """The path the router would match: without the root path (as Starlette's)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path) :]
    return path


class SocketsFirst(Starlette):
    """Starlette, sending WebSockets for `socket_path` straight to `socket_app`, with
    their correlation ids set and counted in `socket_gauge`."""

    def __init__(
        self, *, socket_path: str, socket_app: ASGIApp, socket_gauge: Gauge, **options: Any
    ) -> None:
        super().__init__(**options)
        self.socket_path = socket_path
        self.socket_app = socket_app
        self.socket_gauge = socket_gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or route_path(scope) != self.socket_path:
            await super().__call__(scope, receive, send)
            return
        # In this frame, not in wrappers of their own: it is kept for the socket's life.
        scope["app"] = self  # as Starlette's own __call__: the view reads app.state
        counted = CountingSend(send, self.socket_gauge)
        try:
            with ConnectionIds(scope):
                await self.socket_app(scope, receive, counted)
        finally:
            counted.end()
