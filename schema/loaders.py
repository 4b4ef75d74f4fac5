"""Per-operation DataLoaders: each batches one kind of lookup into one SQL statement.

They are why a board with hundreds of cards and thousands of comments loads in a
handful of statements instead of one per record. A set lives for one operation (or
until a write commits); it is never kept on a WebSocket connection. Each loader is made
when first used: a delivery or a mutation uses two or three of the fourteen, and every
loader made is a few objects more to allocate and free.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import cache, cached_property, partial
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from models import Board, Card, Comment, Membership, Record, Role, User
from models.keys import in_keys

# (statement, its bound parameters) -> its rows (SQLAlchemy Rows). The record loaders
# select ORM entities (each row's first column); the access loaders, plain columns of
# memberships.
RunQuery = Callable[[Select[Any], Mapping[str, Any]], Awaitable[Sequence[Any]]]
R = TypeVar("R", bound=Record)
K = TypeVar("K")
N = TypeVar("N")
V = TypeVar("V")


class RecordLoaders:
    """Loaders whose answers do not depend on who asks: records by primary key and the
    grouped lookups (a board's members and cards, a card's comments, a user's
    memberships). Viewers reading in one snapshot can share one set
    (schema.shared_reads).

    Its loaders' functions hold `run`, never the loaders themselves (nor do
    AccessLoaders'): a loader kept in the cache of the object its function holds is a
    reference cycle, and everything it loaded would wait for the garbage collector
    instead of going when the operation lets go of it."""

    def __init__(self, run: RunQuery) -> None:
        self._run = run
        self._records: dict[type[Any], DataLoader[int, Any]] = {}
        # (build, id(record)) -> (record, what build made of it): see `node`.
        self._nodes: dict[tuple[object, int], tuple[object, Any]] = {}

    def node(self, record: R, build: Callable[[R], N]) -> N:
        """`build(record)` (the GraphQL object of a record these loaders loaded), made
        once for everyone reading through them: the members of a board woken by one
        change each got an object of their own, the same but for its identity (4 % of
        a process delivering a change to 400 members). Only for a `build` whose result
        depends on the record alone, never on the viewer (a viewer-dependent field
        resolves per viewer, from its `info`)."""
        key = (build, id(record))
        made = self._nodes.get(key)
        if made is not None and made[0] is record:  # (the record is kept: no id reuse)
            return cast("N", made[1])
        node = build(record)
        self._nodes[key] = (record, node)
        return node

    @cached_property
    def board_members(self) -> DataLoader[int, list[Membership]]:
        return self._grouped(Membership, Membership.board_id, Membership.id)

    @cached_property
    def board_cards(self) -> DataLoader[int, list[Card]]:
        return self._grouped(Card, Card.board_id, Card.position, Card.id)

    @cached_property
    def card_comments(self) -> DataLoader[int, list[Comment]]:
        return self._grouped(Comment, Comment.card_id, Comment.id)

    @cached_property
    def user_memberships(self) -> DataLoader[int, list[Membership]]:
        return self._grouped(Membership, Membership.user_id, Membership.board_id)

    def record(self, model: type[R]) -> DataLoader[int, R | None]:
        """Records of `model` by primary key (one loader per model)."""
        loader = self._records.get(model)
        if loader is None:
            run = self._run  # (not `self`: see the class docstring)

            async def load(ids: list[int]) -> list[R | None]:
                rows = await run(_by_ids(model), {"keys": ids})
                found = {record.id: record for (record,) in rows}
                return [found.get(i) for i in ids]

            loader = self._records[model] = DataLoader(load)
        return loader

    def _grouped(self, model: type[R], key: Any, *order: Any) -> DataLoader[int, list[R]]:
        statement = _grouped_by(model, key, *order)
        run = self._run

        async def load(keys: list[int]) -> list[list[R]]:
            rows = await run(statement, {"keys": keys})
            groups: dict[int, list[R]] = defaultdict(list)
            for (record,) in rows:
                groups[getattr(record, key.key)].append(record)
            return [groups.get(k, []) for k in keys]

        return DataLoader(load)


class AccessLoaders:
    """Who may see what, asked for any number of viewers at once: (viewer, board) ->
    the viewer's role there, (viewer, user) -> whether they share a board. Viewers
    reading in one snapshot share one set, so a change that 1,000 members receive costs
    one membership query, not 1,000."""

    def __init__(self, run: RunQuery, *, whole_boards: bool = False) -> None:
        self._run = run
        # With whole_boards, a board's memberships are read all at once, the first time
        # anyone's role there is asked: the members of a board woken for one change ask
        # a moment apart, and one query answers them all.
        self._whole_boards = whole_boards

    @cached_property
    def roles(self) -> DataLoader[tuple[int, int], Role | None]:
        if self._whole_boards:
            return DataLoader(partial(_roles_from_boards, self._members))
        return DataLoader(partial(_roles, self._run))

    @cached_property
    def peers(self) -> DataLoader[tuple[int, int], bool]:
        return DataLoader(partial(_peers, self._run))

    @cached_property
    def _members(self) -> DataLoader[int, dict[int, Role]]:
        """board -> {member: role} (a DataLoader: asked again while still loading, it
        waits for the same query)."""
        return DataLoader(partial(_boards_members, self._run))


# AccessLoaders' loader functions: (run, ...) -> answers, in the order asked.


async def _boards_members(run: RunQuery, boards: list[int]) -> list[dict[int, Role]]:
    rows = await run(_boards_memberships(), {"keys": boards})
    members: dict[int, dict[int, Role]] = {board: {} for board in boards}
    for board, user, role in rows:
        members[board][user] = role
    return [members[board] for board in boards]


async def _roles_from_boards(
    boards_members: DataLoader[int, dict[int, Role]], pairs: list[tuple[int, int]]
) -> list[Role | None]:
    boards = await boards_members.load_many([board for _, board in pairs])
    return [members.get(user) for (user, _), members in zip(pairs, boards, strict=True)]


async def _roles(run: RunQuery, pairs: list[tuple[int, int]]) -> list[Role | None]:
    # One statement for every pair: the product of their users and boards is a
    # superset (usually exact: one board, many viewers), filtered here.
    rows = await run(
        _memberships_of_users_on_boards(),
        {"users": list({user for user, _ in pairs}), "boards": list({b for _, b in pairs})},
    )
    roles = {(user, board): role for board, user, role in rows}
    return [roles.get(pair) for pair in pairs]


async def _peers(run: RunQuery, pairs: list[tuple[int, int]]) -> list[bool]:
    users = {user for _, user in pairs}
    rows = await run(
        _peer_memberships(),
        {"users": list(users), "involved": list(users | {viewer for viewer, _ in pairs})},
    )
    boards: dict[int, set[int]] = defaultdict(set)
    for board, user, _role in rows:
        boards[user].add(board)
    return [not boards[viewer].isdisjoint(boards[user]) for viewer, user in pairs]


class Loaders:
    """The loaders one viewer reads through: the records (possibly shared with other
    viewers in the same snapshot) and the viewer's own access checks."""

    def __init__(
        self,
        run: RunQuery,
        viewer_id: int | None,
        records: RecordLoaders | None = None,
        access: AccessLoaders | None = None,
    ) -> None:
        self._viewer_id = viewer_id
        self._records = records or RecordLoaders(run)
        self._access = access or AccessLoaders(run)
        # What the layers above derive from these loads, for everyone reading through
        # them (schema.subscription: one update object per change).
        self.derived: dict[object, Any] = {}

    def record(self, model: type[R]) -> DataLoader[int, R | None]:
        """Records of `model` by primary key."""
        return self._records.record(model)

    def node(self, record: R, build: Callable[[R], N]) -> N:
        """`build(record)`, made once for every viewer sharing these records' loaders
        (RecordLoaders.node)."""
        return self._records.node(record, build)

    @property
    def user(self) -> DataLoader[int, User | None]:
        return self._records.record(User)

    @property
    def board(self) -> DataLoader[int, Board | None]:
        return self._records.record(Board)

    @property
    def membership(self) -> DataLoader[int, Membership | None]:
        return self._records.record(Membership)

    @property
    def card(self) -> DataLoader[int, Card | None]:
        return self._records.record(Card)

    @property
    def comment(self) -> DataLoader[int, Comment | None]:
        return self._records.record(Comment)

    @property
    def board_members(self) -> DataLoader[int, list[Membership]]:
        return self._records.board_members

    @property
    def board_cards(self) -> DataLoader[int, list[Card]]:
        return self._records.board_cards

    @property
    def card_comments(self) -> DataLoader[int, list[Comment]]:
        return self._records.card_comments

    @property
    def user_memberships(self) -> DataLoader[int, list[Membership]]:
        return self._records.user_memberships

    @cached_property
    def viewer_role(self) -> ViewerLookups[int, Role | None]:
        """board -> the viewer's role there (None: not a member, or no viewer)."""
        return ViewerLookups(self._access.roles, self._viewer_id, None)

    @cached_property
    def shares_board_with_viewer(self) -> ViewerLookups[int, bool]:
        """user -> whether they and the viewer are members of a common board."""
        return ViewerLookups(self._access.peers, self._viewer_id, False)


