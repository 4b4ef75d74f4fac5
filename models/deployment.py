"""The deployment's identity: a random id stored in the database at its first migration.

Every process of one deployment shares the database, so they agree on it; another
deployment (another database) has its own. The broker namespaces its channels with it,
so deployments that share a Redis never hear each other.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from models.base import Base

deployment = Table(
    "commitcast_deployment",
    Base.metadata,
    Column("id", String(36), primary_key=True),
    # The highest change-log id that retention has deleted: a resume cursor below it
    # cannot be served (RESYNC).
    Column("trimmed_through", BigInteger, nullable=False, server_default="0"),
)


async def deployment_id(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        value = await conn.scalar(select(deployment.c.id))
    if value is None:
        raise RuntimeError("commitcast_deployment is empty: the database was not migrated")
    return str(value)
