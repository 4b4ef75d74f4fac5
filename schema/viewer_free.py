"""Which selections give every viewer the same result for the same record.

A subscription's result for a change may be executed once for every viewer who
receives it (schema.crowd_results) only when nothing it selects depends on who is
looking. That is decided here from the document alone, failing closed:

- a field read straight from the object (no resolver: `title`, `version`, `node`...) is
  the same for everyone the object is the same for (schema.crowd_results checks that
  each viewer's object equals the one executed);
- a field with a resolver counts only when declared with `SAME_FOR_EVERY_VIEWER`
  metadata: its resolver must not read the viewer (`info.context.viewer_id`) or anything
  derived from it. `User.email` and `User.boards` read it and are not declared; neither
  is any resolver a custom model adds unless its author declares it;
- `__typename` depends on the object's type only;
- anything else (a field this module cannot find in the schema) counts as depending on
  the viewer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    visit,
)
from graphql.language.visitor import BREAK
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

_MARK = "commitcast.same_for_every_viewer"
SAME_FOR_EVERY_VIEWER: dict[str, Any] = {_MARK: True}
"""Field metadata (`strawberry.field(metadata=SAME_FOR_EVERY_VIEWER)`) declaring that a
resolver's result does not depend on the viewer, only on its object."""


def same_for_every_viewer(field: StrawberryField) -> bool:
    """Whether `field`'s value depends only on its object (see the module docstring)."""
    if field.base_resolver is None:
        return True
    return bool(field.metadata.get(_MARK))


class _Finder(Visitor):
    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self._type_info = type_info
        self.depends = False

    def enter_field(self, node: FieldNode, *_args: Any) -> Any:
        if node.name.value == "__typename":
            return None
        definition = self._type_info.get_field_def()
        strawberry_field = (
            definition.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if definition is not None
            else None
        )
        if not isinstance(strawberry_field, StrawberryField) or not same_for_every_viewer(
            strawberry_field
        ):
            self.depends = True
            return BREAK
        return None


def selects_only_viewer_free_fields(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Iterable[FragmentDefinitionNode],
) -> bool:
    """Whether every field below the operation's root field (and in `fragments`) is the
    same for every viewer of the same object. The root field itself (the subscription
    field, whose event this is) is not judged."""
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            return False  # (a fragment at the root: not worth the special case)
        if selection.selection_set is None:
            continue
        root = schema.subscription_type
        if root is None or selection.name.value not in root.fields:
            return False
        type_info = TypeInfo(schema, root.fields[selection.name.value].type)
        if _depends(type_info, selection.selection_set):
            return False
    return not any(_depends(TypeInfo(schema), fragment) for fragment in fragments)


def _depends(type_info: TypeInfo, node: Any) -> bool:
    finder = _Finder(type_info)
    visit(node, TypeInfoVisitor(type_info, finder))
    return finder.depends
