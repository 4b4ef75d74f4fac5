"""Clients on the legacy `graphql-ws` subprotocol (subscriptions-transport-ws, as Apollo's
old SubscriptionClient and Python's `gql` speak it), and how both WebSocket protocols turn
away a connection_init without a usable token: close code 4403, after a
`connection_error` that says why on the legacy protocol. Both deployments, real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from gql import Client, GraphQLRequest, gql
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportServerError
from gql.transport.websockets import WebsocketsTransport
from graphql import ExecutionResult
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.realtime_support import Realtime, Update
from tests.support import Account
from tests.team import forged_token, signed_token
from tests.ws_client import LEGACY_WS, TIMEOUT, TRANSPORT_WS, GraphQLSocket

CLOSE_FORBIDDEN = 4403
# How long one liveness probe may take to come back before another is sent (see below).
PROBE_WAIT = 3.0
PROBES = 3

CARD_FIELDS = """
  id title description position done version createdAt updatedAt
  board { id name } author { id name } assignee { id } comments { id body }
"""
USER_UPDATES = gql(
    f"""
    subscription {{
      userUpdates {{
        cursor op typename id
        node {{
          __typename id
          ... on Card {{ {CARD_FIELDS} }}
          ... on Board {{ name version }}
          ... on Membership {{ role }}
        }}
      }}
    }}
    """
)
CARD_QUERY = f"""
query($id: ID!) {{ node(id: $id) {{ __typename id ... on Card {{ {CARD_FIELDS} }} }} }}
"""


def legacy_transport(url: str, token: str) -> WebsocketsTransport:
    """gql's websockets transport, pinned to the legacy protocol (by default it offers
    both and the server chooses; pinning makes the test mean what it says)."""
    return WebsocketsTransport(
        url=url,
        init_payload={"authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.APOLLO_SUBPROTOCOL],
        connect_timeout=TIMEOUT,
        ack_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    )


@asynccontextmanager
async def subscribed(
    session: AsyncClientSession, request: GraphQLRequest
) -> AsyncIterator[asyncio.Queue[Update]]:
    """Runs a gql subscription in a task, feeding its `userUpdates` into a queue."""
    updates: asyncio.Queue[Update] = asyncio.Queue()

    async def pump() -> None:
        async for result in session.subscribe(request):
            data = result.data if isinstance(result, ExecutionResult) else result
            assert data is not None
            await updates.put(data["userUpdates"])

    task = asyncio.create_task(pump())
    try:
        yield updates
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def about(typename: str, id_: str, *, op: str | None = None) -> Callable[[Update], bool]:
    """Matches the updates of one record (with the given op, if any)."""

    def matches(update: Update) -> bool:
        same = (update["typename"], update["id"]) == (typename, id_)
        return same and (op is None or update["op"] == op)

    return matches


async def next_matching(updates: asyncio.Queue[Update], wanted: Callable[[Update], bool]) -> Update:
    """The first update for which `wanted` is true; earlier ones (probes) are skipped.
    Callers bound the wait."""
    while True:
        update = await updates.get()
        if wanted(update):
            return update


async def until_live(realtime: Realtime, updates: asyncio.Queue[Update], viewer: Account) -> None:
    """Returns once the subscription is registered on the server.

    Neither protocol confirms a subscription, so the viewer makes a board of their own
    and waits for its CREATED. A probe that committed before the server subscribed is
    never delivered, so after PROBE_WAIT s another is made (at most PROBES).
    """
    for attempt in range(1, PROBES + 1):
        board = await realtime.api.board(viewer, f"probe {attempt}")
        with suppress(TimeoutError):
            async with asyncio.timeout(PROBE_WAIT):
                await next_matching(updates, about("Board", board, op="CREATED"))
            return
    raise AssertionError(f"no probe came back in {PROBES} attempts: the subscription is dead")


async def test_gql_on_the_legacy_protocol_receives_a_card_created_by_another_user(
    realtime: Realtime,
) -> None:
    api = realtime.api
    ann = await api.account("Ann")
    bob = await api.account("Bob")
    board = await api.board(ann, "Shared")
    await api.add_member(ann, board, bob, "EDITOR")

    transport = legacy_transport(realtime.server.ws_url, ann.token)
    async with Client(transport=transport, execute_timeout=TIMEOUT) as session:
        assert transport.subprotocol == LEGACY_WS
        async with subscribed(session, USER_UPDATES) as updates:
            await until_live(realtime, updates, ann)

            card = await api.card(bob, board, "Written by Bob")
            async with asyncio.timeout(TIMEOUT):
                update = await next_matching(updates, about("Card", card))

            assert update["op"] == "CREATED"
            assert update["cursor"]
            # The pushed node is exactly what a query of the card returns. (Over HTTP:
            # strawberry's graphql-ws handler answers queries with "queries are not
            # allowed", so this socket only carries subscriptions.)
            queried = await api.data(CARD_QUERY, {"id": card}, token=ann.token)
            assert update["node"] == queried["node"]
            assert update["node"]["author"] == {"id": bob.id, "name": "Bob"}
            assert update["node"]["board"]["id"] == board


async def test_gql_reports_why_the_legacy_protocol_refused_it(realtime: Realtime) -> None:
    ann = await realtime.api.account("Ann")
    expired = signed_token(ann.pk, realtime.server.runtime.settings.secret_key, expires_in=-60)
    transport = legacy_transport(realtime.server.ws_url, expired)
    with pytest.raises(TransportServerError, match="expired"):
        async with Client(transport=transport, execute_timeout=TIMEOUT):
            pass


# --- the raw protocols --------------------------------------------------------------------


def unusable_payloads(realtime: Realtime, user: Account) -> dict[str, dict[str, Any] | None]:
    """connection_init payloads that must not authenticate, by what is wrong with them."""
    key = realtime.server.runtime.settings.secret_key
    return {
        "no payload": None,
        "empty payload": {},
        "blank authorization": {"authorization": "  "},
        "malformed token": {"authorization": "Bearer not.a.jwt"},
        "not a bearer token": {"authorization": f"Token {user.token}"},
        "forged signature": {"authorization": f"Bearer {forged_token(user.pk)}"},
        "expired token": {"authorization": f"Bearer {signed_token(user.pk, key, expires_in=-60)}"},
        "account that does not exist": {
            "authorization": f"Bearer {signed_token(user.pk + 1000, key)}"
        },
    }


async def refusal(
    url: str, protocol: str, payload: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Sends connection_init; the messages received before the server closed, and how."""
    async with connect(url, subprotocols=[protocol], open_timeout=TIMEOUT) as connection:  # type: ignore[list-item]
        assert connection.subprotocol == protocol
        socket = GraphQLSocket(connection, protocol)
        init: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            init["payload"] = payload
        await socket.send(init)
        received: list[dict[str, Any]] = []
        try:
            while True:  # receive() bounds each wait: a server that never closes fails here
                received.append(await socket.receive())
        except ConnectionClosed:
            pass
        return received, connection.close_code, connection.close_reason


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_both_protocols_close_4403_without_a_usable_token(
    realtime: Realtime, protocol: str
) -> None:
    ann = await realtime.api.account("Ann")
    for case, payload in unusable_payloads(realtime, ann).items():
        received, code, reason = await refusal(realtime.server.ws_url, protocol, payload)
        assert code == CLOSE_FORBIDDEN, f"{case}: closed with {code} {reason!r}"
        if protocol == TRANSPORT_WS:
            # graphql-transport-ws has no error message before an init is refused.
            assert received == [], f"{case}: {received}"
            continue
        assert [m["type"] for m in received] == ["connection_error"], f"{case}: {received}"
        message = received[0]["payload"]["message"]
        assert isinstance(message, str), f"{case}: {received}"
        assert message.strip(), f"{case}: {received}"
        if case == "expired token":
            assert "expired" in message, message
        if case in ("no payload", "empty payload", "blank authorization"):
            assert "authorization" in message, message
        assert ann.token not in message

    # The same server, the same socket type, a usable token: acknowledged.
    received, code, _ = await ack_or_close(realtime.server.ws_url, protocol, ann.token)
    assert received == [{"type": "connection_ack"}], (received, code)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize("payload", ["a string", ["a", "list"], 42])
async def test_a_payload_that_is_not_an_object_is_a_bad_request(
    realtime: Realtime, protocol: str, payload: object
) -> None:
    received, code, _ = await refusal(realtime.server.ws_url, protocol, payload)  # type: ignore[arg-type]
    assert code == 4400
    if protocol == LEGACY_WS:
        assert [m["type"] for m in received] == ["connection_error"]


async def ack_or_close(
    url: str, protocol: str, token: str
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    async with connect(url, subprotocols=[protocol], open_timeout=TIMEOUT) as connection:  # type: ignore[list-item]
        socket = GraphQLSocket(connection, protocol)
        try:
            reply = await socket.init({"authorization": f"Bearer {token}"})
        except ConnectionClosed:
            return [], connection.close_code, connection.close_reason
        return [reply], None, None
