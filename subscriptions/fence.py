"""The access fence: once removeMember returns, this process sends the removed user
nothing that was read while they were still a member.

Every update is reloaded as its viewer, so what is read after the removal committed
is already filtered. The window left is an update read *before* the commit and sent
*after* it. The fence closes it on this process:

- a delivery takes a ticket when its reload starts (`start`), and is admitted after
  the reload only if its viewer was not excluded meanwhile (`admit`, synchronous);
  a refused delivery reloads again, now seeing the removal;
- an admitted ticket is held until the update has been handed to the socket (the
  subscription resumes after the send: `release`);
- `exclude(user)` (called by removeMember after its commit) refuses every ticket of the
  user started before now and waits until the ones already admitted are released. A
  delivery stuck longer than `settle_timeout` (a client that stopped reading) is
  cancelled before its bytes go out.

So by the time `exclude` returns, every update built from a pre-removal read has been
handed to the transport (before the mutation's response) or dropped.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

logger = logging.getLogger("commitcast.fence")

DEFAULT_SETTLE_TIMEOUT = 2.0


class AccessFence:
    def __init__(self, settle_timeout: float = DEFAULT_SETTLE_TIMEOUT) -> None:
        self._settle_timeout = settle_timeout
        self._clock = 0
        # user id -> the clock when they were last excluded from a board
        self._excluded_at: dict[int, int] = {}
        self._held: dict[int, set[DeliveryTicket]] = {}

    def ticket(self, user_id: int) -> DeliveryTicket:
        return DeliveryTicket(self, user_id)

    async def exclude(self, user_id: int) -> None:
        """Refuse deliveries to `user_id` read before now; wait for the admitted ones."""
        self._clock += 1
        self._excluded_at[user_id] = self._clock
        pending = list(self._held.get(user_id, ()))
        if not pending:
            return
        waits = {asyncio.ensure_future(t.released.wait()): t for t in pending}
        _, late = await asyncio.wait(waits, timeout=self._settle_timeout)
        for wait in late:
            ticket = waits[wait]
            logger.warning(
                "a delivery to user %s did not reach the socket within %.1f s of their "
                "removal from a board; cancelling it",
                user_id,
                self._settle_timeout,
            )
            ticket.cancel_holder()
        if late:
            await asyncio.wait(late, timeout=self._settle_timeout)
            for wait in late:
                wait.cancel()

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

    def __init__(self, fence: AccessFence, user_id: int) -> None:
        self._fence = fence
        self.user_id = user_id
        self.released = asyncio.Event()
        self._started = 0
        self._holder: asyncio.Task[object] | None = None

    def start(self) -> None:
        """Call right before the reload."""
        self._started = self._fence._clock

    def admit(self) -> bool:
        """Call right after the reload, with no await in between: False when the viewer
        was excluded from a board since `start` (reload again)."""
        if not self._fence._admits(self.user_id, self._started):
            return False
        self._holder = asyncio.current_task()
        self.released.clear()
        self._fence._hold(self)
        return True

    def release(self) -> None:
        self._fence._release(self)
        self.released.set()

    def cancel_holder(self) -> None:
        if self._holder is not None:
            self._holder.cancel()

    def __enter__(self) -> DeliveryTicket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
