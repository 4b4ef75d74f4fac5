"""Deployments that share a Redis never hear each other, and ids are never reused."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from app.settings import Settings
from tests.live import live_server
from tests.support import GraphQLClient, subscriptions_live
from tests.ws_client import UPDATES, graphql_socket


async def test_two_deployments_on_one_redis_do_not_cross_talk(
    tmp_path: Path, redis_url: str
) -> None:
    async with AsyncExitStack() as stack:
        apis: list[GraphQLClient] = []
        servers = []
        for name in ("a", "b"):
            # Fresh databases (migrated from scratch, so each has its own deployment id)
            # whose ids both start at 1: user 1 exists in both.
            path = tmp_path / f"{name}.db"
            settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", broker_url=redis_url)
            server = await stack.enter_async_context(live_server(settings))
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.http_url, timeout=10)
            )
            servers.append(server)
            apis.append(GraphQLClient(http, server.runtime))
        api_a, api_b = apis
        ann = await api_a.account("Ann")
        zed = await api_b.account("Zed")
        assert ann.pk == zed.pk == 1
        ann_board = await api_a.board(ann, "Ann's")
        await servers[0].runtime.relay.idle()
        await servers[1].runtime.relay.idle()

        async with graphql_socket(servers[0].ws_url, ann.token) as socket:
            await socket.subscribe(UPDATES)
            await subscriptions_live(servers[0].runtime, users=1)
            # Zed, user 1 of the other deployment, makes and deletes board 1 over there.
            zed_board = await api_b.board(zed, "Zed's")
            assert zed_board == ann_board, "same global id in both deployments"
            await api_b.data(
                "mutation($id: ID!) { deleteBoard(id: $id) }", {"id": zed_board}, token=zed.token
            )
            await servers[1].runtime.relay.idle()
            # Ann's next update is her own change, not an echo of Zed's.
            await api_a.data(
                'mutation($id: ID!) { updateBoard(input: {id: $id, name: "Still here"}) { id } }',
                {"id": ann_board},
                token=ann.token,
            )
            update = await socket.next_update()
        assert (update["op"], update["id"]) == ("UPDATED", ann_board)
        assert update["node"]["name"] == "Still here"


async def test_a_deleted_records_id_is_never_given_to_a_new_one(api: GraphQLClient) -> None:
    ann = await api.account("Ann")
    board = await api.board(ann)
    first = await api.card(ann, board, "first")
    await api.data("mutation($id: ID!) { deleteCard(id: $id) }", {"id": first}, token=ann.token)
    second = await api.card(ann, board, "second")
    assert second != first
