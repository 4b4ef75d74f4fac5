"""A user's stream of change notices, from this process's broker subscription."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from subscriptions.broker import Broker
from subscriptions.changes import Notice, user_channel
from subscriptions.relay import Relay


class UpdateFeed:
    def __init__(self, broker: Broker, relay: Relay) -> None:
        self._broker = broker
        self._relay = relay

    def cursor_now(self) -> str:
        """A cursor that stands for "everything up to now" (sent with RESYNC)."""
        return self._relay.next_cursor()

    @asynccontextmanager
    async def notices(self, user_id: int) -> AsyncIterator[AsyncIterator[Notice | None]]:
        """Yield an iterator of the user's notices; None where notices were lost.

        The channel is live (SUBSCRIBE confirmed) before this returns.
        """
        async with self._broker.subscribe(user_channel(user_id)) as subscriber:

            async def iterate() -> AsyncIterator[Notice | None]:
                async for item in subscriber:
                    yield Notice.decode(item) if isinstance(item, str) else None

            yield iterate()
