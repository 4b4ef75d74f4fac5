"""Many timers on one event-loop timer.

`loop.call_later` gives every timer a handle, a copy of the context and a libuv timer:
about 0.8 KiB per timer as tracemalloc counts it. A server holding a timer per idle
socket (its token's expiry, its keepalive ping) pays that per socket. A TimerHeap keeps
its timers in a heap and arms one loop timer, for the earliest.

A cancelled timer stays in the heap until it comes up, or until cancelled ones
outnumber the live ones, when they are cleared out: the heap holds at most about twice
the live timers. Callbacks run on the loop, in order of their time (ties: first
scheduled, first run); one that raises is logged and the others still run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

logger = logging.getLogger("commitcast.timers")


def _nothing() -> None:
    pass


class HeapTimer:
    """One timer of a TimerHeap: `cancel()` it like an asyncio TimerHandle."""

    __slots__ = ("_heap", "callback", "cancelled", "when")

    def __init__(self, heap: TimerHeap, when: float, callback: Callable[[], object]) -> None:
        self._heap = heap
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            # As asyncio's handles: what the callback holds (a socket's protocol, say)
            # is not kept until the entry leaves the heap.
            self.callback = _nothing
            self._heap._forget(self)


class TimerHeap:
    """Timers on `clock` (`time.time` for wall-clock deadlines such as a token's `exp`,
    the loop's `time` for intervals), for the running event loop."""

    # Cancelled entries tolerated before any clean-up (cleaning a small heap gains nothing).
    SLACK = 64

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, HeapTimer]] = []
        self._order = itertools.count()
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def __len__(self) -> int:
        """Timers neither run nor cancelled."""
        return self._live

    def call_at(self, when: float, callback: Callable[[], object]) -> HeapTimer:
        timer = HeapTimer(self, when, callback)
        self._live += 1
        heapq.heappush(self._heap, (when, next(self._order), timer))
        self._arm()
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> HeapTimer:
        return self.call_at(self._clock() + delay, callback)

    def clear(self) -> None:
        """Cancel every timer."""
        for _, _, timer in self._heap:
            timer.cancelled = True
            timer.callback = _nothing
        self._heap.clear()
        self._live = 0
        self._disarm()

    def _forget(self, timer: HeapTimer) -> None:
        self._live -= 1
        if not self._live:
            self._heap.clear()
            self._disarm()
        elif len(self._heap) > 2 * self._live + self.SLACK:
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)

    def _arm(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            self._disarm()
            return
        earliest = self._heap[0][0]
        if self._timer is not None and self._timer_at <= earliest:
            return  # the loop timer is due no later than that
        self._disarm()
        delay = max(0.0, earliest - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._run_due)
        self._timer_at = earliest

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = float("inf")

    def _run_due(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            timer.cancelled = True  # run: cancelling it now does nothing
            self._live -= 1
            callback, timer.callback = timer.callback, _nothing
            try:
                callback()
            except Exception:
                logger.exception("a timer's callback failed")
        self._arm()
