"""The execution context: strawberry's, with graphql-core's per-event cache bounded and
one execution per cohort of identical subscriptions.

A cohort is every local subscription of one viewer, with the same document and
variables, that delivers the same update: they would all build exactly the same
result. The update object they receive is shared (schema.subscription keeps one per
change and batch, see `Renders`), and the first execution's result is kept on it: the
others send that result instead of executing the selection again. What a viewer may
see is decided before (the reload, as that viewer); the cache only saves repeating
the same work for the same viewer, never shares a result between viewers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

RenderKey = tuple[int, str | None, str]


class Renders:
    """Results built (or being built) for one update, by (document, operation,
    variables)."""

    __slots__ = ("results",)

    def __init__(self) -> None:
        self.results: dict[RenderKey, asyncio.Future[Any]] = {}


def _variables_key(values: Any) -> str | None:
    try:
        return json.dumps(values, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None


class SubscriptionSafeExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core 3.3 copies the executor for every subscription event, but the copy
    shares the memo of collected subfields, keyed by the identity of lists built anew
    for each event: it grows by a few KiB per delivered update for as long as the
    subscription lives. Each event gets its own memo here (it still serves the lists
    within that event, which is what it is for)."""

    _renders: Renders | None = None
    _render_key: RenderKey | None = None

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = cast(
            "SubscriptionSafeExecutionContext", super().build_per_event_executor(payload)
        )
        executor._relevant_sub_fields = {}
        renders = getattr(payload, "renders", None)
        if isinstance(renders, Renders):
            variables = _variables_key(self.variable_values.coerced)
            if variables is not None:
                executor._renders = renders
                # The parsed document is shared by every operation with the same text
                # (ParserCache): its identity stands for the text.
                executor._render_key = (
                    id(self.operation),
                    self.operation.name.value if self.operation.name else None,
                    variables,
                )
        return executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        renders, key = self._renders, self._render_key
        if renders is None or key is None:
            return super().execute_operation(serially)
        shared = renders.results.get(key)
        if shared is not None:
            return self._wait_for(shared, serially)
        result = super().execute_operation(serially)
        shared = asyncio.get_running_loop().create_future()
        renders.results[key] = shared
        if not self.is_awaitable(result):
            shared.set_result(result)
            return result
        # Run inline, in this subscription's own task (its context, its session), so
        # nothing outlives the subscription; the others wait for the result.
        return self._share(result, shared, renders, key)

    @staticmethod
    async def _share(
        result: Any, shared: asyncio.Future[Any], renders: Renders, key: RenderKey
    ) -> Any:
        try:
            value = await result
        except BaseException:
            if renders.results.get(key) is shared:
                del renders.results[key]
            shared.cancel()  # the others execute for themselves
            raise
        shared.set_result(value)
        return value

    async def _wait_for(self, shared: asyncio.Future[Any], serially: bool | None) -> Any:
        try:
            return await asyncio.shield(shared)
        except asyncio.CancelledError:
            if not shared.cancelled():
                raise  # this subscription was cancelled
        result = super().execute_operation(serially)
        return await result if self.is_awaitable(result) else result
