"""A subscription keeps its executor (schema.execution.SubscriptionSafeExecutionContext)
for its whole life: its state is kept small without changing what the per-event copies
see."""

from __future__ import annotations

from graphql import parse

from schema import build_schema
from schema.execution import SubscriptionSafeExecutionContext

DOCUMENT = parse("subscription { userUpdates { cursor op id } }")
# CPython shares a class's instance attribute keys (no dict per instance) up to this.
SHARED_KEYS_MAX = 30


def subscription_executor() -> SubscriptionSafeExecutionContext:
    schema = build_schema()
    executor = SubscriptionSafeExecutionContext.build(
        schema._schema, DOCUMENT, operation_extensions={"trace": True}
    )
    assert isinstance(executor, SubscriptionSafeExecutionContext)
    return executor


def test_the_executor_keeps_few_enough_instance_attributes_to_share_their_keys() -> None:
    executor = subscription_executor()
    # (The share key is set on the first event; it counts too.)
    executor._share_key = ("operation", 1, "{}")
    assert len(vars(executor)) <= SHARED_KEYS_MAX


def test_a_per_event_executor_sees_the_subscriptions_state() -> None:
    executor = subscription_executor()
    event = executor.build_per_event_executor(object())

    assert isinstance(event, SubscriptionSafeExecutionContext)
    assert event.operation_extensions == {"trace": True}
    for name in SubscriptionSafeExecutionContext.__slots__:
        assert getattr(event, name) is getattr(executor, name), name
    assert event.collected_errors is not executor.collected_errors
    assert event._relevant_sub_fields is not executor._relevant_sub_fields
