"""The ASGI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route, WebSocketRoute

from app.correlation import CorrelationIds
from app.graphql import GraphQLView
from app.health import healthz, readyz
from app.metrics import CountWebSockets, metrics_endpoint
from app.runtime import open_runtime
from app.settings import Settings
from schema import build_schema
from subscriptions.metrics import Metrics

GRAPHQL_PATH = "/graphql"


async def _home(_request: Request) -> RedirectResponse:
    return RedirectResponse(GRAPHQL_PATH)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app. Nothing connects until the lifespan starts."""
    settings = settings or Settings.from_env()
    view = GraphQLView(build_schema(), allowed_origins=settings.allowed_origins)
    # The app's own registry: several apps in one process (tests) never collide.
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings, metrics) as runtime:
            app.state.runtime = runtime
            yield

    return Starlette(
        routes=[
            Route("/", _home),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route(GRAPHQL_PATH, view, methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, view),
        ],
        middleware=[
            # Outermost: the ids are set for everything below, socket counting included.
            Middleware(CorrelationIds),
            Middleware(CountWebSockets, metrics=metrics),
        ],
        lifespan=lifespan,
    )
