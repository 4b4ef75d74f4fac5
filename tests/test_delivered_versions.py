"""On one connection a record's version never goes backwards."""

from __future__ import annotations

from schema.context import DeliveredVersions

CARD = ("Card", 1)


def test_an_older_version_after_a_newer_one_is_held_back() -> None:
    sent = DeliveredVersions()
    assert sent.advance(CARD, 3)
    assert not sent.advance(CARD, 2)
    assert sent.advance(CARD, 3), "the same version again is harmless"
    assert sent.advance(CARD, 4)


def test_nothing_follows_a_deletion_but_lost_access_can_come_back() -> None:
    sent = DeliveredVersions()
    sent.deleted(CARD)
    assert not sent.advance(CARD, 99)
    board = ("Board", 7)
    assert sent.advance(board, 5)
    sent.forget(board)  # access lost: a later re-add starts afresh
    assert sent.advance(board, 5)


def test_memory_is_bounded() -> None:
    sent = DeliveredVersions()
    for pk in range(DeliveredVersions.LIMIT + 100):
        sent.advance(("Card", pk), 1)
    assert len(sent) == DeliveredVersions.LIMIT
    assert sent.advance(("Card", 0), 0), "the oldest entries are forgotten first"


def test_a_record_remembered_again_is_forgotten_last() -> None:
    sent = DeliveredVersions()
    sent.advance(CARD, 5)
    for pk in range(2, DeliveredVersions.LIMIT + 1):
        sent.advance(("Card", pk), 1)
    sent.advance(CARD, 6)  # remembered again: now the most recent
    sent.advance(("Card", DeliveredVersions.LIMIT + 1), 1)  # one over the limit
    assert not sent.advance(CARD, 5), "still remembered"
    assert sent.advance(("Card", 2), 0), "the least recently remembered was forgotten"
