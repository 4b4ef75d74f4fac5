"""The convergence run, start to end: set up users and boards, subscribe every client,
write and inject faults, let things settle, then compare each client's map with a fresh
query of everything its user can see."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.convergence import documents as docs
from tests.convergence.api import run
from tests.convergence.cluster import Cluster, running_cluster
from tests.convergence.faults import DEFAULT_PLAN, Fault, FaultInjector
from tests.convergence.report import attempt_line, explain, order_violations, write_full_record
from tests.convergence.store import KINDS, Finding, Store, compare
from tests.convergence.subscriber import Person, Subscriber
from tests.convergence.writers import BoardModel, World, Writer

PASSWORD = "correct horse battery"
PEOPLE = ("Ada", "Bo", "Cy", "Di", "Ed")
# Board owner -> the other members: every user shares a board with most others.
BOARDS = {0: (1, 2, 3), 1: (0, 3, 4), 2: (0, 1, 4)}
# One subscriber per user, and a second socket on the other process for two of them.
SOCKETS = ((0, "a"), (1, "b"), (2, "a"), (3, "b"), (4, "a"), (0, "b"), (3, "a"))


@dataclass(frozen=True)
class Settings:
    seed: int
    writers: int = 4
    operations_per_writer: int = 150
    writer_pace: tuple[float, float] = (0.05, 0.15)
    write_seconds: float = 18.0
    plan: tuple[Fault, ...] = DEFAULT_PLAN
    quiet_seconds: float = 1.5
    settle_limit: float = 15.0
    ready_limit: float = 15.0


@dataclass
class Outcome:
    settings: Settings
    lines: list[str] = field(default_factory=list)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


class Activity:
    """Every subscriber touches it on each message and connection change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def touch(self) -> None:
        self._event.set()

    async def quiet(
        self,
        subscribers: list[Subscriber],
        seconds: float,
        limit: float,
        clock: Callable[[], float],
    ) -> bool:
        """True once every subscriber is connected, idle, and nothing happened for
        `seconds`; False when that has not come within `limit`."""
        deadline = clock() + limit
        while (remaining := deadline - clock()) > 0:
            self._event.clear()
            try:
                async with asyncio.timeout(min(seconds, remaining)):
                    await self._event.wait()
            except TimeoutError:
                if remaining >= seconds and all(s.connected and not s.busy for s in subscribers):
                    return True
        return False


async def sign_up(http: httpx.AsyncClient, index: int, name: str, tag: str) -> Person:
    email = f"{name.lower()}-{tag}@example.com"
    data = await run(http, docs.SIGN_UP, {"email": email, "name": name, "password": PASSWORD})
    payload = data["signUp"]
    return Person(index, name, email, payload["user"]["id"], payload["token"])


async def build_world(http: httpx.AsyncClient, tag: str, clock: Callable[[], float]) -> World:
    people = [await sign_up(http, i, name, tag) for i, name in enumerate(PEOPLE)]
    boards: list[BoardModel] = []
    for owner, members in BOARDS.items():
        name = f"{people[owner].name}'s board"
        data = await run(http, docs.CREATE_BOARD, {"n": name}, token=people[owner].token)
        board = BoardModel(data["createBoard"]["id"], owner)
        fetched = await run(http, docs.ONE_BOARD, {"id": board.id}, token=people[owner].token)
        (own,) = fetched["board"]["members"]
        board.members[owner] = (own["id"], "OWNER")
        for member in members:
            variables = {"b": board.id, "e": people[member].email, "r": "EDITOR"}
            added = await run(http, docs.ADD_MEMBER, variables, token=people[owner].token)
            board.members[member] = (added["addMember"]["id"], "EDITOR")
        boards.append(board)
    return World(people, boards, clock)


