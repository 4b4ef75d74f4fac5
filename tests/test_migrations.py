"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from models import Base
from models.database import create_engine


def differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    with warnings.catch_warnings():
        # SQLite cannot reflect the lower(email) expression index, and says so; that one
        # index is checked by test_auth (case-insensitive uniqueness) instead.
        warnings.simplefilter("ignore")
        diffs: list[Any] = compare_metadata(context, Base.metadata)
    return diffs


async def test_migrated_database_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()
