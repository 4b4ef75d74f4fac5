"""The PostgreSQL connection pool checks a connection before handing it out (one round
trip), so connections PostgreSQL dropped (a restart, an idle timeout, an administrator)
cost no request an error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from models.database import create_engine


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def own_database(postgres_url: str) -> AsyncIterator[tuple[str, Any]]:
    """A throwaway database, so that killing its connections disturbs nothing else;
    with an admin connection to do the killing."""
    name = f"commitcast_pool_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url), timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False), admin
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)


async def test_connections_postgresql_dropped_are_replaced_without_an_error(
    own_database: tuple[str, Any],
) -> None:
    url, admin = own_database
    engine = create_engine(url)
    try:
        # Two pooled connections, both idle in the pool.
        async def hold() -> int:
            async with engine.connect() as connection:
                await asyncio.sleep(0.05)
                return int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)

        before = set(await asyncio.gather(hold(), hold()))
        assert len(before) == 2
        name = make_url(url).database
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        # Every request after the drop succeeds, on new connections.
        after = set(await asyncio.gather(hold(), hold()))
        assert after.isdisjoint(before)
        assert await backend_pid(engine) not in before
    finally:
        await engine.dispose()
