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

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncGenerator, Mapping

import uvicorn
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from strawberry.http import GraphQLRequestData
from strawberry.http.streaming import (
    MULTIPART_SUBSCRIPTION_HEARTBEAT_INTERVAL,
    SSE_HEARTBEAT_INTERVAL,
    AsyncTextStream,
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


JSON_MEDIA_TYPES = frozenset(
    {"application/json", "application/graphql-response+json", "application/graphql+json"}
)


def _accepts_json(headers: Mapping[str, str]) -> bool:
    accept = next((value for key, value in headers.items() if key.lower() == "accept"), "")
    media_types = (part.split(";", 1)[0].strip().lower() for part in accept.split(","))
    return any(media_type in JSON_MEDIA_TYPES for media_type in media_types)


def _may_be_subscription(request: GraphQLRequestData) -> bool:
    if request.query is None:
        return True
    try:
        operation = get_operation_ast(parse(request.query), request.operation_name)
    except GraphQLError:
        return True  # the error goes back the way the client asked for
    return operation is None or operation.operation is OperationType.SUBSCRIPTION


def plain_unless_subscription(
    request: GraphQLRequestData, headers: Mapping[str, str]
) -> GraphQLRequestData:
    """Answer queries and mutations with plain JSON when the client accepts it.

    strawberry streams whenever `Accept` lists `text/event-stream` or `multipart/mixed`
    anywhere, but general-purpose clients list those next to JSON on every request
    (urql's fetch exchange does): a query would then be streamed, or refused over
    multipart. Only a subscription, or a client that accepts nothing but a stream (the
    graphql-sse client), gets a stream.
    """
    if request.protocol == "http" or not _accepts_json(headers) or _may_be_subscription(request):
        return request
    return dataclasses.replace(request, protocol="http")


class OpenStreams:
    """Ends this process's HTTP streams when it shuts down.

    uvicorn's graceful shutdown waits for every response in progress to finish, and a
    subscription's never does: one open stream would hold a deploy forever. At shutdown
    each stream ends where it is, without `complete`, so that clients see a dropped
    connection and resubscribe (to another process) from their last cursor.
    """

    def __init__(self) -> None:
        self._closing = asyncio.Event()

    def close_all(self) -> None:
        self._closing.set()

    def until_shutdown(self, stream: AsyncTextStream) -> AsyncTextStream:
        closing = self._closing

        async def guarded() -> AsyncGenerator[str, None]:
            source = stream()
            shutdown = asyncio.ensure_future(closing.wait())
            chunk: asyncio.Future[str] | None = None
            try:
                while True:
                    chunk = asyncio.ensure_future(anext(source))
                    await asyncio.wait((chunk, shutdown), return_when=asyncio.FIRST_COMPLETED)
                    if not chunk.done():
                        return
                    try:
                        text = chunk.result()
                    except StopAsyncIteration:
                        return
                    chunk = None
                    yield text
            finally:
                # Also reached when the client went away (the response was cancelled):
                # the subscription must end either way, releasing what it holds.
                shutdown.cancel()
                if chunk is not None and not chunk.done():
                    # Cancelling the pending read ends the source, and with it the
                    # subscription (strawberry's stream cancels its tasks).
                    chunk.cancel()
                    with contextlib.suppress(BaseException):
                        await chunk
                if chunk is None or chunk.done():  # not still running in its task
                    await source.aclose()

        return guarded


class StreamEndingServer(uvicorn.Server):
    """uvicorn's server, ending the open HTTP streams first when it shuts down."""

    def __init__(self, config: uvicorn.Config, streams: OpenStreams) -> None:
        super().__init__(config)
        self.streams = streams

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.streams.close_all()
        await super().shutdown(sockets)
