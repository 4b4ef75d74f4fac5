"""Follow Commitcast's `userUpdates` from Python with `gql` over graphql-transport-ws,
resuming from the last cursor whenever the connection comes back.

    async def apply(update: dict[str, Any]) -> None:
        ...  # CREATED/UPDATED: store update["node"]; DELETED: drop update["id"];
             # RESYNC: reload what you keep, then carry on

    await follow_user_updates("wss://api.example.com/graphql", lambda: token, apply,
                              after=load_saved_cursor())

Needs `gql[websockets]` (4.x). Runs until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportError
from gql.transport.websockets import WebsocketsTransport

logger = logging.getLogger(__name__)

USER_UPDATES = """
subscription Updates($after: String) {
  userUpdates(after: $after) {
    cursor op typename id
    node {
      __typename id
      ... on Board { name version cards { id } }
      ... on Card { title done version board { id } }
    }
  }
}
"""

Update = dict[str, Any]


async def follow_user_updates(
    url: str,
    get_token: Callable[[], str],
    apply: Callable[[Update], Awaitable[None]],
    *,
    after: str | None = None,
    first_retry_wait: float = 1.0,
    max_retry_wait: float = 30.0,
) -> None:
    """Call `apply` with every update the viewer may see, in order, from `after` on.

    A dropped connection is re-opened with exponential backoff and the subscription
    continues from the cursor of the last update `apply` returned from: nothing is
    missed, and an update that was being applied when the connection dropped comes again
    (apply is idempotent: it stores the newest state).
    """
    cursor = after
    wait = first_retry_wait
    while True:
        transport = WebsocketsTransport(
            url=url,
            # The token travels in connection_init, never in the URL.
            init_payload={"authorization": f"Bearer {get_token()}"},
            # graphql-transport-ws (gql would otherwise let the server pick the legacy
            # protocol); its pings keep idle connections open through proxies.
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            ping_interval=20,
        )
        try:
            async with Client(transport=transport) as session:
                wait = first_retry_wait
                request = GraphQLRequest(USER_UPDATES, variable_values={"after": cursor})
                async for result in session.subscribe(request):
                    update: Update = result["userUpdates"]
                    await apply(update)
                    cursor = update["cursor"]  # persist it to resume across restarts too
        except (TransportError, OSError) as error:
            logger.warning("userUpdates connection lost (%s); retrying in %.1f s", error, wait)
        await asyncio.sleep(wait)
        wait = min(wait * 2, max_retry_wait)
