"""Delivery snapshots' connections, kept from one snapshot to the next with the next
one's BEGIN already sent (PostgreSQL on asyncpg).

A delivery reads in a read-only REPEATABLE READ snapshot (models.driver_snapshot): a
pooled connection checked out, BEGIN, its reads, ROLLBACK, the connection checked in.
Deliveries follow one another (one per change, in every process with subscribers), so
for every change the checkout and the checkin, each through a greenlet, and two round
trips of transaction control were spent again. Here a snapshot that ends sends
`ROLLBACK; BEGIN ...` in one round trip and keeps its connection for the next, which
then starts with its first read. Measured (alternating blocks of 1,000 snapshots, each
reading a card and its board's memberships, one process): 185 to 280 µs of CPU per
snapshot against 100 to 146 kept, 330 to 500 µs wall against 220 to 300.

The next snapshot is no older for it: in REPEATABLE READ, PostgreSQL takes the snapshot
at the transaction's first statement, not at its BEGIN. A kept connection has sent BEGIN
and nothing else: PostgreSQL lists it as "idle in transaction", but it holds no
snapshot and no transaction id, so it holds back no vacuum.

Bounded: at most KEEP connections, each rolled back and given back to the pool once
unused for IDLE seconds, and all of them at `aclose()`. A kept connection PostgreSQL
dropped meanwhile (a restart; an `idle_in_transaction_session_timeout` shorter than
IDLE) fails its first read, which runs again (models.database.read_retrying_stale) on a
connection from the pool: `open(fresh=True)` lets go of every kept one first.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from models.driver_snapshot import DriverSnapshot, driver_engine

logger = logging.getLogger("commitcast.database")

# Snapshots open at once in one process are few (one per group of deliveries at the
# same position, schema.shared_reads): two covers one ending while the next begins.
KEEP = 2
# Seconds a kept connection waits for the next snapshot before going back to the pool:
# deliveries a second apart still find one; an idle process keeps none for longer.
IDLE = 1.0


class KeptSnapshots:
    """`await open()` a DriverSnapshot (kept, or opened on a pooled connection), read,
    then `await close(snapshot)`: kept for the next if there is room, closed
    otherwise."""

    def __init__(self, engine: AsyncEngine, keep: int = KEEP, idle: float = IDLE) -> None:
        self._engine = engine
        self._keep = keep
        self._idle = idle
        # Newest last; each with the timer that lets it go.
        self._kept: list[tuple[DriverSnapshot, asyncio.TimerHandle]] = []
        self._letting_go: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def for_sessions(cls, sessions: async_sessionmaker[AsyncSession]) -> KeptSnapshots | None:
        """Kept snapshots for the engine `sessions` bind to, where snapshots run on the
        driver (PostgreSQL on asyncpg); None otherwise."""
        engine = driver_engine(sessions)
        return None if engine is None else cls(engine)

    def __len__(self) -> int:
        return len(self._kept)

    async def open(self, *, fresh: bool = False) -> DriverSnapshot:
        """A snapshot: the newest kept one, or one on a pooled connection. `fresh`: a
        try after a dropped connection; every kept one may be dropped too, so none is
        used (all are let go)."""
        if fresh:
            self._let_go_all()
        elif self._kept:
            snapshot, expiry = self._kept.pop()
            expiry.cancel()
            return snapshot
        return await DriverSnapshot.open(self._engine)

    async def close(self, snapshot: DriverSnapshot) -> None:
        """End `snapshot`: renewed and kept while there is room, closed otherwise (and
        if renewing fails: closing then invalidates a broken connection)."""
        if not self._room() or not snapshot.renewable:
            await snapshot.close()
            return
        try:
            await snapshot.renew()
        except BaseException:
            await snapshot.close()
            raise
        if not self._room():  # (filled, or closed, while renewing)
            await snapshot.close()
            return
        expiry = asyncio.get_running_loop().call_later(self._idle, self._expire, snapshot)
        self._kept.append((snapshot, expiry))

    async def release(self) -> None:
        """Give every kept connection back now (rolled back); the snapshots after it are
        kept again. For whatever watches connections as the pool hands them out (the
        tests' statement counts attach to them at checkout)."""
        self._let_go_all()
        while self._letting_go:
            await asyncio.gather(*self._letting_go, return_exceptions=True)

    async def aclose(self) -> None:
        """Give every kept connection back (rolled back); keep none from now on."""
        self._closed = True
        await self.release()

    def _room(self) -> bool:
        return not self._closed and len(self._kept) < self._keep

    def _expire(self, snapshot: DriverSnapshot) -> None:
        for index, (kept, _) in enumerate(self._kept):
            if kept is snapshot:
                del self._kept[index]
                self._let_go(snapshot)
                return

    def _let_go_all(self) -> None:
        kept, self._kept = self._kept, []
        for snapshot, expiry in kept:
            expiry.cancel()
            self._let_go(snapshot)

    def _let_go(self, snapshot: DriverSnapshot) -> None:
        task = asyncio.create_task(self._close_quietly(snapshot))
        self._letting_go.add(task)
        task.add_done_callback(self._letting_go.discard)

    @staticmethod
    async def _close_quietly(snapshot: DriverSnapshot) -> None:
        # A kept connection that fails its ROLLBACK was dropped: closing invalidates it,
        # and nothing was waiting on it.
        try:
            await snapshot.close()
        except Exception as exc:
            logger.info("a kept snapshot connection could not be rolled back: %s", exc)
