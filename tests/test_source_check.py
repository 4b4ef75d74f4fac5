"""app/source_check.py: library code compared as syntax trees."""

from __future__ import annotations

import ast

from app.source_check import code_dump, coroutine_tree, statements_dump


async def fetch(x: int) -> int:
    # A comment and formatting do not count.
    return x + 1


def plain(x: int) -> int:
    return x


def test_code_is_compared_as_syntax_not_text() -> None:
    assert code_dump("x = (1 +\n  2)  # why") == code_dump("    x = 1 + 2")
    assert code_dump("x = 1 + 2") != code_dump("x = 2 + 1")
    first, second = ast.parse("a = 1\nb = 2").body
    assert statements_dump([first, second]) == statements_dump(ast.parse("a=1;b=2").body)


def test_a_coroutine_functions_tree_or_why_not() -> None:
    tree = coroutine_tree(fetch, "fetch")
    assert isinstance(tree, ast.AsyncFunctionDef)
    assert tree.name == "fetch"
    assert coroutine_tree(plain, "plain") == "plain is not a coroutine function"
    unreadable = coroutine_tree(len, "len")
    assert isinstance(unreadable, str)
    assert unreadable.startswith("cannot read len (")
    nothing = coroutine_tree(None, "nothing")
    assert isinstance(nothing, str)
    assert nothing.startswith("cannot read nothing (")
