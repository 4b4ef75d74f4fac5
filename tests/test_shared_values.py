"""app/shared_values.py: equal values kept by many connections become one object,
within a bound."""

from __future__ import annotations

from app.shared_values import SharedValues


def fresh(text: str) -> str:
    """An equal string that is not the same object."""
    return "".join(list(text))


def test_equal_values_become_the_first_one_seen() -> None:
    shared: SharedValues[str] = SharedValues(limit=10)
    first = fresh("subscription { userUpdates { id } }")
    again = fresh(first)
    assert again is not first
    assert shared.share(first) is first
    assert shared.share(again) is first
    assert len(shared) == 1


def test_past_the_limit_new_values_are_not_kept() -> None:
    shared: SharedValues[str] = SharedValues(limit=2)
    a, b, c = fresh("a" * 10), fresh("b" * 10), fresh("c" * 10)
    for value in (a, b, c):
        assert shared.share(value) is value
    assert len(shared) == 2
    later = fresh(c)
    assert shared.share(later) is later  # c was never kept
    assert shared.share(fresh(a)) is a  # those kept still are
