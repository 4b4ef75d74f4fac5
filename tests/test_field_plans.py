"""schema/field_plans.py: one plan per (operation, values of the variables its
selections use), the latest PLANS_LIMIT kept. (That events and viewers share a plan's
collected fields: tests/test_shared_execution.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from graphql import OperationDefinitionNode, parse

import schema.field_plans
from schema.field_plans import FieldPlan, field_plan, plans_kept


def operation(text: str = "subscription { userUpdates { id } }") -> OperationDefinitionNode:
    definition = parse(text).definitions[0]
    assert isinstance(definition, OperationDefinitionNode)
    return definition


@pytest.fixture(autouse=True)
def no_plans() -> Iterator[None]:
    saved = schema.field_plans._PLANS.copy()
    schema.field_plans._PLANS.clear()
    yield
    schema.field_plans._PLANS.clear()
    schema.field_plans._PLANS.update(saved)


def test_an_operation_with_the_same_values_has_one_plan() -> None:
    first, other = operation(), operation()
    plan = field_plan(first, {"withTitle": True, "n": 1})
    assert isinstance(plan, FieldPlan)
    assert field_plan(first, {"n": 1, "withTitle": True}) is plan  # (any order)
    assert field_plan(first, {"withTitle": False, "n": 1}) is not plan
    assert field_plan(other, {"withTitle": True, "n": 1}) is not plan  # another document
    assert plans_kept() == 3


def test_the_root_fields_are_the_first_collected() -> None:
    plan = FieldPlan(operation())
    first, later = {"userUpdates": ["first"]}, {"userUpdates": ["later"]}
    assert plan.root_fields(first) is first
    assert plan.root_fields(later) is first


def test_values_json_cannot_tell_apart_get_no_plan() -> None:
    assert field_plan(operation(), {"x": object()}) is None
    assert plans_kept() == 0


def test_only_the_latest_plans_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema.field_plans, "PLANS_LIMIT", 3)
    kept = operation()
    first = field_plan(kept, {"n": 0})
    for n in range(1, 6):
        field_plan(operation(), {"n": n})
        field_plan(kept, {"n": 0})  # (used again: kept)
    assert plans_kept() == 3
    assert field_plan(kept, {"n": 0}) is first


def test_a_plan_under_a_reused_id_is_not_another_operations() -> None:
    replaced = operation()
    plan = field_plan(replaced, {})
    assert plan is not None
    key = next(iter(schema.field_plans._PLANS))
    impostor = FieldPlan(operation())  # as if its operation had had that id
    schema.field_plans._PLANS[key] = impostor
    found = field_plan(replaced, {})
    assert found is not impostor
    assert found is not None
    assert found.operation is replaced
