"""The fields a subscription's document collects, worked out once for all its events.

graphql-core collects an operation's fields for every execution: the root's (`collect_fields`)
and, for each object it completes, that object's selection for its type
(`collect_subfields`, memoized per execution by the identity of the list of field nodes
it is given). What it collects depends only on the schema, the document, the operation
and the variables' values, so for a subscription it is the same at every event; for a
viewer's first delivery of a change it was about a tenth of the delivering process's CPU
(py-spy, one socket per viewer).

A `FieldPlan` keeps what one operation collects with given values of the variables its
selections use: the root's grouped field set, as first collected, and the memo of
collected subfields, keyed by lists that now come from that root, so that they are the
same objects at every event and the memo answers. A subscription finds its plan once, at
its first event, and keeps it. Subscriptions with the same parsed document (the parser
cache gives one object per query text) and the same values share one plan, whoever the
viewer: it holds field nodes and types, no data. The process keeps the PLANS_LIMIT
plans found last (as many as the parser cache keeps documents); one it let go of lives
on with the subscriptions that have it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from graphql import FragmentDefinitionNode, GraphQLSchema, OperationDefinitionNode

from schema.viewer_free import selects_only_viewer_free_fields

# Plans kept per process, at most (schema.DOCUMENT_CACHE_SIZE documents are kept).
PLANS_LIMIT = 256


class FieldPlan:
    __slots__ = ("_viewer_free", "operation", "root", "sub_fields")

    def __init__(self, operation: OperationDefinitionNode) -> None:
        # Kept so that its id, in the plan's key, cannot be reused by another operation.
        self.operation = operation
        # The root's grouped field set, as collected at the first event.
        self.root: Any = None
        # graphql-core's memo of collected subfields (Executor._relevant_sub_fields).
        self.sub_fields: dict[Any, Any] = {}
        # Whether the operation selects only what is the same for every viewer
        # (schema.viewer_free), once known.
        self._viewer_free: bool | None = None

    def root_fields(self, collected: Any) -> Any:
        """The root's grouped field set to execute: the one collected first (an event
        collects the same fields, in new lists; the memo knows the first ones)."""
        if self.root is None:
            self.root = collected
        return self.root

    def same_for_every_viewer(
        self, schema: GraphQLSchema, fragments: Iterable[FragmentDefinitionNode]
    ) -> bool:
        """schema.viewer_free's judgement of the operation, made once per plan."""
        if self._viewer_free is None:
            self._viewer_free = selects_only_viewer_free_fields(schema, self.operation, fragments)
        return self._viewer_free


_PLANS: OrderedDict[tuple[int, bytes], FieldPlan] = OrderedDict()


def field_plan(operation: OperationDefinitionNode, values: dict[str, Any]) -> FieldPlan | None:
    """The plan for `operation` with these values of the variables its selections use
    (schema.execution.result_variables, coerced); None when their JSON cannot tell them
    apart."""
    try:
        text = json.dumps(values, sort_keys=True)
    except (TypeError, ValueError):
        return None
    # (A digest: the process keeps no client's variable values.)
    key = (id(operation), hashlib.sha256(text.encode()).digest())
    plan = _PLANS.get(key)
    if plan is not None and plan.operation is operation:
        _PLANS.move_to_end(key)
        return plan
    # (A plan found under a reused id is another operation's: replaced.)
    plan = _PLANS[key] = FieldPlan(operation)
    _PLANS.move_to_end(key)
    while len(_PLANS) > PLANS_LIMIT:
        _PLANS.popitem(last=False)
    return plan


def plans_kept() -> int:
    return len(_PLANS)
