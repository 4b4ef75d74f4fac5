"""/metrics (Prometheus text format) and the open WebSocket connections gauge.

The metric objects live in subscriptions.metrics (the relay, broker and subscriptions
count into them); this module exposes them over HTTP. With METRICS_TOKEN set, /metrics
answers only requests with `Authorization: Bearer <METRICS_TOKEN>`; without it, it is
open, like /healthz (keep it off the public internet at the load balancer, or set the
token). Each process serves its own values: scrape every process.
"""

from __future__ import annotations

import hmac

from prometheus_client import Gauge
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.runtime import Runtime
from subscriptions.metrics import Metrics


async def metrics_endpoint(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.metrics_token
    if token is not None and not _bears(request, token):
        return JSONResponse(
            {"error": "/metrics needs Authorization: Bearer <METRICS_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    # The Prometheus text format, or OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(runtime.metrics.registry), headers={"Content-Type": content_type})


def _bears(request: Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


class CountWebSockets:
    """Counts WebSocket connections from their accept to their end."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.gauge = metrics.websocket_connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        counted = CountingSend(send, self.gauge)
        try:
            await self.app(scope, receive, counted)
        finally:
            counted.end()


class CountingSend:
    """A WebSocket's `send`, counting the socket in `gauge` from its accept until
    `end()`. A small object rather than a closure: it lives as long as the socket."""

    __slots__ = ("_accepted", "_gauge", "_send")

    def __init__(self, send: Send, gauge: Gauge) -> None:
        self._send = send
        self._gauge = gauge
        self._accepted = False

    async def __call__(self, message: Message) -> None:
        await self._send(message)
        if message["type"] == "websocket.accept" and not self._accepted:
            self._accepted = True
            self._gauge.inc()

    def end(self) -> None:
        if self._accepted:
            self._accepted = False
            self._gauge.dec()
