"""Run `python -m app` as a real process for tests that need a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.settings import ENVIRONMENT_VARIABLES

STARTUP_TIMEOUT_SECONDS = 20.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.1


def free_port() -> int:
    """A TCP port nothing listens on: bound by the kernel's choice, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def app_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without any of the app's variables, plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {name for name, _, _ in ENVIRONMENT_VARIABLES}
    }
    env.update(overrides)
    return env


def run_app(
    args: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m app ARGS` to completion (for --help and refused configurations)."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_until_healthy(self) -> None:
        """Poll /healthz until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode} before answering:\n{self.stderr}"
                )
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=1.0)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text}"
            # Wait for the process to exit, bounded: the poll interval doubles as the
            # early exit check above.
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=POLL_INTERVAL_SECONDS)
        raise AssertionError(
            f"server did not answer /healthz within {STARTUP_TIMEOUT_SECONDS} s "
            f"({last_error}):\n{self.stderr}"
        )

    def stop(self) -> int:
        """SIGTERM, and the exit code of a graceful shutdown."""
        self.process.terminate()
        return self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)


@contextmanager
def running_server(*, env: Mapping[str, str], cwd: Path) -> Iterator[Server]:
    """Start `python -m app` on a free port; it is killed on the way out, whatever happens."""
    port = free_port()
    stdout_path = cwd / "server.stdout"
    stderr_path = cwd / "server.stderr"
    # Files, not pipes: a server that logs a lot can never block on a full pipe.
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
            env=dict(env),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", stdout_path, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)


@contextmanager
def running_servers(
    *, env: Mapping[str, str], workdir: Path, names: tuple[str, ...] = ("one", "two")
) -> Iterator[list[Server]]:
    """Several `python -m app` processes sharing `env` (a database and a broker), each in
    its own directory under `workdir`, all healthy before this returns."""
    with ExitStack() as stack:
        servers = []
        for name in names:
            directory = workdir / name
            directory.mkdir()
            servers.append(stack.enter_context(running_server(env=env, cwd=directory)))
        for server in servers:
            server.wait_until_healthy()
        yield servers
