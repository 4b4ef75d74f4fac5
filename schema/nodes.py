"""The Node registry: which GraphQL types are Nodes, and how each one is loaded as the
viewer. `node(id:)`, `nodes(ids:)` and `userUpdates` all resolve records through it, so
a type registered here is visible, and hidden, the same way everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from schema.context import Context
from schema.ids import forget_typename, register_typename
from schema.types import Node

Resolver = Callable[[Context, int], Awaitable[Any]]
F = TypeVar("F", bound=Resolver)

_REGISTRY: dict[str, tuple[type[Any], Resolver]] = {}


def typename_of(cls: type[Any]) -> str:
    name: str = cls.__strawberry_definition__.name
    return name


def node_type(cls: type[Any]) -> Callable[[F], F]:
    """Register `resolver(ctx, pk)` as the way to load a `cls` for the viewer: it returns
    the object, or None when the record is missing or the viewer may not see it."""

    def register(resolver: F) -> F:
        typename = typename_of(cls)
        _REGISTRY[typename] = (cls, resolver)
        register_typename(typename)
        return resolver

    return register


def forget_node_type(cls: type[Any]) -> None:
    """Undo node_type (for tests that register a type of their own)."""
    typename = typename_of(cls)
    _REGISTRY.pop(typename, None)
    forget_typename(typename)


def node_types() -> list[type[Any]]:
    return [cls for cls, _ in _REGISTRY.values()]


async def visible_node(ctx: Context, typename: str, pk: int) -> Node | None:
    """The record if the viewer may read it, else None (missing and hidden look alike)."""
    ctx.require_viewer()
    entry = _REGISTRY.get(typename)
    if entry is None:
        return None
    node: Node | None = await entry[1](ctx, pk)
    return node
