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
from app.settings import Settings
from models import deployment_id
from models.database import create_engine, create_sessionmakers, is_sqlite
from models.migrate import upgrade
from subscriptions.broker import Broker, broker_from_url
from subscriptions.capture import SINK_KEY, CapturingSession
from subscriptions.feed import UpdateFeed
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


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    if settings.uses_development_secret:
        logger.warning(
            "SECRET_KEY is not set: using the public development key. Anyone can forge "
            "tokens for this server. Set SECRET_KEY before exposing it to anyone."
        )
    if is_sqlite(settings.database_url):
        _ensure_sqlite_directory(settings.database_url)
    async with AsyncExitStack() as stack:
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        await upgrade(engine)
        # Channels are namespaced by the deployment (one id per database), so that
        # deployments sharing one Redis never receive each other's notices.
        broker = broker_from_url(
            settings.broker_url, namespace=f"commitcast:{await deployment_id(engine)}"
        )
        await broker.connect()
        stack.push_async_callback(broker.disconnect)
        relay = Relay(broker, engine, timedelta(seconds=settings.change_log_retention_seconds))
        await relay.start()
        stack.push_async_callback(relay.stop)
        # Every session the app opens captures changes to Realtime models and hands
        # them to the relay after the outermost commit.
        read_sessions, write_sessions = create_sessionmakers(
            engine, sync_session_class=CapturingSession, info={SINK_KEY: relay}
        )
        yield Runtime(
            settings=settings,
            engine=engine,
            read_sessions=read_sessions,
            write_sessions=write_sessions,
            broker=broker,
            relay=relay,
            feed=UpdateFeed(broker, engine),
            authenticator=Authenticator(settings.secret_key, settings.token_ttl_seconds),
        )
