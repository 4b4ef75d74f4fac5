"""Updates are the same GraphQL types queries return, selected with the same fragments;
real-time never stands in the way of a mutation."""

from __future__ import annotations

import time

import httpx

from app.settings import Settings
from tests.live import live_server
from tests.realtime_support import Realtime
from tests.servers import free_port
from tests.support import GraphQLClient, subscriptions_started
from tests.ws_client import graphql_socket

CARD_FIELDS = """
fragment CardFields on Card {
  id title description position done version createdAt updatedAt
  board { id name owner { id name } }
  author { id name email }
  assignee { id }
  comments { id body author { name } }
}
"""

SUBSCRIPTION = (
    CARD_FIELDS
    + """
subscription { userUpdates { op typename id node { __typename ...CardFields } } }
"""
)
QUERY = CARD_FIELDS + "query($id: ID!) { node(id: $id) { __typename ...CardFields } }"


async def test_the_node_of_an_update_equals_the_same_fragment_in_a_query(
    realtime: Realtime,
) -> None:
    api = realtime.api
    ann, bob = await api.account("Ann"), await api.account("Bob")
    board = await api.board(ann, "Plans")
    await api.add_member(ann, board, bob, "EDITOR")
    card = await api.card(ann, board, "Spec")
    await api.comment(bob, card, "Reviewed")
    # Notices of the setup are out before Bob subscribes: his first update is the change.
    await realtime.server.runtime.relay.idle()
    # As GraphiQL sends it: its Headers tab, {"Authorization": "Bearer ..."}, becomes the
    # connection_init payload.
    async with graphql_socket(realtime.server.ws_url, bob.token, key="Authorization") as socket:
        await socket.subscribe(SUBSCRIPTION)
        await subscriptions_started(realtime.server.runtime, [bob.pk])
        await api.data(
            "mutation($id: ID!) { updateCard(input: {id: $id, done: true}) { id } }",
            {"id": card},
            token=ann.token,
        )
        update = await socket.next_update()
    expected = await api.data(QUERY, {"id": card}, token=bob.token)
    assert update["op"] == "UPDATED"
    assert update["typename"] == "Card"
    assert update["id"] == card
    assert update["node"] == expected["node"]
    assert update["node"]["done"] is True
    assert update["node"]["author"]["email"] is None, "the viewer sees what a query shows them"


async def test_a_mutation_commits_and_answers_while_the_broker_is_down(sqlite_url: str) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(database_url=sqlite_url, broker_url=unreachable)
    async with (
        live_server(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        api = GraphQLClient(http, server.runtime)
        ann = await api.account("Ann")
        started = time.monotonic()
        board = await api.board(ann, "Offline broker")
        elapsed = time.monotonic() - started
        data = await api.data(
            "query($id: ID!) { board(id: $id) { name } }", {"id": board}, token=ann.token
        )
        assert data["board"]["name"] == "Offline broker"
        assert elapsed < 2.0, f"the mutation waited for the broker ({elapsed:.1f} s)"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert "broker" in ready.json()
        assert ready.json()["broker"].startswith("error")
