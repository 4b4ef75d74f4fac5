"""A committed change to one record, as published to the users who may see it."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

from models.realtime import RecordKey


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

    def merge(self, later: Change) -> Change | None:
        """Fold a later change to the same record in the same transaction into this one.

        None means nothing happened as far as anyone outside can tell (created, then
        deleted, before commit).
        """
        audience = self.audience | later.audience
        version = later.version if later.version is not None else self.version
        if later.op is ChangeOp.DELETED:
            if self.op is ChangeOp.CREATED:
                return None
            return Change(self.key, ChangeOp.DELETED, version, audience)
        if self.op is ChangeOp.DELETED:
            # A deleted record's children announce it as their parent as they go:
            # that must not bring it back.
            return Change(self.key, ChangeOp.DELETED, self.version, audience)
        # CREATED then UPDATED is still a creation; a deleted id never comes back.
        op = ChangeOp.CREATED if self.op is ChangeOp.CREATED else ChangeOp.UPDATED
        return Change(self.key, op, version, audience)


@dataclass(frozen=True, slots=True)
class Notice:
    """What travels over the broker to one user: which record changed, and how."""

    cursor: str
    typename: str
    id: int
    op: ChangeOp
    version: int | None

    def encode(self) -> str:
        return json.dumps(
            {
                "c": self.cursor,
                "t": self.typename,
                "i": self.id,
                "o": self.op.value,
                "v": self.version,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> Notice:
        data = json.loads(raw)
        return cls(
            cursor=str(data["c"]),
            typename=str(data["t"]),
            id=int(data["i"]),
            op=ChangeOp(data["o"]),
            version=None if data["v"] is None else int(data["v"]),
        )


def user_channel(user_id: int) -> str:
    """A user's channel (the broker prefixes it with the deployment's namespace)."""
    return f"user:{user_id}"
