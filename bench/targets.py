"""The two servers under test, each on a PostgreSQL database of its own (created and
dropped by the run) and a Redis namespace of its own, with the same population.

Population (inserted directly, no password hashing):
- `solo`: one user with one board of CARDS cards (1, 100 subscriptions of one user; SQL
  statements per change; mutation latency);
- `pairs`: GROUPS users, each with a board of their own (1,000 subscriptions: 10 sockets
  of each of 100 users, each receiving only their own board's changes), all of them also
  members of the board `team` (1,000 subscriptions over 100 users at saturation);
- `crowd`: MEMBERS users, all members of the board `crowd` (1,000 members of one board;
  their sockets are also the idle connections of the memory figure).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.http import KeepAliveClient

ROOT = Path(__file__).resolve().parent.parent
CARDS = 50
GROUPS = 100
MEMBERS = 1000
SECRET = secrets.token_urlsafe(48)
MUTATION = "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id version } }"


@dataclass
class Board:
    key: str
    cards: list[str]  # global ids


@dataclass
class Population:
    tokens: dict[str, str] = field(default_factory=dict)  # user key -> token
    boards: dict[str, Board] = field(default_factory=dict)  # board key -> board
    # user key -> board key of the board this user's sockets watch by default
    home: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dsn_of(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Target:
    """One server process of `kind` ("ours" or "baseline")."""

    def __init__(self, kind: str, postgres_url: str, redis_url: str, port: int) -> None:
        self.kind = kind
        self.port = port
        self.redis_url = redis_url
        self.admin_url = postgres_url
        self.database = f"commitcast_bench_{kind}_{uuid.uuid4().hex[:8]}"
        self.url = (
            make_url(postgres_url).set(database=self.database).render_as_string(hide_password=False)
        )
        self.driver = KeepAliveClient("127.0.0.1", port)
        self.process: subprocess.Popen[bytes] | None = None
        self.population = Population()
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=60,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )

    def twin(self) -> Target:
        """Another server of the same kind on this one's database and population, for
        figures taken side by side (start, stop and close it like this one)."""
        twin = Target(self.kind, self.admin_url, self.redis_url, free_port())
        twin.database, twin.url, twin.population = self.database, self.url, self.population
        return twin

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    # -- lifecycle ----------------------------------------------------------------------

    async def create_database(self) -> None:
        admin = await asyncpg.connect(dsn_of(self.admin_url))
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()

    async def drop_database(self) -> None:
        admin = await asyncpg.connect(dsn_of(self.admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    async def start(self, *, realtime: bool = True) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "BROKER_URL": self.redis_url,
            "SECRET_KEY": SECRET,
            "BENCH_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": str(ROOT),
        }
        await self.driver.close()
        self.driver = KeepAliveClient("127.0.0.1", self.port)  # a new server: new connections
        command = [sys.executable, "-m", "bench.serve", self.kind, "--port", str(self.port)]
        if not realtime:
            command.append("--no-realtime")
        # The server's own log (tracebacks of clients hanging up, ...) stays out of the
        # benchmark's output.
        self.log_path = Path(tempfile.gettempdir()) / f"{self.database}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603, ASYNC220 - returns at once
                command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.process.returncode}")
            try:
                if (await self.http.get("/__bench/stats")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.kind} server did not start within 60 s")

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    # -- measurements -------------------------------------------------------------------

    async def statements(self) -> int:
        return int((await self.http.get("/__bench/stats")).json()["statements"])

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    async def mutate(self, user: str, card: str, title: str) -> tuple[str, int, float]:
        """Rename a card as `user`; (card id, new version, seconds the request took)."""
        started = time.perf_counter()
        body = await self.driver.post_json(
            "/graphql",
            {"query": MUTATION, "variables": {"i": {"id": card, "title": title}}},
            {"Authorization": f"Bearer {self.population.tokens[user]}"},
        )
        took = time.perf_counter() - started
        if body.get("errors") or not body["data"]["updateCard"]:
            raise RuntimeError(f"mutation failed: {body}")
        updated = body["data"]["updateCard"]
        return updated["id"], int(updated["version"]), took

    # -- population ---------------------------------------------------------------------

    async def seed(self) -> None:
        engine = create_async_engine(self.url)
        try:
            if self.kind == "ours":
                await self._seed_ours(engine)
            else:
                await self._seed_baseline(engine)
        finally:
            await engine.dispose()

    def _layout(self) -> list[tuple[str, list[str]]]:
        """(board key, member user keys; the first owns it)."""
        boards = [("solo", ["solo"])]
        boards += [(f"pair{i}", [f"pair{i}"]) for i in range(GROUPS)]
        boards.append(("team", [f"pair{i}" for i in range(GROUPS)]))
        boards.append(("crowd", [f"crowd{i}" for i in range(MEMBERS)]))
        return boards

    def _users(self) -> list[str]:
        return (
            ["solo"] + [f"pair{i}" for i in range(GROUPS)] + [f"crowd{i}" for i in range(MEMBERS)]
        )

    async def _seed_ours(self, engine: AsyncEngine) -> None:
        import models
        from app.auth import Authenticator
        from schema.ids import encode_id

        auth = Authenticator(SECRET, 7 * 86400)
        users = self._users()
        async with engine.begin() as db:
            ids = list(
                await db.scalars(
                    insert(models.User).returning(models.User.id, sort_by_parameter_order=True),
                    [
                        {
                            "email": f"{u}@bench.example",
                            "name": u,
                            "password_hash": "-",
                            "version": 1,
                        }
                        for u in users
                    ],
                )
            )
            pk = dict(zip(users, ids, strict=True))
            for key, members in self._layout():
                board = await db.scalar(
                    insert(models.Board)
                    .values(name=key, owner_id=pk[members[0]], version=1)
                    .returning(models.Board.id)
                )
                await db.execute(
                    insert(models.Membership),
                    [
                        {
                            "board_id": board,
                            "user_id": pk[m],
                            "role": models.Role.OWNER if i == 0 else models.Role.EDITOR,
                            "version": 1,
                        }
                        for i, m in enumerate(members)
                    ],
                )
                cards = list(
                    await db.scalars(
                        insert(models.Card).returning(models.Card.id, sort_by_parameter_order=True),
                        [
                            {
                                "board_id": board,
                                "title": f"card {n}",
                                "position": float(n),
                                "author_id": pk[members[0]],
                                "version": 1,
                            }
                            for n in range(CARDS)
                        ],
                    )
                )
                self.population.boards[key] = Board(key, [encode_id("Card", c) for c in cards])
        for user in users:
            self.population.tokens[user] = auth.issue_token(pk[user])

    async def _seed_baseline(self, engine: AsyncEngine) -> None:
        import jwt

        from bench.baseline import app as baseline

        users = self._users()
        async with engine.begin() as db:
            ids = list(
                await db.scalars(
                    insert(baseline.User).returning(baseline.User.id, sort_by_parameter_order=True),
                    [{"name": u} for u in users],
                )
            )
            pk = dict(zip(users, ids, strict=True))
            now = __import__("datetime").datetime.now(__import__("datetime").UTC)
            for key, members in self._layout():
                board = await db.scalar(
                    insert(baseline.Board).values(name=key).returning(baseline.Board.id)
                )
                await db.execute(
                    insert(baseline.Membership),
                    [{"board_id": board, "user_id": pk[m]} for m in members],
                )
                cards = list(
                    await db.scalars(
                        insert(baseline.Card).returning(
                            baseline.Card.id, sort_by_parameter_order=True
                        ),
                        [
                            {
                                "board_id": board,
                                "title": f"card {n}",
                                "version": 1,
                                "updated_at": now,
                            }
                            for n in range(CARDS)
                        ],
                    )
                )
                self.population.boards[key] = Board(
                    key, [baseline.encode_id("Card", c) for c in cards]
                )
            assert await db.scalar(select(baseline.User.id).limit(1)) is not None
        for user in users:
            self.population.tokens[user] = jwt.encode(
                {"sub": str(pk[user])}, SECRET, algorithm="HS256"
            )

    async def close(self) -> None:
        await self.http.aclose()
        await self.driver.close()
