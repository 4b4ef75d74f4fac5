"""The ASGI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from app.correlation import CorrelationIds
from app.graphql import GraphQLView
from app.graphql_entry import GraphQLFirst
from app.health import healthz, readyz
from app.metrics import CountWebSockets, metrics_endpoint
from app.runtime import open_runtime
from app.settings import Settings
from app.streaming import OpenStreams
from app.web import DEFAULT_WEB_DIST, web_routes
from schema import build_schema
from subscriptions.metrics import Metrics

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
        build_schema(limits=settings.query_limits, introspection=settings.allows_introspection),
        graphql_ide="graphiql" if settings.serves_graphiql else None,
        allowed_origins=settings.allowed_origins,
        connection_init_wait_timeout=timedelta(seconds=settings.ws_connection_init_timeout_seconds),
        max_subscriptions_per_connection=settings.ws_max_subscriptions,
        heartbeat_seconds=stream_heartbeat_seconds,
        open_streams=open_streams,
    )
    # The app's own registry: several apps in one process (tests) never collide.
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings, metrics) as runtime:
            app.state.runtime = runtime
            yield

    application = GraphQLFirst(
        # GraphQL requests and WebSockets skip Starlette's middleware stack and router
        # (see app/graphql_entry.py), with the same ids and counting as the middleware
        # below. (The route is still there for HEAD, and the 405 of other methods.)
        graphql_path=GRAPHQL_PATH,
        graphql_app=view,
        socket_gauge=metrics.websocket_connections,
        routes=[
            *web_routes(DEFAULT_WEB_DIST, fallback_url=GRAPHQL_PATH),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route(GRAPHQL_PATH, view, methods=["GET", "POST"]),
        ],
        middleware=[
            # Outermost: the ids are set for everything below, socket counting included.
            Middleware(CorrelationIds),
            Middleware(CountWebSockets, metrics=metrics),
        ],
        lifespan=lifespan,
    )
    # For the server (app.streaming.StreamEndingServer), which ends them at shutdown.
    application.state.open_streams = open_streams
    return application
