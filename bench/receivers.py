"""The benchmark's receiving side: WebSocket subscribers spread over worker processes.

Each worker is a separate process with its own event loop, so the receivers are not
one Python process's CPU; the coordinator drives them over a pipe. A worker keeps
named sets of sockets (open, subscribe to `userUpdates`, acknowledge) and, per socket,
counts what arrives, keeps the newest version of each card seen, and the latency of
each update (its receive time minus the card's `updatedAt`, stamped by the server at
commit; same host, same clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.collector import settle

SUBSCRIPTION = """
subscription {
  userUpdates {
    cursor op typename id
    node { __typename id ... on Card { title version updatedAt } }
  }
}
"""
CONNECT_CONCURRENCY = 25
OPEN_TIMEOUT = 60.0


@dataclass(frozen=True)
class SocketSpec:
    url: str
    token: str
    groups: tuple[str, ...]  # the boards whose changes this socket must see


@dataclass(eq=False)
class Receiver:
    spec: SocketSpec
    connection: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    versions: dict[str, int] = field(default_factory=dict)
    received: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.sets: dict[str, list[Receiver]] = {}
        self.latencies: list[float] = []
        self.received = 0
        self.cpu_mark = time.process_time()

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, argument = await loop.run_in_executor(None, self.pipe.recv)
            if command == "exit":
                await self.close_all()
                self.pipe.send(None)
                return
            try:
                reply = await getattr(self, command)(argument)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.pipe.send(reply)

    # -- commands -----------------------------------------------------------------------

    async def open(self, argument: dict[str, Any]) -> dict[str, Any]:
        label = argument["label"]
        specs = [SocketSpec(s["url"], s["token"], tuple(s["groups"])) for s in argument["specs"]]
        receivers = [Receiver(spec) for spec in specs]
        self.sets.setdefault(label, []).extend(receivers)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def start(receiver: Receiver) -> None:
            async with gate:
                await self._connect(receiver)

        results = await asyncio.gather(*(start(r) for r in receivers), return_exceptions=True)
        failures = [repr(r) for r in results if isinstance(r, BaseException)]
        return {"opened": len(receivers) - len(failures), "failures": failures[:3]}

    async def close(self, label: str) -> dict[str, Any]:
        receivers = self.sets.pop(label, [])
        await asyncio.gather(*(self._close(r) for r in receivers))
        return {"closed": len(receivers)}

    async def wait_for(self, argument: dict[str, Any]) -> dict[str, Any]:
        """Wait until every socket of the given sets has, for each card its group
        expects, that version or newer; return how many (socket, card) pairs were not
        reached within the timeout."""
        expected: dict[str, dict[str, int]] = argument["expected"]
        deadline = time.monotonic() + argument["timeout"]
        receivers = [r for label in argument["labels"] for r in self.sets.get(label, [])]

        def missing(receiver: Receiver) -> int:
            return sum(
                1
                for group in receiver.spec.groups
                for card, v in expected.get(group, {}).items()
                if receiver.versions.get(card, 0) < v
            )

        async def reach(receiver: Receiver) -> None:
            while missing(receiver):
                receiver.changed.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(receiver.changed.wait(), remaining)

        await asyncio.gather(*(reach(r) for r in receivers))
        return {"missing": sum(missing(r) for r in receivers), "sockets": len(receivers)}

    async def reset(self, _argument: Any) -> dict[str, Any]:
        self.latencies = []
        self.received = 0
        settle()  # (before the window: bench.collector)
        self.cpu_mark = time.process_time()
        return {}

    async def collect(self, argument: dict[str, Any]) -> dict[str, Any]:
        return {
            "received": self.received,
            "latencies": self.latencies if argument.get("latencies") else [],
            "cpu_seconds": time.process_time() - self.cpu_mark,
        }

    # -- sockets ------------------------------------------------------------------------

    async def _connect(self, receiver: Receiver) -> None:
        connection = await connect(
            receiver.spec.url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            compression=None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,
            max_size=None,
        )
        await connection.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"authorization": f"Bearer {receiver.spec.token}"},
                }
            )
        )
        ack = json.loads(await asyncio.wait_for(connection.recv(), OPEN_TIMEOUT))
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"not acknowledged: {ack}")
        await connection.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
        )
        receiver.connection = connection
        receiver.task = asyncio.create_task(self._read(receiver))

    async def _read(self, receiver: Receiver) -> None:
        assert receiver.connection is not None
        with contextlib.suppress(Exception):
            async for raw in receiver.connection:
                now = time.time()
                message = json.loads(raw)
                if message.get("type") != "next":
                    continue
                update = message["payload"]["data"]["userUpdates"]
                node = update.get("node")
                receiver.received += 1
                self.received += 1
                if node and node.get("version") is not None:
                    card = node["id"]
                    if node["version"] > receiver.versions.get(card, 0):
                        receiver.versions[card] = node["version"]
                    stamp = datetime.fromisoformat(node["updatedAt"]).timestamp()
                    self.latencies.append(now - stamp)
                receiver.changed.set()

    async def _close(self, receiver: Receiver) -> None:
        if receiver.task is not None:
            receiver.task.cancel()
        if receiver.connection is not None:
            with contextlib.suppress(Exception):
                await receiver.connection.close()

    async def close_all(self) -> None:
        for label in list(self.sets):
            await self.close(label)


def _run(pipe: Connection) -> None:
    try:
        import uvloop

        uvloop.run(Worker(pipe).main())
    except ImportError:  # pragma: no cover
        asyncio.run(Worker(pipe).main())


class Pool:
    """`size` worker processes; a set of sockets is spread over all of them."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(size):
            ours, theirs = context.Pipe()
            process = context.Process(target=_run, args=(theirs,), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    async def _call(self, pipe: Connection, command: str, argument: Any) -> Any:
        loop = asyncio.get_running_loop()
        pipe.send((command, argument))
        return await loop.run_in_executor(None, pipe.recv)

    async def all(self, command: str, arguments: list[Any]) -> list[Any]:
        replies = await asyncio.gather(
            *(self._call(p, command, a) for p, a in zip(self.pipes, arguments, strict=True))
        )
        for reply in replies:
            if isinstance(reply, dict) and "error" in reply:
                raise RuntimeError(f"receiver {command} failed: {reply['error']}")
        return list(replies)

    async def broadcast(self, command: str, argument: Any) -> list[Any]:
        return await self.all(command, [argument] * len(self.pipes))

    async def open(self, label: str, specs: list[SocketSpec]) -> int:
        shares: list[list[dict[str, Any]]] = [[] for _ in self.pipes]
        for i, spec in enumerate(specs):
            shares[i % len(shares)].append(
                {"url": spec.url, "token": spec.token, "groups": list(spec.groups)}
            )
        replies = await self.all("open", [{"label": label, "specs": s} for s in shares])
        failures = [f for r in replies for f in r["failures"]]
        if failures:
            raise RuntimeError(f"could not open every socket of {label}: {failures}")
        return sum(r["opened"] for r in replies)

    async def close(self, label: str) -> None:
        await self.broadcast("close", label)

    async def wait_for(
        self, labels: list[str], expected: dict[str, dict[str, int]], within: float
    ) -> int:
        replies = await self.broadcast(
            "wait_for", {"labels": labels, "expected": expected, "timeout": within}
        )
        return sum(r["missing"] for r in replies)

    async def reset(self) -> None:
        """Before a window: the receivers' counts back to zero, and every benchmark
        process's collector settled (bench.collector)."""
        await self.broadcast("reset", None)
        settle()

    async def collect(self, latencies: bool = False) -> tuple[int, list[float], float]:
        replies = await self.broadcast("collect", {"latencies": latencies})
        received = sum(r["received"] for r in replies)
        values = [v for r in replies for v in r["latencies"]]
        cpu = sum(r["cpu_seconds"] for r in replies)
        return received, values, cpu

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broadcast("exit", None), 30)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
