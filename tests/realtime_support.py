"""Helpers for end-to-end real-time tests (the `realtime` fixture is in conftest)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.live import LiveServer
from tests.support import GraphQLClient
from tests.ws_client import GraphQLSocket

Update = dict[str, Any]


@dataclass
class Realtime:
    server: LiveServer
    api: GraphQLClient


async def collect_until(socket: GraphQLSocket, done: Callable[[Update], bool]) -> list[Update]:
    """Every update up to and including the first for which `done` is true."""
    updates: list[Update] = []
    while True:
        update = await socket.next_update()
        updates.append(update)
        if done(update):
            return updates


def summary(updates: list[Update]) -> Counter[tuple[str, str, str]]:
    return Counter((u["op"], u["typename"], u["id"]) for u in updates)
