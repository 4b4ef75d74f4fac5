"""A user's local hub: what all of one user's subscriptions in this process share.

However many sockets a user has open on this process, the hub holds one broker
subscription to the user's channel and reads the change log once per wake-up for all of
them: subscriptions that wait at the same position and are woken by the same message
share one read (and whatever the layer above attaches to it, see `Batch.scope`). A
subscription at another position (resuming from an older cursor, catching up after a
stall) reads for itself, so sharing never changes what anyone receives. The hubs of all
users woken by the same broker burst read in one statement (subscriptions.log_reader).

Each local subscription is a `Listener`: a flag and the newest wake-up seen, not a
queue, so an idle or stalled subscription holds a few hundred bytes whatever arrives.
The hub itself has no task: the broker hands it each wake-up (Broker.listen), and it
only wakes the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from subscriptions.backends import _Gap
from subscriptions.broker import Broker
from subscriptions.changelog import LoggedChange
from subscriptions.changes import user_channel
from subscriptions.log_reader import LogReader
from subscriptions.wakeups import Wakeup, decode_wakeup

READ_BATCH = 200
# Reads kept for joining, per hub, between two wake-ups: subscriptions catching up at
# different positions each add one; the newest few are all that is worth sharing.
SHARED_READS = 8


@dataclass(eq=False, slots=True)
class Batch:
    """One read of a user's change log after a position, shared by every local
    subscription that asked for that position in the same wake-up. `scope` is for the
    layers above: they keep what they derive from this batch there (one reload of a
    record for all of them), and it goes away with the batch."""

    after: int
    changes: list[LoggedChange]
    # time.monotonic_ns() when the read completed: a snapshot begun later holds every
    # change in it (schema.shared_reads).
    read_at: int = 0
    scope: dict[str, object] = field(default_factory=dict)

    @property
    def newest(self) -> int:
        """The newest change id in this batch (its start when empty)."""
        return self.changes[-1].id if self.changes else self.after

    @property
    def caught_up(self) -> bool:
        """The read found fewer changes than it could take: it reached the end of the
        log as of its start, so the next change will come with a wake-up."""
        return len(self.changes) < READ_BATCH


class Watermark:
    """The newest change id this process knows to be committed: from a wake-up (sent
    after its COMMIT) or a log read. The log has no holes (subscriptions.changelog:
    ids are taken in commit order), so every smaller id is committed too: a snapshot
    begun after the watermark reached N holds every change up to N."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def saw(self, change_id: int) -> None:
        if change_id > self.value:
            self.value = change_id


class Listener:
    """One local subscription's wake-up signal. A future made while it waits, not an
    asyncio.Event: an Event allocates its waiters' deque (about 0.8 KiB) up front, for
    every idle subscription. And the waiter is the future itself, not a coroutine
    around it: an idle subscription waits in it for its whole life, and a coroutine's
    frame would be kept as long (about 0.2 KiB)."""

    __slots__ = ("_after", "_gap", "_newest", "_waiter")

    def __init__(self) -> None:
        self._newest = 0
        self._gap = False
        self._waiter: asyncio.Future[None] | None = None
        # The position the waiter waits beyond.
        self._after = 0

    def notify(self, change_id: int | None) -> None:
        """A wake-up for `change_id`; None for a gap (messages may have been lost)."""
        if change_id is None:
            self._gap = True
        elif change_id > self._newest:
            self._newest = change_id
        waiter = self._waiter
        if waiter is not None and self._due(self._after):
            self._waiter = None
            if not waiter.done():  # (cancelled: its subscription is closing)
                waiter.set_result(None)

    def wait(self, after: int) -> asyncio.Future[None]:
        """Resolved when there may be changes after `after`: a wake-up for a newer
        change, or a gap (broker reconnect, queue overflow) after which we must look.
        One waiter at a time (its subscription's)."""
        waiter = asyncio.get_running_loop().create_future()
        if self._due(after):
            waiter.set_result(None)
        else:
            self._after = after
            self._waiter = waiter
        return waiter

    def _due(self, after: int) -> bool:
        """Whether a waiter beyond `after` may go on (a gap counts once)."""
        if self._gap:
            self._gap = False
            return True
        return self._newest > after


