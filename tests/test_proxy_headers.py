"""app/proxy_headers.py: uvicorn's proxy-headers rewriting without a frame of its own,
the same as awaiting uvicorn's middleware, and its fallback when uvicorn's middleware
does not complete without suspending."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.proxy_headers import FramelessProxyHeaders, rewrite_scope
from app.settings import Settings
from tests.live import live_server

FORWARDED = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2")]


def scope(client: str, kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "client": (client, 5000), "scheme": "http", "headers": FORWARDED}


async def through_uvicorns(trusted: str, request: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.update(scope)

    await ProxyHeadersMiddleware(app, trusted_hosts=trusted)(request, None, None)  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.1, 10.0.0.2", "*", "192.0.2.1"])
@pytest.mark.parametrize("client", ["127.0.0.1", "198.51.100.9"])
@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_the_rewrite_is_uvicorns(trusted: str, client: str, kind: str) -> None:
    expected = await through_uvicorns(trusted, scope(client, kind))
    rewritten = scope(client, kind)
    rewrite_scope(ProxyHeadersMiddleware(None, trusted_hosts=trusted), rewritten)  # type: ignore[arg-type]
    assert (rewritten["client"], rewritten["scheme"]) == (expected["client"], expected["scheme"])


async def test_the_app_gets_the_rewritten_scope_and_its_coroutine_is_returned() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> str:
        seen.append((scope["client"], scope["scheme"], receive, send))
        return "the app's"

    middleware = FramelessProxyHeaders(app, trusted_hosts="127.0.0.1")
    assert middleware.problem is None
    call = middleware(scope("127.0.0.1", "websocket"), "receive", "send")
    assert asyncio.iscoroutine(call)  # the app's own coroutine: no frame around it
    assert await call == "the app's"
    assert seen == [(("10.0.0.2", 0), "wss", "receive", "send")]  # the last untrusted hop


async def test_lifespan_passes_through_untouched() -> None:
    async def app(scope: Any, _receive: Any, _send: Any) -> str:
        return str(scope["type"])

    middleware = FramelessProxyHeaders(app)
    assert await middleware({"type": "lifespan"}, None, None) == "lifespan"


async def test_a_uvicorn_whose_middleware_suspends_is_used_as_it_is(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = ProxyHeadersMiddleware.__call__

    async def suspending(self: Any, scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)
        await original(self, scope, receive, send)

    monkeypatch.setattr(ProxyHeadersMiddleware, "__call__", suspending)
    seen: list[Any] = []

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.append(scope["client"])

    with caplog.at_level(logging.WARNING, logger="app.proxy_headers"):
        middleware = FramelessProxyHeaders(app, trusted_hosts="127.0.0.1")
    assert middleware.problem is not None
    assert "Using uvicorn's stock proxy-headers middleware" in caplog.text
    await middleware(scope("127.0.0.1"), None, None)  # uvicorn's own, awaited
    assert seen == [("10.0.0.2", 0)]


async def test_python_m_apps_server_uses_it(sqlite_url: str) -> None:
    async with live_server(Settings(database_url=sqlite_url)) as live:
        loaded = live.server.config.loaded_app
        assert type(loaded) is FramelessProxyHeaders
        assert loaded.problem is None
        assert loaded.app is live.app
