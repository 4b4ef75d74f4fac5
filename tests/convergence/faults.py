"""The fault injector: at planned moments of the run it restarts Redis, cuts the link
between an app process and Redis, cuts the clients' connections to a process, and
kills a process with SIGKILL (its clients then reconnect to the other one)."""

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
    """restart_redis | cut_redis_link | cut_clients | kill_app"""
    app: str | None = None


DEFAULT_PLAN = (
    Fault(2.5, "cut_clients", "a"),
    Fault(4.5, "restart_redis"),
    Fault(6.5, "cut_redis_link", "b"),
    Fault(8.0, "cut_clients", "b"),
    Fault(10.0, "kill_app", "a"),
    Fault(12.0, "restart_redis"),
    Fault(13.5, "cut_redis_link", "b"),
    Fault(15.0, "cut_clients", "b"),
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
        if fault.kind == "cut_clients":
            return f"({app.client_link.cut()} connections)"
        if fault.kind == "kill_app":
            if not app.alive:
                return "(already dead)"
            await app.kill()
            return f"(exit {app.server.process.returncode})"
        raise ValueError(f"unknown fault {fault}")
