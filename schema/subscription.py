"""The `userUpdates` subscription: every committed change the viewer may see, as the
same types queries return, so client caches merge it by `__typename` + `id`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from enum import Enum

import strawberry

from schema.context import Context, Info
from schema.ids import encode_id
from schema.nodes import visible_node
from schema.types import Node
from subscriptions.changes import ChangeOp as CapturedOp
from subscriptions.changes import Notice


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


def resync(cursor: str) -> UserUpdate:
    return UserUpdate(cursor=cursor, op=ChangeOp.RESYNC, typename=None, id=None, node=None)


# Losing access to one of these is announced as DELETED, so the client evicts it; a
# record inside it (a card of the board) simply stops arriving.
ACCESS_ROOTS = frozenset({"Board"})


async def present(ctx: Context, notice: Notice) -> UserUpdate | None:
    """The update this viewer receives for a notice, or None when it is not theirs to see.

    The record is reloaded now, as this viewer, with authorization checked again: a
    late or repeated notice can only deliver the newest committed state.
    """
    ctx.fresh_reads()
    global_id = strawberry.ID(encode_id(notice.typename, notice.id))

    def update(op: ChangeOp, node: Node | None) -> UserUpdate:
        return UserUpdate(
            cursor=notice.cursor, op=op, typename=notice.typename, id=global_id, node=node
        )

    if notice.op is CapturedOp.DELETED:
        return update(ChangeOp.DELETED, None)
    node = await visible_node(ctx, notice.typename, notice.id)
    if node is None:
        return update(ChangeOp.DELETED, None) if notice.typename in ACCESS_ROOTS else None
    return update(ChangeOp[notice.op.value], node)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every change to a record the viewer can see, as it is after commit. "
        "`after` (a cursor from an earlier update) is answered with one RESYNC for now: "
        "refetch your queries, then continue."
    )
    async def user_updates(
        self, info: Info, after: str | None = strawberry.UNSET
    ) -> AsyncGenerator[UserUpdate, None]:
        ctx = info.context
        viewer_id = ctx.require_viewer()
        if ctx.feed is None:
            raise RuntimeError("userUpdates needs a Context with a feed")
        feed = ctx.feed
        async with feed.notices(viewer_id) as notices:
            # Subscribed (and confirmed) before anything is sent: nothing committed from
            # here on can be missed.
            if after is not None and after is not strawberry.UNSET:
                yield resync(feed.cursor_now())
            async for notice in notices:
                if notice is None:
                    item: UserUpdate | None = resync(feed.cursor_now())
                else:
                    item = await present(ctx, notice)
                if item is None:
                    continue
                yield item
                # The update has been executed and sent by now: give the connection
                # back to the pool instead of holding it until the next event.
                await ctx.close()
