"""uvicorn's proxy-headers middleware, without a coroutine frame of its own.

uvicorn wraps the app in `ProxyHeadersMiddleware` (`proxy_headers`, on by default,
trusting `FORWARDED_ALLOW_IPS`): an `async def __call__` that rewrites the scope's
`scheme` and `client` from X-Forwarded-Proto/-For, then awaits the app. For a
WebSocket, that frame waits for the connection's whole life (about 0.3 KiB per idle
socket). `FramelessProxyHeaders` runs uvicorn's own `__call__` to rewrite the scope
(it completes without suspending: all it awaits is the app, stood in for here by an
awaitable that is already done), then returns the app's coroutine for the server to
await. Same rewriting, same trust rules, uvicorn's code.

Whether uvicorn's `__call__` still completes that way is probed once per instance, on
a scope with forwarded headers; if it does not, the instance behaves as uvicorn's
stock middleware and one warning is logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Generator
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

logger = logging.getLogger(__name__)


class _Done:
    """An awaitable that is already done (returns None)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # (a generator: awaiting it returns at once)


_DONE = _Done()


class _StandIn:
    """What uvicorn's `__call__` reads of its middleware: `trusted_hosts`, and `app`,
    here an app that returns at once."""

    __slots__ = ("trusted_hosts",)

    def __init__(self, trusted_hosts: object) -> None:
        self.trusted_hosts = trusted_hosts

    @staticmethod
    def app(_scope: Any, _receive: Any, _send: Any) -> _Done:
        return _DONE


def rewrite_scope(middleware: ProxyHeadersMiddleware, scope: Any) -> None:
    """Apply uvicorn's rewriting of `scope` as `middleware` would (in place)."""
    call = ProxyHeadersMiddleware.__call__(
        _StandIn(middleware.trusted_hosts),  # type: ignore[arg-type]
        scope,
        _never_called,
        _never_called,
    )
    try:
        call.send(None)
    except StopIteration:
        return
    call.close()
    raise RuntimeError("uvicorn's ProxyHeadersMiddleware suspended before calling the app")


async def _never_called(*_args: Any) -> Any:  # pragma: no cover - receive/send stand-ins
    raise RuntimeError("the proxy-headers rewrite does not receive or send")


_PROBE = {
    "type": "http",
    "client": ("127.0.0.1", 1234),
    "scheme": "http",
    "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.7")],
}


@functools.cache
def _warn_once(problem: str) -> None:
    logger.warning("Using uvicorn's stock proxy-headers middleware: %s", problem)


def rewrite_problem(middleware: ProxyHeadersMiddleware) -> str | None:
    """Why `rewrite_scope` can't stand in for `middleware`'s own call, or None: on a
    scope with forwarded headers, it must complete without suspending."""
    try:
        rewrite_scope(middleware, dict(_PROBE))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class FramelessProxyHeaders(ProxyHeadersMiddleware):
    """`ProxyHeadersMiddleware(app, trusted_hosts)`, returning the app's coroutine."""

    def __init__(self, app: Any, trusted_hosts: list[str] | str = "127.0.0.1") -> None:
        super().__init__(app, trusted_hosts)
        self._probe()

    @classmethod
    def replacing(cls, stock: ProxyHeadersMiddleware) -> FramelessProxyHeaders:
        """One with `stock`'s app and trusted hosts (uvicorn's Config built `stock`)."""
        frameless = cls.__new__(cls)
        frameless.__dict__.update(vars(stock))
        frameless._probe()
        return frameless

    def _probe(self) -> None:
        self.problem = rewrite_problem(self)
        if self.problem is not None:
            _warn_once(self.problem)

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:  # type: ignore[override]
        if self.problem is not None:
            return super().__call__(scope, receive, send)
        if scope["type"] != "lifespan":
            rewrite_scope(self, scope)
        result: Awaitable[None] = self.app(scope, receive, send)
        return result
