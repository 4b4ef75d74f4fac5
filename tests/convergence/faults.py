"""The fault injector: at planned moments of the run it restarts Redis, cuts the link
between an app process and Redis (or holds it down), cuts the clients' connections to a
process, and kills a process with SIGKILL (its clients then reconnect to the other one).

The default plan kills process a while its link to Redis is down: what it committed
in the last second was never published, which only the change log (and another
process's sweeper) can still deliver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.convergence.cluster import Cluster

REDIS_OUTAGE_SECONDS = 0.5


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the writers start."""
    kind: str
    """restart_redis | cut_redis_link | hold_redis_link | release_redis_link | cut_clients
    | kill_app"""
    app: str | None = None


DEFAULT_PLAN = (
    Fault(2.0, "cut_clients", "a"),
    Fault(3.5, "restart_redis"),
    Fault(5.0, "cut_redis_link", "b"),
    Fault(6.5, "cut_clients", "b"),
    Fault(8.0, "restart_redis"),
    Fault(9.5, "cut_redis_link", "a"),
    Fault(11.0, "cut_clients", "b"),
    # Last, so that no later reconnect or refetch hides what only the change log can
    # still deliver: what a committed while cut off from Redis, to b's clients.
    Fault(12.0, "hold_redis_link", "a"),
    Fault(14.0, "kill_app", "a"),
    Fault(14.5, "release_redis_link", "a"),
)


@dataclass
class FaultInjector:
    cluster: Cluster
    plan: tuple[Fault, ...]
    clock: Callable[[], float]
    done: list[str] = field(default_factory=list)

    async def run(self, start: float) -> None:
        for fault in sorted(self.plan, key=lambda f: f.at):
            # Pacing: faults happen at planned moments of the run.
            await asyncio.sleep(max(0.0, start + fault.at - self.clock()))
            detail = await self.inject(fault)
            self.done.append(
                f"{self.clock() - start:5.1f}s {fault.kind} {fault.app or ''} {detail}"
            )

    async def inject(self, fault: Fault) -> str:
        if fault.kind == "restart_redis":
            await self.cluster.redis.stop()
            # The outage lasts a moment: the relay retries, subscribers reconnect.
            await asyncio.sleep(REDIS_OUTAGE_SECONDS)
            await self.cluster.redis.start()
            return f"(down {REDIS_OUTAGE_SECONDS} s)"
        assert fault.app is not None, fault
        app = self.cluster.app(fault.app)
        if fault.kind == "cut_redis_link":
            return f"({app.redis_link.cut()} connections)"
        if fault.kind == "hold_redis_link":
            # Down until released: reconnects are accepted and then hang.
            app.redis_link.hold()
            return f"({app.redis_link.cut()} connections)"
        if fault.kind == "release_redis_link":
            app.redis_link.release()
            return ""
        if fault.kind == "cut_clients":
            return f"({app.client_link.cut()} connections)"
        if fault.kind == "kill_app":
            if not app.alive:
                return "(already dead)"
            await app.kill()
            return f"(exit {app.server.process.returncode})"
        raise ValueError(f"unknown fault {fault}")
