"""The cycle collector, set for a long-running server process (`python -m app`).

CPython runs a young collection every 700 net allocations of container objects and,
every so often, a full one that walks every tracked object of the process. A started
server holds a few hundred thousand objects that live as long as it does (modules, the
GraphQL schema, SQLAlchemy's mappers and compiled statements), plus every connection's
state. In the benchmark (1,000 subscriptions, 200 mutations/s) collections took about
a tenth of the process's CPU, and each full one stopped the event loop for about
150 ms: every delivery and request in flight waited for it.

Once the server has started, two standard remedies:

- `gc.freeze()`: everything alive at that point moves to the permanent generation,
  which no collection walks. After a collection first, so that no startup garbage is
  kept for good.
- A young threshold of YOUNG_THRESHOLD instead of 700: most of what a request or a
  delivery allocates is freed by reference counting within milliseconds. Collecting
  less often finds fewer of those objects still alive, so fewer are promoted to the
  older generations that full collections walk. But not too seldom: each walks
  whatever has survived since the last, and stops the event loop for as long as that
  takes. (Requests and deliveries leave no reference cycles, tests/
  test_reference_cycles.py: what they allocate is freed as they end, and young
  collections now come every few seconds at 200 mutations/s instead of every 0.25 s.)
- A middle collection every MIDDLE_THRESHOLD young ones: each walks what the young ones
  kept since the last, so more often means shorter stops (below).

Cycles are still collected, only later. GC_TUNING=false keeps CPython's settings.
The collector is process-wide: several servers in one process (tests) share one
tuning, undone when the last of them stops.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("commitcast.gc")

# At 200 mutations/s with 1,000 subscriptions a young collection freed about 19,000
# objects, nearly all it walked, and stopped the event loop for 11 to 24 ms every 0.8 s
# with 20,000; with 5,000, for at most 5 to 8 ms four times as often, the same total
# (harness: gc callbacks and an event-loop lag probe inside the server; 2026-12-01).
YOUNG_THRESHOLD = 5_000
# Young collections per middle one, middle ones per full one (CPython: 10 and 10; a
# full collection also waits until a quarter more objects have survived since the
# previous one). A middle collection walks everything the young ones promoted since the
# last: after 1,000 sockets connected (about 130,000 objects of theirs, alive, promoted
# once), one every 20 young collections stopped the event loop for 160 to 180 ms, one
# every 4 for at most 60 to 90 ms (100 changes/s, benchmark harness; 9 to 13 ms with
# the young threshold of 5,000). Full collections keep their pace in allocations: one
# considered every 4,000,000 (every 800 young collections of 5,000; CPython's 700, 10
# and 10 consider one every 70,000).
MIDDLE_THRESHOLD = 4
OLD_THRESHOLD = 200


class CollectorTuning:
    """`start()` when the server is up, `stop()` when it stops (any number of servers
    in one process: the first start tunes, the last stop restores)."""

    _holders = 0
    _saved: tuple[int, int, int] | None = None

    @classmethod
    def start(cls) -> None:
        if cls._holders == 0:
            cls._saved = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
            logger.info(
                "garbage collector tuned: %d objects frozen, young collections every %d "
                "allocations (GC_TUNING=false keeps CPython's settings)",
                gc.get_freeze_count(),
                YOUNG_THRESHOLD,
            )
        cls._holders += 1

    @classmethod
    def stop(cls) -> None:
        if cls._holders == 0:
            return
        cls._holders -= 1
        if cls._holders == 0 and cls._saved is not None:
            gc.set_threshold(*cls._saved)
            gc.unfreeze()
            cls._saved = None

    @classmethod
    def active(cls) -> bool:
        return cls._holders > 0
