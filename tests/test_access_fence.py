"""The access fence's rules, without a server: admission around an exclusion, waiting
for admitted deliveries, abandoning a stuck one, and the notice to other processes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from subscriptions.broker import broker_from_url
from subscriptions.fence import CLOSE_TRY_AGAIN_LATER, AccessFence
from tests.support import eventually

ANN, BOB = 1, 2


async def test_a_read_that_started_before_the_exclusion_is_refused() -> None:
    fence = AccessFence()
    before = fence.ticket(ANN)
    before.start()
    other_user = fence.ticket(BOB)
    other_user.start()
    await fence.exclude(ANN)
    assert not before.admit()  # read again
    assert other_user.admit()
    other_user.release()
    before.start()  # the second read starts after the exclusion
    assert before.admit()
    before.release()


async def test_a_read_in_a_transaction_older_than_the_exclusion_is_refused() -> None:
    # Subscriptions of one connection share a read session: one may read in a
    # transaction another began before the exclusion.
    fence = AccessFence()
    opened_at = fence.clock
    await fence.exclude(ANN)
    ticket = fence.ticket(ANN)
    ticket.start()
    assert not ticket.admit(snapshot_clock=opened_at)
    assert ticket.admit(snapshot_clock=fence.clock)
    ticket.release()


async def test_exclude_waits_until_admitted_deliveries_are_sent() -> None:
    fence = AccessFence()
    sent = asyncio.Event()
    order: list[str] = []

    async def deliver() -> None:
        with fence.ticket(ANN) as ticket:
            ticket.start()
            assert ticket.admit()
            await sent.wait()  # the send, in progress
            order.append("sent")

    delivery = asyncio.create_task(deliver())
    await asyncio.sleep(0)  # admitted
    exclusion = asyncio.create_task(fence.exclude(ANN))
    await asyncio.sleep(0.05)
    assert not exclusion.done()
    sent.set()
    await exclusion
    order.append("excluded")
    await delivery
    assert order == ["sent", "excluded"]


async def test_a_delivery_stuck_past_the_timeout_is_cancelled_and_its_connection_closed() -> None:
    fence = AccessFence(settle_timeout=0.1)
    closed: list[int] = []

    async def close(code: int, _reason: str) -> None:
        closed.append(code)

    async def stuck() -> None:
        with fence.ticket(ANN, close) as ticket:
            ticket.start()
            assert ticket.admit()
            await asyncio.Event().wait()  # a client that stopped reading

    delivery = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    await asyncio.wait_for(fence.exclude(ANN), 2)
    assert delivery.cancelled()
    await eventually(lambda: _true_if(closed), "the connection to be closed")
    assert closed == [CLOSE_TRY_AGAIN_LATER]
    await fence.stop()


async def _true_if(items: list[int]) -> bool:
    return bool(items)


async def test_other_processes_raise_their_fence_on_the_notice(redis_url: str) -> None:
    namespace = f"test-fence-{uuid.uuid4().hex[:8]}"
    brokers = [broker_from_url(redis_url, namespace=namespace) for _ in range(2)]
    fences = [AccessFence(broker) for broker in brokers]
    async with contextlib.AsyncExitStack() as stack:
        for broker, fence in zip(brokers, fences, strict=True):
            await broker.connect()
            stack.push_async_callback(broker.disconnect)
            await fence.start()
            stack.push_async_callback(fence.stop)
        here, there = fences
        reading_there = there.ticket(ANN)
        reading_there.start()
        await here.exclude(ANN)

        async def refused_there() -> bool:
            if reading_there.admit():  # the notice has not arrived yet
                reading_there.release()
                return False
            return True

        await eventually(refused_there, "the other process's fence")
