"""updateCard on PostgreSQL: one write transaction on asyncpg directly.

The same statements, in the same order and with the same locks, as the session path
(schema.mutations.cards), which SQLite keeps: BEGIN, the card and the viewer's role
(FOR NO KEY UPDATE of the card), the assignee's membership where one is set, the
versioned UPDATE of what changed, the change-log write, COMMIT; then the changes go to
the relay. What is left out is SQLAlchemy's session around them (its unit of work,
identity map, flush and commit events, each statement's execution context and result),
which cost more CPU than the statements: 2.6 of the 4.3 ms of CPU a card update took,
in the benchmark's 200-changes-per-second workload (README, Performance).

Capture is subscriptions.capture's own (update_written, record_changes_on_driver,
hand_over): it happens exactly when a write session would capture (captures), and the
changes are those the session's flush events make of the same UPDATE.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, update
from sqlalchemy.ext.asyncio import AsyncEngine

import models
from models.base import UTCDateTime
from models.database import read_retrying_stale
from models.driver_snapshot import DriverWrite
from models.realtime import BoardAudience
from schema.context import Context
from schema.errors import ConcurrentChange, bad_input, not_found
from schema.mutations.common import LOCKED_WITH_ROLE, check_version, race_as_conflict
from schema.permissions import EDIT_CARDS, ROLE_ON_BOARD, require_role
from subscriptions.capture import captures, hand_over, sink_of, update_written
from subscriptions.changelog import record_changes_on_driver
from subscriptions.changes import Change

_CARDS = cast("Table", models.Card.__table__)
# One UPDATE per set of columns changed (at most 2**5 for updateCard's five), built once:
# building a statement costs more CPU than running it.
_UPDATES: dict[frozenset[str], Update] = {}


def _update(columns: frozenset[str]) -> Update:
    statement = _UPDATES.get(columns)
    if statement is None:
        values: dict[str, Any] = {
            name: bindparam(f"new_{name}", type_=_CARDS.c[name].type) for name in sorted(columns)
        }
        statement = _UPDATES[columns] = (
            update(_CARDS)
            .where(_CARDS.c.id == bindparam("pk"), _CARDS.c.version == bindparam("old_version"))
            # What the session's flush sets besides: Record.updated_at's onupdate, and the
            # version_id_col's next value.
            .values(
                **values,
                updated_at=bindparam("now", type_=UTCDateTime),
                version=_CARDS.c.version + 1,
            )
            .returning(_CARDS.c.version)
        )
    return statement


async def update_card_on_driver(
    ctx: Context,
    engine: AsyncEngine,
    pk: int,
    expected: int | None,
    changes: dict[str, object],
    assignee_sent: bool,
    assignee_pk: int | None,
) -> models.Card:
    """The card after the update (not attached to any session), as the session path
    returns it, with its errors: NOT_FOUND, FORBIDDEN, CONFLICT, BAD_USER_INPUT."""
    viewer_id = ctx.require_viewer()
    committed: list[Change] = []
    async with race_as_conflict(ctx, models.Card, pk, "Card"):
        # The BEGIN is the connection's first use (no ping before it): on a connection
        # PostgreSQL dropped it fails, and runs again on a fresh one.
        write = await read_retrying_stale(lambda: DriverWrite.open(engine))
        try:
            found = await write.rows(
                LOCKED_WITH_ROLE[(models.Card, False)], {"pk": pk, "viewer_id": viewer_id}
            )
            if not found:
                raise not_found("Card")
            card: models.Card = found[0][0]
            role = found[0][1]
            require_role(role, EDIT_CARDS, "Card", "edit cards")
            check_version("Card", card, expected)
            if assignee_pk is not None and not await write.rows(
                ROLE_ON_BOARD, {"user_id": assignee_pk, "board_id": card.board_id}
            ):
                raise bad_input("assigneeId", "must be a member of the card's board")
            if assignee_sent:
                changes["assignee_id"] = assignee_pk
            changed = {
                name: value for name, value in changes.items() if getattr(card, name) != value
            }
            if changed:
                committed = await _write(ctx, write, card, changed)
            await write.commit()
        finally:
            await write.close()
    sink = sink_of(ctx.write_sessions)
    seen = [change for change in committed if change.audience]
    if seen and sink is not None:
        hand_over(sink, seen)
    await ctx.wrote()
    return card


async def _write(
    ctx: Context, write: DriverWrite, card: models.Card, changed: dict[str, object]
) -> list[Change]:
    """UPDATE what changed, and log the change: what the changes to publish are."""
    now = models.utcnow()
    parameters = {f"new_{name}": value for name, value in changed.items()}
    parameters.update(pk=card.id, old_version=card.version, now=now)
    versions = await write.execute(_update(frozenset(changed)), parameters)
    if not versions:  # (the row is locked: only if it was deleted before the lock)
        raise ConcurrentChange()
    card.__dict__.update(changed, version=versions[0][0], updated_at=now)
    if not captures(ctx.write_sessions):
        return []
    moved = not models.Card.realtime_parent_attributes.isdisjoint(changed)
    # models.Card.audience: the board's members.
    changes = update_written(card, BoardAudience(card.board_id), moved)
    await record_changes_on_driver(write, changes)
    return changes
