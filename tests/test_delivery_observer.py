"""The delivery observer inside a subscription generator, driven the way the WebSocket
transports drive it (send each result, then ask for the next; close the generator when
a send fails or the operation is cancelled): what counts as delivered, and the one log
line a failed delivery writes."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

import httpx
import pytest

from app.settings import Settings
from models import utcnow
from subscriptions.changelog import LoggedChange
from subscriptions.changes import ChangeOp
from subscriptions.delivery import DeliveryObserver
from subscriptions.metrics import Metrics
from tests.live import live_server
from tests.support import GraphQLClient, eventually
from tests.test_slow_consumer import StalledSocket


class Op(Enum):
    UPDATED = "UPDATED"


@dataclass
class Update:
    op: Op
    change_id: int


def change(change_id: int, age: float = 0.5) -> LoggedChange:
    committed_at = utcnow() - timedelta(seconds=age)
    return LoggedChange(change_id, "Card", 7, ChangeOp.UPDATED, change_id, committed_at)


class ReloadFailed(RuntimeError):
    pass


async def subscription(
    observer: DeliveryObserver, changes: list[LoggedChange], fail_on: int | None = None
) -> AsyncGenerator[Update, None]:
    """The shape of userUpdates' loop."""
    for logged in changes:
        with observer.delivering(3, logged) as delivery:
            await asyncio.sleep(0)  # the reload
            if logged.id == fail_on:
                raise ReloadFailed("database went away\n[SQL: SELECT ...]")
            yield delivery.sending(Update(Op.UPDATED, logged.id))


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "delivery_failed"]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def test_an_update_counts_as_delivered_once_it_has_been_sent() -> None:
    metrics = Metrics()
    observer = DeliveryObserver(metrics, "graphql-transport-ws")
    sent: list[int] = []
    async with aclosing(subscription(observer, [change(1), change(2)])) as updates:
        async for update in updates:
            # While the transport sends an update, it is not counted yet.
            assert sample(metrics, "commitcast_changes_delivered_total", op="UPDATED") == len(sent)
            sent.append(update.change_id)
    assert sent == [1, 2]
    assert sample(metrics, "commitcast_changes_delivered_total", op="UPDATED") == 2
    assert sample(metrics, "commitcast_delivery_latency_seconds_count") == 2
    # Both were committed half a second before they were sent.
    assert 1.0 <= sample(metrics, "commitcast_delivery_latency_seconds_sum") < 5.0
    assert sample(metrics, "commitcast_failed_deliveries_total", reason="disconnected") == 0


async def test_a_send_that_fails_writes_one_line_naming_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="commitcast.delivery")
    metrics = Metrics()
    observer = DeliveryObserver(metrics)

    async def transport() -> None:
        async with aclosing(subscription(observer, [change(1), change(2)])) as updates:
            async for update in updates:
                if update.change_id == 2:
                    # What the app's transports do when a send raises.
                    error = ConnectionResetError("the peer reset the connection")
                    observer.send_failed(error)
                    raise error

    with pytest.raises(ConnectionResetError):
        await transport()
    [line] = failures(caplog)
    assert line.getMessage() == (
        "update for change 2 (Card 7) not delivered to user 3: sending failed "
        "(ConnectionResetError: the peer reset the connection); the client resumes from "
        "its last cursor"
    )
    assert (line.levelno, vars(line)["reason"], vars(line)["change_id"]) == (
        logging.INFO,
        "disconnected",
        2,
    )
    assert vars(line)["user_id"] == 3
    assert sample(metrics, "commitcast_changes_delivered_total", op="UPDATED") == 1
    assert sample(metrics, "commitcast_failed_deliveries_total", reason="disconnected") == 1


async def test_a_subscription_cancelled_mid_send_writes_one_line() -> None:
    metrics = Metrics()
    observer = DeliveryObserver(metrics)
    sending = asyncio.Event()

    async def transport() -> None:
        async with aclosing(subscription(observer, [change(1)])) as updates:
            async for _update in updates:
                sending.set()
                await asyncio.Event().wait()  # a send that never completes

    task = asyncio.create_task(transport())
    await sending.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sample(metrics, "commitcast_failed_deliveries_total", reason="disconnected") == 1
    assert sample(metrics, "commitcast_changes_delivered_total", op="UPDATED") == 0


