"""A client that stops reading cannot grow server memory without bound (issue 4, item 5).

A real server process (PostgreSQL + Redis) has two subscriptions of one user: one
client reads everything, the other subscribes and then stops reading while this test,
acting as a second app process, commits 10,000 card updates (100 transactions of 100).
The WebSocket server applies backpressure (a send waits while the peer does not read),
so the stalled subscription stays suspended at its `yield`; its wake-ups go to a bounded
queue, and what it has not sent stays in the change log, not in server memory. The test
samples the server's RSS from /proc while the updates flow, checks that the healthy
client ends with every card's final version, then lets the stalled client read: it
reaches the final state of every card, without RESYNC, in far fewer updates than were
written (each update reloads the record as it is now).

The stalled client is a raw socket driven by websockets' sans-I/O protocol, so nothing
reads it while the test does not (the `websockets` client would keep reading into its
own buffers). Before connecting it asks for a small receive buffer (no autotuning) and a
small MSS: on loopback the MSS is ~64 KB and the server's send buffer would autotune to
megabytes, absorbing the whole run. With 2.3 KB updates the connection's kernel buffers
are full after a few dozen of them; /proc/net/tcp shows them full at the end, and the
stalled client needing a fraction of the healthy one's updates shows the server stopped
producing for it.

`pytest -s tests/test_slow_consumer.py` prints the measurements.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select, text
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

import models
from app.runtime import Runtime, open_runtime
from app.settings import Settings
from models import change_log
from schema.ids import decode_id, encode_id
from subscriptions.cursors import decode_cursor
from tests.servers import app_environment, running_server
from tests.support import GraphQLClient
from tests.ws_client import TRANSPORT_WS, GraphQLSocket, graphql_socket

# One writer: TRANSACTIONS commits, each updating every one of CARDS cards once. (An ORM
# flush costs ~0.6 ms per UPDATE; more writers or smaller transactions only add overhead
# on a two-core machine.)
CARDS = 100
TRANSACTIONS = 100
UPDATES_TOTAL = CARDS * TRANSACTIONS
# Cards carry a description of this size (and the subscription selects it): an update is
# ~2.3 KB on the wire, so the stalled connection's buffers fill early in the run.
DESCRIPTION_BYTES = 2000
# Growth of the server's RSS from just before the first commit to its peak while the
# updates flow. Measured here: about +1 MiB (it was +5.6 to +7.1 MiB before
# schema.execution stopped graphql-core 3.3.2 from keeping ~5 KiB per delivered event).
# The bound leaves a wide margin for slower machines; a server that buffered for the
# stalled client instead of waiting would hold every update it produced for it.
RSS_GROWTH_BOUND_MIB = 16.0
# Far fewer updates than were written bring the stalled client to the final state
# (measured: ~200).
STALLED_UPDATES_BOUND = UPDATES_TOTAL // 10
# The stalled client's socket: receive buffer (Linux doubles it) and maximum segment.
STALLED_RCVBUF = 4096
STALLED_MSS = 1024
TEST_BUDGET_SECONDS = 45.0  # typically 11 to 16 s
DELIVERY_TIMEOUT = 30.0
# Probe changes sent until both subscriptions are live, each awaited this long.
PROBES = 5
PROBE_WAIT = 3.0
RSS_SAMPLE_INTERVAL = 0.02


UPDATES = """
subscription {
  userUpdates {
    cursor op typename id
    node { __typename id ... on Card { title description version board { id } } }
  }
}
"""

# ---------------------------------------------------------------------------------------
# Measuring the server process


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def mib(kib: int) -> float:
    return kib / 1024


@dataclass
class RssSampler:
    """The peak RSS of `pid`, sampled every RSS_SAMPLE_INTERVAL while it runs."""

    pid: int
    peak: int = 0
    samples: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            await asyncio.sleep(RSS_SAMPLE_INTERVAL)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RssSampler]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self.peak = max(self.peak, rss_kib(self.pid))


@dataclass(frozen=True)
class TcpQueues:
    """Bytes queued in the kernel on both ends of one loopback connection."""

    client_unread: int  # received by the client's kernel, not read by the client
    server_unsent: int  # written by the server, not yet accepted by the client


def tcp_queues(client_port: int, server_port: int) -> TcpQueues:
    """From /proc/net/tcp: the rx queue of the client's end, the tx queue of the
    server's end. Each end is found by both its ports: the client's port number alone
    can also be another socket's (the same ephemeral port towards another address, or
    an earlier connection in TIME_WAIT, whose queues are empty)."""
    unread = unsent = -1
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16))
        tx_queue, rx_queue = (int(part, 16) for part in fields[4].split(":"))
        if ports == (client_port, server_port):
            unread = rx_queue
        elif ports == (server_port, client_port):
            unsent = tx_queue
    return TcpQueues(unread, unsent)


# ---------------------------------------------------------------------------------------
# A WebSocket client that reads only when asked


class StalledSocket:
    """graphql-transport-ws over a raw socket: bytes are read from the kernel only in
    `next_message`, so between calls the client really does not read."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._protocol = ClientProtocol(
            parse_uri(url), subprotocols=[Subprotocol(TRANSPORT_WS)], max_size=None
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect (see the module docstring): small buffers that fill fast.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, STALLED_MSS)
        self._sock.setblocking(False)
        self._messages: list[dict[str, Any]] = []
        self._handshake: Response | None = None

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def server_port(self) -> int:
        port: int = self._sock.getpeername()[1]
        return port

    async def open(self, token: str) -> None:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self._url)
        assert parts.hostname is not None
        assert parts.port is not None
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            await loop.sock_connect(self._sock, (parts.hostname, parts.port))
            self._protocol.send_request(self._protocol.connect())
            await self._flush()
            while self._protocol.handshake_exc is None and self._handshake is None:
                await self._read_some()
        if self._protocol.handshake_exc is not None:
            raise self._protocol.handshake_exc
        await self.send(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        )
        ack = await self.next_message()
        assert ack["type"] == "connection_ack", ack

    async def send(self, message: dict[str, Any]) -> None:
        self._protocol.send_text(json.dumps(message).encode())
        await self._flush()

    async def subscribe(self, query: str) -> None:
        await self.send({"id": "1", "type": "subscribe", "payload": {"query": query}})

    async def next_message(self, within: float = DELIVERY_TIMEOUT) -> dict[str, Any]:
        """The next graphql-transport-ws message other than ping/pong."""
        async with asyncio.timeout(within):
            while True:
                while self._messages:
                    message = self._messages.pop(0)
                    if message.get("type") not in ("ping", "pong"):
                        return message
                await self._read_some()

    async def next_update(self, within: float = DELIVERY_TIMEOUT) -> dict[str, Any]:
        message = await self.next_message(within)
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message
        update: dict[str, Any] = message["payload"]["data"]["userUpdates"]
        return update

    async def _read_some(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self._sock, 65536)
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        for event in self._protocol.events_received():
            if isinstance(event, Response):
                self._handshake = event
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                assert event.fin, "the server does not fragment messages"
                self._messages.append(json.loads(bytes(event.data)))
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                raise AssertionError(f"the server closed the stalled client: {event}")
        await self._flush()  # pongs the protocol answered with
        if not data:
            raise AssertionError("the server closed the stalled client's connection")

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for chunk in self._protocol.data_to_send():
            if chunk:
                await loop.sock_sendall(self._sock, chunk)

    def close(self) -> None:
        self._sock.close()


