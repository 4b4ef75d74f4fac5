"""Comparing a library's code with the code a Commitcast stand-in was written against.

Where Commitcast takes a library's steps itself (app.socket_view, app.ws_protocol,
app.send_next), it does so only while the installed library's code reads as the copy it
was written against: compared as Python syntax trees (`ast.dump`), so that formatting
and comments do not matter and any change of code does.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Sequence


def statements_dump(statements: Sequence[ast.stmt]) -> str:
    """The syntax trees of `statements`, as one comparable string."""
    return "\n".join(ast.dump(statement) for statement in statements)


def code_dump(source: str) -> str:
    """The syntax tree of a piece of code (indented or not), as a comparable string."""
    return ast.dump(ast.parse(textwrap.dedent(source)))


def source_tree(function: object) -> ast.Module:
    """The syntax tree of `function`'s source. Raises OSError or TypeError when its
    source cannot be read, SyntaxError when it does not parse."""
    return ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]


def coroutine_tree(function: object, what: str) -> ast.AsyncFunctionDef | str:
    """The syntax tree of the coroutine function `function`, or why there is none
    (`what` names it in that message)."""
    try:
        tree = source_tree(function)
    except (OSError, TypeError, SyntaxError) as exc:
        return f"cannot read {what} ({exc})"
    found = tree.body[0] if tree.body else None
    if not isinstance(found, ast.AsyncFunctionDef):
        return f"{what} is not a coroutine function"
    return found
