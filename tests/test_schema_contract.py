"""The generated schema matches schema.graphql and keeps every promise of the contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
)

from schema import build_schema as build_commitcast_schema

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT.parent / "shared" / "contract.graphql"

# Parts of the contract that a later issue delivers. Each entry must still be missing
# from our schema, so the list cannot silently go stale.
PENDING: set[str] = set()


def test_schema_graphql_is_generated_from_code() -> None:
    generated = build_commitcast_schema().as_str().strip()
    committed = (ROOT / "schema.graphql").read_text().strip()
    assert committed == generated, (
        "schema.graphql is stale: run `.venv/bin/python -m schema > schema.graphql`"
    )


@pytest.fixture(scope="module")
def contract() -> GraphQLSchema:
    if not CONTRACT.exists():
        message = f"the shared contract is not beside this checkout ({CONTRACT})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return build_schema(CONTRACT.read_text())


@pytest.fixture(scope="module")
def ours() -> GraphQLSchema:
    return build_schema((ROOT / "schema.graphql").read_text())


def contract_types(schema: GraphQLSchema) -> dict[str, object]:
    return {name: t for name, t in schema.type_map.items() if not name.startswith("__")}


def test_pending_parts_are_really_pending(contract: GraphQLSchema, ours: GraphQLSchema) -> None:
    # Nothing is pending today; the check stays for the next contract addition.
    assert set(contract.type_map) >= PENDING
    assert not PENDING & set(ours.type_map), "delivered: remove it from PENDING"


def test_every_contract_type_exists_with_the_same_shape(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    problems: list[str] = []
    for name, expected in contract_types(contract).items():
        if name in PENDING:
            continue
        actual = ours.type_map.get(name)
        if actual is None:
            problems.append(f"type {name} is missing")
            continue
        if type(actual) is not type(expected):
            problems.append(f"{name} is a {type(actual).__name__}, not {type(expected).__name__}")
            continue
        if isinstance(expected, GraphQLObjectType | GraphQLInterfaceType):
            assert isinstance(actual, GraphQLObjectType | GraphQLInterfaceType)
            missing = {i.name for i in expected.interfaces} - {i.name for i in actual.interfaces}
            problems += [f"{name} does not implement {i}" for i in sorted(missing)]
            for field_name, field in expected.fields.items():
                ours_field = actual.fields.get(field_name)
                if ours_field is None:
                    problems.append(f"{name}.{field_name} is missing")
                    continue
                if str(ours_field.type) != str(field.type):
                    problems.append(f"{name}.{field_name}: {ours_field.type} != {field.type}")
                for arg_name, arg in field.args.items():
                    ours_arg = ours_field.args.get(arg_name)
                    if ours_arg is None:
                        problems.append(f"{name}.{field_name}({arg_name}:) is missing")
                    elif str(ours_arg.type) != str(arg.type):
                        problems.append(
                            f"{name}.{field_name}({arg_name}:): {ours_arg.type} != {arg.type}"
                        )
                extra_required = [
                    a
                    for a, v in ours_field.args.items()
                    if a not in field.args and str(v.type).endswith("!")
                ]
                problems += [
                    f"{name}.{field_name}({a}:) is new and required" for a in extra_required
                ]
        elif isinstance(expected, GraphQLInputObjectType):
            assert isinstance(actual, GraphQLInputObjectType)
            for field_name, field in expected.fields.items():
                ours_field = actual.fields.get(field_name)
                if ours_field is None:
                    problems.append(f"{name}.{field_name} is missing")
                elif str(ours_field.type) != str(field.type):
                    problems.append(f"{name}.{field_name}: {ours_field.type} != {field.type}")
                elif ours_field.default_value != field.default_value:
                    problems.append(
                        f"{name}.{field_name} default {ours_field.default_value!r} "
                        f"!= {field.default_value!r}"
                    )
        elif isinstance(expected, GraphQLEnumType):
            assert isinstance(actual, GraphQLEnumType)
            missing_values = set(expected.values) - set(actual.values)
            problems += [f"{name}.{v} is missing" for v in sorted(missing_values)]
    assert not problems, "\n".join(problems)
