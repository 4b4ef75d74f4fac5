"""One client app: a WebSocket subscription applied to a normalized map, as Apollo does.

- CREATED / UPDATED write the node (nested records normalize too); DELETED evicts the
  record, and for a board also everything of the board (the viewer lost it).
- RESYNC refetches everything the user can see and replaces the map; its cursor is
  adopted only once that refetch has been applied.
- A board that appears (a Board node not among the viewer's boards, or a membership of
  the viewer's own that the map does not know: added, or removed and added again) is
  loaded with a board query, as an app opening it would: updates carry records as
  they change, not the contents of a board that was already there. A member removed
  and added again before the removal was delivered gets no DELETED for the board, and
  nothing of what changed while out: only its new Membership tells it to reload.
- Messages are applied one at a time, in order; a refetch holds the next ones back,
  so no update is overwritten by an older snapshot.
- When the connection breaks, it reconnects (bounded retries, backoff, switching to
  the other process when one does not answer) and resumes with `after: lastCursor`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tests.convergence.api import GraphQLRejected, ServerFailure, run
from tests.convergence.cluster import AppProcess
from tests.convergence.documents import EVERYTHING, ONE_BOARD, UPDATES
from tests.convergence.store import Store, key_of, record_key
from tests.ws_client import TRANSPORT_WS, GraphQLSocket

# Not a cursor the server issued: it must answer RESYNC once the subscription is live
# (malformed cursor), which gives the client a gap-free starting point.
START_CURSOR = "convergence-start"
CONNECT_TIMEOUT = 5.0
HTTP_TIMEOUT = 5.0
# A live subscription can be quiet for long: only a cut or the end stops the wait.
RECEIVE_WINDOW = 3600.0
MAX_FAILED_ATTEMPTS = 25
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0

LINK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    TimeoutError,
    WebSocketException,
    httpx.TransportError,
)


class ProtocolFailure(Exception):
    """The server broke the contract: an error, a completed subscription, an unknown op."""


class RefetchFailed(Exception):
    """A refetch over HTTP was answered with errors (a server bug, not a cut link): the
    client reconnects and tries again, as an app would."""


@dataclass(frozen=True)
class Person:
    index: int
    name: str
    email: str
    id: str
    token: str


@dataclass(frozen=True)
class Applied:
    """One line of a subscriber's history (kept for the report when something differs)."""

    at: float
    connection: int
    app: str
    op: str
    key: str | None
    version: int | None
    cursor: str
    board: str | None
    """The board the record belongs to, as the map knew it when applying."""
    note: str = ""


@dataclass
class Counters:
    updates: int = 0
    resyncs: int = 0
    joins: int = 0
    reconnects: int = 0
    """Connections acknowledged after the first one (each resumed from the cursor)."""
    failed_attempts: int = 0
    """Attempts that got no acknowledged connection (refused, reset, timed out)."""
    protocol_failures: list[str] = field(default_factory=list)
    refetch_failures: list[str] = field(default_factory=list)


