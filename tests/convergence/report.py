"""What a run prints, and the full record it leaves next to the app logs.

Times are seconds since the writers started. Each finding comes with its evidence:
what that client applied for the record and its board (and every RESYNC, board load
and connection), and every mutation that named the record or changed who is on the
board.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.convergence.store import Finding, Store
from tests.convergence.subscriber import Applied, Subscriber
from tests.convergence.writers import Attempt, World

Say = Callable[[str], None]

_POSITION = re.compile(r"^\d+:\d+:(\d+)$")


def position(cursor: str) -> int | None:
    """Diagnostics only (cursors are opaque to clients): the change-log position a
    cursor of today's format names, or None."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    match = _POSITION.match(raw)
    return int(match.group(1)) if match else None


def order_violations(s: Subscriber) -> list[str]:
    """Diagnostics: updates of one connection whose log position is not above the one
    before (resumed connections start above the cursor they resumed from)."""
    found: list[str] = []
    last: int | None = None
    for entry in s.history:
        here = position(entry.cursor)
        if entry.op == "RESYNC" or here is None:
            last = here
            continue
        if last is not None and here <= last:
            found.append(f"{s.name}: {entry.op} {entry.key} at position {here} after {last}")
        last = here
    return found


def applied_line(entry: Applied, t0: float) -> str:
    return (
        f"t={entry.at - t0:7.3f} conn#{entry.connection}@{entry.app} {entry.op:8} "
        f"{entry.key or '-'} v={entry.version} board={entry.board} "
        f"position={position(entry.cursor)} {entry.note}".rstrip()
    )


def attempt_line(attempt: Attempt, t0: float) -> str:
    about = f" [{attempt.about}]" if attempt.about else ""
    return (
        f"t={attempt.at - t0:7.3f} w{attempt.writer}@{attempt.app} {attempt.action}{about} "
        f"{json.dumps(attempt.variables)} -> {attempt.outcome} {json.dumps(attempt.result)}"
    )


def _mentions(attempt: Attempt, needles: Iterable[str]) -> bool:
    text = json.dumps([attempt.variables, attempt.result]) + attempt.about
    return any(needle in text for needle in needles)


EVIDENCE_LINES = 30


def explain(
    say: Say, s: Subscriber, finding: Finding, truth: Store, world: World, t0: float
) -> None:
    board = truth.board_of(finding.key) or s.store.board_of(finding.key)
    record_id = finding.key.split(":", 1)[1]
    say(f"FINDING {finding.kind} at {s.name}: {finding.key} (board {board}) {finding.detail}")
    applied: list[str] = []
    previous_connection = 0
    for entry in s.history:
        new_connection = entry.connection != previous_connection
        previous_connection = entry.connection
        if (
            entry.key == finding.key
            or (board is not None and (entry.board == board or entry.key == board))
            or entry.op == "RESYNC"
            or entry.note
            or new_connection
        ):
            applied.append(applied_line(entry, t0))
    say(
        f"  what {s.name} applied for it, its board, and every resync/load/connection "
        f"(last {EVIDENCE_LINES} of {len(applied)}):"
    )
    for line in applied[-EVIDENCE_LINES:]:
        say("    " + line)
    needles = [record_id] + ([board.split(":", 1)[1]] if board is not None else [])
    wrote = [
        attempt_line(attempt, t0)
        for attempt in world.log
        if _mentions(attempt, needles)
        and (
            record_id in json.dumps([attempt.variables, attempt.result])
            or attempt.action.startswith(("addMember", "removeMember", "updateBoard"))
        )
    ]
    say(f"  mutations naming it, or changing its board (last {EVIDENCE_LINES} of {len(wrote)}):")
    for line in wrote[-EVIDENCE_LINES:]:
        say("    " + line)


def write_full_record(
    path: Path,
    lines: list[str],
    world: World,
    subscribers: list[Subscriber],
    t0: float,
) -> None:
    with path.open("w") as out:
        for line in lines:
            out.write(line + "\n")
        out.write("\n== mutations ==\n")
        for attempt in world.log:
            out.write(attempt_line(attempt, t0) + "\n")
        for s in subscribers:
            out.write(f"\n== {s.name} ({s.person.id}) ==\n")
            for entry in s.history:
                out.write(applied_line(entry, t0) + "\n")
