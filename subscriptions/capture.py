"""Change capture: SQLAlchemy session events collect what a transaction changed and hand
it to a sink only after the outermost COMMIT.

- after_flush collects new and modified `Realtime` objects; before_flush collects the
  deleted ones while their rows (and the memberships that say who saw them) still exist.
- Changes are buffered per transaction. A SAVEPOINT that is released folds its buffer
  into the enclosing one; one that is rolled back drops it; a rolled back transaction
  publishes nothing. (`after_commit` also fires on SAVEPOINT release, so the outermost
  commit is recognised by the transaction having no parent.)
- Several writes to one record in a transaction become one change.
- Just before the outermost COMMIT the changes are written to the change log, in the
  same transaction as the data (subscriptions.changelog); after it, they go to the sink
  (the relay) to be published.
- Audiences are read at each flush. For the last flush, which runs right before the
  change-log write, PostgreSQL's write reads them itself in its one statement: the same
  transaction state, one round trip fewer per commit. Deletions are always read in
  before_flush, while the rows that say who saw them still exist.
- ORM bulk UPDATE/DELETE statements skip flush events entirely; on Realtime models they
  are refused with BulkWriteRefused rather than silently not published.
- A write made without a session (updateCard on PostgreSQL, schema.mutations
  .card_update) captures through update_written, captures, sink_of and hand_over: the
  changes its flush would have made, logged by its own statement or transaction,
  handed to the same sink after its commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import event, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, PassiveFlag, Session, SessionTransaction
from sqlalchemy.orm.attributes import get_history

from models import Membership
from models.keys import in_keys
from models.realtime import Audience, BoardAudience, Realtime, RecordKey, UserAudience
from subscriptions.changelog import record_changes, resolves_audiences
from subscriptions.changes import Change, ChangeOp

logger = logging.getLogger("commitcast.capture")

SINK_KEY = "commitcast.change_sink"
_BUFFERS = "commitcast.change_buffers"
_COMMITTING = "commitcast.committing"
_FINAL_FLUSH = "commitcast.final_flush"


class ChangeSink(Protocol):
    def submit(self, changes: list[Change]) -> None:
        """Called synchronously right after the outermost commit; must not block."""


class BulkWriteRefused(RuntimeError):
    pass


class CapturingSession(Session):
    """The sync session class behind every AsyncSession the app creates."""


Buffer = dict[RecordKey, Change]


def _buffers(session: Session) -> dict[SessionTransaction, Buffer]:
    buffers: dict[SessionTransaction, Buffer] = session.info.setdefault(_BUFFERS, {})
    return buffers


def _current_transaction(session: Session) -> SessionTransaction:
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:  # pragma: no cover - flush always runs in a transaction
        raise RuntimeError("flush outside a transaction")
    return transaction


def _add(buffer: Buffer, change: Change) -> None:
    earlier = buffer.pop(change.key, None)
    if earlier is None:
        buffer[change.key] = change
        return
    merged = earlier.merge(change)
    if merged is not None:
        buffer[change.key] = merged


# Core statements built once: they run in every flush of every mutation, and building
# them plus the ORM's execution path cost more CPU than the round trip itself.
_MEMBERSHIPS = Membership.__table__
_MINE, _THEIRS = _MEMBERSHIPS.alias("mine"), _MEMBERSHIPS.alias("theirs")
_BOARD_MEMBERS = select(_MEMBERSHIPS.c.board_id, _MEMBERSHIPS.c.user_id).where(
    in_keys(_MEMBERSHIPS.c.board_id, "board_ids")
)
_USER_PEERS = (
    select(_MINE.c.user_id, _THEIRS.c.user_id)
    .join_from(_MINE, _THEIRS, _THEIRS.c.board_id == _MINE.c.board_id)
    .where(in_keys(_MINE.c.user_id, "user_ids"))
)


def _resolve_audiences(session: Session, audiences: Iterable[Audience]) -> dict[Audience, set[int]]:
    """User ids per audience, in at most two statements for the whole flush. They run on
    the flush's own connection: inside the transaction, before deleted rows are gone."""
    wanted = set(audiences)
    board_ids = {a.board_id for a in wanted if isinstance(a, BoardAudience)}
    user_ids = {a.user_id for a in wanted if isinstance(a, UserAudience)}
    members: dict[int, set[int]] = {b: set() for b in board_ids}
    if board_ids:
        rows = session.connection().execute(_BOARD_MEMBERS, {"board_ids": list(board_ids)})
        for board_id, user_id in rows:
            members[board_id].add(user_id)
    peers: dict[int, set[int]] = {u: {u} for u in user_ids}
    if user_ids:
        rows = session.connection().execute(_USER_PEERS, {"user_ids": list(user_ids)})
        for user_id, peer_id in rows:
            peers[user_id].add(peer_id)
    return {
        a: set(members[a.board_id]) if isinstance(a, BoardAudience) else set(peers[a.user_id])
        for a in wanted
    }


