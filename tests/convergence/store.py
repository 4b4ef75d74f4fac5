"""A normalized map as Apollo's InMemoryCache keeps it, and the final comparison.

Records are keyed `typename:id`. Writing an object stores each field; a nested object
with `__typename` and `id` is written as a record of its own and replaced by a
reference `{"__ref": key}` (lists of them likewise); fields merge into what the record
already holds, lists are replaced. "The map" a user sees is what is reachable from the
boards of `ROOT_QUERY.viewer.boards` (`roots` here), as after Apollo's `cache.gc()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
MISSING = "<missing>"


def record_key(typename: str, global_id: str) -> str:
    return f"{typename}:{global_id}"


def key_of(obj: Mapping[str, Any]) -> str:
    return record_key(str(obj["__typename"]), str(obj["id"]))


def is_entity(value: Any) -> bool:
    return isinstance(value, Mapping) and "__typename" in value and "id" in value


def references(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping) and "__ref" in value:
        yield str(value["__ref"])
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


class Store:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.roots: set[str] = set()
        """Keys of the boards in ROOT_QUERY.viewer.boards."""

    def write(self, obj: Mapping[str, Any]) -> str:
        """Merge an object (and every nested entity) into the map; its key."""
        key = key_of(obj)
        record = self.records.setdefault(key, {})
        for field, value in obj.items():
            record[field] = self._normalize(value)
        return key

    def _normalize(self, value: Any) -> Any:
        if is_entity(value):
            return {"__ref": self.write(value)}
        if isinstance(value, list):
            return [self._normalize(item) for item in value]
        if isinstance(value, Mapping):
            return {field: self._normalize(item) for field, item in value.items()}
        return value

    def replace(self, boards: Iterable[Mapping[str, Any]]) -> None:
        """What a refetch of everything leaves: exactly the boards it returned."""
        self.records.clear()
        self.roots = {self.write(board) for board in boards}

    def evict(self, key: str) -> None:
        self.records.pop(key, None)

    def drop_board(self, key: str) -> None:
        """The viewer lost the board (or it is gone): evict it and everything of it."""
        doomed = [k for k in self.records if self.board_of(k) == key]
        for k in doomed:
            del self.records[k]
        self.records.pop(key, None)
        self.roots.discard(key)

    def has_fields(self, key: str) -> bool:
        """Known beyond a bare reference (a list can name a record never written)."""
        record = self.records.get(key)
        return record is not None and bool(set(record) - {"__typename", "id"})

    def board_of(self, key: str) -> str | None:
        """The board a record belongs to, as far as the map knows (None for users)."""
        typename = key.split(":", 1)[0]
        if typename == "Board":
            return key
        record = self.records.get(key, {})
        if typename in ("Card", "Membership"):
            return _ref(record.get("board"))
        if typename == "Comment":
            card = _ref(record.get("card"))
            return self.board_of(card) if card is not None else None
        return None

    def reachable(self) -> dict[str, Record]:
        """The records reachable from the viewer's boards (what cache.gc() keeps)."""
        seen: dict[str, Record] = {}
        queue = deque(sorted(self.roots))
        while queue:
            key = queue.popleft()
            if key in seen or key not in self.records:
                continue
            record = self.records[key]
            seen[key] = record
            for value in record.values():
                queue.extend(references(value))
        return seen


def _ref(value: Any) -> str | None:
    if isinstance(value, Mapping) and "__ref" in value:
        return str(value["__ref"])
    return None


@dataclass(frozen=True)
class Finding:
    kind: str
    """lost: the fresh query has it, the map lacks it (or knows only its id);
    stale: the map has it with other field values;
    zombie: the map still shows a record that no longer exists, on a visible board;
    leaked: the map shows a record of a board the user cannot see now."""
    key: str
    detail: str


KINDS = ("lost", "stale", "zombie", "leaked")


def compare(mine: Store, truth: Store) -> list[Finding]:
    """How the reachable part of `mine` differs from `truth` (a fresh query)."""
    have = mine.reachable()
    want = truth.reachable()
    findings: list[Finding] = []
    for key, fields in sorted(want.items()):
        record = have.get(key)
        if record is None or not mine.has_fields(key):
            findings.append(Finding("lost", key, f"fresh {fields}"))
            continue
        differences = {
            field: (record.get(field, MISSING), value)
            for field, value in fields.items()
            if record.get(field, MISSING) != value
        }
        if not differences:
            continue
        if all(mine_value == MISSING for mine_value, _ in differences.values()):
            findings.append(Finding("lost", key, f"fields never delivered: {sorted(differences)}"))
        else:
            detail = ", ".join(
                f"{field}: map {mine_value!r} != fresh {value!r}"
                for field, (mine_value, value) in sorted(differences.items())
            )
            findings.append(Finding("stale", key, detail))
    for key in sorted(have.keys() - want.keys()):
        if key.startswith("User:"):
            continue  # users are shared; a stray one hangs off a record counted already
        board = mine.board_of(key)
        kind = "zombie" if board is not None and board in truth.roots else "leaked"
        findings.append(Finding(kind, key, f"map {have[key]} (board {board})"))
    return findings
