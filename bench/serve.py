"""Run one benchmark target as a server process: `python -m bench.serve ours|baseline`.

The same uvicorn settings as `python -m app` (uvloop and httptools when installed,
no per-message compression; Commitcast with the WebSocket protocol of app.ws_protocol
and the server of app.server (the garbage collector tuned once started) as
`python -m app` runs it, the textbook with uvicorn's stock websockets-sansio and server
as a tutorial's would). Besides the app, `GET /__bench/stats`
answers `{"statements": n, "pid": p}`: the number of SQL statements this process has
sent (an SQLAlchemy event on every engine, and asyncpg's query logger for what runs on
the driver directly), which is how the benchmark measures statements per change.

`--no-realtime` runs the target with real-time off, for the mutation-latency
comparison: Commitcast without change capture (no change log, no relay), the baseline
without publishing.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable
from typing import Any

import uvicorn
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from models.database import is_driver_statement

STATS_PATH = "/__bench/stats"


class Statements:
    count = 0

    @classmethod
    def install(cls) -> None:
        def counted(*_args: Any) -> None:
            cls.count += 1

        event.listen(Engine, "before_cursor_execute", counted)

        # What runs on asyncpg itself, not through SQLAlchemy's cursor (Commitcast's
        # models.database.fetch_on_driver: the revocation check, the change-log reads),
        # asyncpg's query logger sees. It also sees SQLAlchemy's transaction control and
        # pings, and asyncpg's type lookups, which are not counted (is_driver_statement;
        # they never were).
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            driver: Any = getattr(dbapi_connection, "driver_connection", None)
            if hasattr(driver, "add_query_logger"):
                driver.add_query_logger(cls._on_driver)

        event.listen(Pool, "connect", on_connect)

    @classmethod
    def _on_driver(cls, record: Any) -> None:
        if is_driver_statement(record.query):
            cls.count += 1


class WithStats:
    """The app, plus STATS_PATH. A plain function returning the app's coroutine, not a
    coroutine of its own: a coroutine frame here would be kept for every open socket's
    life, and the memory workload would count it as the target's (uvicorn is told the
    interface, since it takes a non-async `__call__` for ASGI 2)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            return self._stats(send)
        result: Awaitable[None] = self.app(scope, receive, send)
        return result

    @staticmethod
    async def _stats(send: Any) -> None:
        body = json.dumps({"statements": Statements.count, "pid": os.getpid()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def ours(realtime: bool) -> Any:
    import app.runtime
    from app.asgi import create_app
    from app.settings import Settings

    if not realtime:
        # Sessions without change capture: no change log rows, nothing to relay.
        app.runtime.CapturingSession = Session  # type: ignore[misc,assignment]
    # The benchmark is one client address signing up hundreds of users, one user holding
    # 100 sockets and mutating hundreds of times a second: the abuse limits (SECURITY.md)
    # would measure themselves. Off unless the environment sets them.
    for name, value in BENCH_LIMITS.items():
        os.environ.setdefault(name, value)
    return create_app(Settings.from_env())


BENCH_LIMITS = {
    "WS_MAX_SOCKETS_PER_USER": "100000",
    "MUTATION_RATE_LIMIT": "off",
    "LOGIN_RATE_LIMIT": "off",
    "SIGN_IN_ADDRESS_RATE_LIMIT": "off",
}


def baseline(realtime: bool) -> Any:
    from bench.baseline.app import create_app

    os.environ["BENCH_REALTIME"] = "1" if realtime else "0"
    return create_app()


def ws_protocol(target: str) -> Any:
    """What each target's own server runs: Commitcast's leaner protocol (app.ws_protocol,
    as `python -m app`), the textbook's uvicorn's stock one."""
    if target == "baseline":
        return "websockets-sansio"
    from app.ws_protocol import websocket_protocol

    return websocket_protocol()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("target", choices=["ours", "baseline"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-realtime", action="store_true")
    args = parser.parse_args()
    Statements.install()
    factory = ours if args.target == "ours" else baseline
    app = factory(not args.no_realtime)
    config = uvicorn.Config(
        WithStats(app),
        interface="asgi3",
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws=ws_protocol(args.target),
        ws_per_message_deflate=False,
        backlog=8192,
        timeout_keep_alive=120,
    )
    server(args.target, config, app).run()


def server(target: str, config: uvicorn.Config, app: Any) -> uvicorn.Server:
    """What each target's own server is: `python -m app`'s for Commitcast (ending
    streams at shutdown, the garbage collector tuned once started: app/gc_tuning.py),
    uvicorn's plain one for the textbook."""
    if target == "baseline":
        return uvicorn.Server(config)
    from app.server import CommitcastServer
    from app.settings import Settings

    tune = Settings.from_env().gc_tuning
    return CommitcastServer(config, app.state.open_streams, tune_collector=tune)


if __name__ == "__main__":
    main()
