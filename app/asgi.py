"""The ASGI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from app.graphql import GraphQLView
from app.health import healthz, readyz
from app.runtime import open_runtime
from app.settings import Settings
from app.streaming import OpenStreams
from app.web import DEFAULT_WEB_DIST, web_routes
from schema import build_schema

GRAPHQL_PATH = "/graphql"


def create_app(
    settings: Settings | None = None, *, stream_heartbeat_seconds: float | None = None
) -> Starlette:
    """Build the app. Nothing connects until the lifespan starts.

    `stream_heartbeat_seconds` overrides the keep-alive interval of subscriptions
    streamed over HTTP (app/streaming.py has the defaults); tests shorten it.
    """
    settings = settings or Settings.from_env()
    open_streams = OpenStreams()
    view = GraphQLView(
        build_schema(),
        allowed_origins=settings.allowed_origins,
        heartbeat_seconds=stream_heartbeat_seconds,
        open_streams=open_streams,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            app.state.runtime = runtime
            yield

    application = Starlette(
        routes=[
            *web_routes(DEFAULT_WEB_DIST, fallback_url=GRAPHQL_PATH),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route(GRAPHQL_PATH, view, methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, view),
        ],
        lifespan=lifespan,
    )
    # For the server (app.streaming.StreamEndingServer), which ends them at shutdown.
    application.state.open_streams = open_streams
    return application