async def converge(database_url: str, workdir: Path, settings: Settings) -> Outcome:
    loop = asyncio.get_running_loop()
    clock = loop.time
    outcome = Outcome(settings)
    rng = random.Random(settings.seed)
    began = clock()
    async with AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(running_cluster(database_url, workdir))
        clients = {
            app.name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=app.direct_url, timeout=10)
            )
            for app in cluster.apps
        }
        outcome.say(
            f"convergence: seed {settings.seed}; {len(cluster.apps)} app processes "
            f"(started in {clock() - began:.1f} s), {len(PEOPLE)} users, {len(BOARDS)} boards, "
            f"{len(SOCKETS)} subscribers"
        )
        world = await build_world(clients["b"], str(settings.seed), clock)

        activity = Activity()
        subscribers = []
        for number, (index, home) in enumerate(SOCKETS):
            endpoints = [cluster.app(home), *(a for a in cluster.apps if a.name != home)]
            subscribers.append(
                Subscriber(
                    f"s{number}:{PEOPLE[index]}@{home}",
                    world.people[index],
                    endpoints,
                    clock,
                    activity.touch,
                )
            )
        tasks = [asyncio.create_task(s.run(), name=s.name) for s in subscribers]
        stack.push_async_callback(_stop, tasks)
        try:
            async with asyncio.timeout(settings.ready_limit):
                await asyncio.gather(*(s.ready.wait() for s in subscribers))
        except TimeoutError:
            raise AssertionError(
                f"not every subscriber got its first RESYNC within {settings.ready_limit} s: "
                + "; ".join(
                    f"{s.name} ready={s.ready.is_set()} reconnects={s.counters.reconnects} "
                    f"gave_up={s.gave_up} failures={s.counters.protocol_failures[:2]}"
                    for s in subscribers
                )
                + "".join(f"\n--- app {a.name} ---\n{a.log_tail()}" for a in cluster.apps)
            ) from None

        # Write, and break things meanwhile.
        start = clock()
        injector = FaultInjector(cluster, settings.plan, clock)
        writers = [
            Writer(n, world, cluster, clients, random.Random(rng.random()))
            for n in range(settings.writers)
        ]
        await asyncio.gather(
            injector.run(start),
            *(
                w.run(
                    settings.operations_per_writer,
                    settings.writer_pace,
                    start + settings.write_seconds,
                )
                for w in writers
            ),
        )
        wrote = clock() - start

        settled = await activity.quiet(
            subscribers, settings.quiet_seconds, settings.settle_limit, clock
        )
        settle_time = clock() - start - wrote
        if not settled:
            outcome.problems.append(
                f"subscribers did not settle within {settings.settle_limit} s: "
                + ", ".join(f"{s.name} connected={s.connected} busy={s.busy}" for s in subscribers)
            )

        survivor = cluster.alive()[0]
        truths: dict[int, Store] = {}
        for person in world.people:
            data = await run(clients[survivor.name], docs.EVERYTHING, token=person.token)
            truth = Store()
            truth.replace(data["viewer"]["boards"])
            truths[person.index] = truth
        for subscriber in subscribers:
            outcome.findings[subscriber.name] = compare(
                subscriber.store, truths[subscriber.person.index]
            )
        _report(
            outcome,
            cluster,
            world,
            subscribers,
            injector,
            truths,
            (start, wrote, settle_time),
            workdir / "convergence-record.txt",
        )
        outcome.say(f"convergence: whole run {clock() - began:.1f} s")
    return outcome


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the subscribers and wait until each has closed its connection."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _report(
    outcome: Outcome,
    cluster: Cluster,
    world: World,
    subscribers: list[Subscriber],
    injector: FaultInjector,
    truths: dict[int, Store],
    timing: tuple[float, float, float],
    record: Path,
) -> None:
    t0, wrote, settle_time = timing
    say = outcome.say
    attempts = len(world.log)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(world.outcomes.items()))
    say(f"writes: {attempts} mutations in {wrote:.1f} s through both processes ({outcomes})")
    for line in injector.done:
        say(f"fault: {line}")
    for s in subscribers:
        c = s.counters
        say(
            f"subscriber {s.name}: {c.updates} updates, {c.resyncs} resyncs, {c.joins} boards "
            f"loaded, {c.reconnects} reconnects ({c.failed_attempts} failed attempts), "
            f"{len(s.store.roots)} boards now"
        )
        outcome.problems.extend(c.protocol_failures)
        if s.gave_up:
            outcome.problems.append(s.gave_up)
    counts = {kind: 0 for kind in KINDS}
    for findings in outcome.findings.values():
        for finding in findings:
            counts[finding.kind] += 1
    counts["records compared"] = sum(len(truths[s.person.index].reachable()) for s in subscribers)
    counts["updates"] = sum(s.counters.updates for s in subscribers)
    counts["resyncs"] = sum(s.counters.resyncs for s in subscribers)
    counts["boards loaded"] = sum(s.counters.joins for s in subscribers)
    counts["reconnects"] = sum(s.counters.reconnects for s in subscribers)
    counts["faults"] = len(injector.done)
    counts["mutations"] = attempts
    counts["protocol failures"] = sum(len(s.counters.protocol_failures) for s in subscribers)
    server_errors = [a for a in world.log if a.outcome.startswith(("error", "server failure"))]
    refetch_failures = [f for s in subscribers for f in s.counters.refetch_failures]
    counts["server errors"] = len(server_errors) + len(refetch_failures)
    outcome.counts = counts
    say(f"settled in {settle_time:.1f} s after the last write")
    say("result: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for attempt in server_errors:
        say("server error in a mutation (a product bug): " + attempt_line(attempt, t0))
    for failure in refetch_failures:
        say(f"server error in a refetch (a product bug; the client retried): {failure}")
    violations = [v for s in subscribers for v in order_violations(s)]
    say(f"diagnostics: {len(violations)} updates out of log order on their connection")
    for violation in violations[:20]:
        say(f"  out of order: {violation}")
    for s in subscribers:
        for finding in outcome.findings[s.name]:
            explain(say, s, finding, truths[s.person.index], world, t0)
    if any(counts[kind] for kind in KINDS) or outcome.problems or counts["server errors"]:
        for app in cluster.apps:
            say(f"--- app {app.name} (alive={app.alive}) stderr tail ---\n{app.log_tail()}")
    write_full_record(record, outcome.lines, world, subscribers, t0)
    say(f"full record of the run (every mutation, every update applied): {record}")
