"""Change capture at the session level, on both databases: what a transaction publishes,
and when."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

import models
from app.runtime import Runtime
from models.realtime import RecordKey
from subscriptions.capture import SINK_KEY, BulkWriteRefused, CapturingSession
from subscriptions.changes import Change, ChangeOp
from tests.support import password_hash


@dataclass
class ListSink:
    """A ChangeSink that keeps each committed batch."""

    batches: list[list[Change]] = field(default_factory=list)

    def submit(self, changes: list[Change]) -> None:
        self.batches.append(changes)

    def summary(self) -> list[set[tuple[str, int, ChangeOp]]]:
        return [{(c.key.typename, c.key.id, c.op) for c in batch} for batch in self.batches]


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def sessions(runtime: Runtime, sink: ListSink) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        runtime.engine,
        sync_session_class=CapturingSession,
        info={SINK_KEY: sink},
        expire_on_commit=False,
    )


@dataclass
class World:
    ann: models.User
    bob: models.User
    dan: models.User
    board: models.Board


@pytest.fixture
async def world(sessions: async_sessionmaker[AsyncSession], sink: ListSink) -> World:
    async with sessions() as session, session.begin():
        ann, bob, dan = (
            models.User(email=f"{n}@example.com", name=n, password_hash=password_hash())
            for n in ("ann", "bob", "dan")
        )
        session.add_all([ann, bob, dan])
        board = models.Board(name="Plans", owner_id=0)
        await session.flush()
        board.owner_id = ann.id
        session.add(board)
        session.add(models.Membership(board=board, user_id=ann.id, role=models.Role.OWNER))
        session.add(models.Membership(board=board, user_id=bob.id, role=models.Role.EDITOR))
    sink.batches.clear()
    return World(ann, bob, dan, board)


def card_for(world: World, title: str = "Card") -> models.Card:
    return models.Card(
        board_id=world.board.id,
        title=title,
        description="",
        position=1.0,
        done=False,
        author_id=world.ann.id,
    )


async def committed_card(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> int:
    """A card on the world's board, committed, its changes cleared from the sink."""
    async with sessions() as session, session.begin():
        card = card_for(world)
        session.add(card)
    sink.batches.clear()
    return card.id


async def edit_card(
    sessions: async_sessionmaker[AsyncSession], card_id: int, **values: object
) -> None:
    async with sessions() as session, session.begin():
        card = await session.get(models.Card, card_id)
        assert card is not None
        for name, value in values.items():
            setattr(card, name, value)