# ---------------------------------------------------------------------------------------
# Tracking what a client has seen


@dataclass
class Seen:
    """The newest version of each card a client received, and how many updates."""

    user_pk: int
    versions: dict[str, int] = field(default_factory=dict)
    ops: Counter[str] = field(default_factory=Counter)
    received: int = 0
    # The change id of the last update's cursor: how far its subscription has read.
    position: int = 0

    def apply(self, update: dict[str, Any]) -> None:
        self.received += 1
        self.ops[update["op"]] += 1
        position = decode_cursor(update["cursor"], self.user_pk)
        assert position is not None, update
        self.position = position
        node = update.get("node")
        if update["op"] in ("CREATED", "UPDATED") and node and node["__typename"] == "Card":
            self.versions[update["id"]] = node["version"]

    def missing(self, truth: dict[str, int]) -> dict[str, tuple[int | None, int]]:
        return {
            card: (self.versions.get(card), version)
            for card, version in truth.items()
            if self.versions.get(card) != version
        }


async def read_until_final(
    client: GraphQLSocket | StalledSocket, seen: Seen, truth: dict[str, int]
) -> None:
    """Read until every card's newest version received is its final one. (Each update
    reloads the record as it is now, so intermediate versions may be skipped; the
    subscription may still have older log entries to walk afterwards, showing the same
    final state again.)"""
    async with asyncio.timeout(DELIVERY_TIMEOUT):
        while seen.missing(truth):
            seen.apply(await client.next_update())


