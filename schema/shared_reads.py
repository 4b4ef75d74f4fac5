"""One reload per record for all of a viewer's local subscriptions.

When a change reaches several subscriptions of one user in this process (a user with
many tabs or devices), they read the same batch of the change log (subscriptions.hub)
and would each reload the same records, as the same viewer. Instead they share one set
of loaders, with one session (one snapshot), for that batch: the first subscription to
present a record loads it, the others find it loaded, and the nested fields their
selections ask for (`board { id }`, `comments { id }`) come from the same loaders. The
database sees one reload per record, whatever the number of local subscriptions.

Authorization is unchanged: the loaders are the viewer's own (`viewer_role` is the
viewer's membership), so what is shared is only what this viewer may read anyway.

The session is released as soon as no subscription uses it: each subscription holds the
loaders from the start of its reload until its result is built (Context.close, called
before the send, releases it), so a slow client never pins a connection. Subscriptions
that start after the last one let go get a fresh session and fresh loaders, so every
subscription's update is read from a single snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schema.loaders import Loaders, scalars
from subscriptions.hub import Batch

SCOPE_KEY = "schema.shared_reads"

logger = logging.getLogger("commitcast.delivery")


class SharedReads:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        viewer_id: int,
        clock: Callable[[], int] = lambda: 0,
    ) -> None:
        self._sessions = sessions
        self.viewer_id = viewer_id
        # The access fence's clock (subscriptions.fence), read when the session opens.
        self._clock = clock
        self._session_clock = 0
        self._holders = 0
        self._session: AsyncSession | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Handle | None = None
        self.loaders = Loaders(self._run, viewer_id)

    @property
    def snapshot_clock(self) -> int | None:
        """The access fence's clock when the open session began (None: none open)."""
        return self._session_clock if self._session is not None else None

    def acquire(self) -> Loaders:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._holders += 1
        return self.loaders

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
        session, self._session = self._session, None
        self.loaders = Loaders(self._run, self.viewer_id)
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
                self._session = self._sessions()
            try:
                return await scalars(self._session, statement)
            finally:
                if not self._holders and self._expiry is None:
                    # Read after the last holder let go (a resolver finishing late):
                    # the session must still be closed.
                    self._expiry = asyncio.get_running_loop().call_soon(self._expire)


def shared_reads(
    batch: Batch,
    sessions: async_sessionmaker[AsyncSession],
    viewer_id: int,
    clock: Callable[[], int] = lambda: 0,
) -> SharedReads:
    """The batch's shared reads (a batch belongs to one user's hub: one viewer)."""
    reads = batch.scope.get(SCOPE_KEY)
    if not isinstance(reads, SharedReads) or reads.viewer_id != viewer_id:
        reads = SharedReads(sessions, viewer_id, clock)
        batch.scope[SCOPE_KEY] = reads
    return reads
