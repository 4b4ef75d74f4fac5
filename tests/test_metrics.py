"""/metrics: Prometheus text that prometheus_client parses, whose values follow what the
server really does: a change from commit to socket, sockets and subscriptions opening
and closing, RESYNCs, a broker connection cut and re-established."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.applications import Starlette

import models
from app.asgi import create_app
from app.runtime import open_runtime
from app.settings import Settings
from models import change_log, utcnow
from subscriptions.capture import CapturingSession
from subscriptions.metrics import Metrics
from tests.live import live_server
from tests.metrics_support import Scrape, scrape
from tests.realtime_support import Realtime
from tests.redis_server import tcp_proxy
from tests.support import GraphQLClient, eventually, subscriptions_started
from tests.ws_client import UPDATES, graphql_socket

UPDATE_TITLE = """
mutation($id: ID!, $t: String!) { updateCard(input: {id: $id, title: $t}) { id version } }
"""
TRANSPORT = "graphql-transport-ws"


async def settle(realtime: Realtime) -> Scrape:
    """A scrape once everything committed so far has been published."""
    await realtime.server.runtime.relay.idle()
    return await scrape(realtime.api.http)


async def test_a_change_is_counted_from_commit_to_delivery(realtime: Realtime) -> None:
    api, http = realtime.api, realtime.api.http
    ann, bob = await api.account("Ann"), await api.account("Bob")
    board = await api.board(ann, "Plans")
    await api.add_member(ann, board, bob, "EDITOR")
    card = await api.card(bob, board, "first")
    before = await settle(realtime)
    assert before.value("commitcast_websocket_connections") == 0
    assert before.value("commitcast_active_subscriptions", transport=TRANSPORT) == 0
    assert before.value("commitcast_changes_captured_total") > 0  # the setup's changes
    assert before.value("commitcast_relay_pending_changes") == 0

    async with graphql_socket(realtime.server.ws_url, ann.token) as socket:
        await socket.subscribe(UPDATES)

        async def subscribed() -> bool:
            now = await scrape(http)
            return now.value("commitcast_active_subscriptions", transport=TRANSPORT) == 1

        await eventually(subscribed, "the subscription to be counted")
        opened = await scrape(http)
        assert opened.value("commitcast_websocket_connections") == 1

        # One change (a card of the board, not moved): one log entry, a wake-up for each
        # of the board's two members, one update for Ann's one subscription.
        await api.data(UPDATE_TITLE, {"id": card, "t": "second"}, token=bob.token)
        update = await socket.next_update()
        assert (update["op"], update["id"]) == ("UPDATED", card)

        async def delivered() -> bool:
            now = await scrape(http)
            return now.delta(opened, "commitcast_changes_delivered_total", op="UPDATED") == 1

        await eventually(delivered, "the delivery to be counted")
        after = await settle(realtime)

    assert after.delta(before, "commitcast_changes_captured_total") == 1
    assert after.delta(before, "commitcast_changes_published_total", source="relay") == 1
    assert after.delta(before, "commitcast_changes_published_total", source="sweeper") == 0
    assert after.delta(before, "commitcast_wakeups_published_total") == 2
    assert after.delta(before, "commitcast_relay_lag_seconds_count") == 1
    assert after.delta(before, "commitcast_delivery_latency_seconds_count") == 1
    latency = after.delta(before, "commitcast_delivery_latency_seconds_sum")
    assert 0 <= latency < 10, latency
    assert after.delta(before, "commitcast_changes_delivered_total", op="CREATED") == 0
    assert after.delta(before, "commitcast_failed_deliveries_total", reason="disconnected") == 0
    assert after.value("commitcast_relay_pending_changes") == 0

    async def closed() -> bool:
        now = await scrape(http)
        return (
            now.value("commitcast_websocket_connections") == 0
            and now.value("commitcast_active_subscriptions", transport=TRANSPORT) == 0
        )

    await eventually(closed, "the closed socket and its subscription to be uncounted")


async def test_a_cursor_that_cannot_be_served_counts_a_resync(realtime: Realtime) -> None:
    api, http = realtime.api, realtime.api.http
    ann = await api.account("Ann")
    before = await scrape(http)
    async with graphql_socket(realtime.server.ws_url, ann.token, protocol="graphql-ws") as socket:
        await socket.subscribe(UPDATES, {"after": "not-a-cursor"})
        assert (await socket.next_update())["op"] == "RESYNC"
        now = await scrape(http)
        # The legacy protocol is a transport of its own.
        assert now.value("commitcast_active_subscriptions", transport="graphql-ws") == 1
    assert now.delta(before, "commitcast_resyncs_total", reason="invalid_cursor") == 1
    assert now.delta(before, "commitcast_resyncs_total", reason="expired_cursor") == 0


async def test_a_cut_broker_connection_counts_a_reconnect_and_a_gap(
    sqlite_url: str, redis_url: str
) -> None:
    port = urlsplit(redis_url).port or 6379
    async with tcp_proxy(port) as proxy:
        settings = Settings(database_url=sqlite_url, broker_url=proxy.url(15))
        async with (
            live_server(settings) as server,
            httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
        ):
            api = GraphQLClient(http, server.runtime)
            ann = await api.account("Ann")
            async with graphql_socket(server.ws_url, ann.token) as socket:
                await socket.subscribe(UPDATES)
                await subscriptions_started(server.runtime, [ann.pk])
                board = await api.board(ann, "Before")  # the subscription is live
                assert (await socket.next_update())["id"] == board
                before = await scrape(http)
                assert before.value("commitcast_broker_reconnects_total") == 0

                assert proxy.cut() > 0

                async def reconnected() -> bool:
                    now = await scrape(http)
                    return now.value("commitcast_broker_reconnects_total") == 1

                await eventually(reconnected, "the broker to reconnect")
                # The subscribers were told they may have missed wake-ups.
                after = await scrape(http)
                assert after.delta(before, "commitcast_broker_gaps_total") >= 1
                # And the subscription is live again.
                board = await api.board(ann, "After")
                while (await socket.next_update())["id"] != board:
                    pass


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http


async def test_metrics_token_guards_metrics_only(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, metrics_token="scrape-secret")
    async with serve(settings) as (_app, http):
        refused = await http.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = await scrape(http, {"Authorization": "Bearer scrape-secret"})
        assert allowed.value("commitcast_websocket_connections") == 0
        assert (await http.get("/healthz")).status_code == 200


async def test_the_process_and_garbage_collector_metrics_are_served(sqlite_url: str) -> None:
    async with serve(Settings(database_url=sqlite_url)) as (_app, http):
        found = await scrape(http)
    assert found.value("process_resident_memory_bytes") > 1_000_000
    assert found.value("process_cpu_seconds_total") > 0
    assert found.value("python_gc_collections_total", generation="2") >= 0
    assert found.value("python_gc_objects_uncollectable_total", generation="0") >= 0


async def test_two_apps_in_one_process_count_separately(sqlite_url: str) -> None:
    async with (
        serve(Settings(database_url=sqlite_url)) as (first, first_http),
        serve(Settings(database_url=sqlite_url)) as (_second, second_http),
    ):
        api = GraphQLClient(first_http, first.state.runtime)
        await api.account("Ann")
        await first.state.runtime.relay.idle()
        assert (await scrape(first_http)).value("commitcast_changes_captured_total") == 1
        assert (await scrape(second_http)).value("commitcast_changes_captured_total") == 0


async def test_openmetrics_is_served_to_scrapers_that_ask_for_it(sqlite_url: str) -> None:
    async with serve(Settings(database_url=sqlite_url)) as (_app, http):
        response = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_a_swept_change_counts_as_published_by_the_sweeper(sqlite_url: str) -> None:
    metrics = Metrics()
    async with open_runtime(Settings(database_url=sqlite_url), metrics) as runtime:
        # Committed a minute ago by a process that died before publishing (no relay).
        orphaned = async_sessionmaker(runtime.engine, sync_session_class=CapturingSession)
        async with orphaned() as session, session.begin():
            session.add(models.User(email="ann@example.com", name="Ann", password_hash="-"))
        async with runtime.engine.begin() as connection:
            await connection.execute(
                update(change_log).values(committed_at=utcnow() - timedelta(minutes=1))
            )
        await runtime.relay.sweep()  # (or its own sweeper, every 2 s, got there first)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("commitcast_changes_captured_total") == 0  # not this process's commit
    assert sample("commitcast_changes_published_total", source="sweeper") == 1
    assert sample("commitcast_changes_published_total", source="relay") == 0
    assert sample("commitcast_relay_lag_seconds_count") == 1
    lag = sample("commitcast_relay_lag_seconds_sum")
    assert lag is not None
    assert 60 <= lag < 120
