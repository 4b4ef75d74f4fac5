"""The GraphQL schema. Imports models and subscriptions, never app."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import strawberry
from graphql import GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension, ValidationCache
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES, StreamResult
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from schema.context import Auth, Context, RateLimiter
from schema.execution import SubscriptionSafeExecutionContext
from schema.extensions import CachedParse, CloseSession, ErrorCodes
from schema.extensions_runner import ExtensionsRunner
from schema.limits import ExtensionFactory, QueryLimits, ValidationRules, limit_extensions
from schema.mutations import Mutation
from schema.nodes import node_type, node_types
from schema.operation_stream import OperationStream
from schema.queries import Query
from schema.rate_limits import MutationRateLimit
from schema.subscription import Subscription

DOCUMENT_CACHE_SIZE = 256


class CommitcastSchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return ExtensionsRunner(execution_context, extensions)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """strawberry's, returning the same steps as an object (schema.operation_stream):
        what every streaming transport and subscription runs."""
        execution_context = self._create_execution_context(
            query=query,
            allowed_operation_types=(
                DEFAULT_ALLOWED_OPERATION_TYPES
                if allowed_operation_types is None
                else allowed_operation_types
            ),
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
        )
        extensions = self.get_extensions()
        for extension in extensions:  # as strawberry's
            extension.execution_context = execution_context
        stream = OperationStream(
            self,
            execution_context,
            self.create_extensions_runner(execution_context, extensions),
            self._get_middleware_manager(extensions),
            operation_extensions,
        )
        # (Used as strawberry's async generator is: iterated and closed.)
        return cast("StreamResult", stream)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes already logged what deserves a log line (unexpected exceptions,
        # with traceback); a client's BAD_USER_INPUT is not an operator's problem.
        return None


def build_schema(
    *,
    limits: QueryLimits | None = None,
    introspection: bool = True,
    **kwargs: Any,
) -> strawberry.Schema:
    """The schema with its cost limits (defaults: schema.limits) and, unless
    `introspection` is False, introspection."""
    extensions: list[type[SchemaExtension] | ExtensionFactory] = [
        *limit_extensions(limits or QueryLimits()),
        ErrorCodes,
        CloseSession,
        MutationRateLimit,
    ]
    if not introspection:
        # strawberry's DisableIntrospection, as rules the runner adds without keeping a
        # generator per subscription (schema.extensions_runner).
        extensions.append(lambda: ValidationRules([NoSchemaIntrospectionCustomRule]))
    # Parsing and validating a document cost more than executing a mutation: both are
    # cached by document text (bounded, so unique texts cannot grow memory). Last, so
    # that they run with the parse options and validation rules added above.
    extensions += [
        lambda: CachedParse(maxsize=DOCUMENT_CACHE_SIZE),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
    ]
    return CommitcastSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # Every registered Node type, so node(id:) and fragments can name it.
        types=node_types(),
        extensions=extensions,
        execution_context_class=SubscriptionSafeExecutionContext,
        **kwargs,
    )


__all__ = [
    "Auth",
    "CommitcastSchema",
    "Context",
    "QueryLimits",
    "RateLimiter",
    "build_schema",
    "node_type",
]
