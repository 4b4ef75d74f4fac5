"""A user's stream of changes: read from the change log after a position, woken up by
the broker. The broker only says "something new"; the log says what, so a lost, late
or repeated broker message can neither lose nor duplicate a change. A user's local
subscriptions share one broker subscription and their reads (subscriptions.hub)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from subscriptions.broker import Broker
from subscriptions.changelog import bounds
from subscriptions.cursors import AHEAD_OF_LOG, EXPIRED_CURSOR, INVALID_CURSOR, decode_cursor
from subscriptions.hub import Batch, Listener, LocalHubs, UserHub


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
    """One subscription's stream of a user's changes, and the async context manager
    that opens it (`UpdateFeed.open`). A class rather than a generator-based context
    manager: it is held for the subscription's life, and a suspended generator with
    contextlib's manager costs about 0.5 KiB per idle subscription."""

    __slots__ = ("_cursor", "_engine", "_hub", "_hubs", "_listener", "start", "user_id")

    def __init__(self, hubs: LocalHubs, engine: AsyncEngine, user_id: int, cursor: str | None):
        self.user_id = user_id
        self._hubs = hubs
        self._engine = engine
        self._cursor = cursor
        # Set on entry:
        self.start: Start
        self._hub: UserHub
        self._listener: Listener

    async def __aenter__(self) -> UserStream:
        """Fix the starting point (now, or the cursor's), then subscribe to the user's
        wake-ups (confirmed before this returns). Reading the log after both means that
        nothing committed since the request can slip through, however long the
        subscription took to be confirmed."""
        self.start = await starting_point(self._engine, self.user_id, self._cursor)
        self._hub, self._listener = await self._hubs.attach(self.user_id)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._hubs.detach(self._hub, self._listener)

    async def read(self, after: int) -> Batch:
        """The user's changes after `after`, shared with the user's other local
        subscriptions that read the same position after the same wake-up."""
        return await self._hub.read(after)

    def wait(self, after: int) -> Awaitable[None]:
        """Return when there may be changes after `after` (see Listener.wait).

        The listener's own future, not a coroutine of ours around it: an idle
        subscription waits here for its whole life, and every frame it waits in is kept
        as long."""
        return self._listener.wait(after)


class UpdateFeed:
    """One per process (the app's runtime owns it): it holds the process's user hubs."""

    def __init__(self, broker: Broker, engine: AsyncEngine) -> None:
        self._engine = engine
        self.hubs = LocalHubs(broker, engine)

    def open(self, user_id: int, cursor: str | None) -> UserStream:
        """`async with feed.open(user_id, cursor) as stream`: see UserStream.__aenter__."""
        return UserStream(self.hubs, self._engine, user_id, cursor)
