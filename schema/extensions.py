"""Schema extensions: close the operation's session; give every error a code."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from schema.context import Context
from schema.errors import (
    BAD_USER_INPUT,
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_SERVER_ERROR,
)

logger = logging.getLogger("commitcast.graphql")


class CloseSession(SchemaExtension):
    """Return the operation's database connection to the pool when it ends."""

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            context = self.execution_context.context
            if isinstance(context, Context):
                await context.close()


class ErrorCodes(SchemaExtension):
    """Every error leaves with `extensions.code`; unexpected ones are logged and masked.

    Expected errors (schema.errors.CodedError) pass unchanged. An exception we did not
    raise on purpose is logged with its traceback under a reference id, and the client
    gets INTERNAL_SERVER_ERROR with that reference: never a stack trace or SQL.
    """

    def on_operation(self) -> AsyncIterator[None] | None:  # type: ignore[override]
        return self._on_operation()

    async def _on_operation(self) -> AsyncIterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [self._with_code(error) for error in result.errors]

    def _with_code(self, error: GraphQLError) -> GraphQLError:
        if error.extensions and "code" in error.extensions:
            return error
        original = error.original_error
        if original is None or isinstance(original, GraphQLError):
            code = (
                BAD_USER_INPUT
                if error.message.startswith("Variable ")
                else GRAPHQL_VALIDATION_FAILED
            )
            return self._copy(error, error.message, code)
        reference = uuid.uuid4().hex[:12]
        logger.error(
            "unexpected error in %s (ref %s)",
            ".".join(str(p) for p in error.path or ()) or "operation",
            reference,
            exc_info=(type(original), original, original.__traceback__),
        )
        return self._copy(
            error,
            f"Internal server error (ref {reference}).",
            INTERNAL_SERVER_ERROR,
            reference=reference,
        )

    @staticmethod
    def _copy(error: GraphQLError, message: str, code: str, **extra: str) -> GraphQLError:
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={**(error.extensions or {}), "code": code, **extra},
        )
