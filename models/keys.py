"""`in_keys(column, name)`: `column IN (...)` over a list of keys given at execution as
the parameter `name`, rendered as each database takes it best.

SQLAlchemy's expanding IN (`column.in_(bindparam(name, expanding=True))`) renders a
placeholder per key at every execution: the SQL text depends on how many keys there
are, so each count is another statement for asyncpg to prepare (and PostgreSQL to
plan), and the rendering itself (a regular expression over the compiled text) cost
about a fifth of SQLAlchemy's CPU in a delivery's reload (py-spy). On PostgreSQL this
renders `column = ANY($1)` instead, the keys travelling as one array: one text, one
prepared statement, whatever the count. Other databases (SQLite, the embedded default)
have no arrays and keep the expanding IN.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ARRAY, Boolean, any_, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType


class InKeys(ColumnElement[bool]):
    """See the module docstring; made by in_keys."""

    type = Boolean()
    # A comparison, not a boolean column: without this, databases with no boolean type
    # would get `(... IN (...)) = 1`, which SQLite does not answer from an index.
    _is_implicitly_boolean = True
    inherit_cache = True
    # What the statement cache keys on: the column and the parameter's name (the keys
    # themselves are execution parameters, never part of the statement).
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 - as SQLAlchemy declares it
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


def in_keys(column: Any, name: str) -> ColumnElement[bool]:
    """`column IN (the keys passed as parameter `name`)`, a list at execution."""
    return InKeys(column, name)


@compiles(InKeys)
def _expanding_in(element: InKeys, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(InKeys, "postgresql")
def _equals_any(element: InKeys, compiler: SQLCompiler, **kw: Any) -> str:
    keys = bindparam(element.name, type_=ARRAY(element.column.type))
    return compiler.process(element.column == any_(keys), **kw)
