"""How fast the machine itself is, at the start and at the end of a run.

The absolute targets (5,000 updates/s per process, p99 at 200 mutations/s) depend on
the machine as much as on the code, and the development VM's speed has moved by a
factor of three between sessions (and by a third within one). The textbook's figures
in the same run are one yardstick; these two, which involve neither server, are
another: a reader can tell a slower machine from slower code.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import asyncpg

LOOP_ADDITIONS = 10_000_000
ROUND_TRIPS = 200


def python_loop_seconds() -> float:
    """Seconds for LOOP_ADDITIONS additions in a plain Python loop, best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(LOOP_ADDITIONS):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


async def select_1_ms(dsn: str) -> float:
    """p50 of ROUND_TRIPS `SELECT 1` on one asyncpg connection to PostgreSQL, in ms."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.fetchval("SELECT 1")
        taken = []
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            await connection.fetchval("SELECT 1")
            taken.append(time.perf_counter() - started)
    finally:
        await connection.close()
    return statistics.median(taken) * 1000


async def measure_machine(dsn: str) -> dict[str, Any]:
    return {
        "python_loop_10m_additions_s": round(python_loop_seconds(), 3),
        "select_1_p50_ms": round(await select_1_ms(dsn), 3),
    }
