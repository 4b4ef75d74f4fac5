"""Two server processes sharing PostgreSQL and Redis: a subscriber connected to one
receives what is committed through the other."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.servers import app_environment, running_servers
from tests.ws_client import UPDATES, graphql_socket

SIGN_UP = """
mutation($email: String!, $name: String!) {
  signUp(input: {email: $email, name: $name, password: "correct horse battery"}) {
    token user { id }
  }
}
"""


async def gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, object], token: str | None = None
) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


async def test_a_subscriber_on_one_process_receives_mutations_made_through_another(
    empty_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = app_environment(DATABASE_URL=empty_postgres_url, BROKER_URL=redis_url)
    with running_servers(env=env, workdir=tmp_path) as servers:
        one, two = servers

        async with (
            httpx.AsyncClient(base_url=two.base_url, timeout=10) as via_two,
        ):
            ann = await gql(via_two, SIGN_UP, {"email": "ann@example.com", "name": "Ann"})
            bob = await gql(via_two, SIGN_UP, {"email": "bob@example.com", "name": "Bob"})
            ann_token = ann["signUp"]["token"]
            bob_token = bob["signUp"]["token"]
            board = await gql(
                via_two, 'mutation { createBoard(input: {name: "Shared"}) { id } }', {}, ann_token
            )
            board_id = board["createBoard"]["id"]
            await gql(
                via_two,
                'mutation($b: ID!) { addMember(input: {boardId: $b, email: "bob@example.com"})'
                " { id } }",
                {"b": board_id},
                ann_token,
            )

            ws_url = one.base_url.replace("http://", "ws://") + "/graphql"
            async with graphql_socket(ws_url, bob_token) as socket:
                # A cursor that cannot be served answers RESYNC at once: proof that the
                # subscription's starting point is fixed before the card is created.
                await socket.subscribe(UPDATES, {"after": "not-a-cursor"})
                assert (await socket.next_update())["op"] == "RESYNC"
                created = await gql(
                    via_two,
                    'mutation($b: ID!) { createCard(input: {boardId: $b, title: "Hello"}) { id } }',
                    {"b": board_id},
                    ann_token,
                )
                card_id = created["createCard"]["id"]
                seen: dict[tuple[str, str], dict[str, object]] = {}
                while ("CREATED", card_id) not in seen:
                    update = await socket.next_update()
                    seen[(update["op"], update["id"])] = update
                node = seen[("CREATED", card_id)]["node"]
                assert node == {
                    "__typename": "Card",
                    "id": card_id,
                    "title": "Hello",
                    "version": 1,
                    "position": 1.0,
                    "board": {"id": board_id},
                    "comments": [],
                }
