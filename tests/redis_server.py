"""A private, throwaway `redis-server` for tests that must stop and restart Redis.

The shared test Redis is never stopped: tests that need an outage start their own
server on a free 127.0.0.1 port (no persistence), kill it, and start it again on the
same port. Startup waits are bounded (PING polling) and the process is always killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
POLL_INTERVAL_SECONDS = 0.02

REQUIRE_SERVICES = (
    os.environ.get("CI", "").lower() in ("1", "true", "yes")
    or os.environ.get("COMMITCAST_REQUIRE_SERVICES") == "1"
)


def free_port() -> int:
    """A TCP port nothing listens on: chosen by the kernel, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def redis_server_binary() -> str:
    """The redis-server executable, or skip (fail in CI) when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not on PATH"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (CI requires it)", pytrace=False)
        pytest.skip(message)
    return binary


async def _answers_ping(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await reader.readline()).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class RedisServer:
    """One redis-server process on a fixed port, which can be killed and restarted."""

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port if port is not None else free_port()
        self._process: asyncio.subprocess.Process | None = None
        self._starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    async def start(self) -> None:
        assert not self.running, "already running"
        self._starts += 1
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                while not await _answers_ping(self.port):
                    if self._process.returncode is not None:
                        raise AssertionError(
                            f"redis-server exited with {self._process.returncode}:\n"
                            + self.log_path.read_text(errors="replace")
                        )
                    await asyncio.sleep(POLL_INTERVAL_SECONDS)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Kill the server (like a crash: no shutdown handshake) and reap it."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
            await process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(redis_server_binary(), directory)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


class TcpProxy:
    """A TCP proxy to a local port: a process far from Redis, in a test.

    `latency` delays every byte by that many seconds each way, so its commands reach
    Redis later than those of a process connected directly (which exposes "returned
    before SUBSCRIBE was confirmed"); the sleeps here are the simulated network, not
    synchronization. `hold()` keeps new connections waiting (accepted, nothing
    forwarded) until `release()`, which freezes a client in the middle of connecting.
    `cut()` severs every open connection at once (a network failure, as the
    convergence test's fault injector uses it); new ones still go through.
    """

    def __init__(self, target_port: int, latency: float = 0.0) -> None:
        self.target_port = target_port
        self.latency = latency
        self.port = 0
        self.held = 0
        """How many new connections are waiting for release() right now."""
        self._gate = asyncio.Event()
        self._gate.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Each accepted connection: its client-side writer and, once connected, the
        # upstream one. cut() aborts both sides of every link.
        self._links: dict[asyncio.StreamWriter, asyncio.StreamWriter | None] = {}
        self.cuts = 0
        """How many connections cut() has severed, over the proxy's life."""
        self._stopping = False

    @property
    def connections(self) -> int:
        """How many client connections are open through the proxy right now."""
        return len(self._links)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> int:
        """Sever every connection open right now, like a network failure: both sides
        are reset (no goodbye), and each endpoint sees its peer vanish. The proxy keeps
        listening, so new connections go through. Returns how many were cut."""
        links = list(self._links.items())
        self._links.clear()
        for client, upstream in links:
            for writer in (client, upstream):
                if writer is not None:
                    writer.transport.abort()
        self.cuts += len(links)
        return len(links)

    async def stop(self) -> None:
        self._stopping = True
        self._gate.set()  # held connections give up (see _accept) instead of hanging
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._links[writer] = None
        if not self._gate.is_set():
            self.held += 1
            try:
                await self._gate.wait()
            finally:
                self.held -= 1
        if self._stopping:
            self._forget(writer)
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            self._forget(writer)
            writer.close()
            return
        if writer not in self._links or self._stopping:  # cut or stopped meanwhile
            upstream_writer.transport.abort()
            writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        self._links[writer] = upstream_writer
        pipes = [
            asyncio.create_task(self._pipe(source, sink))
            for source, sink in ((reader, upstream_writer), (upstream_reader, writer))
        ]
        for task in pipes:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def finished(_task: asyncio.Task[None]) -> None:
            if all(pipe.done() for pipe in pipes):
                self._forget(writer)

        for task in pipes:
            task.add_done_callback(finished)

    def _forget(self, writer: asyncio.StreamWriter) -> None:
        # Only the bookkeeping of open links: stop() still closes every writer.
        self._links.pop(writer, None)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            writer.close()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((loop.time() + self.latency, data))
            chunks.put_nowait((loop.time() + self.latency, b""))
            await delivering
        except OSError:
            writer.close()
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivering


@contextlib.asynccontextmanager
async def tcp_proxy(target_port: int, latency: float = 0.0) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_port, latency)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
