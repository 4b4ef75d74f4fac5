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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from subscriptions.broker import Broker
from subscriptions.changelog import LoggedChange
from subscriptions.changes import decode_wakeup, user_channel
from subscriptions.log_reader import LogReader

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
    every idle subscription."""

    __slots__ = ("_gap", "_newest", "_waiter")

    def __init__(self) -> None:
        self._newest = 0
        self._gap = False
        self._waiter: asyncio.Future[None] | None = None

    def notify(self, change_id: int | None) -> None:
        """A wake-up for `change_id`; None for a gap (messages may have been lost)."""
        if change_id is None:
            self._gap = True
        elif change_id > self._newest:
            self._newest = change_id
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, after: int) -> None:
        """Return when there may be changes after `after`: a wake-up for a newer change,
        or a gap (broker reconnect, queue overflow) after which we must look."""
        while True:
            if self._gap:
                self._gap = False
                return
            if self._newest > after:
                return
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None


class UserHub:
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
        self._broker = broker
        self._reader = reader
        self._reads: OrderedDict[int, asyncio.Task[Batch]] = OrderedDict()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._run(), name=f"user-hub-{user_id}")

    async def ready(self) -> None:
        """Return once the broker confirmed the subscription (raise if it failed)."""
        await asyncio.shield(self._ready)

    async def stop(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump
        for read in self._reads.values():
            read.cancel()
        self._reads.clear()

    async def read(self, after: int) -> Batch:
        """The user's changes after `after` (oldest first, at most READ_BATCH): one
        database read for every local subscription asking the same since the last
        wake-up. A read started after a wake-up sees its change (it was published after
        COMMIT), so joining one never hides a change a subscription was woken for. The
        hubs woken by the same broker burst read in one statement (LogReader)."""
        read = self._reads.get(after)
        if read is None:
            read = asyncio.create_task(self._read(after))
            read.add_done_callback(self._forget_failed)
            self._reads[after] = read
            while len(self._reads) > SHARED_READS:
                self._reads.popitem(last=False)
        batch = await asyncio.shield(read)
        self._watermark.saw(batch.newest)
        return batch

    async def _read(self, after: int) -> Batch:
        changes = await self._reader.read(self.user_id, after)
        return Batch(after, changes, time.monotonic_ns())

    def _forget_failed(self, read: asyncio.Task[Batch]) -> None:
        if read.cancelled() or read.exception() is not None:
            for after, task in list(self._reads.items()):
                if task is read:
                    del self._reads[after]

    async def _run(self) -> None:
        try:
            async with self._broker.subscribe(user_channel(self.user_id)) as subscriber:
                self._ready.set_result(None)
                async for item in subscriber:
                    change_id = decode_wakeup(item) if isinstance(item, str) else None
                    if change_id is not None:
                        self._watermark.saw(change_id)
                    # Reads from before this wake-up may miss its change: later callers
                    # start a new one.
                    self._reads.clear()
                    for listener in self.listeners:
                        listener.notify(change_id)
        except BaseException as exc:
            if not self._ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    self._ready.cancel()
                else:
                    self._ready.set_exception(exc)
                    self._ready.exception()  # retrieved by ready(); never "never retrieved"
            raise


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
