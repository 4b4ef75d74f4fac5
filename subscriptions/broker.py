"""The process's one broker connection, chosen by URL scheme.

`memory://` keeps messages inside this process (the embedded default); `redis://` and
`rediss://` connect processes through Redis pub/sub. Both are broadcaster backends.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

import redis.asyncio as redis
from broadcaster._backends.base import BroadcastBackend
from broadcaster._backends.memory import MemoryBackend

SUPPORTED_SCHEMES = ("memory", "redis", "rediss")


class BrokerURLError(ValueError):
    """BROKER_URL names a scheme we have no backend for."""


def check_broker_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        choices = ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        raise BrokerURLError(f"BROKER_URL {url!r}: unsupported scheme {scheme!r} (use {choices})")
    return url


class Broker(Protocol):
    url: str

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def ping(self) -> None:
        """Return when the broker answers; raise otherwise."""


class MemoryBroker:
    def __init__(self, url: str) -> None:
        self.url = url
        self.backend: BroadcastBackend = MemoryBackend(url)

    async def connect(self) -> None:
        await self.backend.connect()

    async def disconnect(self) -> None:
        await self.backend.disconnect()

    async def ping(self) -> None:
        return None


class RedisBroker:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | None = None

    async def connect(self) -> None:
        self._client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=2)

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        if self._client is None:
            raise RuntimeError("broker is not connected")
        await self._client.ping()


def broker_from_url(url: str) -> Broker:
    scheme = urlsplit(check_broker_url(url)).scheme
    if scheme == "memory":
        return MemoryBroker(url)
    return RedisBroker(url)
