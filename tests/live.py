"""A real server on a real socket, in this process: uvicorn serving create_app()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from app.asgi import create_app
from app.runtime import Runtime
from app.server import CommitcastServer
from app.settings import Settings
from app.ws_protocol import websocket_protocol
from tests.servers import free_port

STARTUP_TIMEOUT = 20.0


@dataclass(frozen=True)
class LiveServer:
    app: Starlette
    server: uvicorn.Server
    http_url: str
    ws_url: str

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime


@asynccontextmanager
async def live_server(
    settings: Settings,
    *,
    stream_heartbeat_seconds: float | None = None,
    tune_collector: bool = False,
) -> AsyncIterator[LiveServer]:
    """`python -m app`'s server, in this process. The garbage collector's tuning
    (settings.gc_tuning in production) is process-wide, so it is left off unless asked."""
    app = create_app(settings, stream_heartbeat_seconds=stream_heartbeat_seconds)
    port = free_port()
    config = local_config(app, port, lifespan="on", ws_max_size=settings.ws_max_message_bytes)
    server = CommitcastServer(config, app.state.open_streams, tune_collector=tune_collector)
    async with serving(server):
        yield LiveServer(app, server, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/graphql")


def local_config(asgi: Any, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for a test server on 127.0.0.1:`port`, with WebSockets served
    as `python -m app` serves them."""
    return uvicorn.Config(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws=websocket_protocol(),
        ws_per_message_deflate=False,
        **options,
    )


@asynccontextmanager
async def serving(server: uvicorn.Server) -> AsyncIterator[None]:
    """`server` running in this process (started when this enters) until the block ends."""
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@asynccontextmanager
async def plain_server(asgi: Any, **options: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """Any ASGI app served as `python -m app` serves WebSockets; its ws:// URL and server."""
    port = free_port()
    server = uvicorn.Server(local_config(asgi, port, **{"lifespan": "off", **options}))
    async with serving(server):
        yield f"ws://127.0.0.1:{port}/", server
