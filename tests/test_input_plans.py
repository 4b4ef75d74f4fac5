"""schema.input_plans: an input type built by its plan gets the same value strawberry's
own conversion gives, field by field (scalars, enums, defaults, left out, null, and the
kinds it leaves to strawberry: GlobalID, nested inputs, Maybe), with the field names
worked out once per schema."""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import pytest
import strawberry
from strawberry.relay import GlobalID
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.types.field import StrawberryField

from schema.input_plans import planned


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.input
class Inner:
    some_number: int
    label: str = "inner"


def sample_type(planned_: bool) -> type:
    @strawberry.input(name="Sample")
    class Sample:
        id: strawberry.ID
        plain_text: str
        optional_text: str | None = strawberry.UNSET
        count: int | None = None
        ratio: float = 0.5
        color: Color = Color.BLUE
        optional_color: Color | None = strawberry.UNSET
        global_id: GlobalID | None = strawberry.UNSET
        inners: list[Inner] | None = strawberry.UNSET
        one_inner: Inner | None = strawberry.UNSET
        maybe: strawberry.Maybe[int | None] = None

    return planned(Sample) if planned_ else Sample


class CountingNames(NameConverter):
    fields: ClassVar[list[str]] = []

    def from_field(self, field: StrawberryField) -> str:
        CountingNames.fields.append(field.python_name)
        return super().from_field(field)


def schema_of(input_type: type) -> strawberry.Schema:
    def echo(value: Any) -> str:
        return repr(sorted(vars(value).items()))

    # (Set here: this module's annotations are strings, and input_type is a local.)
    echo.__annotations__ = {"value": input_type, "return": str}
    query = strawberry.type(type("Query", (), {"echo": strawberry.field(resolver=echo)}))
    return strawberry.Schema(query=query, config=StrawberryConfig(name_converter=CountingNames()))


VALUES: list[dict[str, Any]] = [
    {"id": "1", "plainText": "a"},
    {"id": "2", "plainText": "b", "optionalText": None, "count": None, "optionalColor": None},
    {
        "id": "3",
        "plainText": "c",
        "optionalText": "d",
        "count": 4,
        "ratio": 2,
        "color": "RED",
        "optionalColor": "BLUE",
        "globalId": str(GlobalID("Card", "7")),
        "inners": [{"someNumber": 1}, {"someNumber": 2, "label": "x"}],
        "oneInner": {"someNumber": 3},
        "maybe": 5,
    },
    {"id": "4", "plainText": "e", "maybe": None, "inners": None, "globalId": None},
]


@pytest.mark.parametrize("value", VALUES)
async def test_a_planned_input_is_the_value_strawberry_builds(value: dict[str, Any]) -> None:
    query = "query($v: Sample!) { echo(value: $v) }"
    ours = await schema_of(sample_type(True)).execute(query, {"v": value})
    theirs = await schema_of(sample_type(False)).execute(query, {"v": value})
    assert ours.errors is None
    assert theirs.errors is None
    assert ours.data == theirs.data


async def test_a_bad_global_id_fails_as_strawberrys() -> None:
    query = "query($v: Sample!) { echo(value: $v) }"
    value = {"id": "1", "plainText": "a", "globalId": "not a global id"}
    ours = await schema_of(sample_type(True)).execute(query, {"v": value})
    theirs = await schema_of(sample_type(False)).execute(query, {"v": value})
    assert ours.errors is not None
    assert theirs.errors is not None
    assert [e.message for e in ours.errors] == [e.message for e in theirs.errors]


async def test_field_names_are_worked_out_once_per_schema() -> None:
    schema = schema_of(sample_type(True))
    query = "query($v: Sample!) { echo(value: $v) }"
    assert (await schema.execute(query, {"v": VALUES[0]})).errors is None
    CountingNames.fields.clear()
    for value in VALUES:
        assert (await schema.execute(query, {"v": value})).errors is None
    assert "plain_text" not in CountingNames.fields
    # (strawberry's own conversion asks for every field's name on every value)
    unplanned = schema_of(sample_type(False))
    CountingNames.fields.clear()
    assert (await unplanned.execute(query, {"v": VALUES[0]})).errors is None
    assert "plain_text" in CountingNames.fields


def test_only_inputs_that_build_their_own_value_can_be_planned() -> None:
    @strawberry.type
    class Output:
        name: str

    with pytest.raises(TypeError, match="not a strawberry input"):
        planned(Output)
    with pytest.raises(TypeError, match="not a strawberry input"):
        planned(sample_type(True))  # (planned already)
