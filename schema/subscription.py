"""The `userUpdates` subscription: every committed change the viewer may see, as the
same types queries return, so client caches merge it by `__typename` + `id`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from enum import Enum

import strawberry

from schema.context import Context, Info
from schema.execution import Renders
from schema.ids import encode_id
from schema.nodes import visible_node
from schema.shared_reads import SharedReads, shared_reads
from schema.types import Node
from subscriptions.changelog import LoggedChange
from subscriptions.changes import ChangeOp as CapturedOp
from subscriptions.cursors import encode_cursor
from subscriptions.hub import Batch


@strawberry.enum
class ChangeOp(Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    RESYNC = "RESYNC"


@strawberry.type
class UserUpdate:
    cursor: str = strawberry.field(
        description="Opaque resume token: pass it as userUpdates(after:) to continue "
        "after this update."
    )
    op: ChangeOp
    typename: str | None = strawberry.field(
        description="GraphQL type name of the changed record; null for RESYNC."
    )
    id: strawberry.ID | None = strawberry.field(
        description="Global id of the changed record; null for RESYNC."
    )
    node: Node | None = strawberry.field(
        description="The record as the viewer sees it now; null for DELETED, RESYNC, or "
        "lost access."
    )
    # Results already built for this very update (one execution per cohort).
    renders: strawberry.Private[Renders] = dataclasses.field(default_factory=Renders)


def resync(cursor: str) -> UserUpdate:
    return UserUpdate(cursor=cursor, op=ChangeOp.RESYNC, typename=None, id=None, node=None)


# Losing access to one of these is announced as DELETED, so the client evicts it; a
# record inside it (a card of the board) simply stops arriving.
ACCESS_ROOTS = frozenset({"Board"})


async def present(
    ctx: Context,
    change: LoggedChange,
    cursor: str,
    reads: SharedReads | None = None,
    outcomes: Outcomes | None = None,
) -> UserUpdate | None:
    """The update this viewer receives for a change, or None when it is not theirs to see.

    The record is reloaded now, as this viewer, with authorization checked again: a late
    or repeated change can only deliver the newest committed state. With `reads` and
    `outcomes` (a batch's, see latest_changes), the reload and the update built from it
    are shared with the viewer's other local subscriptions presenting the same batch;
    what this connection already has (DeliveredVersions) is still decided per connection.
    """
    key = (change.typename, change.record_id)
    if change.op is CapturedOp.DELETED:
        ctx.delivered.deleted(key)
    elif ctx.delivered.covers(key, change.version):
        return None  # a client that fell behind already has this state or newer
    if outcomes is None:
        ctx.fresh_reads()
        found = await outcome(ctx, change, cursor)
    else:
        found = await outcomes.get(ctx, change, cursor, reads)
    if found is None or change.op is CapturedOp.DELETED:
        return found
    if found.node is None:
        ctx.delivered.forget(key)  # access may come back (re-added as a member)
        return found
    # Several subscriptions of one connection reload independently: never let one of
    # them send an older version of a record after another sent a newer one.
    if not ctx.delivered.advance(key, getattr(found.node, "version", None)):
        return None
    return found


async def outcome(ctx: Context, change: LoggedChange, cursor: str) -> UserUpdate | None:
    """What the viewer gets for `change` (reloaded through ctx.loaders), before what one
    connection already has is taken into account."""
    global_id = strawberry.ID(encode_id(change.typename, change.record_id))

    def update(op: ChangeOp, node: Node | None) -> UserUpdate:
        return UserUpdate(cursor=cursor, op=op, typename=change.typename, id=global_id, node=node)

    if change.op is CapturedOp.DELETED:
        return update(ChangeOp.DELETED, None)
    node = await visible_node(ctx, change.typename, change.record_id)
    if node is None:
        return update(ChangeOp.DELETED, None) if change.typename in ACCESS_ROOTS else None
    return update(ChangeOp[change.op.value], node)


class Outcomes:
    """One outcome per change of a batch, shared by the viewer's local subscriptions
    (a batch belongs to one user's hub: one viewer). The first to need one computes
    it; the others wait for it. Sharing the update object also lets them share its
    execution (schema.execution.Renders)."""

    def __init__(self) -> None:
        self._pending: dict[int, asyncio.Future[UserUpdate | None]] = {}

    async def get(
        self, ctx: Context, change: LoggedChange, cursor: str, reads: SharedReads | None
    ) -> UserUpdate | None:
        pending = self._pending.get(change.id)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # we were cancelled, not the one computing it
        future: asyncio.Future[UserUpdate | None] = asyncio.get_running_loop().create_future()
        self._pending[change.id] = future
        try:
            if reads is None:
                ctx.fresh_reads()
            else:
                ctx.share_reads(reads)
            found = await outcome(ctx, change, cursor)
        except BaseException:
            del self._pending[change.id]
            future.cancel()  # the others compute it themselves
            raise
        future.set_result(found)
        return found


def latest_per_record(batch: list[LoggedChange]) -> list[LoggedChange]:
    """One change per record (its last), in log order: the reload shows the newest state
    anyway, so earlier changes to the same record add nothing."""
    last: dict[tuple[str, int], LoggedChange] = {}
    for change in batch:
        last.pop((change.typename, change.record_id), None)
        last[(change.typename, change.record_id)] = change
    return list(last.values())


def latest_changes(batch: Batch) -> list[LoggedChange]:
    """latest_per_record of a batch, computed once for all who share it."""
    latest = batch.scope.get(LATEST_KEY)
    if not isinstance(latest, list):
        latest = batch.scope[LATEST_KEY] = latest_per_record(batch.changes)
    return latest


LATEST_KEY = "schema.latest_per_record"
OUTCOMES_KEY = "schema.outcomes"


def shared_outcomes(batch: Batch) -> Outcomes:
    outcomes = batch.scope.get(OUTCOMES_KEY)
    if not isinstance(outcomes, Outcomes):
        outcomes = batch.scope[OUTCOMES_KEY] = Outcomes()
    return outcomes


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every change to a record the viewer can see, as it is after commit. "
        "With `after` (the cursor of the last update you received), first everything you "
        "missed since then (the current state, one update per record), then live; RESYNC "
        "when the cursor cannot be served (refetch your queries, then continue from the "
        "RESYNC's cursor)."
    )
    async def user_updates(
        self, info: Info, after: str | None = strawberry.UNSET
    ) -> AsyncGenerator[UserUpdate, None]:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        if ctx.feed is None:
            raise RuntimeError("userUpdates needs a Context with a feed")
        cursor = after if isinstance(after, str) else None
        async with ctx.feed.open(viewer_id, cursor) as stream:
            # Subscribed (and confirmed) before the log is read: whatever commits from
            # here on either is in the first read or wakes us up later.
            position = stream.start.position
            if stream.start.resync:
                yield resync(encode_cursor(viewer_id, position))
            while True:
                batch = await stream.read(position)
                if batch.changes:
                    reads = shared_reads(batch, ctx.read_sessions, viewer_id)
                    outcomes = shared_outcomes(batch)
                    for change in latest_changes(batch):
                        cursor = encode_cursor(viewer_id, change.id)
                        item = await present(ctx, change, cursor, reads, outcomes)
                        if item is not None:
                            yield item  # (CloseSession releases the connection before the send)
                        else:
                            await ctx.close()
                    position = batch.changes[-1].id
                if batch.caught_up:
                    # Anything newer than the read comes with a wake-up (the listener
                    # keeps one that arrived while we were sending).
                    await stream.wait(position)
