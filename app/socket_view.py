"""A GraphQL WebSocket served by the view in one coroutine frame.

strawberry's ASGI view serves a WebSocket in two frames, `GraphQL.__call__` and then
`AsyncBaseHTTPView.run` (whose frame has room for every local of its HTTP path too),
and both stay suspended for as long as the socket is open: about 0.8 KiB per idle
socket. `serve_websocket` takes the steps of the WebSocket branch of `run`, in the
same order and with the same view hooks (origin check, root value, subprotocol,
accept, context, the subprotocol's handler), in one frame.

That copies a part of strawberry's source (our range is `strawberry-graphql>=0.341`,
unpinned), so it is only used while strawberry's branch reads as the copy below,
compared with `ast` once, at first use; otherwise `websocket_branch_problem()` says why,
the view uses strawberry's own path, and one warning is logged.
"""

from __future__ import annotations

import ast
import functools
import logging
import textwrap
from typing import TYPE_CHECKING, Any, cast

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from app.source_check import coroutine_tree, statements_dump

if TYPE_CHECKING:
    from app.graphql import GraphQLView, LegacyProtocolHandler, TransportProtocolHandler

logger = logging.getLogger(__name__)

CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE = 4406

# The statements of strawberry's `run` (0.341) up to the end of its WebSocket branch.
# serve_websocket below does the same with `context` and `root_value` not given (UNSET),
# as strawberry's `GraphQL.__call__` calls it.
_STRAWBERRY_BRANCH = """
if self.is_websocket_request(request) and not self._check_websocket_origin(request):
    return await self.reject_websocket(request)
root_value = await self.get_root_value(request) if root_value is UNSET else root_value
if self.is_websocket_request(request):
    websocket_subprotocol = await self.pick_websocket_subprotocol(request)
    websocket_response = await self.create_websocket_response(request, websocket_subprotocol)
    websocket = self.websocket_adapter_class(self, request, websocket_response)
    context = (
        await self.get_context(request, response=websocket_response)
        if context is UNSET
        else context
    )
    if websocket_subprotocol == GRAPHQL_TRANSPORT_WS_PROTOCOL:
        await self.graphql_transport_ws_handler_class(
            view=self,
            websocket=websocket,
            context=context,
            root_value=root_value,
            schema=self.schema,
            connection_init_wait_timeout=self.connection_init_wait_timeout,
            max_subscriptions_per_connection=self.max_subscriptions_per_connection,
        ).handle()
    elif websocket_subprotocol == GRAPHQL_WS_PROTOCOL:
        await self.graphql_ws_handler_class(
            view=self,
            websocket=websocket,
            context=context,
            root_value=root_value,
            schema=self.schema,
            keep_alive=self.keep_alive,
            keep_alive_interval=self.keep_alive_interval,
            max_subscriptions_per_connection=self.max_subscriptions_per_connection,
        ).handle()
    else:
        await websocket.close(4406, "Subprotocol not acceptable")
    return websocket_response
"""


@functools.cache
def websocket_branch_problem(view_class: type[Any] = AsyncBaseHTTPView) -> str | None:
    """Why serve_websocket can't stand in for `view_class.run`'s WebSocket branch, or
    None if it can."""
    run = coroutine_tree(getattr(view_class, "run", None), "strawberry's run()")
    if isinstance(run, str):
        return run
    expected = ast.parse(textwrap.dedent(_STRAWBERRY_BRANCH)).body
    if statements_dump(run.body[: len(expected)]) != statements_dump(expected):
        return "strawberry's run() does not serve WebSockets the way app.socket_view expects"
    return None


@functools.cache
def warn_once(problem: str) -> None:
    logger.warning(
        "Serving GraphQL WebSockets through strawberry's view (more memory per connection): %s",
        problem,
    )


async def serve_websocket(view: GraphQLView, scope: Scope, receive: Receive, send: Send) -> None:
    """strawberry's `GraphQL.__call__` + `run` for a WebSocket (see the module's
    docstring), then `view.websocket_closed(scope)`."""
    try:
        request = WebSocket(scope, receive=receive, send=send)
        if not view._check_websocket_origin(request):
            await view.reject_websocket(request)
            return
        # The origin check parsed the headers into a Headers object that Starlette keeps
        # for the socket's life: the scope has them (and Starlette parses them again if
        # a resolver asks).
        vars(request).pop("_headers", None)
        root_value = await view.get_root_value(request)  # type: ignore[func-returns-value]
        subprotocol = await view.pick_websocket_subprotocol(request)
        response = await view.create_websocket_response(request, subprotocol)
        websocket = view.websocket_adapter_class(cast("Any", view), request, response)
        context = await view.get_context(request, response=response)
        handler: TransportProtocolHandler | LegacyProtocolHandler
        if subprotocol == GRAPHQL_TRANSPORT_WS_PROTOCOL:
            handler = view.graphql_transport_ws_handler_class(
                view=view,
                websocket=websocket,
                context=context,
                root_value=root_value,
                schema=view.schema,
                connection_init_wait_timeout=view.connection_init_wait_timeout,
                max_subscriptions_per_connection=view.max_subscriptions_per_connection,
            )
            # Read directly, without Starlette's two receive frames (the socket is
            # accepted by now, which is all Starlette's receive would check).
            handler.asgi_receive = receive
        elif subprotocol == GRAPHQL_WS_PROTOCOL:
            handler = view.graphql_ws_handler_class(
                view=view,
                websocket=websocket,
                context=context,
                root_value=root_value,
                schema=view.schema,
                keep_alive=view.keep_alive,
                keep_alive_interval=view.keep_alive_interval,
                max_subscriptions_per_connection=view.max_subscriptions_per_connection,
            )
        else:
            await websocket.close(CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
            return
        await handler.handle()
    finally:
        view.websocket_closed(scope)
