"""The access fence: once removeMember returns, this process sends the removed user
nothing that was read while they were still a member.

Every update is reloaded as its viewer, so what is read after the removal committed
is already filtered. The window left is an update read *before* the commit and sent
*after* it. The fence closes it on this process:

- a delivery takes a ticket when its reload starts (`start`), and is admitted after
  the reload only if its viewer was not excluded meanwhile (`admit`, synchronous);
  a refused delivery reloads again (in a new transaction), now seeing the removal;
- an admitted ticket is held until the update has been handed to the socket (the
  subscription resumes after the send: `release`);
- `exclude(user)` (called by removeMember after its commit) refuses every ticket of the
  user started before now and waits until the ones already admitted are released. A
  delivery stuck longer than `settle_timeout` (a client that stopped reading) is
  cancelled before its bytes go out, and its connection closed.

So by the time `exclude` returns, every update built from a pre-removal read has been
handed to the transport (before the mutation's response) or dropped.

Other processes are told over the broker (`FENCE_CHANNEL`) and raise their fence when
the notice arrives, without removeMember waiting for them: there the window shrinks to
the broker's latency, but is not closed (see SECURITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from subscriptions.broker import Broker

logger = logging.getLogger("commitcast.fence")

DEFAULT_SETTLE_TIMEOUT = 2.0
# Namespaced per deployment by the broker, like the user channels.
FENCE_CHANNEL = "control:access-fence"
# The close code for a connection whose update was cancelled: graphql-ws clients retry
# it ("try again later") and resume with their cursor.
CLOSE_TRY_AGAIN_LATER = 1013

Abandon = Callable[[int, str], Awaitable[None]]


class AccessFence:
    def __init__(
        self, broker: Broker | None = None, settle_timeout: float = DEFAULT_SETTLE_TIMEOUT
    ) -> None:
        self._broker = broker
        self._settle_timeout = settle_timeout
        self._clock = 0
        # user id -> the clock when they were last excluded from a board
        self._excluded_at: dict[int, int] = {}
        self._held: dict[int, set[DeliveryTicket]] = {}
        self._process = uuid.uuid4().hex
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    @property
    def clock(self) -> int:
        """Advances at every exclusion: a read whose transaction began at clock C may
        have seen the memberships of every exclusion after C."""
        return self._clock

    def ticket(
        self,
        user_id: int,
        on_abandon: Abandon | None = None,
        holder: asyncio.Task[Any] | None = None,
    ) -> DeliveryTicket:
        """A ticket for one update to `user_id`, sent by the task `holder` (default: the
        task that admits it; a subscription passes its own, looked up once)."""
        return DeliveryTicket(self, user_id, on_abandon, holder)

    async def exclude(self, user_id: int) -> None:
        """Refuse deliveries to `user_id` read before now; wait for the admitted ones.
        Other processes are told too (not waited for)."""
        pending = self._raise(user_id)
        if self._broker is not None:
            notice = json.dumps({"user": user_id, "from": self._process})
            try:
                await self._broker.publish(FENCE_CHANNEL, notice)
            except Exception:  # this process is fenced; the others rely on the reload
                logger.exception("could not announce a member removal to other processes")
        await self._settle(user_id, pending)

    async def start(self) -> None:
        """Listen for other processes' exclusions (for the process's lifetime)."""
        if self._broker is None:
            return
        subscribed = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(subscribed), name="access-fence")
        await subscribed.wait()

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listener = None

    def _raise(self, user_id: int) -> list[DeliveryTicket]:
        self._clock += 1
        self._excluded_at[user_id] = self._clock
        return list(self._held.get(user_id, ()))

    async def _settle(self, user_id: int, pending: list[DeliveryTicket]) -> None:
        if not pending:
            return
        waits = {asyncio.ensure_future(t.released.wait()): t for t in pending}
        _, late = await asyncio.wait(waits, timeout=self._settle_timeout)
        for wait in late:
            logger.warning(
                "an update to user %s did not reach the socket within %.1f s of their "
                "removal from a board; cancelling it and closing the connection",
                user_id,
                self._settle_timeout,
            )
            waits[wait].abandon()
        if late:
            await asyncio.wait(late, timeout=self._settle_timeout)
            for wait in late:
                wait.cancel()

    async def _listen(self, subscribed: asyncio.Event) -> None:
        assert self._broker is not None
        while True:
            try:
                async with self._broker.subscribe(FENCE_CHANNEL) as subscriber:
                    subscribed.set()
                    async for message in subscriber:
                        if isinstance(message, str):
                            self._on_notice(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("access fence listener failed; restarting")
                subscribed.set()
                await asyncio.sleep(1.0)

    def _on_notice(self, message: str) -> None:
        try:
            notice = json.loads(message)
            user_id, origin = int(notice["user"]), str(notice["from"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed fence notice %r", message[:200])
            return
        if origin == self._process:
            return
        pending = self._raise(user_id)
        if pending:
            task = asyncio.create_task(self._settle(user_id, pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _admits(self, user_id: int, started: int) -> bool:
        return self._excluded_at.get(user_id, -1) <= started

    def _hold(self, ticket: DeliveryTicket) -> None:
        self._held.setdefault(ticket.user_id, set()).add(ticket)

    def _release(self, ticket: DeliveryTicket) -> None:
        held = self._held.get(ticket.user_id)
        if held is not None:
            held.discard(ticket)
            if not held:
                del self._held[ticket.user_id]


class DeliveryTicket:
    """One update on its way to one viewer. Use as `with ticket:` around the yield."""

    __slots__ = ("_done", "_fence", "_holder", "_on_abandon", "_released", "_started", "user_id")

    def __init__(
        self,
        fence: AccessFence,
        user_id: int,
        on_abandon: Abandon | None,
        holder: asyncio.Task[Any] | None = None,
    ) -> None:
        self._fence = fence
        self.user_id = user_id
        self._on_abandon = on_abandon
        self._started = 0
        self._holder = holder
        # One ticket per delivered update: its Event is made only when a removal has
        # to wait for it (`released`).
        self._released: asyncio.Event | None = None
        self._done = True

    @property
    def released(self) -> asyncio.Event:
        """Set while the ticket holds no admitted update."""
        if self._released is None:
            self._released = asyncio.Event()
            if self._done:
                self._released.set()
        return self._released

    def start(self) -> None:
        """Call right before the reload."""
        self._started = self._fence._clock

    def admit(self, snapshot_clock: int | None = None) -> bool:
        """Call right after the reload, with no await in between: False when the viewer
        was excluded from a board since `start`, or since `snapshot_clock` (the clock when
        the transaction it read in began, if earlier: a shared session) (reload again)."""
        started = self._started if snapshot_clock is None else min(self._started, snapshot_clock)
        if not self._fence._admits(self.user_id, started):
            return False
        if self._holder is None:
            self._holder = asyncio.current_task()
        self._done = False
        if self._released is not None:
            self._released.clear()
        self._fence._hold(self)
        return True

    def release(self) -> None:
        self._fence._release(self)
        self._done = True
        if self._released is not None:
            self._released.set()

    def abandon(self) -> None:
        """Cancel the task that is sending this update (its bytes never go out) and
        close its connection, so that the client reconnects and resumes."""
        if self._holder is not None:
            self._holder.cancel()
        if self._on_abandon is not None:
            task = asyncio.create_task(self._close(self._on_abandon))
            self._fence._tasks.add(task)
            task.add_done_callback(self._fence._tasks.discard)

    @staticmethod
    async def _close(close: Abandon) -> None:
        await close(CLOSE_TRY_AGAIN_LATER, "An update could not be delivered; reconnect.")

    def __enter__(self) -> DeliveryTicket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
