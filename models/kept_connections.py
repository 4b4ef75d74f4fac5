"""Pooled PostgreSQL connections kept between the single statements run on the asyncpg
driver directly, instead of going back to the pool after each one.

models.database's fetch_on_driver and fetch_value_on_driver run the hottest single
statements (the revocation check of every authenticated request, `updateCard`, the
change-log reads) on a pooled connection's driver. Each took the connection from
SQLAlchemy's pool and gave it back, each step in a greenlet and with the pool's events:
190 to 214 µs of CPU for the two on the development VM, against 106 to 110 µs for the
statement itself (`SELECT 1 WHERE $1::int = 1`, blocks of 3,000 in one process,
2026-12-02), twice in every `updateCard` request. Here a statement that ends keeps its
connection for the next one, which takes it without either.

What the pool did that is skipped, and why that is safe:
- the reset on return (a ROLLBACK where a transaction is open): these statements run
  outside a transaction (asyncpg commits each one as it ends), so none is open; and a
  connection that a statement left unsound (dropped by PostgreSQL, interrupted, so
  invalidated by models.database.errors_as_sqlalchemys) is never kept;
- the check on checkout: a statement that must not run twice (the `updateCard` write)
  takes a kept connection only if its server has sent nothing on it since it was kept
  (models.connection_check, what the pool's checkout asks before it pings); one that
  may run again (models.database.read_retrying_stale) takes it as it is, as it would
  take a pooled one without the check. Once a read found a kept connection dropped, its
  second try is a checked one: the kept connections PostgreSQL ended (a restart) have
  heard its FATAL error or the end of the stream, and go back to the pool, which checks
  them on their next checkout.

Bounded: at most KEEP at once, each given back to the pool once unused for IDLE
seconds, and all of them at `aclose()`. While kept, a connection counts as checked out
of the pool. The app keeps them for its engine on PostgreSQL (app.runtime): `install`
registers them for the engine's pool, where models.database finds them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool
from sqlalchemy.util import greenlet_spawn

from models.connection_check import heard, open_and_quiet

logger = logging.getLogger("commitcast.database")

# Statements on the driver in flight at once in one process: a request's revocation
# check and its write, a delivery's log read, at 200 requests/s a few overlapping.
KEEP = 4
# Seconds a kept connection waits for the next statement before going back to the pool:
# requests a second apart still find one; an idle process keeps none for longer.
IDLE = 1.0

# The connections kept for each engine's pool (shared by the engine and its copies
# with other execution options); a disposed engine's new pool has none.
_INSTALLED: WeakKeyDictionary[Pool, KeptConnections] = WeakKeyDictionary()


def kept_for(engine: AsyncEngine) -> KeptConnections | None:
    """The connections kept for `engine`'s statements on the driver (None: none are)."""
    return _INSTALLED.get(engine.sync_engine.pool)


async def give_back(raw: Any) -> None:
    """Return a connection taken with `engine.raw_connection()` to the pool: in a
    greenlet, as SQLAlchemy's own checkin runs (a pool already holding all the
    connections it keeps closes this one, and closing awaits the driver), and shielded
    as SQLAlchemy shields its own: a cancelled caller still returns it."""
    await asyncio.shield(greenlet_spawn(raw.close))


class KeptConnections:
    """`take(checked=...)` a kept connection (None: none to take, check one out of the
    pool), run one statement on its driver, then `keep(raw)`: False when it is not kept
    and goes back to the pool (`give_back`)."""

    def __init__(self, keep: int = KEEP, idle: float = IDLE) -> None:
        self._keep = keep
        self._idle = idle
        # Newest last: (connection, times its server had been heard from, when kept).
        self._kept: list[tuple[Any, int | None, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._letting_go: set[asyncio.Task[None]] = set()
        self._closed = False
        self._pool: Pool | None = None

    @classmethod
    def install(cls, engine: AsyncEngine, keep: int = KEEP, idle: float = IDLE) -> KeptConnections:
        """Keep connections for `engine`'s statements on the driver until `aclose()`."""
        kept = cls(keep, idle)
        kept._pool = engine.sync_engine.pool
        _INSTALLED[kept._pool] = kept
        return kept

    def __len__(self) -> int:
        return len(self._kept)

    def drivers(self) -> list[Any]:
        """The asyncpg connections kept now: for whatever watches connections as the
        pool hands them out (the tests' statement counts attach to them at checkout)."""
        return [raw.driver_connection for raw, _, _ in self._kept]

    def take(self, *, checked: bool) -> Any | None:
        """The newest kept connection; `checked`: only one whose server has been quiet
        since it was kept (the others go back to the pool, which checks them)."""
        while self._kept:
            raw, heard_then, _ = self._kept.pop()
            if not checked or open_and_quiet(raw.driver_connection, heard_then):
                return raw
            self._let_go(raw)
        return None

    def keep(self, raw: Any) -> bool:
        """Keep `raw` (a sound connection, no transaction open) for the next statement;
        False when there is no room (or it is not sound): give it back then."""
        if self._closed or len(self._kept) >= self._keep or not raw.is_valid:
            return False
        loop = asyncio.get_running_loop()
        self._kept.append((raw, heard(raw.driver_connection), loop.time()))
        if self._timer is None:
            self._timer = loop.call_later(self._idle, self._expire)
        return True

    async def release(self) -> None:
        """Give every kept connection back now; the connections after it are kept
        again."""
        self._let_go_all()
        while self._letting_go:
            await asyncio.gather(*self._letting_go, return_exceptions=True)

    async def aclose(self) -> None:
        """Give every kept connection back; keep none from now on."""
        self._closed = True
        if self._pool is not None and _INSTALLED.get(self._pool) is self:
            del _INSTALLED[self._pool]
        await self.release()

    def _expire(self) -> None:
        """Give back those unused for IDLE seconds; come again for the others. (One
        timer for all of them: a timer per statement would cost more than it saves.)"""
        self._timer = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self._idle
        fresh = [entry for entry in self._kept if entry[2] > cutoff]
        for raw, _, kept_at in self._kept:
            if kept_at <= cutoff:
                self._let_go(raw)
        self._kept = fresh
        if fresh:
            self._timer = loop.call_at(fresh[0][2] + self._idle, self._expire)

    def _let_go_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        kept, self._kept = self._kept, []
        for raw, _, _ in kept:
            self._let_go(raw)

    def _let_go(self, raw: Any) -> None:
        task = asyncio.create_task(self._give_back_quietly(raw))
        self._letting_go.add(task)
        task.add_done_callback(self._letting_go.discard)

    @staticmethod
    async def _give_back_quietly(raw: Any) -> None:
        try:
            await give_back(raw)
        except Exception as exc:  # (nobody waits on it; the pool discards it)
            logger.info("a kept connection could not be given back to the pool: %s", exc)
