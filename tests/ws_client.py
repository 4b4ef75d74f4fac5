"""A small graphql-transport-ws (and legacy graphql-ws) client over a real socket."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
TIMEOUT = 10.0


async def close_code(connection: ClientConnection, within: float = 5.0) -> int | None:
    """Read until the server closes the connection; the code it closed with."""
    try:
        async with asyncio.timeout(within):
            while True:
                await connection.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    raise AssertionError("unreachable")  # pragma: no cover


UPDATES = """
subscription($after: String) {
  userUpdates(after: $after) {
    cursor op typename id
    node {
      __typename id
      ... on Board { name version members { id } cards { id } }
      ... on Card { title version position board { id } comments { id } }
      ... on Comment { body version card { id } }
      ... on Membership { role version user { id } board { id } }
      ... on User { name version }
    }
  }
}
"""


class GraphQLSocket:
    def __init__(self, connection: ClientConnection, protocol: str) -> None:
        self.connection = connection
        self.protocol = protocol
        self._ids = itertools.count(1)

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, within: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                message: dict[str, Any] = json.loads(await self.connection.recv())
                if message.get("type") not in ("ka", "ping", "pong"):
                    return message

    async def init(self, payload: dict[str, Any] | None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await self.send(message)
        return await self.receive()

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        operation_id = str(next(self._ids))
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send(
            {
                "id": operation_id,
                "type": kind,
                "payload": {"query": query, "variables": variables or {}},
            }
        )
        return operation_id

    async def next_payload(self, within: float = TIMEOUT) -> dict[str, Any]:
        """The next result of any operation; fails on errors."""
        message = await self.receive(within)
        kind = "next" if self.protocol == TRANSPORT_WS else "data"
        if message.get("type") != kind:
            raise AssertionError(f"expected {kind}, got {message}")
        payload: dict[str, Any] = message["payload"]
        if payload.get("errors"):
            raise AssertionError(f"errors: {payload['errors']}")
        return payload

    async def next_update(self, within: float = TIMEOUT) -> dict[str, Any]:
        update: dict[str, Any] = (await self.next_payload(within))["data"]["userUpdates"]
        return update


@asynccontextmanager
async def graphql_socket(
    url: str, token: str | None, *, protocol: str = TRANSPORT_WS, key: str = "authorization"
) -> AsyncIterator[GraphQLSocket]:
    """A connection that has been acknowledged (connection_init with the token under
    `key`)."""
    async with connect(url, subprotocols=[protocol], open_timeout=TIMEOUT) as connection:  # type: ignore[list-item]
        socket = GraphQLSocket(connection, protocol)
        payload = {key: f"Bearer {token}"} if token else {}
        ack = await socket.init(payload)
        if ack.get("type") != "connection_ack":
            raise AssertionError(f"not acknowledged: {ack}")
        yield socket
