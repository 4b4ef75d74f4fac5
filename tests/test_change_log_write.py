"""Writing the change log (subscriptions.changelog.record_changes), on both databases:
ids follow the order of the changes, every change has its audience rows; on PostgreSQL
the one-statement write resolves pending audiences and concurrent writers never leave a
hole a reader could skip; a change and its audience come and go together."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import models
from models import change_audience, change_log
from models.database import create_engine
from models.realtime import BoardAudience, RecordKey, UserAudience
from subscriptions.changelog import _write_postgresql_on_driver, record_changes, trim
from subscriptions.changes import Change, ChangeOp
from tests.support import driver_statements


def some_changes(first_record: int, count: int) -> list[Change]:
    """Children before parents, as capture orders them; versions and audiences vary."""
    return [
        Change(
            RecordKey("Card" if i < count - 1 else "Board", first_record + i),
            [ChangeOp.CREATED, ChangeOp.UPDATED, ChangeOp.DELETED][i % 3],
            None if i % 2 else i + 1,
            {(first_record + i + u) % 7 + 1 for u in range(i % 3 + 1)},
        )
        for i in range(count)
    ]


async def write(session: AsyncSession, changes: Sequence[Change]) -> list[int]:
    await session.run_sync(lambda sync: record_changes(sync, changes))
    ids = [c.change_id for c in changes]
    assert None not in ids
    return [i for i in ids if i is not None]


# On PostgreSQL the write runs on asyncpg directly inside the transaction the driver has
# open (what capture sees: its flush has run statements), and through SQLAlchemy, which
# begins one, when nothing has run yet. Both must write the same.
@pytest.mark.parametrize("started", [True, False], ids=["transaction-started", "nothing-run-yet"])
async def test_ids_follow_the_order_of_the_changes_with_their_audience(
    engine: AsyncEngine, started: bool
) -> None:
    changes = some_changes(100, 5)
    on_driver: list[str] = []
    async with (
        driver_statements(engine, on_driver.append),
        AsyncSession(engine) as session,
        session.begin(),
    ):
        if started:
            await session.execute(text("SELECT 1"))
        ids = await write(session, changes)
    assert ids == sorted(set(ids))
    on_the_driver = started and engine.dialect.name == "postgresql"
    assert len(on_driver) == (1 if on_the_driver else 0)
    assert all("INSERT INTO change_log" in statement for statement in on_driver)
    async with engine.connect() as connection:
        logged = {
            row.id: row
            for row in await connection.execute(select(change_log).where(change_log.c.id.in_(ids)))
        }
        audience = {
            (change_id, user_id)
            for change_id, user_id in await connection.execute(
                select(change_audience.c.change_id, change_audience.c.user_id)
            )
        }
    for change, change_id in zip(changes, ids, strict=True):
        row = logged[change_id]
        assert (row.typename, row.record_id, row.op, row.version) == (
            change.key.typename,
            change.key.id,
            change.op.value,
            change.version,
        )
        assert row.committed_at == change.committed_at
        assert {u for c, u in audience if c == change_id} == change.audience


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_one_statement_write_uses_the_sequence_of_change_log_id(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        sequence = await connection.scalar(
            text("SELECT pg_get_serial_sequence('change_log', 'id')")
        )
    assert sequence == "public.change_log_id_seq"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_concurrent_writers_leave_no_hole_for_a_reader_on_postgresql(
    engine: AsyncEngine,
) -> None:
    """Writers that take their ids and then linger before COMMIT, racing each other,
    while a reader follows "ids after my cursor": it must see every id."""
    writers, per_writer = 12, 4
    committed: list[list[int]] = []
    done = asyncio.Event()

    async def writer(n: int) -> None:
        changes = some_changes(1000 * (n + 1), per_writer)
        async with AsyncSession(engine) as session, session.begin():
            ids = await write(session, changes)
            await asyncio.sleep(random.uniform(0, 0.05))
        committed.append(ids)

    async def reader() -> list[int]:
        seen: list[int] = []
        async with engine.connect() as connection:
            while True:
                finished = done.is_set()
                after = seen[-1] if seen else 0
                rows = await connection.execute(
                    select(change_log.c.id).where(change_log.c.id > after).order_by(change_log.c.id)
                )
                await connection.commit()  # a fresh snapshot next time
                seen.extend(rows.scalars())
                if finished:
                    return seen
                await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    for _ in range(3):  # several rounds: writers start together each time
        await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    seen = await reading
    for ids in committed:
        # Consecutive and in input order: nobody else took ids while the lock was held.
        assert ids == list(range(ids[0], ids[0] + per_writer))
    assert seen == sorted(i for ids in committed for i in ids)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_pending_audiences_are_resolved_in_the_write_and_nobody_means_no_row(
    engine: AsyncEngine,
) -> None:
    """On PostgreSQL the write reads the memberships itself (Change.pending): a board's
    members, a user and their board peers; a change that concerns nobody is skipped."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        ann, bob, cid, dan = (
            models.User(email=f"{n}@example.com", name=n, password_hash="-")
            for n in ("ann", "bob", "cid", "dan")
        )
        session.add_all([ann, bob, cid, dan])
        await session.flush()
        shared, empty = (
            models.Board(name="Shared", owner_id=ann.id),
            models.Board(name="Empty", owner_id=ann.id),
        )
        session.add_all([shared, empty])
        await session.flush()
        session.add_all(
            models.Membership(board_id=shared.id, user_id=user.id, role=models.Role.EDITOR)
            for user in (ann, bob)
        )
    changes = [
        Change(RecordKey("Card", 1), ChangeOp.UPDATED, 2, pending={BoardAudience(shared.id)}),
        Change(RecordKey("Card", 2), ChangeOp.UPDATED, 2, pending={BoardAudience(empty.id)}),
        Change(RecordKey("User", ann.id), ChangeOp.UPDATED, 3, pending={UserAudience(ann.id)}),
        Change(RecordKey("User", dan.id), ChangeOp.UPDATED, 3, pending={UserAudience(dan.id)}),
        Change(
            RecordKey("Board", shared.id),
            ChangeOp.UPDATED,
            None,
            {cid.id},
            pending={BoardAudience(shared.id), BoardAudience(empty.id)},
        ),
    ]
    async with AsyncSession(engine) as session, session.begin():
        await session.run_sync(lambda sync: record_changes(sync, changes))
    assert [c.audience for c in changes] == [
        {ann.id, bob.id},
        set(),  # nobody is a member: not written
        {ann.id, bob.id},
        {dan.id},  # the user themself, sharing no board
        {ann.id, bob.id, cid.id},
    ]
    assert all(not c.pending for c in changes)
    assert changes[1].change_id is None
    ids = [c.change_id for c in changes if c.change_id is not None]
    assert len(ids) == 4
    assert ids == list(range(ids[0], ids[0] + 4))  # in input order, no gap for the skipped
    async with engine.connect() as connection:
        logged = set(
            await connection.scalars(select(change_log.c.id).where(change_log.c.id.in_(ids)))
        )
        audience_rows = {
            (change_id, user_id)
            for change_id, user_id in await connection.execute(
                select(change_audience.c.change_id, change_audience.c.user_id)
            )
        }
    assert logged == set(ids)
    assert audience_rows == {
        (c.change_id, user) for c in changes if c.change_id is not None for user in c.audience
    }


