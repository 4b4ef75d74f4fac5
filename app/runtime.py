"""What the lifespan owns: engine, sessionmakers, broker, authenticator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth import Authenticator
from app.live_sockets import LiveSockets
from app.rate_limit import RateLimiter, counter_for
from app.revocation import TokenRevocations
from app.settings import Settings
from models import deployment_id
from models.database import create_engine, create_sessionmakers, is_sqlite
from models.kept_connections import KeptConnections
from models.kept_snapshots import KeptSnapshots
from models.migrate import upgrade
from schema.context import LOGINS_PER_EMAIL, MUTATIONS_PER_USER, SIGN_INS_PER_ADDRESS
from schema.shared_reads import ReadGroups
from subscriptions.broker import Broker, broker_from_url
from subscriptions.capture import SINK_KEY, CapturingSession
from subscriptions.feed import UpdateFeed
from subscriptions.fence import AccessFence
from subscriptions.metrics import Metrics
from subscriptions.relay import Relay

logger = logging.getLogger("commitcast")


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    read_sessions: async_sessionmaker[AsyncSession]
    write_sessions: async_sessionmaker[AsyncSession]
    broker: Broker
    relay: Relay
    # The process's userUpdates source: one hub per connected user (subscriptions.hub).
    feed: UpdateFeed
    authenticator: Authenticator
    metrics: Metrics
    live_sockets: LiveSockets
    access_fence: AccessFence
    rate_limiter: RateLimiter
    # The snapshot and loaders that subscriptions presenting changes at the same time
    # share, whatever their viewer (schema.shared_reads).
    read_groups: ReadGroups
    # Delivery snapshots' connections kept from one snapshot to the next (PostgreSQL;
    # None on SQLite): models.kept_snapshots.
    kept_snapshots: KeptSnapshots | None


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def open_runtime(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Runtime]:
    """Everything the app needs while it runs. `metrics`: where the relay, broker and
    subscriptions count what they do (the app's, exposed at /metrics)."""
    metrics = metrics or Metrics()
    if settings.uses_development_secret:
        logger.warning(
            "SECRET_KEY is not set: using the public development key. Anyone can forge "
            "tokens for this server. Set SECRET_KEY before exposing it to anyone."
        )
    if is_sqlite(settings.database_url):
        _ensure_sqlite_directory(settings.database_url)
    async with AsyncExitStack() as stack:
        engine = create_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        stack.push_async_callback(engine.dispose)
        if engine.dialect.driver == "asyncpg":
            # Connections kept between the single statements run on the driver
            # (models.kept_connections), given back before the engine is disposed and
            # after everything that runs such statements has stopped.
            stack.push_async_callback(KeptConnections.install(engine).aclose)
        await upgrade(engine)
        # Channels (and rate limit counters) are namespaced by the deployment (one id
        # per database), so that deployments sharing one Redis never mix.
        namespace = f"commitcast:{await deployment_id(engine)}"
        broker = broker_from_url(settings.broker_url, namespace=namespace, metrics=metrics)
        await broker.connect()
        stack.push_async_callback(broker.disconnect)
        rate_limiter = RateLimiter(
            counter_for(settings.broker_url),
            {
                MUTATIONS_PER_USER: settings.mutation_rate,
                LOGINS_PER_EMAIL: settings.login_rate,
                SIGN_INS_PER_ADDRESS: settings.sign_in_address_rate,
            },
            namespace,
        )
        stack.push_async_callback(rate_limiter.close)
        relay = Relay(
            broker, engine, timedelta(seconds=settings.change_log_retention_seconds), metrics
        )
        await relay.start()
        stack.push_async_callback(relay.stop)
        live_sockets = LiveSockets(settings.ws_max_sockets_per_user)
        stack.push_async_callback(live_sockets.aclose)
        revocations = TokenRevocations(engine, broker, live_sockets, settings.token_ttl_seconds)
        await revocations.start()
        stack.push_async_callback(revocations.stop)
        access_fence = AccessFence(broker)
        await access_fence.start()
        stack.push_async_callback(access_fence.stop)
        # Every session the app opens captures changes to Realtime models and hands
        # them to the relay after the outermost commit.
        read_sessions, write_sessions = create_sessionmakers(
            engine, sync_session_class=CapturingSession, info={SINK_KEY: relay}
        )
        # Delivery snapshots' connections, kept from one snapshot to the next
        # (PostgreSQL), given back before the engine is disposed.
        kept_snapshots = KeptSnapshots.for_sessions(read_sessions)
        if kept_snapshots is not None:
            stack.push_async_callback(kept_snapshots.aclose)
        feed = UpdateFeed(broker, engine)
        yield Runtime(
            settings=settings,
            engine=engine,
            read_sessions=read_sessions,
            write_sessions=write_sessions,
            broker=broker,
            relay=relay,
            feed=feed,
            authenticator=Authenticator(
                settings.secret_key, settings.token_ttl_seconds, revocations
            ),
            metrics=metrics,
            live_sockets=live_sockets,
            access_fence=access_fence,
            rate_limiter=rate_limiter,
            read_groups=ReadGroups(
                read_sessions,
                lambda: access_fence.clock,
                lambda: feed.hubs.watermark.value,
                kept_snapshots,
            ),
            kept_snapshots=kept_snapshots,
        )
