"""GraphQL errors with a machine-readable `extensions.code`.

A record the viewer may not see raises NOT_FOUND exactly as a missing one does, so
an error never tells a non-member that a board exists.
"""

from __future__ import annotations

import math
from typing import Any

from graphql import GraphQLError

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
CONFLICT = "CONFLICT"
RATE_LIMITED = "RATE_LIMITED"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
# The document is valid but exceeds a cost limit (schema.limits).
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
# Not a GraphQL request at all (wrong method, content type or body); HTTP only.
BAD_REQUEST = "BAD_REQUEST"


class CodedError(GraphQLError):
    """An expected error: its message is safe to show and it carries a code."""

    def __init__(self, code: str, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code, **extensions})


def unauthenticated(reason: str = "Sign in: send 'Authorization: Bearer <token>'.") -> CodedError:
    return CodedError(UNAUTHENTICATED, reason)


def forbidden(message: str) -> CodedError:
    return CodedError(FORBIDDEN, message)


def not_found(kind: str) -> CodedError:
    return CodedError(NOT_FOUND, f"{kind} not found.")


def bad_input(field: str, message: str) -> CodedError:
    return CodedError(BAD_USER_INPUT, f"{field}: {message}", field=field)


def conflict(kind: str, current_version: int) -> CodedError:
    return CodedError(
        CONFLICT,
        f"{kind} was changed by someone else (now at version {current_version}); "
        "reload it and try again.",
        currentVersion=current_version,
    )


def rate_limited(retry_after: float) -> CodedError:
    seconds = max(1, math.ceil(retry_after))
    return CodedError(
        RATE_LIMITED, f"Too many attempts; try again in {seconds} s.", retryAfter=seconds
    )


class ConcurrentChange(CodedError):
    """A row changed between a write transaction's read and its write."""

    def __init__(self) -> None:
        super().__init__(CONFLICT, "The record was changed at the same time; try again.")
