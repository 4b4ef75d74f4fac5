"""The execution context: strawberry's, with graphql-core's per-event cache bounded."""

from __future__ import annotations

from typing import Any

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class SubscriptionSafeExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core 3.3 copies the executor for every subscription event, but the copy
    shares the memo of collected subfields, keyed by the identity of lists built anew
    for each event: it grows by a few KiB per delivered update for as long as the
    subscription lives. Each event gets its own memo here (it still serves the lists
    within that event, which is what it is for)."""

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor
