"""The delivery observer inside a subscription generator, driven the way the WebSocket
transports drive it (send each result, then ask for the next; close the generator when
a send fails or the operation is cancelled): what counts as delivered, and the one log
line a failed delivery writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

import pytest

from models import utcnow
from subscriptions.changelog import LoggedChange
from subscriptions.changes import ChangeOp
from subscriptions.delivery import DeliveryObserver
from subscriptions.metrics import Metrics


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
                raise ReloadFailed("database went away")
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


async def test_a_reload_error_writes_one_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    with pytest.raises(ReloadFailed):
        async for _update in subscription(DeliveryObserver(metrics), [change(5)], fail_on=5):
            pass
    [line] = failures(caplog)
    assert line.levelno == logging.WARNING
    assert "not delivered to user 3: loading the record failed (ReloadFailed: " in (
        line.getMessage()
    )
    assert line.exc_info is not None
    assert line.exc_info[0] is ReloadFailed
    assert sample(metrics, "commitcast_failed_deliveries_total", reason="reload_error") == 1


async def test_a_resync_is_counted_and_explained(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="commitcast.delivery")
    metrics = Metrics()
    DeliveryObserver(metrics).resync(4, "expired_cursor")
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "resync"]
    assert "older than the change log's retention" in line.getMessage()
    assert sample(metrics, "commitcast_resyncs_total", reason="expired_cursor") == 1
