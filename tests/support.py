"""Test helpers: a small GraphQL client and fast account creation."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

import models
from app.runtime import Runtime
from models.database import is_driver_statement
from models.kept_connections import kept_for
from schema.ids import encode_id

PASSWORD = "correct horse battery"


@functools.cache
def password_hash() -> str:
    # Hashing costs ~0.1 s by design; tests make many accounts, so hash once.
    return PasswordHasher().hash(PASSWORD)


@dataclass(frozen=True)
class Account:
    pk: int
    id: str
    email: str
    name: str
    token: str


@asynccontextmanager
async def driver_statements(
    engine: AsyncEngine, record: Callable[[str], None]
) -> AsyncIterator[None]:
    """Call `record(statement)` for each statement run on asyncpg directly
    (models.database.fetch_on_driver: the revocation check, change-log reads) on the
    connections `engine` hands out meanwhile: SQLAlchemy's cursor events do not see
    them. asyncpg calls its loggers with loop.call_soon as a statement ends: a statement
    is recorded in the event-loop tick after it ran, so the block's last ones are
    recorded once the loop has turned once more, at its end. Nothing on SQLite (no such
    reads there)."""
    drivers: set[Any] = set()  # (each connection once, however often checked out)

    def logger(query: Any) -> None:
        if is_driver_statement(query.query):
            record(query.query.strip())

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if hasattr(driver, "add_query_logger"):
            driver.add_query_logger(logger)
            drivers.add(driver)

    pool = engine.sync_engine.pool
    event.listen(pool, "checkout", on_checkout)
    # Connections kept between such statements (models.kept_connections) are not
    # checked out again: watched from now on, too.
    kept = kept_for(engine)
    for kept_driver in kept.drivers() if kept is not None else ():
        kept_driver.add_query_logger(logger)
        drivers.add(kept_driver)
    try:
        yield
        await asyncio.sleep(0)
    finally:
        event.remove(pool, "checkout", on_checkout)
        for driver in drivers:
            driver.remove_query_logger(logger)


def connections_in_use(engine: AsyncEngine) -> int:
    """Connections checked out of `engine`'s pool, but for those kept idle between
    statements on the driver (models.kept_connections; no transaction open on them)."""
    kept = kept_for(engine)
    if kept is not None:
        assert not any(driver.is_in_transaction() for driver in kept.drivers())
    pool: Any = engine.sync_engine.pool
    return int(pool.checkedout()) - (len(kept) if kept is not None else 0)


class GraphQLError(AssertionError):
    pass


class GraphQLClient:
    """POSTs GraphQL over HTTP to the app under test."""

    def __init__(self, http: httpx.AsyncClient, runtime: Runtime) -> None:
        self.http = http
        self.runtime = runtime

    async def execute(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The `data` of a response that must have no errors."""
        body = await self.execute(query, variables, token=token)
        if body.get("errors"):
            raise GraphQLError(f"unexpected errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    async def error(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The single error of a response that must fail."""
        body = await self.execute(query, variables, token=token)
        errors = body.get("errors") or []
        if len(errors) != 1:
            raise GraphQLError(f"expected one error, got {body}")
        error: dict[str, Any] = errors[0]
        return error

    async def account(self, name: str) -> Account:
        """A user inserted directly (fast), with a real token."""
        email = f"{name.lower()}@example.com"
        async with self.runtime.write_sessions() as session, session.begin():
            user = models.User(email=email, name=name, password_hash=password_hash())
            session.add(user)
        token = self.runtime.authenticator.issue_token(user.id)
        return Account(user.id, encode_id("User", user.id), email, name, token)

    async def board(self, owner: Account, name: str = "Roadmap") -> str:
        data = await self.data(
            "mutation($n: String!) { createBoard(input: {name: $n}) { id } }",
            {"n": name},
            token=owner.token,
        )
        board_id: str = data["createBoard"]["id"]
        return board_id

    async def add_member(self, owner: Account, board_id: str, member: Account, role: str) -> str:
        data = await self.data(
            "mutation($b: ID!, $e: String!, $r: Role!) {"
            " addMember(input: {boardId: $b, email: $e, role: $r}) { id } }",
            {"b": board_id, "e": member.email, "r": role},
            token=owner.token,
        )
        membership_id: str = data["addMember"]["id"]
        return membership_id

    async def card(self, author: Account, board_id: str, title: str = "Write docs") -> str:
        data = await self.data(
            "mutation($b: ID!, $t: String!) { createCard(input: {boardId: $b, title: $t}) { id } }",
            {"b": board_id, "t": title},
            token=author.token,
        )
        card_id: str = data["createCard"]["id"]
        return card_id

    async def comment(self, author: Account, card_id: str, body: str = "Looks good") -> str:
        data = await self.data(
            "mutation($c: ID!, $b: String!) { addComment(input: {cardId: $c, body: $b}) { id } }",
            {"c": card_id, "b": body},
            token=author.token,
        )
        comment_id: str = data["addComment"]["id"]
        return comment_id


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    """Poll `check` until it returns True, failing after `within` seconds. For state
    that offers nothing to await (a counter in another task, an external server)."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {within} s waiting for {what}")


async def subscriptions_started(
    runtime: Runtime, user_ids: Iterable[int], within: float = 10.0
) -> None:
    """Wait until each user in `user_ids` has as many `userUpdates` on this process as
    the user appears there, each with its starting point fixed: a change committed from
    then on is in every one of them (see subscriptions_live for why that wait matters;
    the faster a mutation, the likelier it commits before the server runs a
    subscription the client sent just before it)."""
    wanted = Counter(user_ids)
    hubs = runtime.feed.hubs

    async def started() -> bool:
        # A subscription joins its user's hub once its starting point is fixed.
        for user_id, count in wanted.items():
            hub = hubs.hub(user_id)
            if hub is None or len(hub.listeners) < count:
                return False
        return True

    await eventually(started, f"{sum(wanted.values())} subscription(s) started", within)


async def subscriptions_live(runtime: Runtime, users: int, within: float = 10.0) -> None:
    """Wait until `users` users have a live `userUpdates` on this process. A subscription
    without `after` starts at the log's head when the server runs it, not when the client
    sends it: a change committed in between would not be in it."""
    hubs = runtime.feed.hubs

    async def live() -> bool:
        # A user's hub exists once their subscription's starting point is fixed.
        return len(hubs) >= users

    await eventually(live, f"{users} live subscription(s)", within)
