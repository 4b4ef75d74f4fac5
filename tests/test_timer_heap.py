"""app/timer_heap.py: many timers on one loop timer, run in order and only when due;
cancelled ones never run and are not kept. And LiveSockets, which closes a socket on
it when its token expires (tests/test_logout.py closes a real one)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import Awaitable, Callable

import pytest

from app.auth import TokenClaims
from app.live_sockets import CLOSE_TOKEN_UNUSABLE, EXPIRED_REASON, LiveSockets
from app.timer_heap import TimerHeap

WAIT = 5.0


class Ran:
    """The names of the callbacks that ran, in order, and a way to wait for them."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._changed = asyncio.Event()

    def callback(self, name: str) -> Callback:
        return Callback(self, name)

    async def count(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.names) < n:
                self._changed.clear()
                await self._changed.wait()

    def ran(self, name: str) -> None:
        self.names.append(name)
        self._changed.set()


class Callback:
    def __init__(self, ran: Ran, name: str) -> None:
        self.ran, self.name = ran, name

    def __call__(self) -> None:
        self.ran.ran(self.name)


async def test_timers_run_in_time_order_and_only_when_due() -> None:
    ran = Ran()
    timers = TimerHeap(time.monotonic)
    timers.call_later(3600, ran.callback("later"))
    timers.call_later(0.05, ran.callback("third"))
    timers.call_later(0.0, ran.callback("first"))
    timers.call_later(0.0, ran.callback("second"))  # a tie: in the order scheduled
    await ran.count(2)
    assert ran.names == ["first", "second"]
    await ran.count(3)
    assert ran.names == ["first", "second", "third"]
    assert len(timers) == 1  # "later" still waits
    timers.clear()
    assert len(timers) == 0


async def test_an_earlier_timer_added_later_is_not_held_up() -> None:
    ran = Ran()
    timers = TimerHeap(time.time)
    timers.call_at(time.time() + 3600, ran.callback("later"))
    timers.call_at(time.time() - 1, ran.callback("overdue"))
    await ran.count(1)
    assert ran.names == ["overdue"]
    timers.clear()


async def test_cancelled_timers_never_run_and_are_not_kept() -> None:
    ran = Ran()
    timers = TimerHeap(time.monotonic)
    gone = timers.call_later(0.0, ran.callback("gone"))
    gone.cancel()  # before the loop got to it
    timers.call_later(0.0, ran.callback("kept"))
    await ran.count(1)
    await asyncio.sleep(0.01)  # (a second one would have run by now)
    assert ran.names == ["kept"]

    many = [timers.call_later(3600, ran.callback("many")) for _ in range(2000)]
    for timer in many[10:]:
        timer.cancel()
    assert len(timers) == 10
    # Cancelled entries are cleared out: at most twice the live ones, plus the slack.
    assert len(timers._heap) <= 2 * 10 + TimerHeap.SLACK
    for timer in many[:10]:
        timer.cancel()
        timer.cancel()  # twice: no harm
    assert len(timers) == 0
    assert timers._heap == []


async def test_a_cancelled_timer_lets_go_of_what_its_callback_holds() -> None:
    class Protocol:
        def ping(self) -> None:
            pass  # pragma: no cover - cancelled first

    timers = TimerHeap(time.monotonic)
    timers.call_later(3600, Ran().callback("keeps the heap busy"))
    protocol = Protocol()
    held = weakref.ref(protocol)
    timer = timers.call_later(3600, protocol.ping)
    timer.cancel()  # (its entry stays in the heap until it comes up or is cleared out)
    del protocol
    gc.collect()
    assert held() is None
    timers.clear()


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran = Ran()
    timers = TimerHeap(time.monotonic)

    def failing() -> None:
        raise RuntimeError("timer broke")

    timers.call_later(0.0, failing)
    timers.call_later(0.0, ran.callback("after"))
    with caplog.at_level(logging.ERROR, logger="commitcast.timers"):
        await ran.count(1)
    assert ran.names == ["after"]
    assert any("timer broke" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_live_sockets_close_a_socket_when_its_token_expires_and_not_after_it_left() -> None:
    closed: list[tuple[str, int, str]] = []
    done = asyncio.Event()

    def closer(name: str) -> Callable[[int, str], Awaitable[None]]:
        async def close(code: int, reason: str) -> None:
            closed.append((name, code, reason))
            done.set()

        return close

    sockets = LiveSockets(max_per_user=5)
    expired = int(time.time()) - 1
    left, stays = object(), object()
    assert sockets.admit(left, TokenClaims(7, "a", expired, time.time()), closer("left"))
    assert sockets.admit(stays, TokenClaims(7, "b", expired, time.time()), closer("stays"))
    sockets.discard(left)  # the client went away first
    async with asyncio.timeout(WAIT):
        await done.wait()
    await asyncio.sleep(0.01)
    assert closed == [("stays", CLOSE_TOKEN_UNUSABLE, EXPIRED_REASON)]
    await sockets.aclose()
