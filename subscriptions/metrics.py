"""The process's Prometheus metrics: one `Metrics` per app, in a registry of its own.

A registry per app (not prometheus_client's global one) lets a test process run several
apps side by side without "Duplicated timeseries" errors, and lets tests read each app's
values. Creating a `Metrics` only defines metric objects: nothing is started, nothing
connects. Every name starts with `commitcast_`; docs/operations-metrics.md describes each.

Each process exposes its own values at /metrics (the relay, broker connection and
sockets are per process): scrape every process.
"""

from __future__ import annotations

import functools
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from subscriptions.cursors import RESYNC_REASONS

# Seconds from commit to publish: normally milliseconds; seconds while the broker is down
# (the relay retries) or when the sweeper publishes a dead process's changes (>= 5 s).
RELAY_LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip
# Seconds from commit to the socket: milliseconds live; a client resuming from an old
# cursor receives what it missed with the age of those changes, hence the long tail.
DELIVERY_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                   5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)  # fmt: skip

TRANSPORTS: Final = ("graphql-transport-ws", "graphql-ws", "http")

# Why an update did not reach its subscriber (the `reason` label of failed deliveries).
DISCONNECTED: Final = "disconnected"
RELOAD_ERROR: Final = "reload_error"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # prometheus_client's standard process (memory, CPU, file descriptors) and Python
        # garbage-collector metrics, which its global registry has and this one would
        # not: the same collectors, read at each scrape.
        registry.register(PROCESS_COLLECTOR)
        registry.register(GC_COLLECTOR)
        self.websocket_connections = Gauge(
            "commitcast_websocket_connections",
            "WebSocket connections open right now (accepted, not yet closed).",
            registry=registry,
        )
        self.active_subscriptions = Gauge(
            "commitcast_active_subscriptions",
            "userUpdates subscriptions running right now, by transport.",
            ["transport"],
            registry=registry,
        )
        self.changes_captured = Counter(
            "commitcast_changes_captured",
            "Changes to real-time records committed by this process and handed to its relay.",
            registry=registry,
        )
        self.changes_published = Counter(
            "commitcast_changes_published",
            "Changes whose wake-ups were published to the broker and which were marked "
            "published in the change log; source=relay (right after commit) or "
            "sweeper (orphaned by a process that died before publishing).",
            ["source"],
            registry=registry,
        )
        self.wakeups_published = Counter(
            "commitcast_wakeups_published",
            "Broker messages published (one per user and batch of changes).",
            registry=registry,
        )
        self.relay_pending_changes = Gauge(
            "commitcast_relay_pending_changes",
            "Changes committed by this process that its relay has not published yet.",
            registry=registry,
        )
        self.relay_lag = Histogram(
            "commitcast_relay_lag_seconds",
            "Seconds from a change's commit to the publication of its wake-up.",
            buckets=RELAY_LAG_BUCKETS,
            registry=registry,
        )
        self.changes_delivered = Counter(
            "commitcast_changes_delivered",
            "Updates handed to a subscriber's connection (one per subscription), by op.",
            ["op"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "commitcast_delivery_latency_seconds",
            "Seconds from a change's commit (its change log time) to the moment its "
            "update was handed to the subscriber's connection.",
            buckets=DELIVERY_LATENCY_BUCKETS,
            registry=registry,
        )
        self.failed_deliveries = Counter(
            "commitcast_failed_deliveries",
            "Updates that did not reach their subscriber, by reason: disconnected (the "
            "connection closed or the subscription stopped before it was sent) or "
            "reload_error (reading the record failed).",
            ["reason"],
            registry=registry,
        )
        self.resyncs = Counter(
            "commitcast_resyncs",
            "RESYNC updates sent, by why the cursor could not be served.",
            ["reason"],
            registry=registry,
        )
        self.broker_reconnects = Counter(
            "commitcast_broker_reconnects",
            "Times the broker's pub/sub connection was re-established after it was lost.",
            registry=registry,
        )
        self.broker_gaps = Counter(
            "commitcast_broker_gaps",
            "Times local subscribers were told that wake-ups may have been lost (broker "
            "reconnect, listener failure); each repairs from the change log.",
            registry=registry,
        )
        # Every known label value starts at 0, so a rate() or an alert sees the series
        # before its first event.
        for transport in TRANSPORTS:
            self.active_subscriptions.labels(transport)
        for source in ("relay", "sweeper"):
            self.changes_published.labels(source)
        # (Looked up per delivered update: the labelled counters, found once.)
        self.delivered_by_op = {
            op: self.changes_delivered.labels(op) for op in ("CREATED", "UPDATED", "DELETED")
        }
        for reason in (DISCONNECTED, RELOAD_ERROR):
            self.failed_deliveries.labels(reason)
        for reason in RESYNC_REASONS:
            self.resyncs.labels(reason)


@functools.cache
def unobserved() -> Metrics:
    """Metrics nobody exposes, for components built without an app (unit tests, tools):
    created on first use, never at import time."""
    return Metrics()
