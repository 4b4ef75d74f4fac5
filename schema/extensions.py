"""Schema extensions: close the operation's session; give every error a code."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import ParserCache, SchemaExtension
from strawberry.types.execution import PreExecutionError

from schema.context import Context
from schema.errors import (
    BAD_USER_INPUT,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_SERVER_ERROR,
)
from schema.limits import token_limit_error

logger = logging.getLogger("commitcast.graphql")


class CloseSession(SchemaExtension):
    """Each operation reads afresh and returns its database connection when it ends
    (a WebSocket connection shares one Context between its operations); a subscription
    returns it as soon as each result is built, before it is sent: a client that reads
    slowly must not hold a pooled connection (and a snapshot) while its send waits."""

    async def before_stream_result(self, result: Any) -> None:
        # (schema.extensions_runner calls this directly: cheaper per result.)
        context = self.execution_context.context
        if isinstance(context, Context):
            await context.close()

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        await self.before_stream_result(result)
        yield

    # (schema.extensions_runner calls start_operation and end_operation directly: no
    # generator kept per subscription.)
    def start_operation(self) -> None:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.fresh_reads()

    async def end_operation(self, error: BaseException | None) -> None:
        context = self.execution_context.context
        if isinstance(context, Context):
            await context.close()

    async def on_operation(self) -> AsyncIterator[None]:
        self.start_operation()
        try:
            yield
        finally:
            await self.end_operation(None)


class ErrorCodes(SchemaExtension):
    """Every error leaves with `extensions.code`; unexpected ones are logged and masked.

    Expected errors (schema.errors.CodedError) pass unchanged. An exception we did not
    raise on purpose is logged with its traceback under a reference id, and the client
    gets INTERNAL_SERVER_ERROR with that reference: never a stack trace or SQL.
    """

    # An async generator function itself: strawberry only drives a hook as a context
    # manager when the method is one; a plain method returning a generator is merely
    # called, and its body never runs.
    async def on_operation(self) -> AsyncIterator[None]:
        yield
        self.end_operation(None)

    # (schema.extensions_runner calls these directly: no generator kept per
    # subscription.)
    def start_operation(self) -> None:
        return None

    def end_operation(self, error: BaseException | None) -> None:
        if error is None:  # as on_operation: nothing after its yield runs on an error
            self._code_errors(self.execution_context.result)

    def before_stream_result(self, result: Any) -> None:
        # A streamed operation (a subscription on any transport; any operation over SSE)
        # sends each result before on_operation ends: code them on their way out.
        # (schema.extensions_runner calls this directly: cheaper per result.)
        self._code_errors(result)

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        self.before_stream_result(result)
        yield

    def _code_errors(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            # Parse and validation failures end the operation before execution starts.
            before_execution = isinstance(result, PreExecutionError)
            result.errors = [
                self._with_code(error, before_execution=before_execution) for error in errors
            ]

    def _with_code(self, error: GraphQLError, *, before_execution: bool) -> GraphQLError:
        if error.extensions and "code" in error.extensions:
            return error
        if isinstance(error, GraphQLSyntaxError):
            return token_limit_error(error) or self._copy(
                error, error.message, GRAPHQL_PARSE_FAILED
            )
        if before_execution:
            return self._copy(error, error.message, GRAPHQL_VALIDATION_FAILED)
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


class CachedParse(ParserCache):
    """strawberry's ParserCache, except that a document that does not parse is left to
    strawberry's own parse, which reports the syntax error the usual way (ParserCache
    raises it from the extension hook, outside the handling that gives it a code).

    One parsed document per query text is also what lets identical subscriptions share
    one execution (schema.execution)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query:
            with contextlib.suppress(GraphQLError):
                context.graphql_document = self.cached_parse_document(
                    context.query, **context.parse_options
                )
        yield
