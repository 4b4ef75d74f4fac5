"""One reload per record for every local subscription presenting it at the same time,
whatever the viewer.

When a change reaches many subscriptions in this process (one user's many tabs, or
1,000 members of a board), each would reload the same record and check the same
memberships. Instead, the subscriptions presenting changes at the same time read through
one `SharedReads`: one session (one snapshot), one set of record loaders (a record is
loaded once for everyone), and the viewers' access checks batched together (one
membership query for all of them: schema.loaders.AccessLoaders). Each viewer still has
loaders of their own (`acquire(viewer)`), so authorization is unchanged: a viewer is
shown a record only if their own membership allows it.

Freshness: a subscription presents a batch of changes read from the log; the snapshot
it reloads in must include them. So it joins the current SharedReads only if that one's
session began after the batch was read, or after this process knew every change in the
batch to be committed (`fresh_for`; the process's `committed` watermark,
subscriptions.hub.Watermark: 1,000 members woken for one change read the log at
different moments, but the change was known committed before any of them reloads).
Otherwise it starts a new one (ReadGroups), and the old one ends with its last holder.

The session is released soon after no subscription uses it (LINGER; at once when a newer
one took over): each subscription holds the loaders from the start of its reload until
its result is built (Context.close, called before the send, releases it), so a slow
client never pins a connection (on PostgreSQL the app keeps a snapshot's connection for
the next one, its BEGIN already sent: models.kept_snapshots). Once ended, nothing keeps
them: neither ReadGroups nor the subscriptions that read through them
(schema.subscription), and they let go of their loaders, so that what they loaded is
freed as soon as its last holder lets go of it, not left to the cycle collector.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.database import read_retrying_stale
from models.driver_snapshot import DriverSnapshot, driver_engine
from models.kept_snapshots import KeptSnapshots
from schema.loaders import AccessLoaders, Loaders, RecordLoaders, fetch_rows
from subscriptions.hub import Batch

SCOPE_KEY = "schema.shared_reads"
# How long the SharedReads to join outlives its last holder (seconds): long enough for
# the other subscriptions woken by the same change to join, short enough that an idle
# process holds its connection no longer than that.
LINGER = 0.05

logger = logging.getLogger("commitcast.delivery")


class SharedReads:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], int] = lambda: 0,
        committed: Callable[[], int] = lambda: 0,
        on_end: Callable[[SharedReads], None] | None = None,
        kept: KeptSnapshots | None = None,
    ) -> None:
        self._sessions = sessions
        # Where its snapshot comes from and goes back to, when the process keeps
        # snapshot connections (models.kept_snapshots); otherwise opened and closed here.
        self._kept = kept
        # Told when these reads have ended (ReadGroups then lets go of them).
        self._on_end = on_end
        # The access fence's clock (subscriptions.fence), read when the session opens.
        self._clock = clock
        self._session_clock = 0
        # The newest change id known committed (all smaller ones too), read when the
        # session opens: its snapshot holds every change up to it.
        self._committed = committed
        self._committed_at_open = 0
        # time.monotonic_ns() when the session ran its first statement (its snapshot is
        # no older), None before.
        self._opened_at: int | None = None
        self._holders = 0
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Handle | None = None
        # The loaders every viewer shares: made by the first acquire(), let go of at the
        # end (see _let_go_of_loads).
        self._loads: tuple[RecordLoaders, AccessLoaders] | None = None
        self._viewers: dict[int, Loaders] = {}
        # What the viewers reading through these loaders derive alike from the same
        # loads, for all of them (schema.crowd_results, per change).
        self.across_viewers: dict[object, Any] = {}
        # Set when the last holder let go: whoever comes next starts a new one.
        self.ended = False
        self._superseded = False

    @property
    def snapshot_clock(self) -> int | None:
        """The access fence's clock when the open session began (None: none open)."""
        return self._session_clock if self._snapshot is not None else None

    def fresh_for(self, batch: Batch) -> bool:
        """Whether `batch` may be presented through these loaders: their snapshot, if
        it began, began after the batch was read or after its newest change was known
        committed, so it holds every change in the batch."""
        if self.ended:
            return False
        return (
            self._opened_at is None
            or self._opened_at > batch.read_at
            or batch.newest <= self._committed_at_open
        )

    def acquire(self, viewer_id: int) -> Loaders:
        """The viewer's loaders (shared records, the viewer's own access checks)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._holders += 1
        loaders = self._viewers.get(viewer_id)
        if loaders is None:
            if self._loads is None:
                self._loads = RecordLoaders(self._run), AccessLoaders(self._run, whole_boards=True)
            loaders = Loaders(self._run, viewer_id, *self._loads)
            self._viewers[viewer_id] = loaders
        return loaders

    def release(self) -> None:
        self._holders -= 1
        if self._holders <= 0:
            self._holders = 0
            self._end_when_idle()

    def supersede(self) -> None:
        """A newer SharedReads is the one to join now: end with the last holder."""
        self._superseded = True
        if not self._holders:
            self._end_when_idle()

    def _end_when_idle(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        if self._superseded:
            self._expiry = loop.call_soon(self._expire)
        else:
            # The one to join: members of a board are woken one by one, each reading
            # its own log, a little later than the last: they still join it.
            self._expiry = loop.call_later(LINGER, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self._holders:
            return
        self.ended = True
        if self._on_end is not None:
            self._on_end(self)
        self._let_go_of_loads()
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            task = asyncio.create_task(self._close(snapshot))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _let_go_of_loads(self) -> None:
        """Nobody joins ended reads: what they loaded goes now. The loaders run their
        statements here (they hold `_run`) and were held here to the end, a reference
        cycle: everything loaded through them (records, memberships, the viewers'
        loaders and updates) waited for the garbage collector, and was most of what a
        young collection walked and freed in the 200 mutations/s workload. Let go of
        here, it is freed as soon as the last holder lets go of its loaders."""
        self._viewers = {}
        self.across_viewers = {}
        self._loads = None

    async def _close(self, snapshot: Snapshot) -> None:
        # After a statement still in flight (a holder cancelled half-way, say).
        async with self._lock:
            try:
                if self._kept is not None and isinstance(snapshot, DriverSnapshot):
                    await self._kept.close(snapshot)
                else:
                    await snapshot.close()
            except Exception:
                logger.exception("closing a shared read session failed")

    async def _run(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Sequence[Any]:
        # A snapshot (one connection) runs one statement at a time; the holders'
        # resolvers run concurrently.
        async with self._lock:
            try:
                if self._snapshot is None:
                    # The snapshot's first statement takes its connection; a dropped
                    # one costs a second try, not an error (and no ping each time).
                    return await read_retrying_stale(lambda: self._open(statement, parameters))
                return await self._snapshot.rows(statement, parameters)
            finally:
                if not self._holders and self._expiry is None:
                    # Read after the last holder let go (a resolver finishing late):
                    # the session must still be closed.
                    self._end_when_idle()

    async def _open(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Sequence[Any]:
        retrying = self._snapshot is not None
        if self._snapshot is not None:  # a try that found its connection dropped
            snapshot, self._snapshot = self._snapshot, None
            await snapshot.close()
        # Read before the snapshot's first statement, which takes its snapshot.
        self._session_clock = self._clock()
        self._committed_at_open = self._committed()
        self._opened_at = time.monotonic_ns()
        if self._kept is not None:
            self._snapshot = await self._kept.open(fresh=retrying)
        else:
            self._snapshot = await open_snapshot(self._sessions)
        return await self._snapshot.rows(statement, parameters)


class Snapshot(Protocol):
    """What SharedReads reads through: one transaction that sees one snapshot."""

    async def rows(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Sequence[Any]:
        """Rows as `AsyncSession.execute(statement, parameters).all()` gives them."""
        ...

    async def close(self) -> None: ...


class SessionSnapshot:
    """A snapshot through an AsyncSession of `sessions` (SQLite; drivers other than
    asyncpg): its transaction begins with the first statement."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def rows(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Sequence[Any]:
        return await fetch_rows(self._session, statement, parameters)

    async def close(self) -> None:
        await self._session.close()