async def test_a_subscription_closed_while_waiting_has_nothing_undelivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="commitcast.delivery")
    metrics = Metrics()
    async with aclosing(subscription(DeliveryObserver(metrics), [change(1)])) as updates:
        await anext(updates)
        await anext(updates, None)  # sent; the generator ran to its end
    assert failures(caplog) == []
    assert sample(metrics, "commitcast_failed_deliveries_total", reason="disconnected") == 0


async def test_a_reload_error_writes_one_warning_naming_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    with pytest.raises(ReloadFailed):
        async for _update in subscription(DeliveryObserver(metrics), [change(5)], fail_on=5):
            pass
    [line] = failures(caplog)
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "update for change 5 (Card 7) not delivered to user 3: loading the record failed "
        "(ReloadFailed: database went away)"
    )
    assert sample(metrics, "commitcast_failed_deliveries_total", reason="reload_error") == 1


async def test_a_resync_is_counted_and_explained(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="commitcast.delivery")
    metrics = Metrics()
    DeliveryObserver(metrics).resync(4, "expired_cursor")
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "resync"]
    assert "older than the change log's retention" in line.getMessage()
    assert sample(metrics, "commitcast_resyncs_total", reason="expired_cursor") == 1


# A real server: a send that cannot complete, then the client vanishes -----------------

BIG = 10_000  # the largest card description: an update of ~10 KB on the wire
STALLED_UPDATES = """
subscription { userUpdates { cursor op id node { id ... on Card { description version } } } }
"""
UPDATE_DESCRIPTION = """
mutation($id: ID!, $d: String!) { updateCard(input: {id: $id, description: $d}) { id } }
"""
TRANSPORT = "graphql-transport-ws"
# A send to a reading client completes in microseconds; one still waiting after this
# long waits for the client.
SEND_WAIT = 3.0


async def reaches(metrics: Metrics, delivered: float, within: float) -> bool:
    """Whether the delivered count reaches `delivered` within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if sample(metrics, "commitcast_changes_delivered_total", op="UPDATED") >= delivered:
                    return True
                await asyncio.sleep(0.01)
    except TimeoutError:
        return False


def abort(stalled: StalledSocket) -> None:
    """Vanish like a crashed client: the socket is reset, with no WebSocket close."""
    sock: socket.socket = stalled._sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stalled.close()


async def test_a_client_that_vanishes_mid_send_gets_one_failed_delivery_line(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="commitcast.delivery")
    async with (
        live_server(Settings(database_url=sqlite_url)) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        api, metrics = GraphQLClient(http, server.runtime), server.runtime.metrics
        ann = await api.account("Ann")
        card = await api.card(ann, await api.board(ann))
        stalled = StalledSocket(server.ws_url)
        try:
            await stalled.open(ann.token)
            await stalled.send(
                {"id": "1", "type": "subscribe", "payload": {"query": STALLED_UPDATES}}
            )

            async def subscribed() -> bool:
                return sample(metrics, "commitcast_active_subscriptions", transport=TRANSPORT) == 1

            await eventually(subscribed, "the subscription to start")
            delivered = sample(metrics, "commitcast_changes_delivered_total", op="UPDATED")
            # The client reads nothing from here on: its buffers, the server's kernel
            # buffer, then the server's transport buffer fill, and a send waits.
            for written in range(1, 101):
                description = f"{written:05}" * (BIG // 5)
                await api.data(UPDATE_DESCRIPTION, {"id": card, "d": description}, token=ann.token)
                await server.runtime.relay.idle()
                if not await reaches(metrics, delivered + written, SEND_WAIT):
                    break  # this update's send is waiting for the client
            else:
                pytest.fail("the server never waited for the stalled client")
            assert failures(caplog) == []
        finally:
            abort(stalled)

        async def failed() -> bool:
            return sample(metrics, "commitcast_failed_deliveries_total", reason="disconnected") == 1

        await eventually(failed, "the failed delivery to be counted")
        [line] = failures(caplog)
        assert vars(line)["user_id"] == ann.pk
        assert vars(line)["change_id"] > 0
        assert f"not delivered to user {ann.pk}: " in line.getMessage()
        assert line.getMessage().endswith("the client resumes from its last cursor")
        # Nothing else went wrong: no error, no traceback for a client that went away.
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
