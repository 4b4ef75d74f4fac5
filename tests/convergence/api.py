"""GraphQL over HTTP, for writers and for the subscribers' refetches."""

from __future__ import annotations

from typing import Any

import httpx


class GraphQLRejected(Exception):
    """The server answered with errors (a rejected mutation, a record gone...)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        codes = [str((e.get("extensions") or {}).get("code", "NO_CODE")) for e in errors]
        self.code = codes[0] if codes else "NO_CODE"
        super().__init__(
            "; ".join(f"{c}: {e.get('message')}" for c, e in zip(codes, errors, strict=True))
        )


class ServerFailure(Exception):
    """Not a GraphQL answer at all (a 5xx, a body that is not JSON)."""


async def run(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    """The `data` of a response without errors; raises GraphQLRejected, ServerFailure or
    httpx.TransportError."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise ServerFailure(f"HTTP {response.status_code}: {response.text[:200]}") from None
    if body.get("errors"):
        raise GraphQLRejected(list(body["errors"]))
    if response.status_code != 200 or not isinstance(body.get("data"), dict):
        raise ServerFailure(f"HTTP {response.status_code}: {str(body)[:200]}")
    data: dict[str, Any] = body["data"]
    return data