def _collect(
    session: Session, objects: Iterable[tuple[Realtime, ChangeOp, bool]], *, defer: bool = False
) -> list[Change]:
    """Changes for (object, op, announce parents?) triples, parents after children.
    `defer`: leave the audiences for the change-log write to resolve (Change.pending)."""
    items = [(obj, op, parents, obj.audience(session)) for obj, op, parents in objects]
    if not items:
        return []
    resolved = {} if defer else _resolve_audiences(session, (a for *_, a in items))
    changes: list[Change] = []
    for obj, op, announce_parents, audience in items:
        users = resolved.get(audience, set())
        pending = {audience} if defer else set()
        # Not inspect(obj).identity: new objects get it only after the flush completes.
        (pk,) = inspect(obj).mapper.primary_key_from_instance(obj)
        key = RecordKey(obj.realtime_typename, pk)
        version = getattr(obj, "version", None)
        parents = obj.realtime_parents() if announce_parents else ()
        changes.extend(_with_parents(key, op, version, users, pending, parents))
        grants = obj.realtime_grants(session) if op is ChangeOp.CREATED else None
        if grants is not None:
            grantee, keys = grants
            changes.extend(Change(k, ChangeOp.UPDATED, None, {grantee}) for k in keys)
    return changes


def _with_parents(
    key: RecordKey,
    op: ChangeOp,
    version: int | None,
    users: set[int],
    pending: set[Audience],
    parents: Iterable[RecordKey],
) -> list[Change]:
    """A record's change, then the UPDATED of each parent whose list it changes."""
    changes = [Change(key, op, version, set(users), pending=set(pending))]
    changes.extend(
        Change(parent, ChangeOp.UPDATED, None, set(users), pending=set(pending))
        for parent in parents
    )
    return changes


def update_written(record: Realtime, pk: int, audience: Audience, moved: bool) -> list[Change]:
    """What capture makes of an UPDATE of `record` (primary key `pk`) written without a
    session (schema.mutations.card_update), for the change-log write in the same
    transaction: the record's change at its new version, audience pending (the write
    resolves it, as for a session's last flush), and its parents' UPDATED when `moved`
    (one of realtime_parent_attributes changed)."""
    key = RecordKey(record.realtime_typename, pk)
    parents = record.realtime_parents() if moved else ()
    return _with_parents(
        key, ChangeOp.UPDATED, getattr(record, "version", None), set(), {audience}, parents
    )


