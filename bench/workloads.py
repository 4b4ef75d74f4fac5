"""The measurements, each run the same way against either target."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.receivers import Pool, SocketSpec
from bench.targets import Target

DRAIN_TIMEOUT = 15.0
# A saturation run that delivered at least this share of the updates offered may not
# have saturated the server: a higher rate is offered next, where there is one.
NEARLY_ALL = 0.9
# Closed-loop mutations each server takes in turn, in the real-time cost comparison.
BLOCK = 20
LIVE_TIMEOUT = 120.0
PROBE_WAIT = 10.0


@dataclass(frozen=True)
class Sizes:
    latency_seconds: float
    saturation_seconds: float
    memory_steps: tuple[int, ...]
    sql_changes: int
    mutations: int
    # Sockets per user of the 100 `pairs` users, and how many `crowd` users connect.
    pairs_per_user: int
    crowd_users: int
    # Offered mutation rates (per second).
    rate_low: float = 20.0
    rate_high: float = 200.0
    # Offered to 100 sockets of one user; the best delivered rate counts (too high a
    # rate spends the server on mutations, too low a one does not saturate it). 140 and
    # 170 since a faster machine delivered everything offered at 115/s (2026-12-01);
    # 200 and 240 since one delivered everything offered at 170/s (the same day).
    saturation_rates_one_user: tuple[float, ...] = (
        60.0,
        80.0,
        100.0,
        115.0,
        140.0,
        170.0,
        200.0,
        240.0,
    )
    # Offered to the 1,000 sockets of the 100 users sharing one board (8,000 to 24,000
    # updates/s offered; the best delivered rate counts): at 8/s alone Commitcast
    # delivered nearly everything offered, a figure of the offer rather than of the
    # server, and later nearly everything at 12 and at 16/s (2026-12-01).
    saturation_rates_team: tuple[float, ...] = (8.0, 12.0, 16.0, 20.0, 24.0)
    # Offered to the 1,000 members of one board, one rate after the other while nearly
    # everything offered arrives (NEARLY_ALL): until 2026-12-02 only 8/s was offered,
    # and once their updates were executed once for all members (schema.crowd_results)
    # Commitcast delivered up to 7,300 of those 8,000 updates/s.
    saturation_rates_board: tuple[float, ...] = (8.0, 12.0, 16.0)
    # Mutations sent, and not counted, before a closed-loop mutation-latency figure: each
    # is taken on a server in the same state (statement caches and prepared statements
    # warm, pooled connections open), whatever ran before it.
    mutation_warmup: int = 50
    # Rounds of real-time off / on (nobody subscribed) / on (one subscription), each on
    # a freshly started server, for the mutation-latency comparison.
    mutation_rounds: int = 2


QUICK = Sizes(
    latency_seconds=2,
    saturation_seconds=2,
    memory_steps=(0, 100, 200),
    sql_changes=3,
    mutations=30,
    pairs_per_user=1,
    crowd_users=50,
    rate_high=50.0,
    saturation_rates_one_user=(75.0,),
    saturation_rates_team=(8.0,),
    saturation_rates_board=(8.0,),
    mutation_warmup=5,
    mutation_rounds=1,
)
FULL = Sizes(
    latency_seconds=15,
    saturation_seconds=10,
    memory_steps=(0, 1000, 2000, 3000, 4000, 5000),
    sql_changes=10,
    mutations=200,
    pairs_per_user=10,
    crowd_users=1000,
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(durations: list[float]) -> dict[str, Any]:
    return {
        "mutations": len(durations),
        "p50_ms": ms(percentile(durations, 50)),
        "p99_ms": ms(percentile(durations, 99)),
        "mean_ms": ms(statistics.fmean(durations)) if durations else None,
    }


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


class Bench:
    def __init__(self, target: Target, pool: Pool, sizes: Sizes) -> None:
        self.target = target
        self.pool = pool
        self.sizes = sizes
        self._titles = itertools.count()
        self.failures: list[str] = []
        self.achieved_rate = 0.0
        self._cursor: dict[str, itertools.cycle[str]] = {}

    # -- helpers ------------------------------------------------------------------------

    def specs(self, users: list[str], per_user: int) -> list[SocketSpec]:
        tokens = self.target.population.tokens
        return [
            SocketSpec(self.target.ws_url, tokens[u], self.boards_of(u))
            for u in users
            for _ in range(per_user)
        ]

    @staticmethod
    def boards_of(user: str) -> tuple[str, ...]:
        if user.startswith("pair"):
            return (user, "team")
        return (user,) if user == "solo" else ("crowd",)

    def next_card(self, board: str) -> str:
        cycle = self._cursor.get(board)
        if cycle is None:
            cycle = self._cursor[board] = itertools.cycle(
                self.target.population.boards[board].cards
            )
        return next(cycle)

    @staticmethod
    def owner(board: str) -> str:
        return {"team": "pair0", "crowd": "crowd0"}.get(board, board)

    async def open_live(self, label: str, specs: list[SocketSpec], groups: list[str]) -> None:
        """Open the sockets, then change a card of each group until every socket has
        received such a change: from then on its subscription is live. (A subscription
        starts at the log's head when the server gets to it, so a change committed
        before that is not for it: probe again.)"""
        await self.pool.open(label, specs)
        deadline = time.monotonic() + LIVE_TIMEOUT
        while True:
            expected: dict[str, dict[str, int]] = {}
            for group in groups:
                card, version = await self._probe(group)
                expected[group] = {card: version}
            missing = await self.pool.wait_for([label], expected, PROBE_WAIT)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {missing} sockets never went live")

    async def _probe(self, group: str) -> tuple[str, int]:
        for attempt in range(5):
            try:
                card, version, _ = await self.target.mutate(
                    self.owner(group), self.next_card(group), f"probe {next(self._titles)}"
                )
                return card, version
            except RuntimeError:
                # Still digesting the previous workload's backlog: try again.
                if attempt == 4:
                    raise
                await asyncio.sleep(2)
        raise AssertionError("unreachable")

    async def open_loop(
        self, boards: list[str], rate: float, seconds: float
    ) -> tuple[dict[str, dict[str, int]], list[float]]:
        """Mutations at a fixed rate (open loop: a slow answer does not slow the next
        one), round-robin over the boards' cards. Returns the newest version per card,
        per board, and each mutation's duration."""
        expected: dict[str, dict[str, int]] = {b: {} for b in boards}
        durations: list[float] = []
        tasks: list[asyncio.Task[None]] = []
        boards_cycle = itertools.cycle(boards)

        async def one(board: str) -> None:
            try:
                card, version, took = await self.target.mutate(
                    self.owner(board), self.next_card(board), f"m{next(self._titles)}"
                )
            except Exception as exc:
                # An overloaded server may fail a mutation (e.g. no pooled connection
                # within 30 s): count it, and keep the run going.
                self.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            durations.append(took)
            known = expected[board].get(card, 0)
            expected[board][card] = max(known, version)

        started = time.perf_counter()
        count = int(rate * seconds)
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(next(boards_cycle))))
        await asyncio.gather(*tasks)
        self.achieved_rate = round(len(durations) / (time.perf_counter() - started), 1)
        return expected, durations

    # -- workloads ----------------------------------------------------------------------

    async def latency(
        self, label: str, specs: list[SocketSpec], boards: list[str], rate: float
    ) -> dict[str, Any]:
        await self.pool.reset()
        self.failures = []
        cpu_before = self.target.cpu_seconds()
        started = time.perf_counter()
        expected, durations = await self.open_loop(boards, rate, self.sizes.latency_seconds)
        missing = await self.pool.wait_for([label], expected, DRAIN_TIMEOUT)
        wall = time.perf_counter() - started
        received, latencies, client_cpu = await self.pool.collect(latencies=True)
        return {
            "subscriptions": len(specs),
            "rate": rate,
            "achieved_rate": self.achieved_rate,
            "mutations": len(durations),
            "failed_mutations": len(self.failures),
            "failure_example": self.failures[0] if self.failures else None,
            "received": received,
            "missing_final_states": missing,
            "p50_ms": ms(percentile(latencies, 50)),
            "p99_ms": ms(percentile(latencies, 99)),
            "p999_ms": ms(percentile(latencies, 99.9)),
            "max_ms": ms(max(latencies) if latencies else None),
            # How long the mutations themselves took (open loop, at `rate`).
            "mutation_p50_ms": ms(percentile(durations, 50)),
            "mutation_p99_ms": ms(percentile(durations, 99)),
            "server_cpu_share": round((self.target.cpu_seconds() - cpu_before) / wall, 3),
            "client_cpu_share": round(client_cpu / wall, 3),
        }

    async def saturation(self, label: str, board: str, rate: float) -> dict[str, Any]:
        """Offer more than the server can deliver; count what arrives in the window."""
        await self.pool.reset()
        self.failures = []
        cpu_before = self.target.cpu_seconds()
        statements_before = await self.target.statements()
        started = time.perf_counter()
        expected, durations = await self.open_loop([board], rate, self.sizes.saturation_seconds)
        window = time.perf_counter() - started
        received, _, client_cpu = await self.pool.collect()
        server_cpu = self.target.cpu_seconds() - cpu_before
        # Let the backlog drain before the next workload (not counted).
        await self.pool.wait_for([label], expected, DRAIN_TIMEOUT)
        # Everything the mutations caused, delivered (or given up on) by now.
        statements = await self.target.statements() - statements_before
        return {
            "mutations": len(durations),
            "failed_mutations": len(self.failures),
            "failure_example": self.failures[0] if self.failures else None,
            "offered_rate": rate,
            "achieved_rate": self.achieved_rate,
            "mutation_p50_ms": ms(percentile(durations, 50)),
            "delivered": received,
            "window_s": round(window, 2),
            "updates_per_s": round(received / window, 1),
            "sql_statements_per_mutation": round(statements / max(1, len(durations)), 1),
            "server_cpu_share": round(server_cpu / window, 3),
            "client_cpu_share": round(client_cpu / window, 3),
        }

    async def statements_per_change(self, label: str, board: str) -> float:
        changes = self.sizes.sql_changes
        before = await self.target.statements()
        for _ in range(changes):
            card, version, _ = await self.target.mutate(
                self.owner(board), self.next_card(board), f"s{next(self._titles)}"
            )
            missing = await self.pool.wait_for([label], {board: {card: version}}, DRAIN_TIMEOUT)
            if missing:
                raise RuntimeError(f"{label}: {missing} sockets missed a change")
        # (The stats request itself runs no SQL.)
        return round((await self.target.statements() - before) / changes, 2)

    async def realtime_cost(self, user: str, apart: str) -> dict[str, dict[str, Any]]:
        """Mutation latency with real-time off (`off`), on with nobody subscribed
        (`nobody`) and on with one subscription of `user` (`one`): three servers on this
        target's database, side by side, the first two changing cards of the board
        `apart` (whose changes wake nobody), the third of `user`'s own board. First back
        to back (closed loop: the next mutation leaves when the last one answered), in
        turn, BLOCK mutations at a time, `mutations` times `mutation_rounds` each; then
        paced, at `rate_low` in all (`paced_*`). Each figure comes from the same minutes
        as the other two: this VM's speed drifts by 25 % and more within minutes, and
        figures taken one server after the other moved by more than the difference
        measured (in one run, nobody subscribed came out slower than one subscriber).
        The servers share the broker: had `nobody` changed `user`'s board, `one`'s
        subscriber would have been woken too, and its deliveries would have competed
        with `nobody`'s next mutation. Leaves the target stopped."""
        await self.target.stop()
        servers = {name: self.target.twin() for name in ("off", "nobody", "one")}
        boards = {"off": apart, "nobody": apart, "one": user}
        try:
            for name, server in servers.items():
                await server.start(realtime=name != "off")
            subscribed = Bench(servers["one"], self.pool, self.sizes)
            subscribed._titles = self._titles  # (a title used before changes nothing)
            await subscribed.open_live("one", subscribed.specs([user], 1), [user])
            for name, server in servers.items():
                for _ in range(self.sizes.mutation_warmup):
                    await self._mutate(server, boards[name], "w")
            costs = await self._back_to_back(servers, boards)
            costs.update(await self._paced(servers, boards, self.sizes.rate_low))
            await self.pool.close("one")
        finally:
            for server in servers.values():
                await server.stop()
                await server.close()
        return costs

    async def _mutate(self, server: Target, board: str, prefix: str) -> float:
        _, _, took = await server.mutate(
            self.owner(board), self.next_card(board), f"{prefix}{next(self._titles)}"
        )
        return took

    async def _back_to_back(
        self, servers: dict[str, Target], boards: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        total = self.sizes.mutations * self.sizes.mutation_rounds
        durations: dict[str, list[float]] = {name: [] for name in servers}
        order = list(servers)
        for start in range(0, total, BLOCK):
            for name in order:
                for _ in range(min(BLOCK, total - start)):
                    durations[name].append(await self._mutate(servers[name], boards[name], "l"))
            order.reverse()  # (no server always right after another)
        return {
            name: {"servers": len(servers), "block": BLOCK, **summary(taken)}
            for name, taken in durations.items()
        }

    async def _paced(
        self, servers: dict[str, Target], boards: dict[str, str], rate: float
    ) -> dict[str, dict[str, Any]]:
        """At `rate` mutations/s in all, one at a time and in turn to each server. At
        this rate a subscriber's deliveries run between mutations, so this is what
        real-time adds to a mutation's own path."""
        durations: dict[str, list[float]] = {name: [] for name in servers}
        turns = itertools.cycle(servers)
        started = time.perf_counter()
        # As many mutations per server as one server gets in `latency_seconds`.
        for n in range(int(rate * self.sizes.latency_seconds) * len(servers)):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            name = next(turns)
            durations[name].append(await self._mutate(servers[name], boards[name], "s"))
        keys = {"off": "paced_off", "nobody": "paced_nobody", "one": "paced_on"}
        return {
            keys[name]: {"rate": rate, "servers": len(servers), **summary(taken)}
            for name, taken in durations.items()
        }

    async def memory(self) -> dict[str, Any]:
        """RSS of the server with 0, ..., N idle subscribed connections (spread over the
        crowd's users), and the least-squares slope."""
        points: list[tuple[int, int]] = []
        crowd = [f"crowd{i}" for i in range(1000)]
        opened = 0
        for step in self.sizes.memory_steps:
            if step > opened:
                users = [crowd[i % len(crowd)] for i in range(opened, step)]
                await self.pool.open("idle", self.specs(users, 1))
                opened = step
            await asyncio.sleep(1.0)  # let the server settle (nothing to await on)
            points.append((opened, self.target.rss_kib()))
        await self.pool.close("idle")
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        return {"points": points, "kib_per_connection": round(slope, 2)}
