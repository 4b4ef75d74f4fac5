"""Two app processes sharing one PostgreSQL database and a private Redis, with a TCP
proxy on every link the fault injector cuts:

    clients ──client_link──▶ app a ──redis_link──▶ redis-server (ours, restartable)
    clients ──client_link──▶ app b ──redis_link──▶        ▲

Writers and the final fresh queries talk to the apps directly (`direct_url`); the
subscribers (WebSocket and their refetches) go through `client_link`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.redis_server import RedisServer, TcpProxy, redis_server, tcp_proxy
from tests.servers import SHUTDOWN_TIMEOUT_SECONDS, Server, app_environment, running_server


@dataclass
class AppProcess:
    name: str
    server: Server
    redis_link: TcpProxy
    client_link: TcpProxy
    alive: bool = True

    @property
    def direct_url(self) -> str:
        return self.server.base_url

    @property
    def client_http_url(self) -> str:
        return f"http://127.0.0.1:{self.client_link.port}"

    @property
    def client_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.client_link.port}/graphql"

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flushing of anything held in memory."""
        self.alive = False
        self.server.process.kill()
        await asyncio.to_thread(self.server.process.wait, SHUTDOWN_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's log, without uvicorn's access lines."""
        kept = [line for line in self.server.stderr.splitlines() if not line.startswith("INFO:")]
        return "\n".join(kept[-lines:])


@dataclass
class Cluster:
    redis: RedisServer
    apps: list[AppProcess] = field(default_factory=list)

    def app(self, name: str) -> AppProcess:
        return next(app for app in self.apps if app.name == name)

    def alive(self) -> list[AppProcess]:
        return [app for app in self.apps if app.alive]


@asynccontextmanager
async def running_cluster(
    database_url: str, workdir: Path, names: tuple[str, ...] = ("a", "b")
) -> AsyncIterator[Cluster]:
    """Everything is stopped on the way out, whatever happens (the exit stack unwinds
    proxies, processes and Redis in reverse order)."""
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(redis_server(workdir))
        cluster = Cluster(redis)
        # Both processes must accept each other's tokens: one key for the deployment.
        secret = secrets.token_urlsafe(32)
        for name in names:
            redis_link = await stack.enter_async_context(tcp_proxy(redis.port))
            directory = workdir / name
            directory.mkdir()
            env = app_environment(
                DATABASE_URL=database_url, BROKER_URL=redis_link.url(), SECRET_KEY=secret
            )
            server = stack.enter_context(running_server(env=env, cwd=directory))
            port = urlsplit(server.base_url).port
            assert port is not None
            client_link = await stack.enter_async_context(tcp_proxy(port))
            cluster.apps.append(AppProcess(name, server, redis_link, client_link))
        # In threads: the proxies to Redis run on this event loop, which must keep going.
        await asyncio.gather(
            *(asyncio.to_thread(app.server.wait_until_healthy) for app in cluster.apps)
        )
        yield cluster
