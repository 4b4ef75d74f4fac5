"""The process's change-log reader: one statement for the reads of many users at once.

One change to a board of a thousand members wakes a thousand user hubs in this process
(subscriptions.hub) in the same few event-loop ticks, and each reads its user's log
after its position. Read one by one, that is a thousand statements (and a thousand
connection checkouts) per change; here every read asked for in the same tick waits for
the next tick and they all go out as one statement (subscriptions.changelog.
changes_since_each), whose rows are handed back to each caller: what changes_since
would have returned for it, read after it asked. Like a DataLoader, for reads that
arrive together because one broker burst woke them.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from models.database import read_retrying_stale, single_statement_reads
from subscriptions.changelog import (
    LoggedChange,
    LogRequest,
    changes_since_each,
    changes_since_each_on_driver,
)

# Requests per statement: a burst of thousands runs as several statements (side by side,
# each on its own connection) instead of one with an unbounded result and, on SQLite,
# beyond its compound-select limit (500).
MAX_REQUESTS = 250

Waiters = dict[LogRequest, list[asyncio.Future[list[LoggedChange]]]]


class LogReader:
    """Batches changes_since(user, after, limit) calls made in one tick (one per
    LocalHubs: created in the lifespan with the feed)."""

    def __init__(self, engine: AsyncEngine, limit: int, max_requests: int = MAX_REQUESTS) -> None:
        self._engine = single_statement_reads(engine)
        # PostgreSQL's reads run on the driver directly (changes_since_each_on_driver).
        self._driver_engine = engine if engine.dialect.name == "postgresql" else None
        self._limit = limit
        self._max_requests = max_requests
        # Requests that the next statement will serve; None when none is scheduled.
        self._pending: Waiters | None = None
        # Running statements, referenced so that they are not garbage-collected.
        self._running: set[asyncio.Task[None]] = set()

    async def read(self, user_id: int, after: int) -> list[LoggedChange]:
        """The user's changes with ids above `after`, oldest first, at most `limit`, as
        of a moment after this call. Cancelling it leaves the other requests alone."""
        if self._pending is None:
            self._pending = {}
            # A task starts on the next tick: every request made until then joins it.
            flush = asyncio.create_task(self._flush(), name="change-log-read")
            self._running.add(flush)
            flush.add_done_callback(self._running.discard)
        future: asyncio.Future[list[LoggedChange]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((user_id, after), []).append(future)
        # Awaited directly: a cancelled caller cancels only its own future, which the
        # statement then leaves alone.
        return await future

    async def _flush(self) -> None:
        waiters, self._pending = self._pending, None
        if waiters is None:
            return
        # Requests whose callers all went away (their hubs stopped) are not read.
        wanted = [
            (key, futures)
            for key, futures in waiters.items()
            if not all(future.done() for future in futures)
        ]
        step = self._max_requests
        await asyncio.gather(
            *(self._read(dict(wanted[at : at + step])) for at in range(0, len(wanted), step))
        )

    async def _statement(self, waiters: Waiters) -> dict[LogRequest, list[LoggedChange]]:
        if self._driver_engine is not None:
            return await changes_since_each_on_driver(
                self._driver_engine, waiters.keys(), self._limit
            )
        # The connection is held for this one statement only.
        async with self._engine.connect() as connection:
            return await changes_since_each(connection, waiters.keys(), self._limit)

    async def _read(self, waiters: Waiters) -> None:
        try:
            found = await read_retrying_stale(lambda: self._statement(waiters))
        except BaseException as exc:
            # Every caller of a failed statement sees its failure (and retries, as it
            # would have with a statement of its own).
            for futures in waiters.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            if isinstance(exc, Exception):
                return  # handed to the callers, not to this task
            raise
        for key, futures in waiters.items():
            for future in futures:
                if not future.done():
                    future.set_result(list(found[key]))