class ViewerLookups(Generic[K, V]):
    """One viewer's lookups in a loader of (viewer, key) shared by the viewers reading
    in one snapshot: `load(key)` is that loader's `load((viewer, key))`, batched and
    cached there. (A DataLoader of its own per viewer batched and cached the same keys
    once more: a future, a batch task and a gather per viewer and change on top, 8 % of
    a process delivering a change to 400 members of one board.)"""

    __slots__ = ("_absent", "_shared", "_viewer")

    def __init__(self, shared: DataLoader[tuple[int, K], V], viewer: int | None, absent: V) -> None:
        self._shared = shared
        self._viewer = viewer
        self._absent = absent  # the answer for no viewer (an anonymous context)

    def load(self, key: K) -> Awaitable[V]:
        if self._viewer is None:
            return _ready(self._absent)
        return self._shared.load((self._viewer, key))

    async def load_many(self, keys: Iterable[K]) -> list[V]:
        pending = [self.load(key) for key in keys]  # all asked before the batch goes
        return [await answer for answer in pending]


def _ready(value: V) -> asyncio.Future[V]:
    done: asyncio.Future[V] = asyncio.get_running_loop().create_future()
    done.set_result(value)
    return done


async def fetch_rows(
    session: AsyncSession, statement: Select[Any], parameters: Mapping[str, Any]
) -> Sequence[Row[Any]]:
    rows: Sequence[Row[Any]] = (await session.execute(statement, parameters)).all()
    return rows


