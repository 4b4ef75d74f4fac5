"""The strawberry ASGI view: builds each request's Context and authenticates
WebSocket connections from their connection_init payload."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage
from strawberry.types.unset import UNSET, UnsetType

from app.auth import TokenError
from app.runtime import Runtime
from models import User
from schema import Context

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
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


class LegacyProtocolHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws subprotocol, closing unauthenticated sockets with 4403 like
    graphql-transport-ws does (strawberry's default here would be 1011)."""

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


class GraphQLView(GraphQL[Context, None]):
    graphql_ws_handler_class = LegacyProtocolHandler

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        runtime: Runtime = request.app.state.runtime
        viewer_id: int | None = None
        problem: str | None = None
        if isinstance(request, Request):
            try:
                claims = runtime.authenticator.read_authorization(
                    request.headers.get("authorization")
                )
            except TokenError as exc:
                problem = str(exc)
            else:
                viewer_id = claims.user_id if claims else None
        return Context(
            read_sessions=runtime.read_sessions,
            write_sessions=runtime.write_sessions,
            auth=runtime.authenticator,
            viewer_id=viewer_id,
            auth_problem=problem,
            request=request,
            response=response,
            feed=runtime.feed,
        )

    async def authenticate_connection(self, context: Context, params: Any) -> str | None:
        """Set the connection's viewer from its connection_init payload; return why not."""
        runtime: Runtime = context.request.app.state.runtime
        header = _authorization_param(params)
        if not isinstance(header, str) or not header.strip():
            return f"Authentication required: {AUTH_HINT}."
        try:
            claims = runtime.authenticator.read_authorization(header)
        except TokenError as exc:
            return str(exc)
        if claims is None:  # pragma: no cover - a non-blank header always parses or fails
            return f"Authentication required: {AUTH_HINT}."
        async with runtime.read_sessions() as session:
            exists = await session.scalar(select(User.id).where(User.id == claims.user_id))
        if exists is None:
            return "The account this token was issued to no longer exists."
        context.act_as(claims.user_id)
        return None

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        if await self.authenticate_connection(context, context.connection_params) is not None:
            raise ConnectionRejectionError()
        return cast("UnsetType", UNSET)  # ack without a payload
