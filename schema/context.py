"""What every resolver gets as `info.context`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Row, Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from strawberry.types import Info as StrawberryInfo

from models.database import begin_on_checkout, read_retrying_stale
from schema.errors import ConcurrentChange, rate_limited, unauthenticated
from schema.loaders import Loaders, fetch_rows
from schema.shared_reads import ReadGroups, SharedReads
from subscriptions.delivery import DeliveryObserver
from subscriptions.feed import UpdateFeed
from subscriptions.fence import AccessFence


class Auth(Protocol):
    """Implemented by the app: password hashing and token issuing."""

    async def hash_password(self, password: str) -> str: ...

    async def verify_password(self, password_hash: str | None, password: str) -> bool:
        """Compare in constant work: a missing hash costs the same as a wrong one."""

    def issue_token(self, user_id: int) -> str: ...

    async def revoke(self, token: Any, *, all_sessions: bool) -> None:
        """Revoke `token` (Context.token), or every token of its user issued so far."""


# What RateLimiter counts, each with its own limit (app.settings): mutations per
# user, logIn attempts per email, and signUp/logIn attempts per client address.
MUTATIONS_PER_USER = "mutations"
LOGINS_PER_EMAIL = "login"
SIGN_INS_PER_ADDRESS = "sign-in-address"


class RateLimiter(Protocol):
    """Implemented by the app: attempt counters shared by every process."""

    async def hit(self, scope: str, key: str, cost: int = 1) -> float | None:
        """Count `cost` attempts for `key`; None while within the scope's limit, else
        the seconds until the next attempt is allowed."""


class DeliveredVersions:
    """The newest version of each record sent on one connection, so that a record never
    goes backwards there. Bounded: the oldest entries are forgotten first."""

    LIMIT = 10_000
    _DELETED = 2**62

    def __init__(self) -> None:
        # A plain dict, in least recently remembered order (an OrderedDict is about
        # half as big again, per connection and per entry); made with the first entry
        # (most connections of an idle app never get one).
        self._versions: dict[tuple[str, int], int] | None = None

    def advance(self, key: tuple[str, int], version: int | None) -> bool:
        """Record `version` for `key`; False when a newer one (or a deletion) was sent."""
        if version is None:
            return True
        sent = self._versions.get(key) if self._versions else None
        if sent is not None and sent > version:
            return False
        self._remember(key, version)
        return True

    def covers(self, key: tuple[str, int], version: int | None) -> bool:
        """True when a version at least this new was already sent (or the record was
        deleted): the change adds nothing, and needs no reload."""
        sent = self._versions.get(key) if self._versions else None
        return version is not None and sent is not None and sent >= version

    def deleted(self, key: tuple[str, int]) -> None:
        """Ids are never reused: nothing about a deleted record may follow."""
        self._remember(key, self._DELETED)

    def forget(self, key: tuple[str, int]) -> None:
        if self._versions:
            self._versions.pop(key, None)

    def __len__(self) -> int:
        return len(self._versions) if self._versions else 0

    def _remember(self, key: tuple[str, int], version: int) -> None:
        versions = self._versions
        if versions is None:
            versions = self._versions = {}
        versions.pop(key, None)  # (re-inserted: now the most recent)
        versions[key] = version
        if len(versions) > self.LIMIT:
            del versions[next(iter(versions))]  # the least recently remembered


# Slots: one Context lives as long as its WebSocket connection. Its private fields are
# first assigned in whatever order a connection's operations happen to run, and an
# instance whose attributes arrive in another order than the class's first one gets a
# dict of its own (about 0.8 KiB, per connection); slots have no order to differ.
@dataclass(eq=False, slots=True)
class Context:
    read_sessions: async_sessionmaker[AsyncSession]
    write_sessions: async_sessionmaker[AsyncSession]
    auth: Auth
    viewer_id: int | None = None
    # Why the request has no viewer although it sent a token ("token expired", ...).
    auth_problem: str | None = None
    request: Any = None
    response: Any = None
    # Where userUpdates reads from; None where the schema runs without real-time.
    feed: UpdateFeed | None = None
    # graphql-transport-ws / graphql-ws put the connection_init payload here; the app
    # drops it once it has authenticated the connection with it (app.graphql).
    connection_params: Any = None
    # The verified token the viewer authenticated with (the app's type; for logOut).
    token: Any = None
    # Shared by the process's contexts: removeMember excludes the removed user from
    # deliveries read before it committed (see subscriptions.fence).
    access_fence: AccessFence = field(default_factory=AccessFence)
    # Closes this WebSocket connection (code, reason); None over HTTP.
    close_connection: Callable[[int, str], Awaitable[None]] | None = None
    # What this connection's subscriptions have sent, per record (see DeliveredVersions).
    delivered: DeliveredVersions = field(default_factory=lambda: DeliveredVersions())
    # The process's shared reads for subscriptions (schema.shared_reads); None: each
    # batch of changes gets its own.
    read_groups: ReadGroups | None = None
    # Metrics and logs of what this connection's subscriptions deliver.
    deliveries: DeliveryObserver = field(default_factory=lambda: DeliveryObserver())
    # None: nothing is rate limited (a schema run outside the app).
    rate_limiter: RateLimiter | None = None
    # Built on first use (see `loaders`): most events and idle connections need none.
    _loaders: Loaders | None = field(default=None, init=False)
    _session: AsyncSession | None = field(default=None, init=False)
    # The access fence's clock when _session was opened (its snapshot is no older).
    _session_clock: int = field(default=0, init=False)
    # Loaders shared with the viewer's other local subscriptions (schema.shared_reads),
    # held from a reload until its result is built.
    _shared: SharedReads | None = field(default=None, init=False)
    # One AsyncSession runs one statement at a time, but strawberry resolves sibling
    # fields concurrently: every read goes through this lock.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.run_query, self.viewer_id)
        return self._loaders

    def require_viewer(self) -> int:
        if self.viewer_id is None:
            if self.auth_problem:
                raise unauthenticated(self.auth_problem)
            raise unauthenticated()
        return self.viewer_id

    async def limit_rate(self, scope: str, key: str, cost: int = 1) -> None:
        """Count attempts against a rate limit; RATE_LIMITED (with retryAfter) past it."""
        if self.rate_limiter is None:
            return
        retry_after = await self.rate_limiter.hit(scope, key, cost)
        if retry_after is not None:
            raise rate_limited(retry_after)

    @property
    def client_address(self) -> str:
        """The peer's address (HTTP request or WebSocket); "unknown" without one."""
        client = getattr(self.request, "client", None)
        host = getattr(client, "host", None)
        return host if isinstance(host, str) and host else "unknown"

    def act_as(self, user_id: int | None, problem: str | None = None, token: Any = None) -> None:
        """Run the rest of this operation (or connection) as `user_id`: after signUp and
        logIn, and when a WebSocket's connection_init carries a token."""
        self.viewer_id = user_id
        self.token = token
        self.auth_problem = problem
        self.fresh_reads()

    def fresh_reads(self) -> None:
        """Forget cached loads: what is read next comes from the database as it is now.

        A WebSocket connection keeps one Context for all its operations and events, so
        each of them starts here instead of trusting an earlier one's cache.
        """
        self._release_shared()
        self._loaders = None

    def share_reads(self, reads: SharedReads) -> None:
        """Read through `reads` (one snapshot and its loaders, shared by the local
        subscriptions presenting changes now) until close() or fresh_reads()."""
        if reads is self._shared:
            return
        viewer_id = self.require_viewer()
        self._release_shared()
        self._loaders = reads.acquire(viewer_id)
        self._shared = reads

    def shared_derived(self) -> dict[object, Any] | None:
        """While reading through shared loaders (share_reads): their `derived` dict,
        for what the viewer's subscriptions derive from the same loads. None otherwise."""
        if self._shared is None or self._loaders is None:
            return None
        return self._loaders.derived

    def shared_across_viewers(self) -> dict[object, Any] | None:
        """While reading through shared loaders (share_reads): what every viewer
        reading through them shares (SharedReads.across_viewers). None otherwise."""
        if self._shared is None or self._loaders is None:
            return None
        return self._shared.across_viewers

    def _release_shared(self) -> None:
        if self._shared is not None:
            self._shared.release()
            self._shared = None

    async def run_query(
        self, statement: Select[Any], parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        async with self._lock:
            if self._session is None:
                # The session's first statement takes its connection: a dropped one
                # costs a second try, not an error (and no ping each time).
                return await read_retrying_stale(lambda: self._open(statement, parameters))
            return await fetch_rows(self._session, statement, parameters)

    async def _open(
        self, statement: Select[Any], parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        if self._session is not None:  # a try that found its connection dropped
            await self._session.close()
        self._session_clock = self.access_fence.clock
        self._session = self.read_sessions()
        return await fetch_rows(self._session, statement, parameters)

    @property
    def snapshot_clock(self) -> int | None:
        """The access fence's clock when the read session in use began (None: none
        open). Subscriptions of one connection share it, and a viewer's local
        subscriptions share a batch's (schema.shared_reads; see subscriptions.fence)."""
        if self._shared is not None:
            return self._shared.snapshot_clock
        return self._session_clock if self._session is not None else None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A short write transaction in its own session, committed on exit.

        Afterwards the read session starts a fresh transaction and the loaders start
        empty, so the rest of the operation reads what was just committed.
        """
        try:
            async with self.write_sessions() as session, session.begin():
                await begin_on_checkout(session)
                yield session
        except StaleDataError:
            # A row changed under us between read and write (mutations that know the
            # record turn this into CONFLICT with its version first: write_record).
            raise ConcurrentChange() from None
        await self.wrote()

    async def wrote(self) -> None:
        """After a write committed (write(), or one on the driver): what the operation
        reads next comes from a fresh transaction and empty loaders."""
        async with self._lock:
            if self._session is not None and self._session.in_transaction():
                await self._session.commit()
        self._loaders = None

    async def close(self) -> None:
        # Loads are not kept past their session: shared ones may be read by nobody
        # else now, and an idle WebSocket connection (one Context for its life) must
        # not hold a set of loaders and the rows they cached.
        self.fresh_reads()
        async with self._lock:
            if self._session is not None:
                await self._session.close()
                self._session = None


Info = StrawberryInfo[Context, None]