# The hot statements are built once and run with bound parameters: building a SELECT
# and its cache key costs more CPU than running it (py-spy, deliveries), and a reused
# statement object keeps its cache key.
_BY_IDS: dict[type[Any], Select[Any]] = {}


def _by_ids(model: type[R]) -> Select[R]:
    statement = _BY_IDS.get(model)
    if statement is None:
        statement = _BY_IDS[model] = select(model).where(in_keys(model.id, "keys"))
    return statement


_GROUPED: dict[tuple[Any, ...], Select[Any]] = {}


def _grouped_by(model: type[R], key: Any, *order: Any) -> Select[R]:
    """Records of `model` whose `key` is one of `keys`, in `order`."""
    cache_key = (model, key.key, *(column.key for column in order))
    statement = _GROUPED.get(cache_key)
    if statement is None:
        statement = _GROUPED[cache_key] = select(model).where(in_keys(key, "keys")).order_by(*order)
    return statement


# The access checks read memberships as plain columns (board, user, role), not as ORM
# objects: they keep nothing but the role, and a board's 1,000 members took 10 ms to
# load as objects against 1.7 ms as rows (the loads of one change by every member).
_MEMBERSHIPS = Membership.__table__
_ACCESS_COLUMNS = (_MEMBERSHIPS.c.board_id, _MEMBERSHIPS.c.user_id, _MEMBERSHIPS.c.role)


@cache
def _boards_memberships() -> Select[tuple[int, int, Role]]:
    return select(*_ACCESS_COLUMNS).where(in_keys(_MEMBERSHIPS.c.board_id, "keys"))


@cache
def _memberships_of_users_on_boards() -> Select[tuple[int, int, Role]]:
    return select(*_ACCESS_COLUMNS).where(
        in_keys(_MEMBERSHIPS.c.user_id, "users"),
        in_keys(_MEMBERSHIPS.c.board_id, "boards"),
    )


@cache
def _peer_memberships() -> Select[tuple[int, int, Role]]:
    """The memberships of every viewer and user involved, on the users' boards only."""
    their_boards = select(_MEMBERSHIPS.c.board_id).where(in_keys(_MEMBERSHIPS.c.user_id, "users"))
    return select(*_ACCESS_COLUMNS).where(
        in_keys(_MEMBERSHIPS.c.user_id, "involved"),
        _MEMBERSHIPS.c.board_id.in_(their_boards),
    )
