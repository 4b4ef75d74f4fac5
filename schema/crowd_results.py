"""One execution of a change's update for every viewer who receives it in a snapshot.

When a change reaches many viewers in this process (1,000 members of a board), each
viewer's subscription executed its update itself: the same selection over the same
record, read in the same snapshot (schema.shared_reads), giving the same data but for
the cursor, which is the viewer's own. Executing was about 45 % of the process's CPU
in that workload (py-spy, one socket per viewer).

Here the first viewer's result is made into a `Template` (its cursor replaced by a
placeholder, its JSON encoded once) that the other viewers' subscriptions with the same
document and variables take, with their own cursor put in, instead of executing. A
viewer takes it only where nothing can differ:

- the document selects only fields that are the same for every viewer of the same
  object (schema.viewer_free, failing closed: `User.email` and `User.boards` are not);
- the viewer's update was worked out in the same snapshot (the template is kept with the
  shared reads, per change) and equals the template's one but for the cursor: the same
  operation, type and id, and a node equal to the one executed (the record as loaded for
  the first viewer: whatever the viewer may see of the record itself is in it);
- the viewer's own access was checked as before (schema.subscription.present: the
  reload as the viewer, the access fence), and what one connection already has too.

The placeholder is a random token made at start-up that never leaves the process; a
result in which it appears anywhere but where the cursor was (a record's text quoting
it, were that possible) is not shared.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from graphql import ExecutionResult

from schema.json_text import EncodedOnce, compact_json

# Never sent: every occurrence is replaced by a viewer's cursor.
PLACEHOLDER = "commitcast-cursor-" + secrets.token_urlsafe(24)
# Cursors are URL-safe base64 (subscriptions.cursors): JSON needs no escape for them.
_PLAIN = re.compile(r"[A-Za-z0-9_-]*")


class Template:
    """A subscription result for one viewer, ready for the others (see the module
    docstring). `for_cursor` gives a viewer's result.

    Made ready (the placeholder put in, the JSON encoded) when a second viewer first
    asks: most changes reach one viewer only, whose result is sent as it is."""

    __slots__ = ("_cursor", "_cursor_keys", "_data", "_json", "_made_of", "_root_key")

    def __init__(
        self, made_of: tuple[Any, ...], root_key: str, data: dict[str, Any], cursor: str
    ) -> None:
        # What the executed update was made of but for its cursor: what a viewer's must
        # equal. (Not the update itself: it refers to this template, through its
        # `crowd_results`, and a reference cycle would keep both, and the record, for
        # the garbage collector's older generations.)
        self._made_of = made_of
        self._root_key = root_key
        # The root field's result: as executed until made ready, then with the
        # placeholder where the cursor was.
        self._data = data
        self._cursor: str | None = cursor
        self._cursor_keys: tuple[str, ...] = ()
        # The JSON with the placeholder; None until made ready, "" when it cannot be.
        self._json: str | None = None

    @classmethod
    def of(cls, update: Any, result: ExecutionResult) -> Template | None:
        """The template of `update`'s error-free result; None when it cannot be one."""
        data = result.data
        if result.errors or not isinstance(data, dict) or len(data) != 1:
            return None
        ((root_key, root),) = data.items()
        cursor = getattr(update, "cursor", None)
        if not isinstance(root, dict) or not isinstance(cursor, str):
            return None
        return cls(_made_of(update), root_key, root, cursor)

    def admits(self, update: Any) -> bool:
        """Whether `update` (another viewer's) gets this result but for the cursor."""
        op, typename, id_, node = self._made_of
        return (
            update.op is op
            and update.typename == typename
            and update.id == id_
            and (update.node is node or (type(update.node) is type(node) and update.node == node))
        )

    def for_cursor(self, cursor: str) -> ExecutionResult | None:
        """The result with `cursor` where the executed one had its viewer's; None when
        the result cannot be shared (it quotes the placeholder)."""
        text = self._ready()
        if not text:
            return None
        root = self._data
        if self._cursor_keys:
            root = {**root, **dict.fromkeys(self._cursor_keys, cursor)}
        data = EncodedOnce({self._root_key: root})
        if _PLAIN.fullmatch(cursor):
            data.encoded_as(text.replace(PLACEHOLDER, cursor))
        return ExecutionResult(data=data, errors=None)

    def _ready(self) -> str:
        if self._json is None:
            executed, cursor = self._data, self._cursor
            keys = tuple(key for key, value in executed.items() if value == cursor)
            generic = {**executed, **dict.fromkeys(keys, PLACEHOLDER)}
            text = compact_json({self._root_key: generic})
            ok = text.count(PLACEHOLDER) == len(keys)
            self._data, self._cursor_keys, self._cursor = generic, keys, None
            self._json = text if ok else ""
        return self._json


def _made_of(update: Any) -> tuple[Any, ...]:
    return (update.op, update.typename, update.id, update.node)
