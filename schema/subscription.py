"""The `userUpdates` subscription: every committed change the viewer may see, as the
same types queries return, so client caches merge it by `__typename` + `id`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import field
from enum import Enum
from typing import Any, cast

import strawberry

from schema.context import Context, Info
from schema.errors import unauthenticated
from schema.ids import encode_id
from schema.nodes import visible_node
from schema.shared_reads import SharedReads, shared_reads
from schema.types import Node
from subscriptions.changelog import LoggedChange
from subscriptions.changes import ChangeOp as CapturedOp
from subscriptions.cursors import encode_cursor
from subscriptions.fence import DeliveryTicket
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
    # Identical subscriptions that yield this same object execute it once
    # (schema.execution): see `outcome`.
    shared_results: strawberry.Private[dict[Any, Any]] = field(default_factory=dict)
    # Where the other viewers' updates for the same change, worked out in the same
    # snapshot, may share an execution (schema.crowd_results); None: nowhere.
    crowd_results: strawberry.Private[dict[Any, Any] | None] = None


def resync(cursor: str) -> UserUpdate:
    return UserUpdate(cursor=cursor, op=ChangeOp.RESYNC, typename=None, id=None, node=None)


# Losing access to one of these is announced as DELETED, so the client evicts it; a
# record inside it (a card of the board) simply stops arriving.
ACCESS_ROOTS = frozenset({"Board"})


async def reload_admitted(
    ctx: Context, change: LoggedChange, ticket: DeliveryTicket | None
) -> Node | None:
    """visible_node, admitted by the access fence: read again when the viewer was
    removed from a board while it read (see subscriptions.fence)."""
    while True:
        if ticket is not None:
            ticket.start()
        node = await visible_node(ctx, change.typename, change.record_id)
        if ticket is None or ticket.admit(ctx.snapshot_clock):  # no await since the read
            return node
        # A new transaction too: the refused read's snapshot may predate the removal.
        await ctx.close()
        ctx.fresh_reads()


async def present(
    ctx: Context,
    change: LoggedChange,
    cursor: str,
    reads: SharedReads | None = None,
    ticket: DeliveryTicket | None = None,
) -> UserUpdate | None:
    """The update this viewer receives for a change, or None when it is not theirs to see.

    The record is reloaded now, as this viewer, with authorization checked again: a late
    or repeated change can only deliver the newest committed state. With `reads` (a
    batch's), the reload is shared with the viewer's other local subscriptions
    presenting the same batch; what this connection already has (DeliveredVersions) is
    decided per connection.
    """
    key = (change.typename, change.record_id)
    if change.op is CapturedOp.DELETED:
        ctx.delivered.deleted(key)
    elif ctx.delivered.covers(key, change.version):
        return None  # a client that fell behind already has this state or newer
    if reads is None:
        ctx.fresh_reads()
    else:
        ctx.share_reads(reads)
    found = await outcome(ctx, change, cursor, ticket)
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


async def outcome(
    ctx: Context, change: LoggedChange, cursor: str, ticket: DeliveryTicket | None = None
) -> UserUpdate | None:
    """What the viewer gets for `change` (reloaded through ctx.loaders, admitted by the
    access fence), before what one connection already has is taken into account.

    Subscriptions of one viewer reading through the same shared loaders (one snapshot:
    schema.shared_reads) get the same answer, worked out once by the first of them: the
    same object, so that identical subscriptions also execute and encode it once
    (schema.execution). Each is still admitted by the access fence on its own ticket."""
    derived = ctx.shared_derived()
    if derived is None:
        return await _outcome(ctx, change, cursor, ticket)
    key = (UPDATE_KEY, change.id)
    first = derived.get(key, UNSHARED)
    if first is UNSHARED:
        return await _first_outcome(ctx, change, cursor, ticket, derived, key)
    if ticket is not None:
        ticket.start()
    if isinstance(first, asyncio.Future):
        first = await asyncio.shield(first)
    if first is not UNSHARED and (ticket is None or ticket.admit(ctx.snapshot_clock)):
        return cast("UserUpdate | None", first)
    # Not worked out in the shared snapshot, or refused by the fence: on our own.
    return await _outcome(ctx, change, cursor, ticket)


async def _first_outcome(
    ctx: Context,
    change: LoggedChange,
    cursor: str,
    ticket: DeliveryTicket | None,
    derived: dict[object, Any],
    key: object,
) -> UserUpdate | None:
    pending: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    derived[key] = pending
    shared: object = UNSHARED
    try:
        made = await _outcome(ctx, change, cursor, ticket)
        # (The access fence may have sent us to a fresh read: not the shared snapshot.)
        if ctx.shared_derived() is derived:
            shared = made
        return made
    finally:
        derived[key] = shared
        pending.set_result(shared)


# In Loaders.derived: not (yet) worked out in the shared snapshot.
UNSHARED = object()


async def _outcome(
    ctx: Context, change: LoggedChange, cursor: str, ticket: DeliveryTicket | None
) -> UserUpdate | None:
    global_id = strawberry.ID(encode_id(change.typename, change.record_id))

    def update(op: ChangeOp, node: Node | None) -> UserUpdate:
        return UserUpdate(cursor=cursor, op=op, typename=change.typename, id=global_id, node=node)

    if change.op is CapturedOp.DELETED:
        return update(ChangeOp.DELETED, None)
    across = ctx.shared_across_viewers()
    node = await reload_admitted(ctx, change, ticket)
    if node is None:
        return update(ChangeOp.DELETED, None) if change.typename in ACCESS_ROOTS else None
    made = update(ChangeOp[change.op.value], node)
    # (Not where the access fence sent the viewer to a read of their own.)
    if across is not None and ctx.shared_across_viewers() is across:
        made.crowd_results = across.setdefault((CROWD_KEY, change.id), {})
    return made


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


def batch_cursor(batch: Batch, user_id: int, change_id: int) -> str:
    """encode_cursor(user_id, change_id), encoded once for all who share the batch."""
    cursors = batch.scope.get(CURSORS_KEY)
    if not isinstance(cursors, dict):
        cursors = batch.scope[CURSORS_KEY] = {}
    key = (user_id, change_id)
    cursor = cursors.get(key)
    if cursor is None:
        cursor = cursors[key] = encode_cursor(user_id, change_id)
    return cast("str", cursor)


LATEST_KEY = "schema.latest_per_record"
CURSORS_KEY = "schema.cursors"
UPDATE_KEY = "schema.user_update"
CROWD_KEY = "schema.crowd_results"


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
        # graphql-core's resolve info for this field (with its path and strawberry's
        # wrapper, about 0.3 KiB) is not needed past this point: not kept for as long as
        # the subscription lives.
        del info
        viewer_id = ctx.require_viewer()
        if ctx.feed is None:
            raise RuntimeError("userUpdates needs a Context with a feed")
        cursor = after if isinstance(after, str) else None
        async with ctx.feed.open(viewer_id, cursor) as stream, ctx.deliveries.subscribed():
            # Subscribed (and confirmed) before the log is read: whatever commits from
            # here on either is in the first read or wakes us up later.
            position = stream.start.position
            # The task that sends this subscription's updates (cancelled by the access
            # fence if one of them does not go out in time).
            sender = asyncio.current_task()
            # A WebSocket checked this at connection_init; an HTTP stream (SSE,
            # multipart) has only its token, which may outlive its account. Checked
            # once the starting point is fixed, so it delays nothing that follows.
            if await ctx.loaders.user.load(viewer_id) is None:
                raise unauthenticated("The account this token was issued to no longer exists.")
            await ctx.close()  # the wait for the first change holds no connection
            if stream.start.resync:
                ctx.deliveries.resync(viewer_id, stream.start.reason)
                yield resync(encode_cursor(viewer_id, position))
            # What one delivery used (the shared reads, the update made from them): let
            # go of before waiting, see below.
            reads: SharedReads | None = None
            item: UserUpdate | None = None
            while True:
                batch = await stream.read(position)
                if batch.changes:
                    for change in latest_changes(batch):
                        # Joined per change: the one of the previous change may have
                        # ended while its update was sent.
                        reads = shared_reads(
                            batch,
                            ctx.read_groups,
                            ctx.read_sessions,
                            lambda: ctx.access_fence.clock,
                        )
                        # Held until the update has been sent: this generator resumes
                        # only once the transport has taken it.
                        with (
                            ctx.access_fence.ticket(
                                viewer_id, ctx.close_connection, sender
                            ) as ticket,
                            ctx.deliveries.delivering(viewer_id, change) as delivery,
                        ):
                            cursor = batch_cursor(batch, viewer_id, change.id)
                            item = await present(ctx, change, cursor, reads, ticket)
                            if item is not None:
                                # (CloseSession releases the connection before the send)
                                yield delivery.sending(item)
                            else:
                                await ctx.close()
                    position = batch.changes[-1].id
                if batch.caught_up:
                    # An idle subscription keeps nothing of its last delivery: the
                    # shared reads (session, loaders, the records and memberships they
                    # loaded) and the update. Kept until the next delivery, they piled
                    # up for the older collections, which then stopped the event loop
                    # for hundreds of ms (a delivery every second or so per viewer: 100
                    # viewers, 100 changes/s). Let go of here, they are freed at once
                    # (once the shared reads have ended: they hold no reference cycle,
                    # tests/test_reference_cycles.py).
                    reads = item = None
                    del batch
                    # Anything newer than the read comes with a wake-up (the listener
                    # keeps one that arrived while we were sending).
                    await stream.wait(position)
