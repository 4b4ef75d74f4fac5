"""What writing the change log adds to a mutation's statement, on PostgreSQL itself.

Commitcast's `updateCard` is one statement (schema.mutations.card_update): the UPDATE
and, with real-time on, the change-log write (the commit-order lock, the change's id,
its row and its audience's, each user's previous change). This times that statement
as the server runs it, with and without its change-log part, on one connection of its
own and no server in between: the part of real-time's cost (the `mutation_latency_*`
figures) that is PostgreSQL's, which no work in the server process can take away.

The two forms take turns, one statement each, on cards of one board: back to back,
then paced (one at a time at a low rate, as the paced mutation figures are: this VM's
PostgreSQL takes three to four times as long for a statement that arrives after an idle
moment).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

import models
from bench.targets import dsn_of
from bench.workloads import percentile
from schema.mutations.card_update import one_statement, one_statement_arguments

WARMUP = 50
# Form name -> whether the statement writes the change log.
FORMS = {"without_log": False, "with_log": True}
NAMES = list(FORMS)


async def change_log_write(
    url: str, board: str, statements: int, rate: float, paced_statements: int
) -> dict[str, Any]:
    """p50 of the statement without and with its change-log part (ms) and the
    difference, back to back (`statements` of each) and at `rate` statements/s in all
    (`paced_statements` of each), renaming cards of `board` as its owner of the same
    name."""
    connection = await asyncpg.connect(dsn_of(url))
    try:
        viewer = await connection.fetchval("SELECT id FROM users WHERE name = $1", board)
        cards = itertools.cycle(
            await connection.fetch(
                "SELECT cards.id FROM cards JOIN boards ON boards.id = cards.board_id"
                " WHERE boards.name = $1 ORDER BY cards.id",
                board,
            )
        )
        titles = itertools.count()
        prepared: dict[str, tuple[asyncpg.prepared_stmt.PreparedStatement, tuple[str, ...]]] = {}
        for name, logged in FORMS.items():
            text, names = one_statement(("title",), False, logged, asyncpg_dialect())
            prepared[name] = (await connection.prepare(text), names)

        async def timed(name: str) -> float:
            statement, names = prepared[name]
            arguments = one_statement_arguments(
                names,
                {"title": f"c{next(titles)}"},
                pk=next(cards)["id"],
                viewer_id=viewer,
                expected=None,
                now=models.utcnow(),
            )
            started = time.perf_counter()
            rows = await statement.fetch(*arguments)
            took = time.perf_counter() - started
            if len(rows) != 1:
                raise RuntimeError(f"updateCard's statement ({name}) changed no card")
            return took

        async def in_turn(each: int, rate: float | None) -> dict[str, list[float]]:
            """`each` statements of each form, taking turns; at `rate` in all, if given."""
            taken: dict[str, list[float]] = {name: [] for name in FORMS}
            started = time.perf_counter()
            for n in range(each * len(FORMS)):
                delay = 0.0 if rate is None else started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                name = NAMES[n % len(NAMES)]
                taken[name].append(await timed(name))
            return taken

        await in_turn(WARMUP, None)
        back_to_back = await in_turn(statements, None)
        paced = await in_turn(paced_statements, rate)
    finally:
        await connection.close()
    return {
        "back_to_back": _compared(back_to_back),
        "paced": {"rate": rate, **_compared(paced)},
    }


def _compared(durations: dict[str, list[float]]) -> dict[str, Any]:
    """{form}_p50_ms for each form, its count, and what the change log added (ms)."""
    p50 = {name: _ms(percentile(taken, 50)) for name, taken in durations.items()}
    return {
        "statements": len(durations["with_log"]),
        **{f"{name}_p50_ms": value for name, value in p50.items()},
        "added_p50_ms": round(p50["with_log"] - p50["without_log"], 3),
    }


def _ms(seconds: float | None) -> float:
    if seconds is None:
        raise ValueError("no statement timed")
    return round(seconds * 1000, 3)
