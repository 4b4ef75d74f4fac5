"""What goes over the broker: a wake-up for a user, naming their newest change.

A wake-up never replaces the change log: subscribers read what they have not yet
delivered from there, so a lost or repeated message cannot lose or invent a change.
When the change-log write looked up the user's change right before this one
(subscriptions.changelog, PostgreSQL), the wake-up also carries the change itself and
that `previous` id. For a subscriber whose position is at least `previous` (and below
the change), the change is then exactly what a log read would return: there is no
change of that user between the two, and none can still commit there (ids are taken in
commit order). The hub hands it out without a read (subscriptions.hub); any other
position reads the log as before.

Text, space-separated: `<id>` or `<id> <previous> <typename> <record id> <op> <version
or -> <committed at, microseconds since the epoch>`. Anything else is not a wake-up of
ours (the hub then reads the log, as after a gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from subscriptions.changelog import LoggedChange
from subscriptions.changes import ChangeOp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CARRIED_FIELDS = 7


@dataclass(frozen=True, slots=True)
class Wakeup:
    change_id: int
    # The change itself and the user's change before it (0: none), when known.
    carried: LoggedChange | None = None
    previous: int = 0

    def covers(self, after: int) -> bool:
        """Whether the carried change is all the user's log holds after `after` (up to
        this change)."""
        return self.carried is not None and self.previous <= after < self.change_id


def encode_wakeup(change_id: int, carried: LoggedChange | None = None, previous: int = 0) -> str:
    if carried is None or carried.committed_at is None:
        return str(change_id)
    version = "-" if carried.version is None else str(carried.version)
    micros = (carried.committed_at - _EPOCH) // timedelta(microseconds=1)
    return (
        f"{change_id} {previous} {carried.typename} {carried.record_id} "
        f"{carried.op.value} {version} {micros}"
    )


def decode_wakeup(message: str) -> Wakeup | None:
    """The wake-up in `message`; None if it is not one."""
    if message.isdigit():
        return Wakeup(int(message))
    fields = message.split(" ")
    if len(fields) != _CARRIED_FIELDS:
        return None
    change_id, previous, typename, record_id, op, version, micros = fields
    try:
        carried = LoggedChange(
            int(change_id),
            typename,
            int(record_id),
            ChangeOp(op),
            None if version == "-" else int(version),
            _EPOCH + timedelta(microseconds=int(micros)),
        )
        wakeup = Wakeup(carried.id, carried, int(previous))
    except ValueError:
        return None
    if not typename or wakeup.change_id <= 0 or not 0 <= wakeup.previous < wakeup.change_id:
        return None
    return wakeup
