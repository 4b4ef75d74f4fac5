"""Cost limits on every document, over HTTP and WebSocket alike: tokens (checked while
parsing, so an oversized document is never fully parsed), field depth and aliases
(checked with the other validation rules, before anything runs). Introspection is
bounded by graphql-core's MaxIntrospectionDepthRule rather than the depth limit.

A refused document gets QUERY_TOO_COMPLEX with `extensions.limit` ("tokens", "depth"
or "aliases") and `extensions.maximum`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from graphql import (
    ASTValidationRule,
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    MaxIntrospectionDepthRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import AddValidationRules, SchemaExtension

from schema.errors import QUERY_TOO_COMPLEX

DEFAULT_MAX_DEPTH = 15
DEFAULT_MAX_ALIASES = 30
DEFAULT_MAX_TOKENS = 5000

_INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
# graphql-core's message when the parser stops at the token limit.
_TOKEN_LIMIT = re.compile(r"Document contains more than (\d+) tokens")


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_depth: int = DEFAULT_MAX_DEPTH
    max_aliases: int = DEFAULT_MAX_ALIASES
    max_tokens: int = DEFAULT_MAX_TOKENS


def too_complex(message: str, limit: str, maximum: int, **kwargs: object) -> GraphQLError:
    return GraphQLError(
        message,
        extensions={"code": QUERY_TOO_COMPLEX, "limit": limit, "maximum": maximum},
        **kwargs,  # type: ignore[arg-type]
    )


def token_limit_error(error: GraphQLSyntaxError) -> GraphQLError | None:
    """The parser's "too many tokens" syntax error as QUERY_TOO_COMPLEX; None otherwise."""
    match = _TOKEN_LIMIT.search(error.message)
    if match is None:
        return None
    maximum = int(match.group(1))
    return too_complex(
        f"The document has more than {maximum} tokens.",
        "tokens",
        maximum,
        source=error.source,
        positions=error.positions,
    )


class _TokenLimit(SchemaExtension):
    operation_end_does_nothing = True  # (schema.extensions_runner: not kept to be ended)

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens

    def start_operation(self) -> None:
        # (schema.extensions_runner calls this directly: no generator kept per
        # subscription.) Counts comments as well, so a document of nothing but
        # comments is bounded too.
        self.execution_context.parse_options["max_tokens"] = self.max_tokens

    def end_operation(self, error: BaseException | None) -> None:
        return None

    def on_operation(self) -> Iterator[None]:
        self.start_operation()  # strawberry's own runner uses this
        yield


Rules = tuple[type[ASTValidationRule], ...]


@functools.lru_cache(maxsize=16)
def _joined(rules: Rules, added: Rules) -> Rules:
    """The same tuple for every operation given the same rules: an operation keeps its
    rules for its life (a subscription, for as long as it is open), and each of
    strawberry's per-operation tuples costs about 0.3 KiB."""
    return rules + added


class ValidationRules(AddValidationRules):
    """strawberry's AddValidationRules, whose rules schema.extensions_runner adds
    directly (start_operation) instead of keeping its on_operation generator suspended
    for a subscription's life."""

    operation_end_does_nothing = True  # (schema.extensions_runner: not kept to be ended)

    def start_operation(self) -> None:
        context = self.execution_context
        context.validation_rules = _joined(context.validation_rules, tuple(self.validation_rules))

    def end_operation(self, error: BaseException | None) -> None:
        return None

    def on_operation(self) -> Iterator[None]:
        self.start_operation()
        yield


class _Walker:
    """Depth and alias counts of a document, with each fragment measured once (a
    fragment spread many times, or fragments spreading each other, cost one walk each)."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._depth: dict[str, int] = {}
        self._aliases: dict[str, int] = {}
        self._visiting: set[str] = set()

    def measure(self, selection_set: SelectionSetNode | None) -> tuple[int, int]:
        """(deepest field nesting, aliases) below a selection set."""
        if selection_set is None:
            return 0, 0
        depth = aliases = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value in _INTROSPECTION_ROOTS:
                    # Bounded by graphql-core's MaxIntrospectionDepthRule instead:
                    # GraphiQL's own introspection query nests types 15+ levels deep.
                    depth = max(depth, 1)
                    aliases += 1 if selection.alias else 0
                    continue
                below, inner = self.measure(selection.selection_set)
                depth = max(depth, 1 + below)
                aliases += inner + (1 if selection.alias else 0)
            elif isinstance(selection, InlineFragmentNode):
                below, inner = self.measure(selection.selection_set)
                depth, aliases = max(depth, below), aliases + inner
            elif isinstance(selection, FragmentSpreadNode):
                below, inner = self._fragment(selection.name.value)
                depth, aliases = max(depth, below), aliases + inner
        return depth, aliases

    def _fragment(self, name: str) -> tuple[int, int]:
        if name in self._depth:
            return self._depth[name], self._aliases[name]
        fragment = self._fragments.get(name)
        # Unknown and cyclic fragments are reported by the standard rules.
        if fragment is None or name in self._visiting:
            return 0, 0
        self._visiting.add(name)
        depth, aliases = self.measure(fragment.selection_set)
        self._visiting.discard(name)
        self._depth[name], self._aliases[name] = depth, aliases
        return depth, aliases


def _shape_rule(limits: QueryLimits) -> type[ValidationRule]:
    class ShapeLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            definitions: list[ExecutableDefinitionNode] = [
                d
                for d in context.document.definitions
                if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))
            ]
            walker = _Walker(
                {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
            )
            total_aliases = 0
            for operation in definitions:
                if not isinstance(operation, OperationDefinitionNode):
                    continue
                depth, aliases = walker.measure(operation.selection_set)
                total_aliases += aliases
                if depth > limits.max_depth:
                    context.report_error(
                        too_complex(
                            f"Fields are nested {depth} levels deep; at most "
                            f"{limits.max_depth} are allowed.",
                            "depth",
                            limits.max_depth,
                            nodes=[operation],
                        )
                    )
            if total_aliases > limits.max_aliases:
                context.report_error(
                    too_complex(
                        f"The document uses {total_aliases} aliases; at most "
                        f"{limits.max_aliases} are allowed.",
                        "aliases",
                        limits.max_aliases,
                    )
                )

    return ShapeLimits


ExtensionFactory = Callable[[], SchemaExtension]


def limit_extensions(limits: QueryLimits) -> list[ExtensionFactory]:
    """Factories: strawberry builds each request's extensions afresh."""
    shape_rule = _shape_rule(limits)
    return [
        lambda: _TokenLimit(limits.max_tokens),
        lambda: ValidationRules([shape_rule, MaxIntrospectionDepthRule]),
    ]
