"""What the GraphQL endpoint accepts over HTTP, after the GraphQL over HTTP spec:

- POST with a JSON body (`Content-Type: application/json`) for any operation; any other
  content type gets 415. A browser cannot send that cross-site without a CORS
  preflight, so no HTML form or `text/plain` request can run a mutation.
- GET for queries only: a mutation over GET gets 405 with `Allow: POST`.
- Requests refused before GraphQL runs (these, malformed JSON, a missing query) answer
  with a JSON body like any GraphQL error: `{"errors": [{"message", "extensions":
  {"code": "BAD_REQUEST"}}]}`, with the HTTP status saying what was wrong.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Coroutine, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.http.streaming import HTTPStreamTransport
from strawberry.schema.exceptions import InvalidOperationTypeError

from schema import Context
from schema.errors import BAD_REQUEST, NOT_FOUND

JSON_MEDIA_TYPE = "application/json"
METHOD_NOT_ALLOWED = 405
UNSUPPORTED_MEDIA_TYPE = 415
# Distinct Content-Type and Accept values whose reading is kept: clients send the same
# few on every request.
KNOWN_HEADER_VALUES = 64


@functools.lru_cache(maxsize=KNOWN_HEADER_VALUES)
def media_type_of(content_type: str) -> str:
    """The media type of a Content-Type value, lower-case. strawberry's parse (through
    email.message) once per distinct value: it cost about 1 % of an `updateCard`
    request's CPU per call."""
    return parse_content_type(content_type)[0].strip().lower()


class GraphQLHTTPPolicy(GraphQL[Context, None]):
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        if scope["type"] != "http":
            # strawberry's own coroutine, not one of ours awaiting it: a WebSocket runs
            # in it for the connection's life, and each frame around it is kept as long.
            return super().__call__(scope, receive, send)
        return self._serve_http(scope, receive, send)

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope=scope, receive=receive)
        # What the operation commits is published once its response is being written
        # (a streamed response's parts come later: they commit after the hold ends).
        with self.hold_changes(scope):
            try:
                response = await self.run(request)
            except HTTPException as exc:
                response = _refusal(request, exc)
        await response(scope, receive, send)

    def hold_changes(self, scope: Scope) -> AbstractContextManager[object]:
        """Where the operation's committed changes wait until its response is written
        (the app's relay; see subscriptions.hold). Nowhere by default."""
        return nullcontext()

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if (
            request.method == "POST"
            and media_type_of(request.content_type or "") != JSON_MEDIA_TYPE
        ):
            raise HTTPException(
                UNSUPPORTED_MEDIA_TYPE,
                f"POST a JSON body with 'Content-Type: {JSON_MEDIA_TYPE}'.",
            )
        return await super().parse_http_body(request)

    def _get_stream_transport_from_headers(
        self, headers: Mapping[str, str]
    ) -> HTTPStreamTransport | None:
        """strawberry's (the streaming transport an `Accept` value asks for), once per
        distinct value: the multipart transport's test parses it through email.message,
        on every request."""
        accept = headers.get("accept", "")  # (Starlette's Headers: any letter case)
        known = self._transports_by_accept
        if accept not in known:
            if len(known) >= KNOWN_HEADER_VALUES:
                known.clear()
            known[accept] = super()._get_stream_transport_from_headers({"accept": accept})
        return known[accept]

    @functools.cached_property
    def _transports_by_accept(self) -> dict[str, HTTPStreamTransport | None]:
        return {}

    def parse_json(self, data: str | bytes) -> Any:
        # Strawberry lets both of these escape as a 500.
        try:
            parsed = super().parse_json(data)
        except UnicodeDecodeError:
            raise HTTPException(400, "The body must be JSON text in UTF-8.") from None
        if not isinstance(parsed, (dict, list)):
            raise HTTPException(400, "The body must be a JSON object.")
        return parsed


def _refusal(request: Request, exc: HTTPException) -> Response:
    status, message, headers = exc.status_code, exc.reason, {}
    if request.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
        # The spec's answer to a mutation over GET (strawberry says 400).
        status, message = METHOD_NOT_ALLOWED, "Mutations are only accepted over POST."
        headers["Allow"] = "POST"
    code = NOT_FOUND if status == 404 else BAD_REQUEST
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return Response(
        json.dumps(body), status_code=status, headers=headers, media_type=JSON_MEDIA_TYPE
    )
