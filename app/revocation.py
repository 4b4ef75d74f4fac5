"""logOut: revoked tokens are stored in the database (every process refuses them from
then on) and announced on the broker's control channel, on which every process closes
the WebSockets that were opened with them.

The database is the source of truth; the announcement only makes it fast. A process
that may have missed announcements (broker reconnect) checks all its sockets against
the database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import TokenClaims
from app.live_sockets import LiveSockets
from models import token_revocations, utcnow
from models.database import fetch_value_on_driver, read_retrying_stale, single_statement_reads
from subscriptions.broker import Broker

logger = logging.getLogger("commitcast.revocation")

# Every process of the deployment subscribes to it for its lifetime (the broker
# prefixes it with the deployment's namespace, like the user channels).
CONTROL_CHANNEL = "control:token-revocations"
TRIM_INTERVAL = 60.0


# Asked on every authenticated request: built once (building a statement costs more CPU
# than running it).
_REVOKED = (
    select(token_revocations.c.id)
    .where(
        or_(
            token_revocations.c.token_id == bindparam("token_id"),
            (token_revocations.c.user_id == bindparam("user_id"))
            & (token_revocations.c.issued_through >= bindparam("issued_at")),
        )
    )
    .limit(1)
)
# The same, for asyncpg directly (models.database.fetch_value_on_driver): $1 token_id,
# $2 user_id, $3 issued_at. tests/test_logout.py runs both on PostgreSQL.
_REVOKED_ON_POSTGRESQL = (
    "SELECT id FROM token_revocations"
    " WHERE token_id = $1 OR (user_id = $2 AND issued_through >= $3) LIMIT 1"
)


class TokenRevocations:
    def __init__(
        self, engine: AsyncEngine, broker: Broker, sockets: LiveSockets, token_ttl_seconds: int
    ) -> None:
        self._engine = engine.execution_options(logging_token="revocation")  # noqa: S106 - a log tag
        # The per-request check is one statement: no transaction around it, and on
        # PostgreSQL straight on the driver (it runs for every authenticated request).
        self._check_engine = single_statement_reads(self._engine)
        self._on_postgresql = engine.dialect.name == "postgresql"
        self._broker = broker
        self._sockets = sockets
        self._token_ttl = token_ttl_seconds
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="token-revocations"),
            asyncio.create_task(self._trim_every(TRIM_INTERVAL), name="token-revocations-trim"),
        ]
        await self._listening.wait()  # subscribed (and confirmed) before we serve

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def is_revoked(self, claims: TokenClaims) -> bool:
        async def check() -> bool:
            if self._on_postgresql:
                found = await fetch_value_on_driver(
                    self._engine,
                    _REVOKED_ON_POSTGRESQL,
                    claims.token_id,
                    claims.user_id,
                    claims.issued_at_ms,
                )
                return found is not None
            async with self._check_engine.connect() as connection:
                found = await connection.scalar(
                    _REVOKED,
                    {
                        "token_id": claims.token_id,
                        "user_id": claims.user_id,
                        "issued_at": claims.issued_at_ms,
                    },
                )
            return found is not None

        # Asked on every authenticated request: without the checkout ping.
        return await read_retrying_stale(check)

    async def revoke(self, claims: TokenClaims, *, all_sessions: bool) -> None:
        """Revoke this token (and with all_sessions every token of its user issued until
        now), durably; then close the sockets that use them, on every process."""
        now_ms = int(time.time() * 1000)
        row: dict[str, object] = {"user_id": claims.user_id}
        if all_sessions:
            row["issued_through"] = now_ms
            # Tokens issued until now expire within one TTL from now.
            row["expires_at"] = utcnow() + timedelta(seconds=self._token_ttl)
        else:
            row["token_id"] = claims.token_id
            row["expires_at"] = datetime.fromtimestamp(claims.expires_at, UTC)
        async with self._engine.begin() as connection:
            await connection.execute(insert(token_revocations).values(**row))
        notice: dict[str, object] = {"user": claims.user_id}
        notice |= {"through": now_ms} if all_sessions else {"token": claims.token_id}
        self._apply(notice)  # this process at once, whatever the broker does
        try:
            await self._broker.publish(CONTROL_CHANNEL, json.dumps(notice))
        except Exception:
            # Stored: new requests and sockets with the token are refused everywhere.
            # Sockets on other processes close when they next check (see _recheck).
            logger.exception("could not announce a token revocation")

    async def trim(self) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(token_revocations).where(token_revocations.c.expires_at < utcnow())
            )
        return result.rowcount or 0

    def _apply(self, notice: dict[str, object]) -> None:
        user, token, through = notice.get("user"), notice.get("token"), notice.get("through")

        def revoked(claims: TokenClaims) -> bool:
            if claims.user_id != user:
                return False
            if token is not None:
                return claims.token_id == token
            return isinstance(through, int) and claims.issued_at_ms <= through

        self._sockets.close_where(revoked)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._broker.subscribe(CONTROL_CHANNEL) as subscriber:
                    self._listening.set()
                    async for message in subscriber:
                        if isinstance(message, str):
                            self._apply_message(message)
                        else:
                            await self._recheck()  # notices may have been lost
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("token revocation listener failed; restarting")
                self._listening.set()
                await asyncio.sleep(1.0)

    def _apply_message(self, message: str) -> None:
        try:
            notice = json.loads(message)
        except ValueError:
            logger.warning("ignoring a malformed revocation notice %r", message[:200])
            return
        if isinstance(notice, dict):
            self._apply(notice)

    async def _recheck(self) -> None:
        sockets = self._sockets.sockets()
        revoked = {id(s.claims) for s in sockets if await self.is_revoked(s.claims)}
        self._sockets.close_where(lambda claims: id(claims) in revoked)

    async def _trim_every(self, seconds: float) -> None:
        while True:
            try:
                await self.trim()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("trimming token revocations failed")
            await asyncio.sleep(seconds)
