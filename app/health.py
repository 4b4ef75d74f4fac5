"""/healthz (the process answers) and /readyz (database and broker reachable)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.runtime import Runtime

CHECK_TIMEOUT_SECONDS = 2.0


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    checks = {
        "database": _check_database(runtime),
        "broker": _check_broker(runtime),
    }
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    ready = all(result == "ok" for result in results.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **results},
        status_code=200 if ready else 503,
    )


async def _check_database(runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the body says which
        return f"error: {type(exc).__name__}: {exc}".strip()
    return "ok"


async def _check_broker(runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await runtime.broker.ping()
    except Exception as exc:  # any failure means "not ready"; the body says which
        return f"error: {type(exc).__name__}: {exc}".strip()
    return "ok"
