"""schema.loaders: what the viewers reading in one snapshot share, on both databases.
A viewer's access checks (`viewer_role`, `shares_board_with_viewer`) go straight to the
shared loaders: the viewers' questions asked together are one statement, each viewer
gets their own answer, and a context without a viewer asks nothing. A record's GraphQL
object is made once for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Select, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import models
from schema.loaders import AccessLoaders, Loaders, RecordLoaders, fetch_rows


async def _population(engine: AsyncEngine) -> tuple[list[int], int, int]:
    """Users ann, bob, cid, dee; ann owns board A (bob an editor there), cid owns board
    B; dee is on no board. Returns (users, A, B)."""
    async with engine.begin() as db:
        users = list(
            await db.scalars(
                insert(models.User).returning(models.User.id, sort_by_parameter_order=True),
                [
                    {"email": f"{n}@lookups.example", "name": n, "password_hash": "-", "version": 1}
                    for n in ("ann", "bob", "cid", "dee")
                ],
            )
        )
        ann, bob, cid, _dee = users
        boards = []
        for owner, members in (
            (ann, [(ann, models.Role.OWNER), (bob, models.Role.EDITOR)]),
            (cid, [(cid, models.Role.OWNER)]),
        ):
            board = await db.scalar(
                insert(models.Board)
                .values(name=f"board of {owner}", owner_id=owner, version=1)
                .returning(models.Board.id)
            )
            await db.execute(
                insert(models.Membership),
                [{"board_id": board, "user_id": u, "role": r, "version": 1} for u, r in members],
            )
            boards.append(board)
    return users, boards[0], boards[1]


@contextmanager
def selects(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SELECTs run on `engine` meanwhile."""
    seen: list[str] = []

    def on_cursor(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):  # (not SQLite's BEGIN)
            seen.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", on_cursor)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_cursor)


async def test_viewers_in_one_snapshot_ask_their_roles_in_one_statement(
    engine: AsyncEngine,
) -> None:
    (ann, bob, cid, dee), board_a, board_b = await _population(engine)
    async with AsyncSession(engine) as session:

        async def run(statement: Select[Any], parameters: Mapping[str, Any]) -> Any:
            return await fetch_rows(session, statement, parameters)

        shared = AccessLoaders(run)
        viewers = {u: Loaders(run, u, access=shared) for u in (ann, bob, cid, dee)}
        with selects(engine) as seen:
            roles = await asyncio.gather(
                *(viewers[u].viewer_role.load(b) for u in viewers for b in (board_a, board_b))
            )
            assert len(seen) == 1
        assert roles == [
            models.Role.OWNER, None,  # ann
            models.Role.EDITOR, None,  # bob
            None, models.Role.OWNER,  # cid
            None, None,  # dee
        ]  # fmt: skip
        with selects(engine) as seen:
            # Asked again, by anyone in the snapshot: answered from the shared loader.
            assert await viewers[bob].viewer_role.load_many([board_b, board_a]) == [
                None,
                models.Role.EDITOR,
            ]
            peers = await asyncio.gather(
                *(viewers[u].shares_board_with_viewer.load(bob) for u in (ann, cid))
            )
            assert len(seen) == 1  # the peers' question only
        assert peers == [True, False]


async def test_a_context_without_a_viewer_sees_no_role_and_asks_nothing(
    engine: AsyncEngine,
) -> None:
    _users, board_a, _board_b = await _population(engine)
    async with AsyncSession(engine) as session:

        async def run(statement: Select[Any], parameters: Mapping[str, Any]) -> Any:
            return await fetch_rows(session, statement, parameters)

        anonymous = Loaders(run, None)
        with selects(engine) as seen:
            assert await anonymous.viewer_role.load(board_a) is None
            assert await anonymous.viewer_role.load_many([board_a, board_a]) == [None, None]
            assert await anonymous.shares_board_with_viewer.load(1) is False
        assert seen == []


async def test_a_records_object_is_made_once_for_the_viewers_sharing_its_loaders(
    engine: AsyncEngine,
) -> None:
    (ann, bob, _cid, _dee), board_a, board_b = await _population(engine)
    made: list[int] = []

    def build(board: models.Board) -> tuple[str, int]:
        made.append(board.id)
        return ("Board", board.id)

    async with AsyncSession(engine) as session:

        async def run(statement: Select[Any], parameters: Mapping[str, Any]) -> Any:
            return await fetch_rows(session, statement, parameters)

        records = RecordLoaders(run)
        ann_reads, bob_reads = (Loaders(run, u, records=records) for u in (ann, bob))
        a = await ann_reads.board.load(board_a)
        b = await bob_reads.board.load(board_b)
        assert a is not None
        assert b is not None
        first = ann_reads.node(a, build)
        assert bob_reads.node(a, build) is first  # the same object, made once
        assert bob_reads.node(b, build) == ("Board", board_b)
        assert made == [board_a, board_b]
        # Another way of building it is not the first one's.
        assert bob_reads.node(a, lambda board: ("other", board.id)) == ("other", board_a)
        # Loaders of their own (another snapshot, another operation): made again.
        own = Loaders(run, ann)
        again = await own.board.load(board_a)
        assert again is not None
        assert own.node(again, build) == first
        assert made == [board_a, board_b, board_a]
