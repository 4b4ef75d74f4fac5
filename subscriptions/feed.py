"""A user's stream of changes: read from the change log after a position, woken up by
the broker. The broker only says "something new"; the log says what, so a lost, late
or repeated broker message can neither lose nor duplicate a change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from subscriptions.broker import Broker, Subscriber
from subscriptions.changelog import LoggedChange, bounds, changes_since
from subscriptions.changes import decode_wakeup, user_channel
from subscriptions.cursors import AHEAD_OF_LOG, EXPIRED_CURSOR, INVALID_CURSOR, decode_cursor

READ_BATCH = 200


@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts reading, and whether the client must refetch first
    (its cursor was malformed, someone else's, or older than the retention)."""

    position: int
    resync: bool
    # Why the cursor cannot be served (subscriptions.cursors), when resync is True.
    reason: str | None = None


async def starting_point(engine: AsyncEngine, user_id: int, cursor: str | None) -> Start:
    async with engine.connect() as connection:
        log = await bounds(connection)
    if cursor is None:
        return Start(log.head, resync=False)
    position = decode_cursor(cursor, user_id)
    if position is None:
        return Start(log.head, resync=True, reason=INVALID_CURSOR)
    if not log.trimmed_through <= position <= log.head:
        reason = EXPIRED_CURSOR if position < log.trimmed_through else AHEAD_OF_LOG
        return Start(log.head, resync=True, reason=reason)
    return Start(position, resync=False)


class UserStream:
    def __init__(
        self, user_id: int, start: Start, subscriber: Subscriber, engine: AsyncEngine
    ) -> None:
        self.user_id = user_id
        self.start = start
        self._subscriber = subscriber
        self._engine = engine

    async def read(self, after: int) -> list[LoggedChange]:
        async with self._engine.connect() as connection:
            return await changes_since(connection, self.user_id, after, READ_BATCH)

    async def wait(self, after: int) -> None:
        """Return when there may be changes after `after`: a wake-up for a newer change,
        or a gap (broker reconnect, queue overflow) after which we must look."""
        while True:
            item = await self._subscriber.get()
            if not isinstance(item, str):
                return
            change_id = decode_wakeup(item)
            if change_id is None or change_id > after:
                return


class UpdateFeed:
    def __init__(self, broker: Broker, engine: AsyncEngine) -> None:
        self._broker = broker
        self._engine = engine

    @asynccontextmanager
    async def open(self, user_id: int, cursor: str | None) -> AsyncIterator[UserStream]:
        """Fix the starting point (now, or the cursor's), then subscribe to the user's
        wake-ups (confirmed before this returns). Reading the log after both means that
        nothing committed since the request can slip through, however long the
        subscription took to be confirmed."""
        start = await starting_point(self._engine, user_id, cursor)
        async with self._broker.subscribe(user_channel(user_id)) as subscriber:
            yield UserStream(user_id, start, subscriber, self._engine)
