"""Alembic environment.

The app runs migrations itself at start (models.migrate.upgrade) and hands its own
connection in `config.attributes["connection"]`. The `alembic` command line (for
writing new revisions) connects with DATABASE_URL instead.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from models import Base
from models.database import create_engine

target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_environment() -> None:
    url = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./commitcast.db")
    engine = create_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(run_with_connection)
        await connection.commit()
    await engine.dispose()


provided = context.config.attributes.get("connection")
if provided is not None:
    run_with_connection(provided)
else:
    asyncio.run(run_from_environment())
