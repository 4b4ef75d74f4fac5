"""models.keys.in_keys: `column IN (keys)` with the keys as one execution parameter. It
selects what an IN list would on both databases; on PostgreSQL the statement text (so
its prepared statement) is the same whatever the number of keys; on SQLite the lookup
still uses the index."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from models import change_log, utcnow
from models.database import create_engine
from models.keys import in_keys

BY_IDS = select(change_log.c.id).where(in_keys(change_log.c.id, "keys")).order_by(change_log.c.id)


async def ten_changes(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(change_log),
            [
                {
                    "id": i,
                    "committed_at": utcnow(),
                    "typename": "Card",
                    "record_id": i,
                    "op": "UPDATED",
                    "version": 1,
                }
                for i in range(1, 11)
            ],
        )


@pytest.mark.parametrize(
    ("keys", "found"),
    [
        ([], []),
        ([3], [3]),
        ([9, 2, 5], [2, 5, 9]),
        ([4, 4, 42], [4]),
        (list(range(1, 11)), list(range(1, 11))),
    ],
)
async def test_selects_what_an_in_list_would(
    engine: AsyncEngine, keys: list[int], found: list[int]
) -> None:
    await ten_changes(engine)
    async with engine.connect() as connection:
        assert (await connection.scalars(BY_IDS, {"keys": keys})).all() == found


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_prepares_one_statement_whatever_the_number_of_keys(
    database_url: str,
) -> None:
    """An expanding IN has a text per number of keys: asyncpg would prepare each (a
    round trip, and a plan) and keep each in its statement cache."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)  # one connection
    try:
        await ten_changes(engine)
        async with engine.connect() as connection:
            for count in range(1, 7):
                rows = await connection.scalars(BY_IDS, {"keys": list(range(1, count + 1))})
                assert len(rows.all()) == count
            prepared = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_prepared_statements"
                    " WHERE statement LIKE '%FROM change_log%'"
                    " AND statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
    finally:
        await engine.dispose()
    assert prepared == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_looks_the_keys_up_in_the_index(engine: AsyncEngine) -> None:
    """SQLite has no arrays: it gets the expanding IN, as a comparison (a boolean
    expression compared with 1 would be answered by scanning the table)."""
    await ten_changes(engine)
    sent: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM change_log" in statement:
            sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", remember)
    async with engine.connect() as connection:
        await connection.scalars(BY_IDS, {"keys": [2, 3]})
        ((statement, parameters),) = sent
        plan = (
            await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ).all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH change_log" in details, details
    assert "SCAN change_log" not in details, details
