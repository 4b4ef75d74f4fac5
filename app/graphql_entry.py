"""The ASGI app: Starlette, with GraphQL requests and WebSockets dispatched before its
stack.

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

GraphQL over HTTP (GET and POST to the GraphQL path) skips the same layers, whose work
on every request (the router's matching, a wrapper around `send` each, about 3 % of an
`updateCard` request's CPU) does nothing for it: the view answers its own refusals
(app.http_policy), and an exception it lets out still reaches uvicorn, which logs it and
answers 500 as ServerErrorMiddleware would. Its request id is set as for everything
else (app.correlation.CorrelationIds). Other methods (HEAD, OPTIONS, ...) and paths go
through Starlette as before.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from app.correlation import ConnectionIds, CorrelationIds
from app.metrics import CountingSend


def route_path(scope: Scope) -> str:
    """The path the router would match: without the root path (as Starlette's)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path) :]
    return path


# What the GraphQL route answers over HTTP (the others get Starlette's 405).
GRAPHQL_METHODS = frozenset({"GET", "POST"})


class GraphQLFirst(Starlette):
    """Starlette, sending GraphQL requests and WebSockets for `graphql_path` straight to
    `graphql_app`, with their correlation ids set, WebSockets counted in
    `socket_gauge`."""

    def __init__(
        self, *, graphql_path: str, graphql_app: ASGIApp, socket_gauge: Gauge, **options: Any
    ) -> None:
        super().__init__(**options)
        self.graphql_path = graphql_path
        self.graphql_app = graphql_app
        self.socket_gauge = socket_gauge
        self._graphql_with_request_ids = CorrelationIds(graphql_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            kind == "http"
            and scope["method"] in GRAPHQL_METHODS
            and route_path(scope) == self.graphql_path
        ):
            scope["app"] = self  # as Starlette's own __call__: the view reads app.state
            await self._graphql_with_request_ids(scope, receive, send)
            return
        if kind != "websocket" or route_path(scope) != self.graphql_path:
            await super().__call__(scope, receive, send)
            return
        # In this frame, not in wrappers of their own: it is kept for the socket's life.
        scope["app"] = self
        counted = CountingSend(send, self.socket_gauge)
        try:
            with ConnectionIds(scope):
                await self.graphql_app(scope, receive, counted)
        finally:
            counted.end()
