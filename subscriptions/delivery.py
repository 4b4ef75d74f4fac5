"""Watching delivery: what each subscription hands to its connection, what it fails to
deliver and why, and the RESYNCs it sends (metrics, and one log line per failure).

The app builds one `DeliveryObserver` per connection (or HTTP request), knowing the
process's Metrics and the transport; `userUpdates` reports to it. "Delivered" means
handed to the connection: the subscription generator resumes after its `yield` only
once the transport has sent the update (graphql-transport-ws and graphql-ws send each
result before asking for the next), so that is where a delivery is counted and its
latency measured. A generator closed at its `yield` never got its update sent; the
transport tells the observer why (`send_failed`), since the generator only sees
GeneratorExit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from types import TracebackType
from typing import Protocol, TypeVar

from prometheus_client import Gauge

from subscriptions.changelog import LoggedChange
from subscriptions.cursors import AHEAD_OF_LOG, EXPIRED_CURSOR, INVALID_CURSOR
from subscriptions.metrics import DISCONNECTED, RELOAD_ERROR, Metrics, unobserved

logger = logging.getLogger("commitcast.delivery")

RESYNC_EXPLANATIONS = {
    INVALID_CURSOR: "its cursor is malformed or was issued to another user",
    EXPIRED_CURSOR: "its cursor is older than the change log's retention (CHANGE_LOG_RETENTION)",
    AHEAD_OF_LOG: "its cursor is beyond the newest change (was the database restored?)",
}


class Update(Protocol):
    @property
    def op(self) -> Enum: ...


U = TypeVar("U", bound=Update)


class DeliveryObserver:
    def __init__(self, metrics: Metrics | None = None, transport: str = "http") -> None:
        self.metrics = metrics or unobserved()
        self.transport = transport
        self.send_error: BaseException | None = None

    def send_failed(self, error: BaseException) -> None:
        """Called by the transport when sending on this connection raised (the socket
        closed, or the operation was cancelled mid-send)."""
        self.send_error = error

    def subscribed(self) -> Subscribed:
        """Around a running subscription (`async with`): the active subscriptions gauge."""
        return Subscribed(self.metrics.active_subscriptions.labels(self.transport))

    def resync(self, user_id: int, reason: str | None) -> None:
        reason = reason or INVALID_CURSOR
        self.metrics.resyncs.labels(reason).inc()
        logger.info(
            "RESYNC sent to user %d: %s; the client refetches its queries",
            user_id,
            RESYNC_EXPLANATIONS.get(reason, reason),
            extra={"event": "resync", "user_id": user_id, "reason": reason},
        )

    def delivering(self, user_id: int, change: LoggedChange) -> Delivery:
        """Around loading and sending one change's update:

        with observer.delivering(user_id, change) as delivery:
            item = await present(...)      # may be None: not the viewer's to see
            if item is not None:
                yield delivery.sending(item)
        """
        return Delivery(self, user_id, change)


class Subscribed:
    """Counts a subscription in the gauge while it runs. A class rather than a
    generator-based context manager: it is held for the subscription's life."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    async def __aenter__(self) -> None:
        self._gauge.inc()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._gauge.dec()


class Delivery:
    def __init__(self, observer: DeliveryObserver, user_id: int, change: LoggedChange) -> None:
        self._observer = observer
        self._metrics = observer.metrics
        self._user_id = user_id
        self._change = change
        self._op: str | None = None

    def sending(self, update: U) -> U:
        """Mark `update` as the one about to be yielded (and so sent); return it."""
        self._op = str(update.op.value)
        return update

    def __enter__(self) -> Delivery:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            if self._op is not None:
                self._delivered(self._op)
        elif isinstance(error, GeneratorExit | asyncio.CancelledError):
            # Closed while its update was being sent: the connection went away, or the
            # subscription was stopped. (Closed while loading: nothing was due yet.)
            if self._op is not None:
                self._failed(DISCONNECTED, _why_not_sent(self._observer.send_error))
        elif isinstance(error, Exception):
            # The first line only (a database error goes on with its SQL): the error's
            # traceback is logged where the operation's errors are (schema.extensions).
            detail = str(error).strip().partition("\n")[0]
            self._failed(
                RELOAD_ERROR, f"loading the record failed ({type(error).__name__}: {detail})"
            )

    def _delivered(self, op: str) -> None:
        counter = self._metrics.delivered_by_op.get(op)
        if counter is None:
            counter = self._metrics.changes_delivered.labels(op)
        counter.inc()
        committed_at = self._change.committed_at
        if committed_at is not None:
            # Clocks of different hosts may disagree by a little: never negative. (Epoch
            # seconds: cheaper than an aware datetime per delivery.)
            seconds = max(0.0, time.time() - committed_at.timestamp())
            self._metrics.delivery_latency.observe(seconds)

    def _failed(self, reason: str, why: str) -> None:
        change = self._change
        self._metrics.failed_deliveries.labels(reason).inc()
        logger.log(
            logging.INFO if reason == DISCONNECTED else logging.WARNING,
            "update for change %d (%s %d) not delivered to user %d: %s",
            change.id,
            change.typename,
            change.record_id,
            self._user_id,
            why,
            extra={
                "event": "delivery_failed",
                "reason": reason,
                "user_id": self._user_id,
                "change_id": change.id,
                "typename": change.typename,
                "record_id": change.record_id,
            },
        )


def _why_not_sent(send_error: BaseException | None) -> str:
    if send_error is None or isinstance(send_error, asyncio.CancelledError):
        why = (
            "the subscription was stopped before it was sent (connection closed or "
            "subscription completed)"
        )
    else:
        why = f"sending failed ({_describe(send_error)})"
    return f"{why}; the client resumes from its last cursor"


def _describe(error: BaseException) -> str:
    """`Outer <- Inner <- Root: the first message`: transports wrap the socket's error."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 5:
        chain.append(current)
        current = current.__cause__ or current.__context__
    names = " <- ".join(type(e).__name__ for e in chain)
    message = next((str(e) for e in chain if str(e)), "")
    return f"{names}: {message}" if message else names
