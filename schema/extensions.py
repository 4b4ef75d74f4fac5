"""Schema extensions: close the operation's session; give every error a code."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    SelectionSetNode,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from schema.context import MUTATIONS_PER_USER, Context
from schema.errors import (
    BAD_USER_INPUT,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_SERVER_ERROR,
    CodedError,
)
from schema.limits import token_limit_error

logger = logging.getLogger("commitcast.graphql")


class CloseSession(SchemaExtension):
    """Each operation reads afresh and returns its database connection when it ends
    (a WebSocket connection shares one Context between its operations); a subscription
    returns it as soon as each result is built, before it is sent: a client that reads
    slowly must not hold a pooled connection (and a snapshot) while its send waits."""

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            await context.close()
        yield

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.fresh_reads()
        try:
            yield
        finally:
            if isinstance(context, Context):
                await context.close()


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
        self._code(self.execution_context.result)

    async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
        # Each result of a subscription (WebSocket, SSE) leaves through here, before it
        # is sent: its errors get the same codes and masking as an HTTP response's.
        self._code(result)
        yield

    def _code(self, result: Any) -> None:
        if result is not None and result.errors:
            # Parse and validation failures end the operation before execution starts.
            before_execution = isinstance(result, PreExecutionError)
            result.errors = [
                self._with_code(error, before_execution=before_execution) for error in result.errors
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


class MutationRateLimit(SchemaExtension):
    """Each root field of a signed-in viewer's mutation counts against their mutation
    rate limit, before anything runs: a refused operation changes nothing. (signUp and
    logIn have no viewer; their own limits are in schema.mutations.accounts.)"""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        if (
            isinstance(context, Context)
            and context.viewer_id is not None
            and execution.operation_type is OperationType.MUTATION
            and execution.graphql_document is not None
        ):
            operation = get_operation_ast(execution.graphql_document, execution.operation_name)
            fragments = {
                d.name.value: d
                for d in execution.graphql_document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            root_fields = _count_fields(operation.selection_set, fragments) if operation else 1
            try:
                await context.limit_rate(
                    MUTATIONS_PER_USER, str(context.viewer_id), cost=max(1, root_fields)
                )
            except GraphQLError:
                raise
            except Exception:
                # Raised here, an error ends the operation before ErrorCodes sees it:
                # mask it the same way.
                reference = uuid.uuid4().hex[:12]
                logger.exception("unexpected error in the mutation rate limit (ref %s)", reference)
                raise CodedError(
                    INTERNAL_SERVER_ERROR,
                    f"Internal server error (ref {reference}).",
                    reference=reference,
                ) from None
        yield


def _count_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]
) -> int:
    """The root fields of a selection set, through fragments (validation has already
    refused cyclic ones)."""
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += 1
        elif isinstance(selection, InlineFragmentNode):
            count += _count_fields(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
            count += _count_fields(fragments[selection.name.value].selection_set, fragments)
    return count
