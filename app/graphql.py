"""The strawberry ASGI view: builds each request's Context."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from app.auth import TokenError
from app.runtime import Runtime
from schema import Context


class GraphQLView(GraphQL[Context, None]):
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
        )
