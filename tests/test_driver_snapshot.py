"""models.driver_snapshot: a delivery's snapshot on asyncpg directly gives the rows an
AsyncSession would (the same records, the same column types), sees one snapshot, refuses
statements it cannot answer like a session, and always gives its connection back to
the pool with no transaction open. SharedReads uses it on PostgreSQL, sessions on SQLite."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import bindparam, inspect, literal, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import models
from models.database import create_engine, create_sessionmakers
from models.driver_snapshot import DriverSnapshot, DriverWrite
from schema.loaders import (
    _boards_memberships,
    _by_ids,
    _grouped_by,
    _memberships_of_users_on_boards,
    _peer_memberships,
)
from schema.mutations.common import LOCKED_WITH_ROLE
from schema.shared_reads import SessionSnapshot, open_snapshot

# Every test runs on PostgreSQL (conftest's `engine` on the emptied run database).
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


async def two_members_and_a_comment(engine: AsyncEngine) -> dict[str, int]:
    _, write_sessions = create_sessionmakers(engine)
    async with write_sessions() as session, session.begin():
        ada = models.User(email="ada@example.com", name="Ada", password_hash="-", version=1)
        bob = models.User(email="bob@example.com", name="Bob", password_hash="-", version=1)
        session.add_all([ada, bob])
        await session.flush()
        board = models.Board(name="Roadmap", owner_id=ada.id, version=1)
        session.add(board)
        await session.flush()
        session.add_all(
            [
                models.Membership(
                    board_id=board.id, user_id=ada.id, role=models.Role.OWNER, version=1
                ),
                models.Membership(
                    board_id=board.id, user_id=bob.id, role=models.Role.VIEWER, version=1
                ),
            ]
        )
        card = models.Card(
            board_id=board.id, title="Ship", position=1.5, author_id=ada.id, version=1
        )
        session.add(card)
        await session.flush()
        comment = models.Comment(card_id=card.id, author_id=bob.id, body="Soon", version=1)
        session.add(comment)
        await session.flush()
        return {"ada": ada.id, "bob": bob.id, "board": board.id, "card": card.id}


async def no_connection_out_nor_transaction_open(engine: AsyncEngine) -> None:
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    raw = await engine.raw_connection()
    try:
        assert not raw.driver_connection.is_in_transaction()  # type: ignore[union-attr]
    finally:
        raw.close()


def columns_of(record: Any) -> dict[str, Any]:
    mapper = inspect(type(record))
    return {attribute.key: getattr(record, attribute.key) for attribute in mapper.column_attrs}


def by_id(columns: dict[str, Any]) -> int:
    return int(columns["id"])


async def test_records_and_memberships_come_as_a_session_gives_them(engine: AsyncEngine) -> None:
    ids = await two_members_and_a_comment(engine)
    read_sessions, _ = create_sessionmakers(engine)
    membership_statements = [
        (_boards_memberships(), {"keys": [ids["board"]]}),
        (_memberships_of_users_on_boards(), {"users": [ids["bob"]], "boards": [ids["board"]]}),
        (_peer_memberships(), {"users": [ids["ada"]], "involved": [ids["ada"], ids["bob"]]}),
    ]
    snapshot = await DriverSnapshot.open(engine)
    try:
        async with read_sessions() as session:
            for model in (models.User, models.Board, models.Membership, models.Card):
                keys = {"keys": [1, 2, 3, 4]}
                expected = (await session.execute(_by_ids(model), keys)).all()
                found = await snapshot.rows(_by_ids(model), keys)
                assert expected, model
                assert sorted((columns_of(r) for (r,) in found), key=by_id) == sorted(
                    (columns_of(r) for (r,) in expected), key=by_id
                ), model
                assert all(type(r) is model for (r,) in found)
            comments = _grouped_by(models.Comment, models.Comment.card_id, models.Comment.id)
            expected = (await session.execute(comments, {"keys": [ids["card"]]})).all()
            found = await snapshot.rows(comments, {"keys": [ids["card"]]})
            assert [columns_of(r) for (r,) in found] == [columns_of(r) for (r,) in expected]
            for statement, parameters in membership_statements:
                expected = (await session.execute(statement, parameters)).all()
                assert sorted(await snapshot.rows(statement, parameters)) == sorted(expected)
                assert expected
    finally:
        await snapshot.close()
    # The column types' conversions applied: an aware UTC timestamp, the role enum.
    snapshot = await DriverSnapshot.open(engine)
    try:
        ((board,),) = await snapshot.rows(_by_ids(models.Board), {"keys": [ids["board"]]})
        roles = await snapshot.rows(_boards_memberships(), {"keys": [ids["board"]]})
    finally:
        await snapshot.close()
    assert board.created_at.tzinfo is UTC
    assert {role for _, _, role in roles} == {models.Role.OWNER, models.Role.VIEWER}
    assert all(type(role) is models.Role for _, _, role in roles)


async def test_reads_one_snapshot_until_closed(engine: AsyncEngine) -> None:
    ids = await two_members_and_a_comment(engine)
    cards = _by_ids(models.Card)
    snapshot = await DriverSnapshot.open(engine)
    try:
        ((card,),) = await snapshot.rows(cards, {"keys": [ids["card"]]})
        async with engine.begin() as connection:
            await connection.execute(update(models.Card).values(title="Shipped"))
        ((again,),) = await snapshot.rows(cards, {"keys": [ids["card"]]})
        assert (card.title, again.title) == ("Ship", "Ship")
    finally:
        await snapshot.close()
    snapshot = await DriverSnapshot.open(engine)
    try:
        ((card,),) = await snapshot.rows(cards, {"keys": [ids["card"]]})
        assert card.title == "Shipped"
    finally:
        await snapshot.close()


async def test_connection_goes_back_without_a_transaction_even_after_an_error(
    engine: AsyncEngine,
) -> None:
    await two_members_and_a_comment(engine)
    users = models.User.__table__
    failing = select(users.c.id).where(users.c.id / literal(0) > 0)
    snapshot = await DriverSnapshot.open(engine)
    with pytest.raises(DBAPIError, match="division by zero"):
        await snapshot.rows(failing, {})
    await snapshot.close()
    await no_connection_out_nor_transaction_open(engine)


async def test_refuses_what_it_cannot_answer_as_a_session_would(engine: AsyncEngine) -> None:
    snapshot = await DriverSnapshot.open(engine)
    try:
        with pytest.raises(TypeError, match=re.escape("select(Model), select(Model, column, ...)")):
            await snapshot.rows(select(models.User.id + 1), {})
        with pytest.raises(TypeError):
            await snapshot.rows(select(models.User, models.Board), {})
        with pytest.raises(TypeError):
            await snapshot.rows(select(models.User, models.Board.id + 1), {})
    finally:
        await snapshot.close()


async def snapshot_kind(sessions: async_sessionmaker[AsyncSession]) -> type:
    snapshot = await open_snapshot(sessions)
    await snapshot.close()
    return type(snapshot)


async def test_shared_reads_use_it_on_postgresql_only(engine: AsyncEngine, sqlite_url: str) -> None:
    read_sessions, _ = create_sessionmakers(engine)
    assert await snapshot_kind(read_sessions) is DriverSnapshot
    sqlite = create_engine(sqlite_url)
    try:
        assert await snapshot_kind(create_sessionmakers(sqlite)[0]) is SessionSnapshot
    finally:
        await sqlite.dispose()


async def test_a_record_with_a_column_comes_as_a_session_gives_it(engine: AsyncEngine) -> None:
    ids = await two_members_and_a_comment(engine)
    read_sessions, _ = create_sessionmakers(engine)
    statement = LOCKED_WITH_ROLE[(models.Card, False)]
    parameters = {"pk": ids["card"], "viewer_id": ids["bob"]}
    async with read_sessions() as session:
        ((expected_card, expected_role),) = (await session.execute(statement, parameters)).all()
    write = await DriverWrite.open(engine)
    try:
        ((card, role),) = await write.rows(statement, parameters)
    finally:
        await write.close()
    assert type(card) is models.Card
    assert columns_of(card) == columns_of(expected_card)
    assert role is expected_role is models.Role.VIEWER


async def test_a_driver_write_commits_or_rolls_back_and_gives_its_connection_back(
    engine: AsyncEngine,
) -> None:
    ids = await two_members_and_a_comment(engine)
    cards = models.Card.__table__
    rename = (
        update(cards)
        .where(cards.c.id == bindparam("pk"))
        .values(title=bindparam("new_title"))
        .returning(cards.c.version, cards.c.title)
    )

    async def title() -> str:
        snapshot = await DriverSnapshot.open(engine)
        try:
            ((value,),) = await snapshot.rows(select(cards.c.title), {})
        finally:
            await snapshot.close()
        return str(value)

    write = await DriverWrite.open(engine)
    try:
        assert await write.execute(rename, {"pk": ids["card"], "new_title": "Kept"}) == [
            (1, "Kept")
        ]
        await write.commit()
    finally:
        await write.close()
    assert await title() == "Kept"
    # Closed without a commit (an error half-way): nothing of it stays.
    write = await DriverWrite.open(engine)
    try:
        await write.execute(rename, {"pk": ids["card"], "new_title": "Dropped"})
    finally:
        await write.close()
    assert await title() == "Kept"
    await no_connection_out_nor_transaction_open(engine)
    # RETURNING an expression: refused (no column type to convert it with).
    write = await DriverWrite.open(engine)
    try:
        with pytest.raises(TypeError, match="returns table columns"):
            await write.execute(update(cards).returning(cards.c.version + 1), {})
    finally:
        await write.close()
