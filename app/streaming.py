"""Subscriptions over plain HTTP: the transports strawberry's view streams with.

Both answer a POST to /graphql, picked by its `Accept` header, and run the operation
exactly as a WebSocket does (same schema, extensions and Context, so the same
authentication, authorization, resume and error codes):

- graphql-sse, "distinct connections mode" (the `graphql-sse` npm client's default):
  `Accept: text/event-stream`; each result is a `next` event, the end a `complete`
  event, and a `: ping` comment keeps an idle connection open.
- Multipart subscriptions (Apollo Client's HttpLink): `Accept: multipart/mixed;
  subscriptionSpec=1.0`; each result is a part `{"payload": ...}`, and an empty part
  `{}` is the heartbeat (one at once, so the client sees the stream is open).

A client ends a subscription by closing the connection: the server notices, the
subscription's generator is cancelled, and its broker subscription and any database
connection are released.
"""

from __future__ import annotations

from strawberry.http.streaming import (
    MULTIPART_SUBSCRIPTION_HEARTBEAT_INTERVAL,
    SSE_HEARTBEAT_INTERVAL,
    HTTPStreamTransport,
    MultipartSubscriptionTransport,
    SSETransport,
)
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)

# WebSocket subprotocols first: the order is the server's preference when a client
# offers several.
SUBSCRIPTION_PROTOCOLS = (
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
    GRAPHQL_SSE_PROTOCOL,
)

# Well under the 60 s idle timeout of common proxies and load balancers (nginx's
# proxy_read_timeout, AWS ALB). Multipart uses Apollo Router's 5 s.
SSE_KEEPALIVE_SECONDS = float(SSE_HEARTBEAT_INTERVAL)
MULTIPART_HEARTBEAT_SECONDS = float(MULTIPART_SUBSCRIPTION_HEARTBEAT_INTERVAL)


def stream_transports(
    heartbeat_seconds: float | None = None,
) -> dict[str, type[HTTPStreamTransport]]:
    """The view's transport classes; `heartbeat_seconds` replaces both default intervals
    (tests use a short one to see keep-alives without waiting 15 s)."""
    sse_interval = heartbeat_seconds or SSE_KEEPALIVE_SECONDS
    multipart_interval = heartbeat_seconds or MULTIPART_HEARTBEAT_SECONDS

    class KeepAliveSSE(SSETransport):
        def __init__(self) -> None:
            super().__init__(heartbeat_interval=sse_interval)

    class HeartbeatMultipart(MultipartSubscriptionTransport):
        heartbeat_interval = multipart_interval

    return {GRAPHQL_SSE_PROTOCOL: KeepAliveSSE, MULTIPART_SUBSCRIPTION_PROTOCOL: HeartbeatMultipart}