async def test_create_publishes_after_commit_to_the_members_with_the_parent(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        card = card_for(world)
        session.add(card)
        await session.flush()
        assert sink.batches == [], "nothing may be published before COMMIT"
    assert sink.summary() == [
        {("Card", card.id, ChangeOp.CREATED), ("Board", world.board.id, ChangeOp.UPDATED)}
    ]
    (card_change, board_change) = sink.batches[0]
    assert card_change.key == RecordKey("Card", card.id), "children before their parents"
    assert card_change.audience == {world.ann.id, world.bob.id}
    assert board_change.audience == {world.ann.id, world.bob.id}
    assert card_change.version == 1


async def test_several_writes_to_one_record_give_one_change(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    card_id = await committed_card(sessions, sink, world)
    async with sessions() as session, session.begin():
        card = await session.get(models.Card, card_id)
        assert card is not None
        card.title = "Two"
        await session.flush()
        card.title = "Three"
        await session.flush()
        card.done = True
    assert sink.summary() == [{("Card", card.id, ChangeOp.UPDATED)}]
    assert sink.batches[0][0].version == 4


async def test_moving_a_card_also_announces_its_board_and_renaming_it_does_not(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    # A card's position orders its board's card list (realtime_parent_attributes).
    card_id = await committed_card(sessions, sink, world)
    await edit_card(sessions, card_id, position=2.0)
    await edit_card(sessions, card_id, title="Renamed")
    assert sink.summary() == [
        {("Card", card_id, ChangeOp.UPDATED), ("Board", world.board.id, ChangeOp.UPDATED)},
        {("Card", card_id, ChangeOp.UPDATED)},
    ]


async def test_created_then_deleted_in_one_transaction_is_never_announced(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        card = card_for(world)
        session.add(card)
        await session.flush()
        await session.delete(card)
    assert ("Card", card.id, ChangeOp.CREATED) not in set().union(*sink.summary())
    assert ("Card", card.id, ChangeOp.DELETED) not in set().union(*sink.summary())


async def test_rollback_publishes_nothing(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        session.add(card_for(world))
        await session.flush()
        await session.rollback()

    async def fail_after_flush() -> None:
        async with sessions() as session, session.begin():
            session.add(card_for(world))
            await session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_after_flush()
    assert sink.batches == []


async def test_rolled_back_savepoint_publishes_only_the_committed_part(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        kept = card_for(world, "kept")
        session.add(kept)
        await session.flush()
        kept_id = kept.id

        async def dropped_savepoint() -> None:
            async with session.begin_nested():
                session.add(card_for(world, "dropped"))
                kept.title = "changed inside the dropped savepoint"
                await session.flush()
                raise RuntimeError("roll this savepoint back")

        with pytest.raises(RuntimeError):
            await dropped_savepoint()
        async with session.begin_nested():
            released = card_for(world, "released")
            session.add(released)
    published = sink.summary()
    assert published == [
        {
            ("Card", kept_id, ChangeOp.CREATED),
            ("Card", released.id, ChangeOp.CREATED),
            ("Board", world.board.id, ChangeOp.UPDATED),
        }
    ]


async def test_deleting_a_board_announces_every_child_to_the_members_it_had(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        card = card_for(world)
        session.add(card)
        await session.flush()
        comment = models.Comment(card_id=card.id, author_id=world.bob.id, body="hi")
        session.add(comment)
    sink.batches.clear()
    async with sessions() as session, session.begin():
        board = await session.scalar(
            select(models.Board)
            .where(models.Board.id == world.board.id)
            .options(
                selectinload(models.Board.memberships),
                selectinload(models.Board.cards).selectinload(models.Card.comments),
            )
        )
        assert board is not None
        memberships = [m.id for m in board.memberships]
        await session.delete(board)
    (batch,) = sink.batches
    assert {(c.key.typename, c.key.id, c.op) for c in batch} == {
        ("Board", world.board.id, ChangeOp.DELETED),
        ("Card", card.id, ChangeOp.DELETED),
        ("Comment", comment.id, ChangeOp.DELETED),
        *{("Membership", m, ChangeOp.DELETED) for m in memberships},
    }
    assert all(c.audience == {world.ann.id, world.bob.id} for c in batch)


async def test_a_removed_member_is_told_and_a_new_member_is_included(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        joined = models.Membership(
            board_id=world.board.id, user_id=world.dan.id, role=models.Role.VIEWER
        )
        session.add(joined)
    assert all(world.dan.id in c.audience for c in sink.batches[0])
    sink.batches.clear()
    async with sessions() as session, session.begin():
        leaving = await session.get(models.Membership, joined.id)
        assert leaving is not None
        await session.delete(leaving)
    (batch,) = sink.batches
    assert [(c.key.typename, c.op) for c in batch] == [
        ("Membership", ChangeOp.DELETED),
        ("Board", ChangeOp.UPDATED),
    ]
    assert all(c.audience == {world.ann.id, world.bob.id, world.dan.id} for c in batch)


async def test_audiences_of_every_flush_count_including_the_last_one_before_commit(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    """Bob sees the card's first edit (flushed while he was a member), so he hears of
    the change; the last flush (whose audience the change-log write reads on
    PostgreSQL) finds him gone and a new member there."""
    card_id = await committed_card(sessions, sink, world)
    async with sessions() as session, session.begin():
        edited = await session.get(models.Card, card_id)
        assert edited is not None
        edited.title = "first"
        await session.flush()
        membership = await session.scalar(
            select(models.Membership).where(models.Membership.user_id == world.bob.id)
        )
        assert membership is not None
        await session.delete(membership)
        await session.flush()
        edited.title = "second"
        session.add(
            models.Membership(
                board_id=world.board.id, user_id=world.dan.id, role=models.Role.VIEWER
            )
        )
    (batch,) = sink.batches
    audiences = {(c.key.typename, c.key.id): c.audience for c in batch}
    assert audiences[("Card", card_id)] == {world.ann.id, world.bob.id, world.dan.id}
    assert all(c.change_id is not None for c in batch)


async def test_a_user_change_reaches_the_user_and_everyone_sharing_a_board(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        bob = await session.get(models.User, world.bob.id)
        assert bob is not None
        bob.name = "Robert"
    (batch,) = sink.batches
    assert [(c.key, c.op, c.audience) for c in batch] == [
        (RecordKey("User", world.bob.id), ChangeOp.UPDATED, {world.ann.id, world.bob.id})
    ]


async def test_bulk_update_and_delete_are_refused_not_silently_skipped(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    async with sessions() as session, session.begin():
        with pytest.raises(BulkWriteRefused, match="bulk UPDATE on Card"):
            await session.execute(update(models.Card).values(done=True))
    async with sessions() as session, session.begin():
        with pytest.raises(BulkWriteRefused, match="bulk DELETE on Comment"):
            await session.execute(delete(models.Comment))
    # Whichever way the statement enters the session.
    returning_ids = update(models.Card).values(done=True).returning(models.Card.id)
    async with sessions() as session, session.begin():
        with pytest.raises(BulkWriteRefused, match="bulk UPDATE on Card"):
            await session.scalars(returning_ids)
        with pytest.raises(BulkWriteRefused, match="bulk UPDATE on Card"):
            await session.scalar(returning_ids)
        with pytest.raises(BulkWriteRefused, match="bulk DELETE on Card"):
            await session.run_sync(lambda sync: sync.execute(delete(models.Card)))
    assert sink.batches == []


async def test_core_statements_on_tables_and_plain_reads_are_not_refused(
    sessions: async_sessionmaker[AsyncSession], sink: ListSink, world: World
) -> None:
    # As before: only ORM bulk writes are refused (a Core statement names no model).
    async with sessions() as session, session.begin():
        await session.execute(
            update(models.Card.__table__).where(models.Card.__table__.c.id == -1).values(done=True)
        )
        assert await session.scalar(select(models.Card.id).where(models.Card.id == -1)) is None