async def open_snapshot(sessions: async_sessionmaker[AsyncSession]) -> Snapshot:
    """On PostgreSQL with asyncpg, a models.driver_snapshot.DriverSnapshot (the same
    rows for about half the CPU); otherwise a session of `sessions` (the read sessions:
    REPEATABLE READ on PostgreSQL, models.database.create_sessionmakers)."""
    engine = driver_engine(sessions)
    if engine is not None:
        return await DriverSnapshot.open(engine)
    return SessionSnapshot(sessions())


class ReadGroups:
    """The SharedReads that subscriptions join now (one per process, or per batch).
    `clock`: the access fence's; `committed`: the newest change id the process knows
    committed (subscriptions.hub.Watermark); `kept`: the process's kept snapshot
    connections (PostgreSQL; its owner closes them)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], int] = lambda: 0,
        committed: Callable[[], int] = lambda: 0,
        kept: KeptSnapshots | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._committed = committed
        # The process's kept snapshot connections (PostgreSQL), for every SharedReads.
        self._kept = kept
        self._current: SharedReads | None = None

    def join(self, batch: Batch) -> SharedReads:
        """Shared reads fresh enough to present `batch` (see the module docstring)."""
        current = self._current
        if current is None or not current.fresh_for(batch):
            if current is not None:
                current.supersede()
            current = SharedReads(
                self._sessions, self._clock, self._committed, self._ended, self._kept
            )
            self._current = current
        return current

    def _ended(self, reads: SharedReads) -> None:
        # Nobody joins ended reads: not kept (with every record and membership they
        # loaded) until the next change comes.
        if self._current is reads:
            self._current = None


def shared_reads(
    batch: Batch,
    groups: ReadGroups | None,
    sessions: async_sessionmaker[AsyncSession],
    clock: Callable[[], int] = lambda: 0,
) -> SharedReads:
    """The process's shared reads for presenting `batch` (`groups`), or, for a Context
    without them (a schema run outside the app), the batch's own."""
    if groups is None:
        found = batch.scope.get(SCOPE_KEY)
        if not isinstance(found, ReadGroups):
            found = batch.scope[SCOPE_KEY] = ReadGroups(sessions, clock)
        groups = found
    return groups.join(batch)