class Subscriber:
    def __init__(
        self,
        name: str,
        person: Person,
        endpoints: Sequence[AppProcess],
        clock: Callable[[], float],
        on_activity: Callable[[], None],
    ) -> None:
        self.name = name
        self.person = person
        self.endpoints = list(endpoints)
        self.clock = clock
        self.on_activity = on_activity
        self.store = Store()
        self.cursor = START_CURSOR
        self.counters = Counters()
        self.history: list[Applied] = []
        self.connected = False
        self.busy = False
        self.gave_up: str | None = None
        self.ready = asyncio.Event()
        """Set once the first RESYNC has been applied: the map is a fresh copy."""
        self._endpoint = 0
        self._connections = itertools.count(1)
        self._connection = 0
        self._acknowledged = False

    @property
    def endpoint(self) -> AppProcess:
        return self.endpoints[self._endpoint]

    def _touch(self) -> None:
        self.on_activity()

    async def run(self) -> None:
        """Stay subscribed until cancelled (or until retries run out: `gave_up`)."""
        failed = 0
        while True:
            self._acknowledged = False
            try:
                await self._session(self.endpoint)
            except LINK_ERRORS:
                pass  # cut, refused, reset, timed out: reconnect
            except ProtocolFailure as exc:
                self.counters.protocol_failures.append(f"{self.name}: {exc}")
            except RefetchFailed as exc:
                self.counters.refetch_failures.append(f"{self.name}: {exc}")
            finally:
                self.connected = False
                self.busy = False
                self._touch()
            if self._acknowledged:
                failed = 0  # cut after it worked: retry the same process first
            else:
                failed += 1
                self.counters.failed_attempts += 1
                # That process does not answer: try the other one.
                self._endpoint = (self._endpoint + 1) % len(self.endpoints)
            if failed > MAX_FAILED_ATTEMPTS:
                self.gave_up = f"{self.name}: no connection after {failed} attempts"
                return
            # Backoff between attempts: pacing, not synchronization.
            await asyncio.sleep(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, failed - 1)))

    async def _session(self, app: AppProcess) -> None:
        """One connection: returns only by raising (a cut, a failure, cancellation)."""
        async with (
            httpx.AsyncClient(base_url=app.client_http_url, timeout=HTTP_TIMEOUT) as http,
            connect(
                app.client_ws_url,
                subprotocols=[TRANSPORT_WS],  # type: ignore[list-item]
                open_timeout=CONNECT_TIMEOUT,
            ) as connection,
        ):
            socket = GraphQLSocket(connection, TRANSPORT_WS)
            ack = await socket.init({"authorization": f"Bearer {self.person.token}"})
            if ack.get("type") != "connection_ack":
                raise ProtocolFailure(f"not acknowledged: {ack}")
            self.connected = self._acknowledged = True
            self._connection = next(self._connections)
            if self._connection > 1:
                self.counters.reconnects += 1
            self._touch()
            await socket.subscribe(UPDATES, {"after": self.cursor})
            while True:
                message = await socket.receive(within=RECEIVE_WINDOW)
                self._touch()
                kind = message.get("type")
                if kind != "next":
                    raise ProtocolFailure(f"{kind}: {message.get('payload')}")
                payload = message.get("payload") or {}
                if payload.get("errors"):
                    raise ProtocolFailure(f"errors: {payload['errors']}")
                self.busy = True
                try:
                    await self._apply(payload["data"]["userUpdates"], http, app)
                finally:
                    self.busy = False
                    self._touch()

    async def _fetch(
        self, http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            return await run(http, query, variables, token=self.person.token)
        except (GraphQLRejected, ServerFailure) as exc:
            raise RefetchFailed(f"refetch failed: {exc}") from exc

    async def _apply(
        self, update: dict[str, Any], http: httpx.AsyncClient, app: AppProcess
    ) -> None:
        """Apply one update. Any failure leaves the cursor where it was, so a resume
        starts before this update (whatever was written is written again)."""
        op = update["op"]
        key = (
            record_key(update["typename"], update["id"])
            if update.get("typename") and update.get("id")
            else None
        )
        note = ""
        version: int | None = None
        board = self.store.board_of(key) if key is not None else None
        if op == "RESYNC":
            data = await self._fetch(http, EVERYTHING)
            self.store.replace(data["viewer"]["boards"])
            self.counters.resyncs += 1
            note = f"{len(self.store.roots)} boards"
        elif op == "DELETED":
            if key is None:
                raise ProtocolFailure(f"DELETED without a record: {update}")
            if update.get("node") is not None:
                raise ProtocolFailure(f"DELETED with a node: {update}")
            if update["typename"] == "Board":
                self.store.drop_board(key)
            else:
                self.store.evict(key)
        elif op in ("CREATED", "UPDATED"):
            node = update.get("node")
            if key is None or not isinstance(node, dict) or key_of(node) != key:
                raise ProtocolFailure(f"{op} without its node: {update}")
            version = node.get("version")
            appeared = self._appearing_board(node)
            tree: dict[str, Any] | None = None
            if appeared is not None:
                tree = (await self._fetch(http, ONE_BOARD, {"id": appeared}))["board"]
                note = "board appeared: loaded" if tree is not None else "board gone again"
            self.store.write(node)
            board = self.store.board_of(key)
            if tree is not None:
                # Newer than the node (fetched after it was read): written after it.
                self.store.roots.add(self.store.write(tree))
                self.counters.joins += 1
        else:
            raise ProtocolFailure(f"unknown op: {update}")
        self.cursor = update["cursor"]
        self.counters.updates += 1
        self.history.append(
            Applied(
                self.clock(), self._connection, app.name, op, key, version, self.cursor, board, note
            )
        )
        if op == "RESYNC":
            self.ready.set()

    def _appearing_board(self, node: dict[str, Any]) -> str | None:
        """The id of a board this node reveals to the viewer, if the map lacks it."""
        typename = node["__typename"]
        if typename == "Board":
            if key_of(node) not in self.store.roots:
                return str(node["id"])
        elif typename == "Membership":
            user = node.get("user") or {}
            board = node.get("board") or {}
            if user.get("id") == self.person.id and board.get("id"):
                board_key = record_key("Board", str(board["id"]))
                # A board's member list may have named it already: a bare reference
                # is not knowing it.
                if board_key not in self.store.roots or not self.store.has_fields(key_of(node)):
                    return str(board["id"])
        return None
