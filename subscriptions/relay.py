"""The relay: after a commit, publish each change to the channel of every user in its
audience, off the request path.

The capture hook hands over committed changes synchronously (SQLAlchemy events cannot
await); the relay's own task publishes them in commit order. While the broker is down
it keeps them in memory, logs, and retries with backoff, so a broker failure never
fails a committed mutation and the changes go out when the broker is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

from subscriptions.broker import Broker
from subscriptions.changes import Change, Notice, user_channel

logger = logging.getLogger("commitcast.relay")

MAX_RETRY_DELAY = 5.0
STOP_TIMEOUT = 5.0


class Relay:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._queue: asyncio.Queue[list[Change]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Cursors are unique per process and increase in publish order.
        self._epoch = time.time_ns()
        self._sequence = itertools.count(1)
        self.published = 0

    def submit(self, changes: list[Change]) -> None:
        """Called from the after-commit hook on the event loop thread: never blocks."""
        self._queue.put_nowait(changes)

    def next_cursor(self) -> str:
        return f"{self._epoch:x}-{next(self._sequence):x}"

    async def idle(self) -> None:
        """Return once every change submitted so far has been published."""
        await self._queue.join()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-relay")

    async def stop(self) -> None:
        """Publish what is queued (bounded by STOP_TIMEOUT), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.idle()
        if not self._queue.empty():
            logger.error("stopping with %d unpublished change batches", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            changes = await self._queue.get()
            try:
                await self._publish(changes)
            finally:
                self._queue.task_done()

    async def _publish(self, changes: list[Change]) -> None:
        messages: list[tuple[str, str]] = []
        for change in changes:
            notice = Notice(
                cursor=self.next_cursor(),
                typename=change.key.typename,
                id=change.key.id,
                op=change.op,
                version=change.version,
            ).encode()
            messages.extend((user_channel(user), notice) for user in sorted(change.audience))
        delay = 0.1
        while True:
            try:
                await self._broker.publish_many(messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "publishing %d notices failed (%s: %s); retrying in %.1f s",
                    len(messages),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            self.published += len(messages)
            return
