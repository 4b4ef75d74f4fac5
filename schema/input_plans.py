"""Input objects built from their GraphQL values by a plan made once per type.

strawberry converts an input object's value field by field on every request: for each
field of the type, whether the client sent it or not, it works the field's GraphQL name
out again (the name converter, camel-casing), resolves its type again, and walks
convert_argument's checks down that type. For `UpdateCardInput`'s seven fields that was
about 6 % of an `updateCard` request's CPU.

`planned` gives an input type strawberry's public hook for types that build their own
value (`StrawberryObjectDefinition.from_input`): a plan made at the first value, per
schema configuration, lists each field's GraphQL name, Python name and how its value is
converted. A scalar or enum field, optional or not, takes the value graphql-core parsed,
which is what strawberry's conversion returns for those; any other field (a nested
input, a list, a GlobalID, a Maybe) goes through strawberry's own conversion
(`InputContext.convert`). Fields the client left out keep their Python default, and a
field without one is None, as strawberry builds an input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    StrawberryType,
)
from strawberry.types.enum import StrawberryEnumDefinition
from strawberry.types.lazy_type import LazyType

T = TypeVar("T", bound=type)

# A field's (GraphQL name, Python name, type to convert its value to: None when the
# parsed value is taken as it is).
FieldPlan = tuple[str, str, StrawberryType | type | None]

# Schema configurations a type keeps a plan for at once (one per schema in a process;
# the tests build several).
PLANS_KEPT = 8


def planned(cls: T) -> T:
    """Build this strawberry input type's values by a plan (see the module docstring).
    Apply above `@strawberry.input`."""
    definition: StrawberryObjectDefinition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    if not definition.is_input or definition.from_input is not None:
        raise TypeError(f"{cls.__name__} is not a strawberry input that builds its own value")
    definition.from_input = InputPlan(definition)
    return cls


class InputPlan:
    __slots__ = ("_definition", "_nulls", "_plans")

    def __init__(self, definition: StrawberryObjectDefinition) -> None:
        self._definition = definition
        # The fields without a default: None unless sent (as strawberry's).
        self._nulls = {
            field.python_name: None
            for field in definition.fields
            if field.default_value is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        }
        # id(config) -> (config, plan): the config is kept so its id is not reused.
        self._plans: dict[int, tuple[StrawberryConfig, list[FieldPlan]]] = {}

    def __call__(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        kept = self._plans.get(id(context.config))
        if kept is None or kept[0] is not context.config:
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            kept = self._plans[id(context.config)] = (context.config, self._plan(context))
        kwargs: dict[str, Any] = dict(self._nulls)
        for graphql_name, python_name, convert_to in kept[1]:
            if graphql_name in value:
                sent = value[graphql_name]
                if convert_to is not None:
                    sent = context.convert(sent, convert_to, graphql_name)
                kwargs[python_name] = sent
        return cls(**kwargs)

    def _plan(self, context: InputContext) -> list[FieldPlan]:
        definition = self._definition
        plan: list[FieldPlan] = []
        for field in definition.fields:
            type_ = field.resolve_type(type_definition=definition)
            as_parsed = _taken_as_parsed(type_, context.scalar_registry)
            plan.append(
                (
                    context.config.name_converter.from_field(field),
                    field.python_name,
                    None if as_parsed else type_,
                )
            )
        return plan


def _taken_as_parsed(type_: StrawberryType | type, scalar_registry: Mapping[object, Any]) -> bool:
    """Whether strawberry's conversion returns a value of `type_` as graphql-core parsed
    it: a scalar or an enum, or an optional one (null stays null). Not a GlobalID
    (strawberry makes an object of it) nor a Maybe (wrapped in Some)."""
    if isinstance(type_, StrawberryMaybe):
        return False
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    if isinstance(type_, LazyType):
        type_ = type_.resolve_type()
    if type_ is GlobalID:
        return False
    return isinstance(type_, StrawberryEnumDefinition) or is_scalar(type_, scalar_registry)
