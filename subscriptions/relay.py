"""The relay: after a commit, wake every user a change concerns, off the request path;
and, in every process, publish what nobody published and trim the change log.

The capture hook hands over committed changes synchronously (SQLAlchemy events cannot
await); during an HTTP request they wait for its response to be written first
(subscriptions.hold). The relay's task publishes them in the order handed over (commit
order within a process, but for a request's changes held a moment longer: wake-ups
carry only an id, and a subscriber reads the change log), then marks them published:
marks are gathered for up to MARK_DELAY and written in one UPDATE, because the relay
shares the event loop (and the connection pool) with the requests. A mark that comes
late, or never (the process died), only means the sweeper may publish the change again,
which subscribers tolerate: they read the change log, not the message.
While the broker is down it logs and retries with backoff, so a broker failure never
fails a committed mutation. A process that dies between commit and publish leaves
unpublished rows in the change log: every process sweeps for those and publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models import utcnow
from models.database import read_retrying_stale, single_statement_reads
from subscriptions.broker import Broker
from subscriptions.changelog import LoggedChange, mark_published, trim, unpublished
from subscriptions.changes import Change, user_channel
from subscriptions.hold import Hold, current_hold, holding
from subscriptions.metrics import Metrics, unobserved
from subscriptions.wakeups import encode_wakeup

logger = logging.getLogger("commitcast.relay")

MAX_RETRY_DELAY = 5.0
STOP_TIMEOUT = 5.0
SWEEP_INTERVAL = 2.0
# A change still unpublished this long after its commit was orphaned by its process.
SWEEP_AGE = timedelta(seconds=5)
SWEEP_BATCH = 500
TRIM_INTERVAL = 60.0
# At most this many commits are published in one go by the relay.
RELAY_BATCH_COMMITS = 200
# Published changes are marked at most this long after their publish, all in one UPDATE.
# Far below SWEEP_AGE, so the sweeper does not see them as orphans. (Every mark costs a
# commit, with its WAL flush, while mutations wait for theirs: at 20 mutations/s, 0.1 s
# meant a mark for every other mutation.)
MARK_DELAY = 0.25


class Relay:
    def __init__(
        self,
        broker: Broker,
        engine: AsyncEngine,
        retention: timedelta,
        metrics: Metrics | None = None,
    ) -> None:
        self._broker = broker
        self._metrics = metrics or unobserved()
        # Its statements say "[relay]" in SQL logs (and statement counters can tell
        # them from the requests').
        self._engine = engine.execution_options(logging_token="relay")  # noqa: S106 - a log tag
        # Marking is one idempotent UPDATE: on PostgreSQL without BEGIN/COMMIT round trips
        # around it, and without the checkout ping (a dropped connection: run it again).
        self._marking_engine = single_statement_reads(self._engine)
        self._retention = retention
        self._queue: asyncio.Queue[list[Change]] = asyncio.Queue()
        # Ids of published changes waiting to be marked, one list per publish.
        self._marks: asyncio.Queue[list[int]] = asyncio.Queue()
        # Set by idle(): mark now rather than wait for more publishes to join.
        self._hurry = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.swept = 0

    def submit(self, changes: list[Change]) -> None:
        """Called from the after-commit hook on the event loop thread: never blocks.
        Inside `holding()` the changes wait for the hold to let go."""
        hold = current_hold(self)
        if hold is not None:
            hold.add(changes)
        else:
            self._enqueue(changes)

    def holding(self) -> AbstractContextManager[Hold]:
        """Hold what is committed in the block until it ends or the hold's `release()`
        (at most subscriptions.hold.HOLD_LIMIT): a request's response goes out before
        its changes are published. See subscriptions.hold."""
        return holding(self, self._enqueue)

    def _enqueue(self, changes: list[Change]) -> None:
        self._metrics.changes_captured.inc(len(changes))
        self._metrics.relay_pending_changes.inc(len(changes))
        self._queue.put_nowait(changes)

    async def idle(self) -> None:
        """Return once every change submitted so far has been published and marked."""
        await self._queue.join()
        self._hurry.set()
        await self._marks.join()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="change-relay"),
            asyncio.create_task(self._mark_published(), name="change-marker"),
            asyncio.create_task(self._every(SWEEP_INTERVAL, self.sweep), name="change-sweeper"),
            asyncio.create_task(self._every(TRIM_INTERVAL, self.trim), name="change-log-trim"),
        ]

    async def stop(self) -> None:
        """Publish what is queued (bounded by STOP_TIMEOUT), then stop. Whatever is left
        stays in the change log for another process's sweeper."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.idle()
        if not self._queue.empty():
            logger.warning(
                "stopping with %d unpublished change batches (left to the sweeper)",
                self._queue.qsize(),
            )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def sweep(self) -> int:
        """Publish changes committed more than SWEEP_AGE ago and still unpublished."""
        async with self._engine.begin() as connection:
            orphans = await unpublished(connection, utcnow() - SWEEP_AGE, SWEEP_BATCH)
            if orphans:
                logger.warning("publishing %d orphaned changes", len(orphans))
                # Marked in the transaction that locked them: another connection would
                # wait for those very row locks.
                await self._publish_once(orphans, connection, source="sweeper")
                self.swept += len(orphans)
        return len(orphans)

    async def trim(self) -> int:
        deleted = await trim(self._engine, self._retention)
        if deleted:
            logger.info("trimmed %d changes older than %s", deleted, self._retention)
        return deleted

    async def _run(self) -> None:
        while True:
            # Whatever committed while the last publish was in flight goes out together:
            # one PUBLISH per user and one UPDATE for all of it, however many commits.
            batches = [await self._queue.get()]
            while len(batches) < RELAY_BATCH_COMMITS and not self._queue.empty():
                batches.append(self._queue.get_nowait())
            try:
                await self._publish_with_retry([c for batch in batches for c in batch])
            finally:
                self._metrics.relay_pending_changes.dec(sum(len(batch) for batch in batches))
                for _ in batches:
                    self._queue.task_done()

    async def _publish_with_retry(self, changes: list[Change]) -> None:
        await _with_retry(lambda: self._publish_once(changes), f"publishing {len(changes)} changes")

    async def _publish_once(
        self,
        changes: list[Change],
        connection: AsyncConnection | None = None,
        *,
        source: str = "relay",
    ) -> None:
        # One wake-up per user and batch is enough: the subscriber reads everything
        # after its position from the change log. It names the user's newest change,
        # and carries it where the write looked up the user's change before it.
        newest: dict[int, Change] = {}
        for change in changes:
            if change.change_id is None:
                continue
            for user in change.audience:
                known = newest.get(user)
                if known is None or cast("int", known.change_id) < change.change_id:
                    newest[user] = change
        messages = [(user_channel(u), _wakeup(u, c)) for u, c in sorted(newest.items())]
        await self._broker.publish_many(messages)
        self.published += len(messages)
        self._metrics.wakeups_published.inc(len(messages))
        ids = [c.change_id for c in changes if c.change_id is not None]
        if not ids:
            return
        if connection is not None:  # the sweeper's, holding the rows' locks: mark now
            await mark_published(connection, ids)
        else:
            self._marks.put_nowait(ids)
        self._observe_published(changes, source)

    async def _mark_published(self) -> None:
        """Mark what the relay published, gathering up to MARK_DELAY of publishes into
        one UPDATE; retried with backoff while the database fails."""
        while True:
            batches = [await self._marks.get()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MARK_DELAY):
                    await self._hurry.wait()
            while not self._marks.empty():
                batches.append(self._marks.get_nowait())
            self._hurry.clear()
            try:
                await self._mark_with_retry([i for batch in batches for i in batch])
            finally:
                for _ in batches:
                    self._marks.task_done()

    async def _mark_with_retry(self, ids: list[int]) -> None:
        async def mark() -> None:
            async with self._marking_engine.begin() as connection:
                await mark_published(connection, ids)

        await _with_retry(
            lambda: read_retrying_stale(mark), f"marking {len(ids)} changes published"
        )

    def _observe_published(self, changes: list[Change], source: str) -> None:
        self._metrics.changes_published.labels(source).inc(len(changes))
        now = utcnow()
        for change in changes:
            if change.committed_at is not None:
                lag = max(0.0, (now - change.committed_at).total_seconds())
                self._metrics.relay_lag.observe(lag)

    @staticmethod
    async def _every(seconds: float, job: Callable[[], Awaitable[int]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s failed; trying again in %.0f s", job.__name__, seconds)


def _wakeup(user_id: int, change: Change) -> str:
    change_id = cast("int", change.change_id)
    previous = change.previous.get(user_id)
    if previous is None:
        return encode_wakeup(change_id)
    carried = LoggedChange(
        change_id,
        change.key.typename,
        change.key.id,
        change.op,
        change.version,
        change.committed_at,
    )
    return encode_wakeup(change_id, carried, previous)


async def _with_retry(action: Callable[[], Awaitable[None]], what: str) -> None:
    """Run `action` until it succeeds, logging each failure and backing off (the broker
    or the database may be down for a while; what is committed must still go out)."""
    delay = 0.1
    while True:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            continue
        return
