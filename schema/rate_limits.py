"""The mutation rate limit: each root field of a signed-in viewer's mutation counts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from schema.context import MUTATIONS_PER_USER, Context
from schema.errors import INTERNAL_SERVER_ERROR, CodedError

logger = logging.getLogger("commitcast.graphql")


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