async def card_versions(runtime: Runtime, board_pk: int) -> dict[str, int]:
    async with runtime.read_sessions() as session:
        rows = await session.execute(
            select(models.Card.id, models.Card.version).where(models.Card.board_id == board_pk)
        )
        return {encode_id("Card", pk): version for pk, version in rows}


async def long_idle_transactions(runtime: Runtime, seconds: float) -> int:
    """Connections to this database idle in an open transaction for over `seconds`."""
    async with runtime.engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid() "
                "AND now() - state_change > make_interval(secs => :seconds)"
            ),
            {"seconds": seconds},
        )
    return int(count or 0)


async def newest_change(runtime: Runtime) -> int:
    async with runtime.engine.connect() as connection:
        return int(await connection.scalar(select(func.max(change_log.c.id))) or 0)


async def write_updates(runtime: Runtime, card_pks: list[int]) -> None:
    """TRANSACTIONS commits updating each of `card_pks` once. The test is another app
    process: the change log is written, wake-ups go out through Redis."""
    for round_ in range(1, TRANSACTIONS + 1):
        async with runtime.write_sessions() as session, session.begin():
            cards = await session.scalars(select(models.Card).where(models.Card.id.in_(card_pks)))
            for card in cards:
                card.title = f"card {card.id} round {round_}"


# ---------------------------------------------------------------------------------------


async def saw(client: Any, probe: str) -> bool:
    """Whether `client` receives an update of the probe card within PROBE_WAIT."""
    try:
        while (await client.next_update(within=PROBE_WAIT))["id"] != probe:
            pass
    except TimeoutError:
        return False
    return True


