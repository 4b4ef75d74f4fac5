"""`SmallQueue`: the part of `asyncio.Queue` a single reader needs, in less memory.

An `asyncio.Queue` allocates three deques (about 0.6 KiB each) and an `asyncio.Event`
with a fourth, up front, whatever it will hold. Some queues live as long as a
connection or a user's subscription and hold nothing nearly all that time (uvicorn's
per-socket message queue, app.ws_protocol; a broker subscriber's, subscriptions.broker):
a list of items and a list of waiting readers do, about 0.1 KiB when empty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SmallQueue(Generic[T]):
    """put_nowait, get, get_nowait, empty, full, qsize: as `asyncio.Queue`'s, with
    `maxsize` <= 0 for no bound."""

    __slots__ = ("_getters", "_items", "_maxsize", "on_take")

    def __init__(self, maxsize: int = 0) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] = []
        self._maxsize = maxsize
        # Called by `get` once it took an item (before returning it): what a reader
        # would do after its `await queue.get()`, without a coroutine of its own.
        self.on_take: Callable[[], None] | None = None

    def put_nowait(self, item: T) -> None:
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)
        self._wake_next()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> T:
        # As asyncio.Queue.get: a reader is woken, then takes the item itself, so an item
        # a cancelled reader was woken for stays for the next one.
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(waiter)
                if self._items:
                    self._wake_next()
                raise
        item = self._items.pop(0)
        if self.on_take is not None:
            self.on_take()
        return item

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self._maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def _wake_next(self) -> None:
        while self._getters:
            waiter = self._getters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
