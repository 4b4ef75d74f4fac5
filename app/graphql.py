"""The strawberry ASGI view: builds each request's Context, authenticates WebSocket
connections from their connection_init payload, and enforces the WebSocket limits
(SECURITY.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from json import JSONDecodeError
from typing import Any, Literal, cast

from cross_web import AsyncHTTPRequestAdapter
from graphql import GraphQLError, GraphQLFormattedError
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.http.streaming import AsyncTextStream
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    _OperationStreamClosed as OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ErrorMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage as TransportInitMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message as TransportWSMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage,
    OperationMessage,
    StartMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import ErrorMessage as LegacyErrorMessage
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.unset import UNSET, UnsetType

from app.auth import TokenError
from app.encoding import encode_json, next_message
from app.http_policy import GraphQLHTTPPolicy
from app.runtime import Runtime
from app.send_next import sent_the_short_way
from app.shared_values import SharedValues
from app.socket_view import serve_websocket, warn_once, websocket_branch_problem
from app.streaming import (
    SUBSCRIPTION_PROTOCOLS,
    OpenStreams,
    plain_unless_subscription,
    stream_transports,
)
from models import User
from schema import Context
from schema.errors import RATE_LIMITED
from subscriptions.delivery import DeliveryObserver

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_INIT_TIMEOUT = 4408
INIT_TIMEOUT_REASON = "Connection initialisation timeout"
AUTH_HINT = 'send {"authorization": "Bearer <token>"} as the connection_init payload'


def _authorization_param(params: Any) -> Any:
    """`authorization` from a connection_init payload, in any letter case: Apollo's
    connectionParams send it as written, and GraphiQL sends its Headers tab as is
    (`Authorization`)."""
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if isinstance(key, str) and key.lower() == "authorization":
            return value
    return None


def subscription_limit_error(limit: int) -> GraphQLFormattedError:
    error = GraphQLError(
        f"Too many operations on this connection (at most {limit} at once): complete "
        "one first, or open another connection.",
        extensions={"code": RATE_LIMITED, "limit": limit},
    )
    return error.formatted


# Query texts of operations over WebSockets, one string per distinct text: an operation
# keeps its query for its life, and every socket of an app subscribes with the same
# few documents (about 0.2 KiB per idle subscription for a small one). Documents are
# not secret; variables are not shared. Bounded in count and in length.
QUERY_TEXTS: SharedValues[str] = SharedValues(limit=512)
SHARED_QUERY_MAX_LENGTH = 8192


def share_query(message: Mapping[str, Any]) -> None:
    """Replace a subscribe (or start) message's query text by the shared equal one."""
    payload = message.get("payload")
    if isinstance(payload, dict):
        query = payload.get("query")
        if isinstance(query, str) and len(query) <= SHARED_QUERY_MAX_LENGTH:
            payload["query"] = QUERY_TEXTS.share(query)


def let_go(message: Mapping[str, Any]) -> None:
    """Empty a subscribe (or start) message once its operation has taken what it needs
    (its id, query and variables). strawberry's receive loop keeps the last message it
    received until the next one arrives: on an idle connection, that message (its
    dicts and key strings, about 0.6 KiB) for as long as the connection lives."""
    cast("dict[str, Any]", message).clear()


async def _starlette_text(socket: WebSocket) -> str | None:
    """The next text message through Starlette's WebSocket; None once disconnected."""
    try:
        return await socket.receive_text()
    except KeyError:  # a bytes message
        raise NonTextMessageReceived from None
    except WebSocketDisconnect:
        return None


def _text_of(socket: WebSocket, message: Message) -> str | None:
    """A message from the accepted socket's ASGI `receive`, as Starlette's `receive`
    and `receive_text` read it: its text; None for a disconnect."""
    kind = message["type"]
    if kind == "websocket.disconnect":
        socket.client_state = WebSocketState.DISCONNECTED
        return None
    if kind != "websocket.receive":  # pragma: no cover - as Starlette's
        raise RuntimeError(f"Expected a websocket.receive message, got {kind!r}")
    text = message.get("text")
    if not isinstance(text, str):  # a bytes message
        raise NonTextMessageReceived
    return text


class TransportProtocolHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with a coded error for one subscription too many, telling
    the delivery observer why a send failed (for its log line), not logging a
    traceback for a client that simply went away, and the connection_init timeout as a
    timer instead of a task."""

    _init_timer: asyncio.TimerHandle | None = None

    def on_request_accepted(self) -> None:
        # strawberry sleeps through the timeout in a task of its own, and keeps that
        # task, cancelled at connection_init, for the connection's life: with its
        # CancelledError, traceback and frames, about 1.5 KiB per idle socket. A timer
        # handle is dropped once cancelled. Same outcome: 4408 unless connection_init
        # arrived in time.
        delay = self.connection_init_wait_timeout.total_seconds()
        self._init_timer = asyncio.get_running_loop().call_later(delay, self._init_timed_out)

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if self.connection_init_received:
            return
        self.connection_timed_out = True
        # As strawberry's own: the closing task is the one shutdown() waits for.
        task = asyncio.create_task(self._close_for_init_timeout())
        task.add_done_callback(self._task_done)
        self.connection_init_timeout_task = task

    async def _close_for_init_timeout(self) -> None:
        try:
            await self.websocket.close(code=CLOSE_INIT_TIMEOUT, reason=INIT_TIMEOUT_REASON)
        except Exception as error:
            await self.handle_task_exception(error)

    def _cancel_init_timer(self) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None

    # The ASGI `receive` of the socket, when the view gave it (app.socket_view): read
    # directly, without Starlette's WebSocket.receive_text and receive around it.
    asgi_receive: Receive | None = None

    async def handle(self) -> None:
        """strawberry's, reading the socket in this frame instead of through the
        adapter's `iter_json` async generator and Starlette's two receive coroutines:
        an idle connection waits here, without three suspended frames, an `aclosing`
        and the event loop's weak reference to the generator (about 0.9 KiB). Same
        messages, same errors (4400 for a non-text or non-JSON message), same
        shutdown."""
        websocket = self.websocket
        if not isinstance(websocket, ASGIWebSocketAdapter):  # pragma: no cover
            await super().handle()
            return
        socket = websocket.ws
        receive = self.asgi_receive
        self.on_request_accepted()
        try:
            try:
                while socket.application_state != WebSocketState.DISCONNECTED:
                    if receive is None:
                        text = await _starlette_text(socket)
                    else:  # (awaited here, in this frame: an idle connection waits in it)
                        text = _text_of(socket, await receive())
                    if text is None:
                        break
                    try:
                        message = self.view.decode_json(text)
                    except JSONDecodeError as exc:
                        raise NonJsonMessageReceived from exc
                    await self.handle_message(cast("TransportWSMessage", message))
                    # Not kept while waiting for the next one: a subscription's socket
                    # would hold its subscribe message (text and parsed) for its life.
                    del text, message
            except NonTextMessageReceived:
                await self.handle_invalid_message("WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.handle_invalid_message("WebSocket message must be valid JSON")
        except WebSocketDisconnected:
            pass
        finally:
            await self.shutdown()

    async def handle_connection_init(self, message: TransportInitMessage) -> None:
        self._cancel_init_timer()
        await super().handle_connection_init(message)

    async def shutdown(self) -> None:
        self._cancel_init_timer()
        await super().shutdown()

    async def send_message(self, message: TransportWSMessage) -> None:
        try:
            await super().send_message(message)
        except BaseException as exc:
            self.context.deliveries.send_failed(exc)
            raise

    async def handle_task_exception(self, error: Exception) -> None:
        if not isinstance(error, WebSocketDisconnected):
            await super().handle_task_exception(error)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """strawberry's, with its result loop (`_send_result_stream`) inline and the
        stream closed in a `finally` instead of its `aclosing` (an async generator and a
        context manager): an idle subscription waits in this frame alone, and keeps
        about 0.3 KiB less. Same messages, same order, same error handling."""
        try:
            results = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=self.context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            try:
                first = True
                async for result in results:
                    if first and isinstance(result, PreExecutionError):
                        await self._handle_pre_execution_error(operation, result)
                        break
                    if not isinstance(result, ExecutionResult):
                        await self._reject_incremental_delivery(operation)
                        break
                    await self._send_next(operation, result)
                    first = False
            finally:
                with contextlib.suppress(Exception):  # as strawberry's aclosing
                    await results.aclose()
            await operation.send_operation_message(
                CompleteMessage(id=operation.id, type="complete")
            )
        except OperationStreamClosed:
            return
        except Exception as error:  # pragma: no cover - as strawberry's
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise

    async def _send_next(
        self, operation: Operation[Context, None], result: ExecutionResult
    ) -> None:
        """`operation.send_next(result)`; a delivered update (data shared by identical
        subscriptions) the short way (app.send_next): its `next` message written from
        the shared JSON and handed to Starlette's WebSocket, with strawberry's checks on
        the way (nothing once the operation completed, WebSocketDisconnect raised as
        WebSocketDisconnected) and the delivery observer told of a failed send, as
        send_message above."""
        data = sent_the_short_way(self.websocket, result)
        if data is None:
            await operation.send_next(result)
            return
        if operation.completed:
            return
        socket = cast("ASGIWebSocketAdapter", self.websocket).ws
        message = {"type": "websocket.send", "text": next_message(operation.id, data)}
        try:
            try:
                await socket.send(message)
            except WebSocketDisconnect as exc:
                raise WebSocketDisconnected from exc
        except BaseException as exc:
            self.context.deliveries.send_failed(exc)
            raise

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        try:
            limit = self.max_subscriptions_per_connection
            if (
                limit is not None
                and self.connection_acknowledged
                and message["id"] not in self.operations
                and len(self.operations) >= limit
            ):
                # strawberry's own refusal has no extensions.code; every error here has
                # one.
                await self.send_message(
                    ErrorMessage(
                        id=message["id"], type="error", payload=[subscription_limit_error(limit)]
                    )
                )
                return
            share_query(message)
            await super().handle_subscribe(message)
        finally:
            let_go(message)


class LegacyProtocolHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws subprotocol, closing unauthenticated sockets with 4403 like
    graphql-transport-ws does (strawberry's default here would be 1011), sockets that
    never send connection_init with 4408 (strawberry has no timeout here), and telling
    the delivery observer why a send failed."""

    async def send_message(self, message: OperationMessage) -> None:
        try:
            await super().send_message(message)
        except BaseException as exc:
            self.context.deliveries.send_failed(exc)
            raise

    async def handle(self) -> None:
        # A timer, not a task sleeping through the timeout (kept, done, for the
        # connection's life): see TransportProtocolHandler.on_request_accepted.
        timeout = cast("GraphQLView", self.view).connection_init_wait_timeout.total_seconds()
        timer = asyncio.get_running_loop().call_later(timeout, self._init_timed_out)
        try:
            await super().handle()
        finally:
            timer.cancel()
            if self._closing is not None:
                self._closing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._closing

    _closing: asyncio.Task[None] | None = None

    def _init_timed_out(self) -> None:
        if not self.connection_acknowledged:
            self._closing = asyncio.create_task(self._close_for_init_timeout())

    async def _close_for_init_timeout(self) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(CLOSE_INIT_TIMEOUT, INIT_TIMEOUT_REASON)

    async def handle_start(self, message: StartMessage) -> None:
        try:
            limit = self.max_subscriptions_per_connection
            if (
                limit is not None
                and self.connection_acknowledged
                and message["id"] not in self.tasks
                and len(self.tasks) >= limit
            ):
                await self.send_message(
                    LegacyErrorMessage(
                        type="error", id=message["id"], payload=subscription_limit_error(limit)
                    )
                )
                return
            share_query(message)
            await super().handle_start(message)
        finally:
            let_go(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await self._refuse(CLOSE_BAD_REQUEST, "The connection_init payload must be an object.")
            return
        view = cast("GraphQLView", self.view)
        problem = await view.authenticate_connection(self.context, payload)
        if problem is not None:
            await self._refuse(CLOSE_FORBIDDEN, problem)
            return
        await super().handle_connection_init(message)

    async def _refuse(self, code: int, problem: str) -> None:
        await self.send_message({"type": "connection_error", "payload": {"message": problem}})
        await self.websocket.close(code=code, reason=problem[:100])


class GraphQLView(GraphQLHTTPPolicy):
    """GraphQL over HTTP, over both WebSocket subprotocols, and subscriptions streamed
    over HTTP (graphql-sse and multipart; see app/streaming.py)."""

    graphql_transport_ws_handler_class = TransportProtocolHandler
    graphql_ws_handler_class = LegacyProtocolHandler

    def __init__(
        self,
        schema: BaseSchema,
        *,
        graphql_ide: Literal["graphiql"] | None = "graphiql",
        allowed_origins: Sequence[str] = (),
        connection_init_wait_timeout: timedelta = timedelta(seconds=10),
        max_subscriptions_per_connection: int | None = None,
        heartbeat_seconds: float | None = None,
        open_streams: OpenStreams | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=graphql_ide,
            subscription_protocols=SUBSCRIPTION_PROTOCOLS,
            allowed_origins=allowed_origins,
            connection_init_wait_timeout=connection_init_wait_timeout,
            max_subscriptions_per_connection=max_subscriptions_per_connection,
        )
        self.stream_transport_classes_by_protocol = stream_transports(heartbeat_seconds)
        self.open_streams = open_streams or OpenStreams()

    def encode_json(self, data: object) -> str:
        return encode_json(data)

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        if isinstance(data, list):
            return data
        return plain_unless_subscription(data, request.headers)

    async def create_streaming_response(
        self,
        request: Request | WebSocket,
        stream: Callable[[], AsyncIterator[str]],
        sub_response: Response,
        headers: Mapping[str, str],
    ) -> Response:
        guarded = self.open_streams.until_shutdown(cast("AsyncTextStream", stream))
        return await super().create_streaming_response(request, guarded, sub_response, headers)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        if scope["type"] != "websocket":
            return super().__call__(scope, receive, send)
        # The returned coroutine is the socket's one frame here (app.socket_view).
        problem = websocket_branch_problem()
        if problem is None:
            return serve_websocket(self, scope, receive, send)
        warn_once(problem)
        return self._strawberry_websocket(scope, receive, send)

    async def _strawberry_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.websocket_closed(scope)

    def websocket_closed(self, scope: Scope) -> None:
        runtime: Runtime = scope["app"].state.runtime
        runtime.live_sockets.discard(scope)

    def hold_changes(self, scope: Scope) -> AbstractContextManager[object]:
        runtime: Runtime = scope["app"].state.runtime
        return runtime.relay.holding()

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        runtime: Runtime = request.app.state.runtime
        claims = None
        problem: str | None = None
        transport = "http"
        if isinstance(request, WebSocket):
            transport = await self.pick_websocket_subprotocol(request) or "websocket"
        else:
            try:
                claims = await runtime.authenticator.authenticate(
                    request.headers.get("authorization")
                )
            except TokenError as exc:
                problem = str(exc)
        return Context(
            read_sessions=runtime.read_sessions,
            write_sessions=runtime.write_sessions,
            auth=runtime.authenticator,
            viewer_id=claims.user_id if claims else None,
            auth_problem=problem,
            token=claims,
            access_fence=runtime.access_fence,
            read_groups=runtime.read_groups,
            request=request,
            response=response,
            feed=runtime.feed,
            deliveries=DeliveryObserver(runtime.metrics, transport),
            rate_limiter=runtime.rate_limiter,
        )

    async def authenticate_connection(self, context: Context, params: Any) -> str | None:
        """Set the connection's viewer from its connection_init payload; return why not."""
        runtime: Runtime = context.request.app.state.runtime
        header = _authorization_param(params)
        if not isinstance(header, str) or not header.strip():
            return f"Authentication required: {AUTH_HINT}."
        try:
            claims = await runtime.authenticator.authenticate(header)
        except TokenError as exc:
            return str(exc)
        if claims is None:  # pragma: no cover - a non-blank header always parses or fails
            return f"Authentication required: {AUTH_HINT}."
        async with runtime.read_sessions() as session:
            exists = await session.scalar(select(User.id).where(User.id == claims.user_id))
        if exists is None:
            return "The account this token was issued to no longer exists."
        websocket: WebSocket = context.request
        # One closure for both (each is kept for the connection's life).
        close = self._closer(websocket)
        if not runtime.live_sockets.admit(websocket.scope, claims, close):
            return (
                f"Too many connections for this user (at most "
                f"{runtime.settings.ws_max_sockets_per_user} per server process): close one."
            )
        context.act_as(claims.user_id, token=claims)
        context.close_connection = close
        return None

    @staticmethod
    def _closer(websocket: WebSocket) -> Callable[[int, str], Awaitable[None]]:
        async def close(code: int, reason: str) -> None:
            # The socket may be closing already (the client left, another close won).
            with contextlib.suppress(Exception):
                await websocket.close(code=code, reason=reason[:120])

        return close

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        problem = await self.authenticate_connection(context, context.connection_params)
        # The payload is the bearer token, verified now (its claims are context.token):
        # not kept for the connection's life (about 0.5 KiB per connection).
        context.connection_params = None
        if problem is not None:
            raise ConnectionRejectionError()
        return cast("UnsetType", UNSET)  # ack without a payload