def relations_scanned(plan: dict[str, Any]) -> set[tuple[str, str]]:
    """(node type, table) for every node of an EXPLAIN (FORMAT JSON) plan that reads a
    table."""
    found: set[tuple[str, str]] = set()
    if "Relation Name" in plan:
        found.add((plan["Node Type"], plan["Relation Name"]))
    for child in plan.get("Plans", []):
        found |= relations_scanned(child)
    return found


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("plan_mode", ["force_generic_plan", "force_custom_plan"])
async def test_the_write_looks_up_pending_audiences_without_reading_all_memberships(
    engine: AsyncEngine, plan_mode: str
) -> None:
    """The members of a pending board and the peers of a pending user are index lookups.
    Run as a prepared statement, the write's plan is soon a generic one, which guesses
    10 rows for each unnest(): written as plain joins, the planner hashed them against
    a scan of every membership, a cost that grows with the table, per change."""
    boards, users = 50, 40
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash, version, created_at, updated_at)"
                " SELECT 'u' || n || '@example.com', 'u' || n, '-', 1, now(), now()"
                " FROM generate_series(1, :users) AS n"
            ),
            {"users": users},
        )
        first_user = await connection.scalar(text("SELECT min(id) FROM users"))
        await connection.execute(
            text(
                "INSERT INTO boards (name, owner_id, version, created_at, updated_at)"
                " SELECT 'b' || n, :owner, 1, now(), now() FROM generate_series(1, :boards) AS n"
            ),
            {"owner": first_user, "boards": boards},
        )
        await connection.execute(
            text(
                "INSERT INTO memberships (board_id, user_id, role, version, created_at,"
                " updated_at) SELECT boards.id, users.id, 'EDITOR', 1, now(), now()"
                " FROM boards CROSS JOIN users"
            )
        )
        await connection.execute(text("ANALYZE memberships"))
        board = await connection.scalar(text("SELECT min(id) FROM boards"))
        statement, names = _write_postgresql_on_driver(connection.dialect)
        literals = {
            "lock_key": "0",
            "typenames": "ARRAY['Card', 'User']",
            "record_ids": "ARRAY[1, 2]",
            "ops": "ARRAY['UPDATED', 'UPDATED']",
            "versions": "ARRAY[2, 2]",
            "committed_at": "now()",
            "audience_ords": "'{}'",
            "audience_users": "'{}'",
            "board_ords": "ARRAY[1]",
            "board_ids": f"ARRAY[{board}]",
            "user_ords": "ARRAY[2]",
            "user_ids": f"ARRAY[{first_user}]",
            "previous_limit": "32",
        }
        await connection.exec_driver_sql(f"SET LOCAL plan_cache_mode = {plan_mode}")
        await connection.exec_driver_sql(f"PREPARE change_log_write AS {statement}")
        try:
            arguments = ", ".join(literals[name] for name in names)
            explained = await connection.exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) EXECUTE change_log_write({arguments})"
            )
            plan = explained.scalar_one()[0]["Plan"]
        finally:
            await connection.exec_driver_sql("DEALLOCATE change_log_write")
    scans = {node for node, table in relations_scanned(plan) if table == "memberships"}
    assert scans, plan  # (the lookups are there)
    assert "Seq Scan" not in scans


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_write_is_planned_once_per_connection(database_url: str) -> None:
    """PostgreSQL would plan the write again at every commit (about 0.6 ms, more than
    running it): for array inputs, a plan made without the values looks dearer than one
    made for them. The engine's connections keep the first generic plan instead."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)  # one connection
    try:
        for n in range(8):  # PostgreSQL weighs its choice after five runs
            changes = [
                Change(RecordKey("Card", n + 1), ChangeOp.UPDATED, 2, {1}),
                Change(RecordKey("Card", n + 2), ChangeOp.UPDATED, 2, {1, 2}),
            ]
            async with AsyncSession(engine) as session, session.begin():
                await session.execute(text("SELECT 1"))  # the write runs on the driver
                await write(session, changes)
        async with engine.connect() as connection:
            plans = (
                await connection.execute(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE '%INSERT INTO change_log%'"
                        " AND statement NOT LIKE '%pg_prepared_statements%'"
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    assert plans.custom_plans == 0
    assert plans.generic_plans == 8


async def test_a_rolled_back_write_leaves_neither_changes_nor_audience(
    engine: AsyncEngine,
) -> None:
    """A change and its audience rows are written together or not at all (there is no
    foreign key between them to fall back on)."""
    async with AsyncSession(engine) as session:
        transaction = await session.begin()
        await write(session, some_changes(300, 4))
        await transaction.rollback()
    async with engine.connect() as connection:
        assert (await connection.execute(select(change_log))).all() == []
        assert (await connection.execute(select(change_audience))).all() == []


async def test_trimming_deletes_the_changes_with_their_audience(engine: AsyncEngine) -> None:
    """Retention removes a change's audience rows itself: nothing cascades from
    change_log any more, and an audience row left behind would outlive its change."""
    async with AsyncSession(engine) as session, session.begin():
        old = await write(session, some_changes(400, 3))
    async with engine.begin() as connection:
        await connection.execute(
            change_log.update().values(committed_at=models.utcnow() - timedelta(hours=2))
        )
    async with AsyncSession(engine) as session, session.begin():
        kept = await write(session, some_changes(500, 2))
    assert await trim(engine, timedelta(hours=1)) == len(old)
    async with engine.connect() as connection:
        assert set(await connection.scalars(select(change_log.c.id))) == set(kept)
        assert set(await connection.scalars(select(change_audience.c.change_id))) == set(kept)
