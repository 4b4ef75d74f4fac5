"""The execution context: strawberry's, with graphql-core's per-event cache bounded, and
one execution per event for identical subscriptions.

Identical subscriptions (the same parsed document and operation, the same values for
the variables their selections use, the same viewer) that receive the same event
object would each execute the same selection set over it and serialize the same
result. An event may offer a `shared_results` dict (the `userUpdates` event does: one
object per change, per viewer, per shared read; schema.subscription): the first of them
executes, the others take its result, and its JSON is encoded once (`EncodedOnce`) for
every socket. Results with errors are never shared: each subscription executes those
itself, so error handling (codes, logging) stays per operation.

Across viewers: an event may also offer a `crowd_results` dict (the `userUpdates` event
does, per change, for every viewer reading in the same snapshot). A subscription whose
document selects only what is the same for every viewer (schema.viewer_free) takes the
first viewer's result from there, with its own cursor (schema.crowd_results), when its
update equals the one executed; the first subscription of each viewer does so, and the
viewer's other identical subscriptions share that as above.
"""

from __future__ import annotations

import asyncio
import json
from asyncio import get_running_loop as loop
from collections.abc import Awaitable, Iterable, Sequence
from types import MappingProxyType
from typing import Any, Protocol, cast

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfoHelpers,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    visit,
)
from graphql.execution.collect_fields import DeferUsage, GroupedFieldSet
from graphql.execution.executor import CollectedErrors
from graphql.pyutils import Path, RefMap
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from schema.crowd_results import Template
from schema.field_plans import FieldPlan, field_plan
from schema.json_text import EncodedOnce

# SubscriptionSafeExecutionContext._fields before the subscription's first event.
_UNPLANNED = object()


class SharesResults(Protocol):
    """An event whose execution results identical subscriptions may share."""

    shared_results: dict[Any, Any]


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_variable(self, node: VariableNode, *_args: Any) -> None:
        self.names.add(node.name.value)


def result_variables(
    operation: OperationDefinitionNode, fragments: Iterable[FragmentDefinitionNode]
) -> set[str]:
    """The variables an event's result can depend on: all of them except those used
    only as arguments of the root field (they choose the event stream, `after:`; an
    event's root field resolves to the event whatever they are)."""
    found = _Variables()
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            for directive in selection.directives or ():
                visit(directive, found)
            if selection.selection_set is not None:
                visit(selection.selection_set, found)
        else:
            visit(selection, found)
    for fragment in fragments:
        visit(fragment, found)
    return found.names


class SubscriptionSafeExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core 3.3 copies the executor for every subscription event, but the copy
    shares the memo of collected subfields, keyed by the identity of lists built anew
    for each event: it grows by a few KiB per delivered update for as long as the
    subscription lives. Here each event uses the memo of the subscription's field plan
    (schema.field_plans), and executes the root fields the plan collected first, so
    that the memo's keys are the same lists at every event: it holds one entry per type
    a selection completes, shared by every subscription with the plan, and answers from
    the second event on. A subscription without a plan gives each event a memo of its
    own (it still serves the lists within that event).

    The subscription's own executor is kept for its whole life but executes nothing:
    once its source stream exists (schema.operation_stream), its containers that only
    an execution uses (`EXECUTION_STATE`) are replaced by empty ones shared by every
    subscription, which refuse to be written: about 1.2 KiB less per idle subscription
    (its empty sets, lists and RefMaps; tracemalloc). Its per-event copies still get
    their own `collected_errors` (graphql-core's copy) and the plan's memo (above), and
    share the rest, as they shared the subscription's; for a subscription those stay
    empty:

    - `pending_incremental_futures`, `groups`, `tasks`, `streams` and the two execution
      plan memos: only `@defer` and `@stream` put anything in them (early-executed
      deferred groups, delivery groups, streamed items), and graphql-core raises for
      either in a subscription before it does (`DEFER_NOT_SUPPORTED_ON_SUBSCRIPTIONS`,
      `get_stream_usage`); Commitcast's schema has neither directive anyway, so
      validation refuses them;
    - `_stream_usages`: `get_stream_usage` only stores a usage after raising for
      subscriptions;
    - the subscription's own `collected_errors` and memo: it executes nothing.

    Should a later graphql-core write one of them, that execution fails (an error
    result) instead of sharing the write with other subscriptions. Fresh containers for
    each copy would do as well, but building an event's executor took 5.6 µs with them
    instead of 3.4 (measured), for containers that stay empty.

    `background_futures` stays the subscription's, shared with its copies on purpose:
    they add to it the work they settle in the background (pending siblings of a
    failed field), and so does `info.async_helpers.track` (bound to the subscription's
    executor); it is what keeps that work referenced after the event's copy is gone, for
    as long as the subscription lives. `async_helpers` stays too (copies that made their
    own would be in a reference cycle, freed by the garbage collector instead of on
    release).

    Events that share results (`SharesResults`) are executed once per group of
    identical subscriptions (see the module's docstring)."""

    # A subscription keeps its executor for its whole life. graphql-core's incremental
    # executor and strawberry's give it 32 instance attributes; past 30, CPython stops
    # sharing the class's attribute keys and gives the instance a dict of its own
    # (about 1.6 KiB, per idle subscription, allocated at the 31st). Held in slots,
    # these seven leave 25 in the instance's values. (Behaviour is unchanged: the
    # per-event copy.copy copies slots too.)
    __slots__ = (
        "_deferred_execution_plans",
        "_initial_execution_plans",
        "defer_usage_set",
        "groups",
        "operation_extensions",
        "streams",
        "tasks",
    )

    # What only an execution uses (see the class docstring and `keep_only_shared_state`).
    EXECUTION_STATE = (
        "collected_errors",
        "_relevant_sub_fields",
        "pending_incremental_futures",
        "_stream_usages",
        "groups",
        "tasks",
        "streams",
        "_initial_execution_plans",
        "_deferred_execution_plans",
    )

    # Set on per-event copies whose event shares results.
    _shared_results: dict[Any, Any] | None = None
    # Set on per-event copies whose result other viewers may share (schema.crowd_results).
    _crowd: _Crowd | None = None
    # The subscription's share key (computed once, on the subscription's executor).
    _share_key: tuple[Any, ...] | None = None
    # The subscription's FieldPlan (schema.field_plans), found at its first event and
    # copied to every per-event copy; None if it has none.
    _fields: object = _UNPLANNED

    def build_per_event_executor(self, payload: Any) -> Any:
        shared = getattr(payload, "shared_results", None)
        if isinstance(shared, dict):
            if self._share_key is None:
                self._share_key = self._subscription_share_key()
            operation, found = shared.get(self._share_key, (None, None))
            if operation is self.operation and isinstance(found, ExecutionResult):
                # Executed already: no executor to build for this event.
                return _Executed(found)
        fields = self._fields
        if fields is _UNPLANNED:
            fields = self._fields = field_plan(self.operation, self._result_variable_values())
        crowd = self._crowd_of(payload, fields) if isinstance(shared, dict) else None
        if crowd is not None:
            taken = crowd.take(self.operation)
            if taken is not None:
                # Another viewer's execution, with this viewer's cursor: for this
                # viewer's other identical subscriptions too.
                cast("dict[Any, Any]", shared)[self._share_key] = (self.operation, taken)
                return _Executed(taken)
        executor = cast(
            "SubscriptionSafeExecutionContext", super().build_per_event_executor(payload)
        )
        # The plan's memo (keyed by the plan's lists: see execute_collected_root_fields),
        # else one of the event's own.
        executor._relevant_sub_fields = fields.sub_fields if isinstance(fields, FieldPlan) else {}
        if isinstance(shared, dict):
            executor._share_key = self._share_key
            executor._shared_results = shared
            executor._crowd = crowd
        return executor

    def _crowd_of(self, payload: Any, fields: object) -> _Crowd | None:
        """Where the viewers of this event's change may share its execution (schema
        .crowd_results): None unless the event offers it and the document selects only
        what is the same for every viewer."""
        store = getattr(payload, "crowd_results", None)
        if not isinstance(store, dict) or not isinstance(fields, FieldPlan):
            return None
        if not fields.same_for_every_viewer(self.schema, self.fragment_definitions.values()):
            return None
        key = cast("tuple[Any, ...]", self._share_key)
        # The share key without its viewer.
        return _Crowd(store, (key[0], key[2]), payload)

    def keep_only_shared_state(self) -> None:
        """Replace `EXECUTION_STATE` with the shared empty containers: called on the
        subscription's executor once its source stream exists (from then on, it only
        makes per-event copies). Replaced, not deleted: the copies need them (see the
        class docstring)."""
        self.collected_errors = _NO_ERRORS
        self._relevant_sub_fields = cast("dict[Any, Any]", _NO_SUBFIELDS)
        self.pending_incremental_futures = cast("set[Any]", _NO_FUTURES)
        self._stream_usages = _NO_ENTRIES
        self.groups = self.tasks = self.streams = cast("list[Any]", _NO_WORK)
        self._initial_execution_plans = self._deferred_execution_plans = _NO_ENTRIES

    def _result_variable_values(self) -> dict[str, Any]:
        """The coerced values of the variables an event's result depends on."""
        names = result_variables(self.operation, self.fragment_definitions.values())
        coerced = self.variable_values.coerced
        return {name: coerced.get(name) for name in sorted(names)}

    def _subscription_share_key(self) -> tuple[Any, ...]:
        viewer = getattr(self.context_value, "viewer_id", None)
        return (
            id(self.operation),
            viewer,
            json.dumps(self._result_variable_values(), sort_keys=True, default=repr),
        )

    def execute_collected_root_fields(
        self,
        root_type: GraphQLObjectType,
        root_value: Any,
        grouped_field_set: GroupedFieldSet,
        serially: bool,
        new_defer_usages: Sequence[DeferUsage],
    ) -> Any:
        # An event of a subscription with a plan executes the root fields its plan
        # collected first (equal to these, but the very lists the plan's memo of
        # subfields is keyed by), so that every object below is collected once per plan.
        fields = self._fields
        if isinstance(fields, FieldPlan) and not new_defer_usages:
            grouped_field_set = fields.root_fields(grouped_field_set)
        return super().execute_collected_root_fields(
            root_type, root_value, grouped_field_set, serially, new_defer_usages
        )

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = self._shared_results
        key = self._share_key
        if shared is None or key is None:
            return self._unshared(serially)
        entry = shared.get(key)
        # The operation is compared by identity too: an id is only unique among live
        # objects.
        if entry is not None and entry[0] is self.operation:
            found = entry[1]
            if isinstance(found, ExecutionResult):
                return found
            return self._after_first(found, serially)
        crowd = self._crowd
        elsewhere = None if crowd is None else crowd.pending(self.operation)
        if crowd is not None and elsewhere is not None:
            return self._after_crowd(crowd, elsewhere, shared, key, serially)
        result = super().execute_operation(serially)
        if isinstance(result, ExecutionResult):
            if crowd is not None:
                crowd.offer(self.operation, result)
            return self._keep(shared, key, result)
        # (Subscriptions have no incremental results: an ExecutionResult or its awaitable.)
        pending: asyncio.Future[ExecutionResult | None] = loop().create_future()
        shared[key] = (self.operation, pending)
        if crowd is not None:
            crowd.expect(self.operation)
        return self._first(shared, key, cast("Awaitable[ExecutionResult]", result), pending)

    def _unshared(self, serially: bool | None) -> Any:
        """graphql-core's execution, after which the executor lets go of its helpers
        (see `_let_go_of_helpers`)."""
        result = super().execute_operation(serially)
        if isinstance(result, ExecutionResult):
            self._let_go_of_helpers()
            return result
        if not self.is_awaitable(result):
            return result  # (incremental results: the executor goes on working)
        return self._unshared_awaited(result)

    async def _unshared_awaited(self, result: Awaitable[Any]) -> Any:
        executed = await result
        if isinstance(executed, ExecutionResult):
            self._let_go_of_helpers()
        return executed

    def _let_go_of_helpers(self) -> None:
        """graphql-core's executor holds resolver helpers bound to itself
        (`async_helpers`): a reference cycle, so everything an execution references
        (its context, the request and response, the variables, the loaders) was freed
        by the garbage collector, not when the execution ended. That was most of what
        a young collection walked and freed at 200 mutations/s (an `updateCard`
        request, about a hundred objects). Once the result is complete the executor
        needs them no more: resolvers that left work behind hold the helpers through
        their `info`, not through the executor. A subscription's executor keeps them:
        its per-event copies share them (and are in no cycle through them)."""
        if self.operation.operation is OperationType.SUBSCRIPTION:
            return
        if getattr(self.async_helpers.track, "__self__", None) is self:
            self.async_helpers = _NO_HELPERS

    def _keep(self, shared: dict[Any, Any], key: Any, result: ExecutionResult) -> ExecutionResult:
        if result.errors or not isinstance(result.data, dict):
            shared.pop(key, None)
            return result
        kept = ExecutionResult(data=EncodedOnce(result.data), errors=None)
        shared[key] = (self.operation, kept)
        return kept

    async def _first(
        self,
        shared: dict[Any, Any],
        key: Any,
        result: Awaitable[ExecutionResult],
        pending: asyncio.Future[ExecutionResult | None],
    ) -> ExecutionResult:
        crowd = self._crowd
        try:
            executed = await result
        except BaseException:
            shared.pop(key, None)
            pending.set_result(None)  # the others execute for themselves
            if crowd is not None:
                crowd.offer(self.operation, None)
            raise
        if crowd is not None:
            crowd.offer(self.operation, executed)
        kept = self._keep(shared, key, executed)
        pending.set_result(kept if isinstance(kept.data, EncodedOnce) else None)
        return kept

    async def _after_first(
        self, pending: asyncio.Future[ExecutionResult | None], serially: bool | None
    ) -> ExecutionResult:
        found = await asyncio.shield(pending)
        if isinstance(found, ExecutionResult) and isinstance(found.data, EncodedOnce):
            return found
        return await self._on_its_own(serially)

    async def _after_crowd(
        self,
        crowd: _Crowd,
        pending: asyncio.Future[object],
        shared: dict[Any, Any],
        key: Any,
        serially: bool | None,
    ) -> ExecutionResult:
        """Another viewer is executing this change's update (`pending`): take theirs when
        it comes, else execute."""
        # (Held by this viewer's other identical subscriptions meanwhile.)
        mine: asyncio.Future[ExecutionResult | None] = loop().create_future()
        shared[key] = (self.operation, mine)
        try:
            await asyncio.shield(pending)
            taken = crowd.take(self.operation)
            result = taken if taken is not None else await self._on_its_own(serially)
        except BaseException:
            shared.pop(key, None)
            mine.set_result(None)
            raise
        if taken is None:
            kept = self._keep(shared, key, result)
        else:
            kept = taken
            shared[key] = (self.operation, kept)
        mine.set_result(kept if isinstance(kept.data, EncodedOnce) else None)
        return kept

    async def _on_its_own(self, serially: bool | None) -> ExecutionResult:
        result = super().execute_operation(serially)
        if isinstance(result, ExecutionResult):
            return result
        return await cast("Awaitable[ExecutionResult]", result)


class _Crowd:
    """One event's place among the viewers of its change (schema.crowd_results): the
    change's store (kept with the snapshot's shared reads), this document's key in it
    and the event (this viewer's update)."""

    __slots__ = ("_key", "_store", "_update")

    def __init__(self, store: dict[Any, Any], key: tuple[Any, ...], update: Any) -> None:
        self._store = store
        self._key = key
        self._update = update

    def take(self, operation: OperationDefinitionNode) -> ExecutionResult | None:
        """This viewer's result from another viewer's execution, if it may have it."""
        entry = self._store.get(self._key)
        if entry is None or entry[0] is not operation:
            return None
        template = entry[1]
        if not isinstance(template, Template) or not template.admits(self._update):
            return None
        return template.for_cursor(self._update.cursor)

    def pending(self, operation: OperationDefinitionNode) -> asyncio.Future[object] | None:
        """Another viewer's execution in progress, if any."""
        entry = self._store.get(self._key)
        if entry is None or entry[0] is not operation or not isinstance(entry[1], asyncio.Future):
            return None
        return entry[1]

    def expect(self, operation: OperationDefinitionNode) -> None:
        """This viewer executes: the others wait for it (unless someone has already)."""
        if self._key not in self._store:
            self._store[self._key] = (operation, loop().create_future())

    def offer(self, operation: OperationDefinitionNode, result: ExecutionResult | None) -> None:
        """This viewer's result (None: none), as the template for the others where
        none is there yet."""
        entry = self._store.get(self._key)
        waiting = entry[1] if entry is not None and entry[0] is operation else None
        if entry is not None and not isinstance(waiting, asyncio.Future):
            return  # (another viewer's template, or another operation's entry)
        template = None if result is None else Template.of(self._update, result)
        if template is None:
            self._store.pop(self._key, None)
        else:
            self._store[self._key] = (operation, template)
        if isinstance(waiting, asyncio.Future) and not waiting.done():
            waiting.set_result(None)


class _NoErrors(CollectedErrors):
    """No errors, for an executor that executes nothing."""

    __slots__ = ()

    def add(self, error: GraphQLError, path: Path | None) -> None:
        raise TypeError("this executor executes nothing: it cannot collect errors")


class _Unwritable(RefMap[Any, Any]):
    """An empty RefMap that refuses to be written."""

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("shared by every subscription: it cannot be written")


# The containers a subscription's executor keeps once its source stream exists, shared
# by every subscription: empty, and refusing to be written (frozenset and tuple have no
# add, append or extend).
_NO_ERRORS = _NoErrors()
_NO_SUBFIELDS: MappingProxyType[Any, Any] = MappingProxyType({})
_NO_FUTURES: frozenset[Any] = frozenset()
_NO_ENTRIES = _Unwritable()
_NO_WORK: tuple[()] = ()


def _no_async_work(values: Sequence[Any]) -> Any:
    raise RuntimeError("the execution has ended: no more asynchronous work")


# What an executor's `async_helpers` become once its execution has ended (see
# SubscriptionSafeExecutionContext._let_go_of_helpers).
_NO_HELPERS = GraphQLResolveInfoHelpers(gather=_no_async_work, track=_no_async_work)


class _Executed:
    """Stands in for a per-event executor when an identical subscription already
    executed the event (graphql-core only calls `execute_operation` on it)."""

    __slots__ = ("_result",)

    def __init__(self, result: ExecutionResult) -> None:
        self._result = result

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        return self._result
