"""`SharedValues`: one object for each distinct value seen, so that equal immutable
values kept by many connections (a handshake header, a subscription's query text)
are one object in memory instead of one per connection."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V", bound=Hashable)


class SharedValues(Generic[V]):
    """Bounded: once `limit` distinct values are kept, new ones are simply not shared
    (only the values seen first are kept, for the process's life: what callers share
    must not be secret)."""

    __slots__ = ("_limit", "_values")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._values: dict[V, V] = {}

    def __len__(self) -> int:
        return len(self._values)

    def share(self, value: V) -> V:
        """The kept value equal to `value` (kept now if there is room), else `value`."""
        kept = self._values.get(value)
        if kept is not None:
            return kept
        if len(self._values) < self._limit:
            self._values[value] = value
        return value
