"""A committed change to one record, as published to the users who may see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from models.realtime import Audience, RecordKey


class ChangeOp(enum.StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


@dataclass(slots=True)
class Change:
    """Events carry ids, never rows: each receiver reloads the record as its viewer, so a
    late or repeated event can only ever deliver the newest committed state."""

    key: RecordKey
    op: ChangeOp
    version: int | None
    audience: set[int] = field(default_factory=set)
    # Assigned when the change is written to the change log, just before COMMIT.
    change_id: int | None = None
    committed_at: datetime | None = None
    # Audiences still to be resolved into `audience` (users) by the change-log write:
    # capture defers them only for the flush that runs right before it, in the same
    # transaction, so the users are the same as if resolved at that flush.
    pending: set[Audience] = field(default_factory=set)
    # Per user, that user's change right before this one (0: none), where the change-log
    # write looked it up (PostgreSQL): sent with the wake-up (subscriptions.wakeups).
    previous: dict[int, int] = field(default_factory=dict)

    def merge(self, later: Change) -> Change | None:
        """Fold a later change to the same record in the same transaction into this one.

        None means nothing happened as far as anyone outside can tell (created, then
        deleted, before commit).
        """
        audience = self.audience | later.audience
        pending = self.pending | later.pending
        version = later.version if later.version is not None else self.version
        if later.op is ChangeOp.DELETED:
            if self.op is ChangeOp.CREATED:
                return None
            return Change(self.key, ChangeOp.DELETED, version, audience, pending=pending)
        if self.op is ChangeOp.DELETED:
            # A deleted record's children announce it as their parent as they go:
            # that must not bring it back.
            return Change(self.key, ChangeOp.DELETED, self.version, audience, pending=pending)
        # CREATED then UPDATED is still a creation; a deleted id never comes back.
        op = ChangeOp.CREATED if self.op is ChangeOp.CREATED else ChangeOp.UPDATED
        return Change(self.key, op, version, audience, pending=pending)


def user_channel(user_id: int) -> str:
    """A user's channel (the broker prefixes it with the deployment's namespace)."""
    return f"user:{user_id}"
