"""The ASGI app: Starlette, with GraphQL WebSockets dispatched before its stack.

An idle subscription keeps its whole ASGI call chain suspended for the connection's
life, one coroutine frame (and what it holds) per layer. For a WebSocket to the GraphQL
path, six of Starlette's layers do nothing but pass the socket on: ServerErrorMiddleware
lets websocket scopes through, ExceptionMiddleware (with its WebSocket object) only
handles Starlette's HTTPException and WebSocketException, which the view never raises,
and the router (three frames) only matches the path. Skipping them saves about 2 KiB per
idle socket. What matters for a socket stays: the correlation ids and the open-sockets
gauge wrap the view here exactly as the middleware does for everything else, and an
exception still reaches uvicorn, which logs it and closes the socket (or answers 500
before the handshake).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send


def route_path(scope: Scope) -> str:
    """The path the router would match: without the root path (as Starlette's)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path) :]
    return path


class SocketsFirst(Starlette):
    """Starlette, sending WebSockets for `socket_path` straight to `socket_app`."""

    def __init__(self, *, socket_path: str, socket_app: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        self.socket_path = socket_path
        self.socket_app = socket_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == self.socket_path:
            scope["app"] = self  # as Starlette's own __call__: the view reads app.state
            await self.socket_app(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
