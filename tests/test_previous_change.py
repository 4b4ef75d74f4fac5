"""The change-log write's `previous` (subscriptions.changelog, PostgreSQL): per change
and user, the user's change right before it, which the relay's wake-up carries with the
change (subscriptions.wakeups) so that a subscriber at that position needs no log read.
It must hold under concurrent writers (a writer that waited for the commit-order lock
sees what committed meanwhile), and be left out where it cannot be trusted or costs
too much."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models.realtime import RecordKey
from subscriptions.backends import _Gap
from subscriptions.broker import broker_from_url
from subscriptions.changelog import PREVIOUS_LIMIT, changes_since, record_changes
from subscriptions.changes import Change, ChangeOp, user_channel
from subscriptions.relay import Relay
from subscriptions.wakeups import Wakeup, decode_wakeup

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

TIMEOUT = 10.0


def change(record: int, users: set[int]) -> Change:
    return Change(RecordKey("Card", record), ChangeOp.UPDATED, 2, set(users))


async def write(session: AsyncSession, changes: Sequence[Change]) -> None:
    await session.run_sync(lambda sync: record_changes(sync, changes))


async def committed(engine: AsyncEngine, *changes: Change) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await write(session, changes)


async def test_each_users_previous_change_is_the_one_right_before(engine: AsyncEngine) -> None:
    first, second = change(1, {1, 2}), change(2, {2, 3})
    await committed(engine, first)
    await committed(engine, second)
    # Two changes for user 1 in one transaction: the later one's previous is the other.
    third, fourth, nobody = change(3, {1}), change(4, {1, 3}), change(5, set())
    await committed(engine, third, nobody, fourth)
    assert first.previous == {1: 0, 2: 0}  # (nobody had a change before)
    assert second.previous == {2: first.change_id, 3: 0}
    assert third.previous == {1: first.change_id}
    assert fourth.previous == {1: third.change_id, 3: second.change_id}
    assert nobody.change_id is None
    assert nobody.previous == {}


async def test_a_writer_that_waited_for_the_lock_sees_what_committed_meanwhile(
    engine: AsyncEngine,
) -> None:
    """The second writer's statement starts (and takes its snapshot) before the first
    one commits; it then waits for the commit-order lock. Its previous must still be the
    first writer's change: a subquery in the statement would not see it, and a
    subscriber at the position before would skip that change."""
    earlier, later = change(10, {7}), change(11, {7})
    async with AsyncSession(engine) as first, first.begin():
        await write(first, [earlier])  # holds the lock until COMMIT

        async def second_writer() -> None:
            await committed(engine, later)

        waiting = asyncio.create_task(second_writer())
        async with asyncio.timeout(TIMEOUT), engine.connect() as observer:
            while not await observer.scalar(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ):
                await observer.rollback()  # a fresh snapshot of pg_locks next time
                await asyncio.sleep(0.01)
        assert not waiting.done()
    await asyncio.wait_for(waiting, TIMEOUT)
    assert earlier.change_id is not None
    assert later.change_id is not None
    assert later.change_id > earlier.change_id
    assert later.previous == {7: earlier.change_id}


async def test_large_audiences_and_other_isolation_levels_get_no_previous(
    engine: AsyncEngine,
) -> None:
    at_limit = change(20, set(range(1, PREVIOUS_LIMIT + 1)))
    beyond = change(21, set(range(1, PREVIOUS_LIMIT + 2)))
    await committed(engine, at_limit)
    await committed(engine, beyond)
    assert at_limit.previous == dict.fromkeys(range(1, PREVIOUS_LIMIT + 1), 0)
    assert beyond.previous == {}
    # Under REPEATABLE READ the lookup's snapshot is the transaction's, taken before
    # the lock: it would miss a change committed meanwhile, so nothing is claimed.
    repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
    in_snapshot = change(22, {1})
    async with AsyncSession(repeatable) as session, session.begin():
        await write(session, [in_snapshot])
    assert in_snapshot.change_id is not None
    assert in_snapshot.previous == {}


async def test_the_relays_wake_up_carries_the_change_as_the_log_has_it(
    engine: AsyncEngine, redis_url: str
) -> None:
    before, carried, crowd = change(30, {4}), change(31, {4, 5}), change(32, set(range(100, 200)))
    await committed(engine, before)
    await committed(engine, carried)
    await committed(engine, crowd)
    broker = broker_from_url(redis_url)
    await broker.connect()
    relay = Relay(broker, engine, timedelta(days=1))
    await relay.start()
    received: dict[int, asyncio.Future[str]] = {
        user: asyncio.get_running_loop().create_future() for user in (4, 5, 100)
    }

    def first_message(user: int) -> Callable[[str | _Gap], None]:
        def keep(message: str | _Gap) -> None:
            if isinstance(message, str) and not received[user].done():
                received[user].set_result(message)

        return keep

    try:
        async with (
            broker.listen(user_channel(4), first_message(4)),
            broker.listen(user_channel(5), first_message(5)),
            broker.listen(user_channel(100), first_message(100)),
        ):
            relay.submit([carried, crowd])
            messages = {u: await asyncio.wait_for(f, TIMEOUT) for u, f in received.items()}
    finally:
        await relay.stop()
        await broker.disconnect()
    async with engine.connect() as connection:
        (logged,) = await changes_since(connection, 4, before.change_id or 0, 10)
    assert decode_wakeup(messages[4]) == Wakeup(logged.id, logged, before.change_id or 0)
    assert decode_wakeup(messages[5]) == Wakeup(logged.id, logged, 0)
    # Beyond PREVIOUS_LIMIT users: only the id, the subscribers read the log.
    assert decode_wakeup(messages[100]) == Wakeup(crowd.change_id or 0)