def captures(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Whether sessions of `sessions` capture changes: a write made without a session (a
    driver write) captures exactly when one of them would have..."""
    session_class = sessions.kw.get("sync_session_class")
    return isinstance(session_class, type) and issubclass(session_class, CapturingSession)


def sink_of(sessions: async_sessionmaker[AsyncSession]) -> ChangeSink | None:
    """...and hands what it committed to the same sink (None: none)."""
    sink: ChangeSink | None = sessions.kw.get("info", {}).get(SINK_KEY)
    return sink


def hand_over(sink: ChangeSink, changes: list[Change]) -> None:
    """Give committed changes to the sink; the data is committed: never fail the caller
    for this (it is logged)."""
    try:
        sink.submit(changes)
    except Exception:
        logger.exception("could not hand %d committed changes to the relay", len(changes))


@event.listens_for(CapturingSession, "before_flush")
def _before_flush(session: Session, _flush_context: Any, _instances: Any) -> None:
    deleted = [
        (obj, ChangeOp.DELETED, True) for obj in session.deleted if isinstance(obj, Realtime)
    ]
    buffer = _buffers(session).setdefault(_current_transaction(session), {})
    for change in _collect(session, deleted):
        _add(buffer, change)


@event.listens_for(CapturingSession, "after_flush")
def _after_flush(session: Session, _flush_context: Any) -> None:
    captured: list[tuple[Realtime, ChangeOp, bool]] = []
    for obj in session.new:
        if isinstance(obj, Realtime):
            captured.append((obj, ChangeOp.CREATED, True))
    for obj in session.dirty:
        if isinstance(obj, Realtime) and session.is_modified(obj, include_collections=False):
            # get_history rather than inspect(obj).attrs: that makes an AttributeState
            # for every column of the record (reference cycles, per change) to read one.
            moved = any(
                get_history(obj, name, PassiveFlag.PASSIVE_NO_INITIALIZE).has_changes()
                for name in obj.realtime_parent_attributes
            )
            captured.append((obj, ChangeOp.UPDATED, moved))
    buffer = _buffers(session).setdefault(_current_transaction(session), {})
    # In the flush right before the change-log write (and only there), the write itself
    # reads the audiences: one round trip fewer, and the same transaction state.
    # Deletions are never deferred: before_flush resolves them while their rows exist.
    defer = session.info.get(_FINAL_FLUSH, False)
    for change in _collect(session, captured, defer=defer):
        _add(buffer, change)


@event.listens_for(CapturingSession, "before_commit")
def _before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT release: its changes fold into the enclosing transaction
    # The last flush would otherwise happen after this hook, unseen by the change log.
    session.info[_FINAL_FLUSH] = resolves_audiences(session)
    try:
        session.flush()
    finally:
        session.info.pop(_FINAL_FLUSH, None)
    root = session.get_transaction()
    buffer = _buffers(session).get(root) if root is not None else None
    changes = [c for c in buffer.values() if c.audience or c.pending] if buffer else []
    if changes:
        # Fills in the users of pending audiences; a change nobody may see gets no id
        # and an empty audience, so it is not handed to the relay below.
        record_changes(session, changes)


@event.listens_for(CapturingSession, "after_commit")
def _after_commit(session: Session) -> None:
    # Fires for the outermost COMMIT and for each SAVEPOINT release, just before the
    # matching after_transaction_end: that handler reads the flag.
    session.info[_COMMITTING] = True


@event.listens_for(CapturingSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info[_COMMITTING] = False


@event.listens_for(CapturingSession, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if not transaction.nested and transaction.parent is not None:
        return  # the subtransaction each flush opens: not a unit of commit
    committed = session.info.pop(_COMMITTING, False)
    buffers = _buffers(session)
    buffer = buffers.pop(transaction, {})
    if transaction.nested:
        if committed and buffer and transaction.parent is not None:
            outer = buffers.setdefault(transaction.parent, {})
            for change in buffer.values():
                _add(outer, change)
        return
    buffers.clear()
    sink: ChangeSink | None = session.info.get(SINK_KEY)
    if committed and buffer and sink is not None:
        changes = [c for c in buffer.values() if c.audience]
        if changes:
            hand_over(sink, changes)


@event.listens_for(CapturingSession, "do_orm_execute")
def _refuse_bulk_writes(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and issubclass(mapper.class_, Realtime):
        verb = "UPDATE" if state.is_update else "DELETE"
        raise BulkWriteRefused(
            f"bulk {verb} on {mapper.class_.__name__} bypasses change capture, so clients "
            "would never hear of it: load the objects and change or delete them through "
            "the session instead"
        )
