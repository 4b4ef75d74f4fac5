"""`python -m app`: run the server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from app.asgi import GRAPHQL_PATH, create_app
from app.logs import configure_logging
from app.server import CommitcastServer
from app.settings import ENVIRONMENT_VARIABLES, Settings, SettingsError
from app.web import DEFAULT_WEB_DIST, board_index
from app.ws_protocol import websocket_protocol


def _epilog() -> str:
    width = max(len(name) for name, _, _ in ENVIRONMENT_VARIABLES)
    lines = ["environment variables (read once at start):"]
    for name, default, meaning in ENVIRONMENT_VARIABLES:
        lines.append(f"  {name:<{width}}  {meaning}")
        lines.append(f"  {'':<{width}}  default: {default}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Commitcast: a GraphQL API whose clients receive every committed "
        "change they may see. Migrates the database, then serves GraphQL (HTTP and "
        f"WebSocket) and GraphiQL at {GRAPHQL_PATH}, /healthz, /readyz and /metrics.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log verbosity (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"commitcast: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, args.log_level)
    shown_host = "localhost" if args.host in ("0.0.0.0", "127.0.0.1", "::") else args.host  # noqa: S104
    print(f"Commitcast GraphiQL: http://{shown_host}:{args.port}{GRAPHQL_PATH}", flush=True)
    if board_index(DEFAULT_WEB_DIST) is not None:
        print(f"Commitcast board: http://{shown_host}:{args.port}/", flush=True)
    app = create_app(settings)
    server = CommitcastServer(
        server_config(app, args, settings),
        app.state.open_streams,
        tune_collector=settings.gc_tuning,
    )
    server.run()
    return 0


def server_config(app: Starlette, args: argparse.Namespace, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,  # keep configure_logging's setup: one format for every logger
        # uvicorn's websockets-sansio protocol, keeping less per connection (or uvicorn's
        # own, should this uvicorn not be what app.ws_protocol expects).
        ws=websocket_protocol(),
        # Larger messages close the socket (1009); compression is off (CPU, memory, and
        # compression side channels) and never negotiated.
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=False,
    )