class UserHub:
    """A user's local subscriptions' shared state: their listeners, the shared reads,
    and the broker subscription to the user's channel. That subscription hands each
    wake-up to `_woken` as the broker receives it (Broker.listen): an idle hub holds no
    task and no queue (about 1.3 KiB less per user than a pump task reading a queue),
    and a wake-up costs no task switch per user."""

    def __init__(
        self,
        user_id: int,
        broker: Broker,
        reader: LogReader,
        watermark: Watermark | None = None,
    ) -> None:
        self.user_id = user_id
        self._watermark = watermark or Watermark()
        self.listeners: set[Listener] = set()
        self._reader = reader
        # Reads since the last wake-up, oldest first: running (the future their readers
        # set when done: the batch, or None for a read that failed), or their batch.
        self._reads: dict[int, asyncio.Future[Batch | None] | Batch] = {}
        # The last wake-up, if it carried its change (subscriptions.wakeups), and when
        # it arrived (time.monotonic_ns()).
        self._wakeup: Wakeup | None = None
        self._woken_at = 0
        self._subscription = broker.listen(user_channel(user_id), self._woken)
        # The SUBSCRIBE, until it succeeded (then nothing is kept); failed, it stays,
        # for ready() to raise.
        self._starting: asyncio.Task[object] | None = asyncio.create_task(
            self._subscription.__aenter__(), name=f"user-hub-{user_id}"
        )
        self._starting.add_done_callback(self._started)

    async def ready(self) -> None:
        """Return once the broker confirmed the subscription (raise if it failed)."""
        starting = self._starting
        if starting is not None:
            await asyncio.shield(starting)

    def _started(self, starting: asyncio.Task[object]) -> None:
        succeeded = not starting.cancelled() and starting.exception() is None
        if succeeded and self._starting is starting:
            self._starting = None

    async def stop(self) -> None:
        starting, self._starting = self._starting, None
        subscribed = True
        if starting is not None:
            starting.cancel()  # (no-op once done)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            subscribed = not starting.cancelled() and starting.exception() is None
        if subscribed:
            with contextlib.suppress(Exception):
                await self._subscription.__aexit__(None, None, None)
        # (A running read runs in its reader's task, which ends with its subscription.)
        self._reads.clear()

    def _woken(self, item: str | _Gap) -> None:
        """A message on the user's channel (or GAP: messages may have been lost)."""
        wakeup = decode_wakeup(item) if isinstance(item, str) else None
        change_id = None if wakeup is None else wakeup.change_id
        if change_id is not None:
            self._watermark.saw(change_id)
        # Reads from before this wake-up may miss its change: later callers start a
        # new one, unless its carried change is all there is after their position.
        self._reads.clear()
        self._wakeup = wakeup if wakeup is not None and wakeup.carried is not None else None
        self._woken_at = time.monotonic_ns()
        for listener in self.listeners:
            listener.notify(change_id)

    async def read(self, after: int) -> Batch:
        """The user's changes after `after` (oldest first, at most READ_BATCH): one
        database read for every local subscription asking the same since the last
        wake-up. A read started after a wake-up sees its change (it was published after
        COMMIT), so joining one never hides a change a subscription was woken for. The
        hubs woken by the same broker burst read in one statement (LogReader)."""
        while True:
            entry = self._reads.get(after)
            if entry is None:
                carried = self._carried(after)
                batch = carried if carried is not None else await self._read_first(after)
                if carried is not None:
                    self._keep(after, carried)
            elif isinstance(entry, Batch):
                batch = entry
            else:
                # Another subscription's read: shielded, so that our cancellation
                # does not end theirs. None: it failed or was cancelled, read again.
                joined = await asyncio.shield(entry)
                if joined is None:
                    continue
                batch = joined
            self._watermark.saw(batch.newest)
            return batch

    async def _read_first(self, after: int) -> Batch:
        """Read in the caller's own task, for whoever joins meanwhile: no task of its
        own and no wait on one (in a process delivering a change to 400 members of one
        board, the task and the shielded wait on it were 9 % of the CPU, and nearly
        every read has nobody joining it)."""
        pending: asyncio.Future[Batch | None] = asyncio.get_running_loop().create_future()
        self._keep(after, pending)
        batch: Batch | None = None
        try:
            batch = Batch(after, await self._reader.read(self.user_id, after), time.monotonic_ns())
            return batch
        finally:
            # Kept as the batch, not the future (cleared by a wake-up or pushed out by
            # newer reads meanwhile: not kept); a failed read is forgotten.
            if self._reads.get(after) is pending:
                if batch is None:
                    del self._reads[after]
                else:
                    self._reads[after] = batch
            pending.set_result(batch)

    def _keep(self, after: int, entry: asyncio.Future[Batch | None] | Batch) -> None:
        self._reads[after] = entry
        while len(self._reads) > SHARED_READS:
            del self._reads[next(iter(self._reads))]  # the oldest

    def _carried(self, after: int) -> Batch | None:
        """What a read after `after` would return, if the last wake-up carried all of
        it (subscriptions.wakeups): no read then. It was committed before it was
        published, so a snapshot begun after its arrival holds it."""
        wakeup = self._wakeup
        if wakeup is None or wakeup.carried is None or not wakeup.covers(after):
            return None
        return Batch(after, [wakeup.carried], self._woken_at)


class LocalHubs:
    """This process's hubs, one per user with at least one local subscription."""

    def __init__(self, broker: Broker, engine: AsyncEngine) -> None:
        self._broker = broker
        # Shared by the hubs: those woken by one broker burst read their logs in one
        # statement instead of one each.
        self.reader = LogReader(engine, READ_BATCH)
        self._hubs: dict[int, UserHub] = {}
        # What every hub here has seen committed (schema.shared_reads uses it).
        self.watermark = Watermark()

    def __len__(self) -> int:
        return len(self._hubs)

    def hub(self, user_id: int) -> UserHub | None:
        return self._hubs.get(user_id)

    async def attach(self, user_id: int) -> tuple[UserHub, Listener]:
        """A listener on the user's hub (started, and its broker subscription
        confirmed, before this returns); `detach` it when done."""
        hub = self._hubs.get(user_id)
        if hub is None:
            hub = self._hubs[user_id] = UserHub(user_id, self._broker, self.reader, self.watermark)
        listener = Listener()
        # Registered before waiting: a wake-up during the SUBSCRIBE reaches it too.
        hub.listeners.add(listener)
        try:
            await hub.ready()
        except BaseException:
            await self.detach(hub, listener)
            raise
        return hub, listener

    async def detach(self, hub: UserHub, listener: Listener) -> None:
        """Remove a listener `attach` gave; the hub stops after its last listener."""
        hub.listeners.discard(listener)
        if not hub.listeners:
            if self._hubs.get(hub.user_id) is hub:
                del self._hubs[hub.user_id]
            await hub.stop()

    @contextlib.asynccontextmanager
    async def join(self, user_id: int) -> AsyncIterator[tuple[UserHub, Listener]]:
        """attach, and detach at exit."""
        hub, listener = await self.attach(user_id)
        try:
            yield hub, listener
        finally:
            await self.detach(hub, listener)
