"""The GraphQL schema. Imports models and subscriptions, never app."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ValidationCache
from strawberry.types import ExecutionContext

from schema.context import Auth, Context
from schema.execution import SubscriptionSafeExecutionContext
from schema.extensions import CachedParse, CloseSession, ErrorCodes
from schema.mutations import Mutation
from schema.nodes import node_type, node_types
from schema.queries import Query
from schema.subscription import Subscription

DOCUMENT_CACHE_SIZE = 256


class CommitcastSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes already logged what deserves a log line (unexpected exceptions,
        # with traceback); a client's BAD_USER_INPUT is not an operator's problem.
        return None


def build_schema(**kwargs: Any) -> strawberry.Schema:
    return CommitcastSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # Every registered Node type, so node(id:) and fragments can name it.
        types=node_types(),
        # Parsing and validating a document cost more than executing a mutation: both
        # are cached by document text (bounded, so unique texts cannot grow memory).
        extensions=[
            ErrorCodes,
            CloseSession,
            lambda: CachedParse(maxsize=DOCUMENT_CACHE_SIZE),
            lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        ],
        execution_context_class=SubscriptionSafeExecutionContext,
        **kwargs,
    )


__all__ = ["Auth", "CommitcastSchema", "Context", "build_schema", "node_type"]
