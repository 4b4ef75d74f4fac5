"""Rate limits (the app's schema.RateLimiter): fixed windows of attempts per key.

The store follows BROKER_URL: `memory://` counts in this process (there is only one);
`redis://` counts in Redis, so every process behind a load balancer shares the
counters. If Redis cannot be reached, attempts are let through (and a warning logged
once a minute) rather than refused: the API stays up with the broker down. Keys are
namespaced by the deployment (like the broker's channels) and hold a
digest of the limited key, never an email address.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis.asyncio as redis

logger = logging.getLogger("commitcast.rate_limit")


class RateLimitError(ValueError):
    """A rate limit setting that cannot be read."""


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` attempts per `window_seconds`, counted from the first one."""

    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, name: str, raw: str) -> Rate | None:
        """`N/SECONDS` (e.g. `10/300`), or `off` for no limit."""
        raw = raw.strip().lower()
        if raw == "off":
            return None
        count, _, seconds = raw.partition("/")
        try:
            rate = cls(int(count), int(seconds))
        except ValueError:
            raise RateLimitError(
                f"{name} {raw!r}: use ATTEMPTS/SECONDS such as 10/300, or off"
            ) from None
        if rate.limit <= 0 or rate.window_seconds <= 0:
            raise RateLimitError(f"{name} {raw!r}: both numbers must be positive")
        return rate

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_seconds}"


class Counter(Protocol):
    async def add(self, key: str, cost: int, window_seconds: int) -> tuple[int, float]:
        """Add `cost` to the window of `key`; (the window's count, seconds until it ends)."""

    async def close(self) -> None: ...


class MemoryCounter:
    """One process's counters. Expired windows are swept once the table grows, so
    memory stays proportional to the keys active within one window."""

    SWEEP_AT = 10_000

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}

    async def add(self, key: str, cost: int, window_seconds: int) -> tuple[int, float]:
        now = time.monotonic()
        count, ends = self._windows.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_seconds
        count += cost
        self._windows[key] = (count, ends)
        if len(self._windows) > self.SWEEP_AT:
            self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        return count, ends - now

    async def close(self) -> None:
        self._windows.clear()


# One round trip, atomic: the first attempt of a window starts its expiry, so the
# window is timed by Redis's clock alone, whichever process counts.
_ADD_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}
"""


class RedisCounter:
    # A request waits at most this long for Redis before it goes on unlimited.
    TIMEOUT_SECONDS = 0.5

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=self.TIMEOUT_SECONDS, socket_timeout=self.TIMEOUT_SECONDS
        )
        self._add = self._client.register_script(_ADD_SCRIPT)

    async def add(self, key: str, cost: int, window_seconds: int) -> tuple[int, float]:
        result: Any = await self._add(keys=[key], args=[cost, window_seconds * 1000])
        count, ttl_ms = int(result[0]), int(result[1])
        return count, ttl_ms / 1000

    async def close(self) -> None:
        await self._client.aclose()


def counter_for(broker_url: str) -> Counter:
    if urlsplit(broker_url).scheme in ("redis", "rediss"):
        return RedisCounter(broker_url)
    return MemoryCounter()


class RateLimiter:
    """schema.RateLimiter over a Counter, with one Rate per scope (None: unlimited)."""

    WARNING_INTERVAL_SECONDS = 60.0

    def __init__(self, counter: Counter, rates: dict[str, Rate | None], namespace: str) -> None:
        self._last_warning = -self.WARNING_INTERVAL_SECONDS
        self._counter = counter
        self._rates = rates
        self._prefix = f"{namespace}:ratelimit:" if namespace else "ratelimit:"

    async def hit(self, scope: str, key: str, cost: int = 1) -> float | None:
        rate = self._rates.get(scope)
        if rate is None:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        try:
            count, remaining = await self._counter.add(
                f"{self._prefix}{scope}:{digest}", cost, rate.window_seconds
            )
        except (redis.RedisError, OSError, TimeoutError) as exc:
            # Like publishing, limiting must not take the API down with Redis: the
            # attempt goes through, and the operator hears about it (/readyz too).
            self._warn(exc)
            return None
        if count <= rate.limit:
            return None
        return max(remaining, 0.001)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self.WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            logger.warning("rate limits not enforced: the counter store failed: %s", exc)

    async def close(self) -> None:
        await self._counter.close()
