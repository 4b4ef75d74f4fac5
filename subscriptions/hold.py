"""Holding what a request commits until its response is on its way.

The capture hook hands committed changes to the relay right after COMMIT, and the
relay's task then publishes them (and this process's subscriptions deliver them) as
soon as the request's coroutine next waits: that was before its response was written.
Traced in a server at 20 mutations/s with one subscriber, the publish ran between the
COMMIT and the response, which came 1.2 to 1.3 ms after the write session closed (0.75
to 0.85 ms with real-time off). Held, it comes 0.97 ms after.

So the GraphQL endpoint holds what its request commits (`Relay.holding`, used by
app.http_policy) and lets go just before the response is written: the relay's task
becomes ready then, and runs once the response's bytes are handed to the transport.
A change is never held longer than HOLD_LIMIT after its commit: a request that goes on
working after a commit (several mutation fields, a slow resolver) does not hold other
users' updates back for long. Nothing held is lost to a failure of the request: the
hold lets go when its block ends, however it ends. A process that dies while holding
leaves the changes unpublished in the change log, for the sweeper (as any crash
between COMMIT and publish does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from subscriptions.changes import Change

# Longest a committed change waits in a hold: over the time from a COMMIT to the response
# of an ordinary mutation (about 1 ms on the development machine), and small against a
# delivery's own latency. What subscribers wait for the hold is bounded by it: under
# load, when the event loop is slow to bring the response round, the hold gives up.
HOLD_LIMIT = 0.005

HandOver = Callable[[list[Change]], None]


class Hold:
    """Changes committed in one request, handed over together when it lets go."""

    __slots__ = ("_batches", "_hand_over", "_released", "_timer", "owner")

    def __init__(self, owner: object, hand_over: HandOver) -> None:
        # Whose submissions it holds (a process may run several apps: tests do).
        self.owner = owner
        self._hand_over = hand_over
        self._batches: list[list[Change]] = []
        self._released = False
        self._timer: asyncio.TimerHandle | None = None

    def add(self, changes: list[Change]) -> None:
        """Hold one commit's changes, or hand them over at once if already let go
        (a task started in the request may commit after its response)."""
        if self._released:
            self._hand_over(changes)
            return
        self._batches.append(changes)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(HOLD_LIMIT, self.release)

    def release(self) -> None:
        """Hand over everything held, in commit order; later additions go straight on."""
        if self._released:
            return
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batches, self._batches = self._batches, []
        for changes in batches:
            self._hand_over(changes)


_current: ContextVar[Hold | None] = ContextVar("commitcast_change_hold", default=None)


def current_hold(owner: object) -> Hold | None:
    """The hold of the running request for `owner`'s submissions, if any. SQLAlchemy's
    greenlets share the context of the coroutine that runs them, so the capture hook
    sees the request's hold."""
    hold = _current.get()
    return hold if hold is not None and hold.owner is owner else None


@contextmanager
def holding(owner: object, hand_over: HandOver) -> Iterator[Hold]:
    """Hold what is committed in this block (and in tasks it starts) for `owner` until
    the block ends or `release()` is called, whichever comes first."""
    hold = Hold(owner, hand_over)
    token = _current.set(hold)
    try:
        yield hold
    finally:
        _current.reset(token)
        hold.release()