async def test_a_client_that_stops_reading_cannot_grow_server_memory(
    empty_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = app_environment(DATABASE_URL=empty_postgres_url, BROKER_URL=redis_url)
    settings = Settings(database_url=empty_postgres_url, broker_url=redis_url)
    async with asyncio.timeout(TEST_BUDGET_SECONDS):
        with running_server(env=env, cwd=tmp_path) as server:
            await asyncio.to_thread(server.wait_until_healthy)
            pid = server.process.pid
            ws_url = server.base_url.replace("http://", "ws://") + "/graphql"
            async with (
                open_runtime(settings) as runtime,
                httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
            ):
                api = GraphQLClient(http, runtime)
                ann = await api.account("Ann")
                board = await api.board(ann, "Firehose")
                board_pk = decode_id(board, field="board")[1]
                async with runtime.write_sessions() as session, session.begin():
                    cards = [
                        models.Card(
                            board_id=board_pk,
                            title=f"card {n}",
                            description="d" * DESCRIPTION_BYTES,
                            position=n,
                            author_id=ann.pk,
                        )
                        for n in range(CARDS)
                    ]
                    session.add_all(cards)
                card_pks = [card.id for card in cards]
                # Every transaction bumps each card's version by one.
                truth = {
                    card: version + TRANSACTIONS
                    for card, version in (await card_versions(runtime, board_pk)).items()
                }
                probe = await api.card(ann, board, "Probe")

                stalled = StalledSocket(ws_url)
                try:
                    await stalled.open(ann.token)
                    async with graphql_socket(ws_url, ann.token) as healthy:
                        await healthy.subscribe(UPDATES)
                        await stalled.subscribe(UPDATES)
                        # Both subscriptions are live once both see a probe change. One
                        # starts at the log's head when the server runs it, which may
                        # come after a probe committed: then probe again.
                        waiting: list[Any] = [healthy, stalled]
                        for attempt in range(PROBES):
                            await api.data(
                                "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }",
                                {"i": {"id": probe, "title": f"Probe {attempt}"}},
                                token=ann.token,
                            )
                            waiting = [c for c in waiting if not await saw(c, probe)]
                            if not waiting:
                                break
                        assert not waiting, "a subscription never saw a probe"
                        # From here on the stalled client reads nothing.

                        healthy_seen = Seen(ann.pk)
                        rss_before = rss_kib(pid)
                        started = time.monotonic()
                        async with RssSampler(pid).running() as sampler:
                            reading = asyncio.create_task(
                                read_until_final(healthy, healthy_seen, truth)
                            )
                            await write_updates(runtime, card_pks)
                            written = time.monotonic() - started
                            await reading
                            healthy_seconds = time.monotonic() - started
                            versions = await card_versions(runtime, board_pk)
                            del versions[probe]
                            assert versions == truth
                            queues = tcp_queues(stalled.port, stalled.server_port)
                            pinned = await long_idle_transactions(runtime, 1.0)
                            stalled_for = time.monotonic() - started
                        rss_stalled = rss_kib(pid)

                    # Now the stalled client reads: it catches up from the log.
                    stalled_seen = Seen(ann.pk)
                    resumed = time.monotonic()
                    async with RssSampler(pid).running() as catch_up:
                        await read_until_final(stalled, stalled_seen, truth)
                    stalled_seconds = time.monotonic() - resumed
                    rss_after = rss_kib(pid)
                    head = await newest_change(runtime)
                finally:
                    stalled.close()

    growth = mib(sampler.peak - rss_before)
    print(
        f"\nslow consumer: {UPDATES_TOTAL} card updates ({CARDS} cards) in {TRANSACTIONS} "
        f"transactions, committed in {written:.2f} s\n"
        f"  server RSS: before {mib(rss_before):.1f} MiB; peak while the updates flowed "
        f"{mib(sampler.peak):.1f} MiB (growth {growth:+.1f} MiB, {sampler.samples} samples); "
        f"{mib(rss_stalled):.1f} MiB with the client stalled {stalled_for:.1f} s; peak "
        f"during its catch-up {mib(catch_up.peak):.1f} MiB; after {mib(rss_after):.1f} MiB\n"
        f"  stalled connection: {queues.client_unread} bytes unread in the client's kernel "
        f"buffer, {queues.server_unsent} bytes unsent in the server's (full: the server's "
        f"sends wait); DB connections idle in a transaction for over 1 s: {pinned}\n"
        f"  healthy client: {healthy_seen.received} updates {dict(healthy_seen.ops)} until "
        f"every card was final, {healthy_seconds:.2f} s after the first commit (its "
        f"subscription had read the log to change {healthy_seen.position} of {head})\n"
        f"  stalled client: {stalled_seen.received} updates {dict(stalled_seen.ops)} until "
        f"every card was final, {stalled_seconds:.2f} s after it started reading (log read "
        f"to change {stalled_seen.position} of {head})"
    )
    # The server's sends really waited: both kernel buffers of the connection were full.
    assert queues.client_unread > 0
    assert queues.server_unsent > 0
    assert growth < RSS_GROWTH_BOUND_MIB, f"server RSS grew {growth:.1f} MiB"
    assert not healthy_seen.missing(truth)
    assert not stalled_seen.missing(truth)
    assert "RESYNC" not in stalled_seen.ops, "retention was not exceeded: no RESYNC"
    assert stalled_seen.received < STALLED_UPDATES_BOUND
    # A stalled send must not pin a pooled connection (or a snapshot) meanwhile.
    assert pinned == 0, f"{pinned} connections idle in a transaction behind a stalled client"
