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
session had not begun before the batch was read (`fresh_for`); otherwise it starts a
new one (schema.shared_reads.ReadGroups), and the old one ends with its last holder.

The session is released as soon as no subscription uses it: each subscription holds the
loaders from the start of its reload until its result is built (Context.close, called
before the send, releases it), so a slow client never pins a connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema.loaders import AccessLoaders, Loaders, RecordLoaders, scalars
from subscriptions.hub import Batch

SCOPE_KEY = "schema.shared_reads"

logger = logging.getLogger("commitcast.delivery")


class SharedReads:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], int] = lambda: 0
    ) -> None:
        self._sessions = sessions
        # The access fence's clock (subscriptions.fence), read when the session opens.
        self._clock = clock
        self._session_clock = 0
        # time.monotonic_ns() when the session ran its first statement (its snapshot is
        # no older), None before.
        self._opened_at: int | None = None
        self._holders = 0
        self._session: AsyncSession | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Handle | None = None
        self._records = RecordLoaders(self._run)
        self._access = AccessLoaders(self._run)
        self._viewers: dict[int, Loaders] = {}
        # Set when the last holder let go: whoever comes next starts a new one.
        self.ended = False

    @property
    def snapshot_clock(self) -> int | None:
        """The access fence's clock when the open session began (None: none open)."""
        return self._session_clock if self._session is not None else None

    def fresh_for(self, read_at: int) -> bool:
        """Whether changes read from the log at `read_at` (time.monotonic_ns() when the
        read completed) may be presented through these loaders: their snapshot, if it
        began, began after that read, so it holds every change the read returned."""
        return not self.ended and (self._opened_at is None or self._opened_at > read_at)

    def acquire(self, viewer_id: int) -> Loaders:
        """The viewer's loaders (shared records, the viewer's own access checks)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._holders += 1
        loaders = self._viewers.get(viewer_id)
        if loaders is None:
            loaders = Loaders(self._run, viewer_id, self._records, self._access)
            self._viewers[viewer_id] = loaders
        return loaders

    def release(self) -> None:
        self._holders -= 1
        if self._holders <= 0:
            self._holders = 0
            # Subscriptions resumed in this same turn of the event loop (woken by the
            # same read) still join; the session goes right after.
            self._expiry = asyncio.get_running_loop().call_soon(self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self._holders:
            return
        self.ended = True
        session, self._session = self._session, None
        if session is not None:
            task = asyncio.create_task(self._close(session))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, session: AsyncSession) -> None:
        # After a statement still in flight (a holder cancelled half-way, say).
        async with self._lock:
            try:
                await session.close()
            except Exception:
                logger.exception("closing a shared read session failed")

    async def _run(self, statement: Select[Any]) -> Sequence[Any]:
        # One AsyncSession runs one statement at a time; the holders' resolvers run
        # concurrently.
        async with self._lock:
            if self._session is None:
                self._session_clock = self._clock()
                self._opened_at = time.monotonic_ns()
                self._session = self._sessions()
            try:
                return await scalars(self._session, statement)
            finally:
                if not self._holders and self._expiry is None:
                    # Read after the last holder let go (a resolver finishing late):
                    # the session must still be closed.
                    self._expiry = asyncio.get_running_loop().call_soon(self._expire)


class ReadGroups:
    """The SharedReads that subscriptions join now (one per process, or per batch)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], int] = lambda: 0
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._current: SharedReads | None = None

    def join(self, batch: Batch) -> SharedReads:
        """Shared reads fresh enough to present `batch` (see the module docstring)."""
        current = self._current
        if current is None or not current.fresh_for(batch.read_at):
            current = self._current = SharedReads(self._sessions, self._clock)
        return current


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
