"""A subscription keeps its executor (schema.execution.SubscriptionSafeExecutionContext)
for its whole life: its state is kept small without changing what the per-event copies
see."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import parse

from schema import build_schema
from schema.execution import SubscriptionSafeExecutionContext
from schema.field_plans import FieldPlan

DOCUMENT = parse("subscription { userUpdates { cursor op id } }")
# CPython shares a class's instance attribute keys (no dict per instance) up to this.
SHARED_KEYS_MAX = 30
NOTHING: Any = None
KEY: Any = 1


def subscription_executor() -> SubscriptionSafeExecutionContext:
    schema = build_schema()
    executor = SubscriptionSafeExecutionContext.build(
        schema._schema, DOCUMENT, operation_extensions={"trace": True}
    )
    assert isinstance(executor, SubscriptionSafeExecutionContext)
    return executor


def test_the_executor_keeps_few_enough_instance_attributes_to_share_their_keys() -> None:
    executor = subscription_executor()
    # (The share key and the field plan are set on the first event; they count too.)
    executor._share_key = ("operation", 1, "{}")
    executor.build_per_event_executor(object())
    assert isinstance(executor._fields, FieldPlan)
    assert len(vars(executor)) <= SHARED_KEYS_MAX


def test_a_per_event_executor_sees_the_subscriptions_state() -> None:
    executor = subscription_executor()
    event = executor.build_per_event_executor(object())

    assert isinstance(event, SubscriptionSafeExecutionContext)
    assert event._fields is executor._fields
    assert event.operation_extensions == {"trace": True}
    for name in SubscriptionSafeExecutionContext.__slots__:
        assert getattr(event, name) is getattr(executor, name), name
    assert event.collected_errors is not executor.collected_errors
    assert event._relevant_sub_fields is not executor._relevant_sub_fields


def test_an_idle_subscriptions_executor_keeps_no_execution_state_of_its_own() -> None:
    """Once its source stream exists, the executor's per-execution containers are the
    empty ones every subscription shares, refusing writes; each event's copy still
    collects its own errors and subfields, and shares the background work's set."""
    executor, other = subscription_executor(), subscription_executor()
    background = executor.background_futures
    for idle in (executor, other):
        idle.keep_only_shared_state()
    for name in SubscriptionSafeExecutionContext.EXECUTION_STATE:
        kept = getattr(executor, name)
        assert kept is getattr(other, name), name  # nothing of its own
        assert not (kept.errors if name == "collected_errors" else kept), name
    assert executor.background_futures is background  # (the subscription's own)

    with pytest.raises(TypeError):
        executor._stream_usages[[]] = NOTHING
    with pytest.raises(TypeError):
        executor._relevant_sub_fields[KEY] = NOTHING
    with pytest.raises(AttributeError):
        executor.pending_incremental_futures.add(NOTHING)
    with pytest.raises(AttributeError):
        executor.tasks.append(NOTHING)

    first, second = (executor.build_per_event_executor(object()) for _ in range(2))
    assert isinstance(first, SubscriptionSafeExecutionContext)
    assert isinstance(second, SubscriptionSafeExecutionContext)
    assert first.collected_errors is not second.collected_errors
    assert first.collected_errors is not executor.collected_errors
    # The subfields they collect go to the memo of the subscription's field plan, which
    # every subscription with this document and these variables shares (its keys are
    # the plan's lists: schema.field_plans), not to the executor's.
    plan = executor._fields
    assert isinstance(plan, FieldPlan)
    assert first._relevant_sub_fields is plan.sub_fields is second._relevant_sub_fields
    assert other.build_per_event_executor(object())._relevant_sub_fields is plan.sub_fields
    first._relevant_sub_fields[KEY] = NOTHING  # (writable)
    del plan.sub_fields[KEY]
    assert first.background_futures is background
    assert first.operation_extensions == {"trace": True}
