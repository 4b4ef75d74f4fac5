"""Subscriptions streamed over plain HTTP (issue 6, item 3): graphql-sse and Apollo
Client's multipart subscriptions, with the WebSocket transports' semantics.

The real clients (clients/http-streaming-test/streaming.mjs, set up by
commitcast-http.mjs, the code docs/realtime.md shows) run against a live server on both
deployments: updates arrive for the viewer's records and never for another user's,
a network drop is resumed from the last cursor with nothing missed, a malformed cursor
gets RESYNC, and a missing, malformed or orphaned token a coded UNAUTHENTICATED error.
Python streams (httpx) check what the clients cannot see: heartbeats while idle, no
database connection held while waiting, and that a client closing its connection ends
the subscription (its broker subscription and database connections released), also in
the middle of building an update; a SIGTERM ends open streams instead of waiting for
them; stream errors (on every transport, WebSockets included) carry `extensions.code`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.settings import Settings
from subscriptions.changes import user_channel
from tests.live import LiveServer, live_server
from tests.node_clients import NodeClient, code_blocks, installed_package, run_node
from tests.realtime_support import Realtime
from tests.servers import app_environment, running_server
from tests.support import Account, GraphQLClient, connections_in_use, eventually
from tests.team import signed_token
from tests.ws_client import graphql_socket

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "http-streaming-test"
SCRIPT = CLIENT_DIR / "streaming.mjs"
HELPER = CLIENT_DIR / "commitcast-http.mjs"
REALTIME_DOC = Path(__file__).resolve().parent.parent / "docs" / "realtime.md"
SCRIPT_TIMEOUT = 60.0
CLIENT_WAIT_MS = 10_000
# Short, so that a test sees several keep-alives while a stream is idle (production
# uses app/streaming.py's defaults: 15 s for SSE, 5 s for multipart).
HEARTBEAT_SECONDS = 0.2
STREAM_TIMEOUT = 10.0

SSE = "text/event-stream"
MULTIPART = "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/json"
ACCEPT = {"sse": SSE, "multipart": MULTIPART}
TRANSPORTS = tuple(ACCEPT)
USER_UPDATES = "subscription { userUpdates { cursor op typename id node { id } } }"


@pytest.fixture
async def streaming(realtime_settings: Settings) -> AsyncIterator[Realtime]:
    """A live server on each deployment, with short stream heartbeats."""
    async with (
        live_server(realtime_settings, stream_heartbeat_seconds=HEARTBEAT_SECONDS) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        yield Realtime(server, GraphQLClient(http, server.runtime))


@pytest.fixture(scope="session")
def streaming_clients() -> NodeClient:
    return installed_package(CLIENT_DIR)


# -- the real clients -------------------------------------------------------------------


async def test_real_clients_get_the_websocket_semantics_over_http(
    streaming: Realtime, streaming_clients: NodeClient
) -> None:
    api = streaming.api
    ann, bob, cleo = [await api.account(name) for name in ("Ann", "Bob", "Cleo")]
    shared = await api.board(ann, "Launch")
    await api.add_member(ann, shared, bob, "EDITOR")
    cleos = await api.board(cleo, "Cleo's own")
    ghost = signed_token(cleo.pk + 1000, api.runtime.settings.secret_key)
    code, output = await run_node(
        streaming_clients,
        {
            "COMMITCAST_TRANSPORTS": ",".join(TRANSPORTS),
            "COMMITCAST_HTTP_URL": streaming.server.http_url,
            "COMMITCAST_TOKEN_A": ann.token,
            "COMMITCAST_TOKEN_B": bob.token,
            "COMMITCAST_TOKEN_C": cleo.token,
            "COMMITCAST_GHOST_TOKEN": ghost,
            "COMMITCAST_BOARD_ID": shared,
            "COMMITCAST_OTHER_BOARD_ID": cleos,
            "COMMITCAST_TIMEOUT_MS": str(CLIENT_WAIT_MS),
        },
        SCRIPT.name,
        within=SCRIPT_TIMEOUT,
    )
    lines = [line for line in output.splitlines() if line.startswith("http streaming ")]
    assert code == 0, f"{SCRIPT.name} failed (exit {code}):\n{output}"
    scenarios = [" ".join(line.split(":")[0].split()[-2:]) for line in lines]
    assert scenarios == [f"{t} {s}" for t in TRANSPORTS for s in ("live", "resync", "auth")], output
    assert all(": OK: " in line for line in lines), output
    for line in lines:
        print(line)  # shown with `pytest -rP`


def test_the_docs_show_the_tested_client_setup() -> None:
    """docs/realtime.md shows commitcast-http.mjs verbatim: the code the clients ran."""
    helper = HELPER.read_text().strip()
    assert helper in code_blocks(REALTIME_DOC.read_text(), "js"), (
        "docs/realtime.md must show clients/http-streaming-test/commitcast-http.mjs "
        "verbatim in a ```js block"
    )


# -- the wire, from Python ----------------------------------------------------------------


@dataclass
class Message:
    """One SSE event or multipart part; `heartbeat` for a keep-alive."""

    heartbeat: bool
    event: str | None = None
    payload: Any = None


async def sse_messages(response: httpx.Response) -> AsyncIterator[Message]:
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Message(heartbeat=True)
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and event is not None:
            body = "\n".join(data)
            yield Message(heartbeat=False, event=event, payload=json.loads(body) if body else None)
            event, data = None, []


async def multipart_messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Parts as Apollo Client reads them: split at CRLF--graphql, JSON after the headers."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while (end := buffer.find("\r\n--graphql")) >= 0:
            part, buffer = buffer[:end], buffer[end + len("\r\n--graphql") :]
            _headers, separator, body = part.partition("\r\n\r\n")
            if not separator:
                continue
            content = json.loads(body)
            if content == {}:
                yield Message(heartbeat=True)
            else:
                yield Message(heartbeat=False, event="next", payload=content["payload"])
        if buffer.startswith("--"):
            yield Message(heartbeat=False, event="complete")
            return


@asynccontextmanager
async def open_stream(
    server: LiveServer, transport: str, query: str, token: str | None
) -> AsyncIterator[AsyncIterator[Message]]:
    """POST a subscription to /graphql with the transport's Accept header; its messages.
    Leaving the block closes the connection, as a client that goes away does."""
    headers = {"accept": ACCEPT[transport]}
    if token:
        headers["authorization"] = f"Bearer {token}"
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=STREAM_TIMEOUT) as http,
        http.stream("POST", "/graphql", json={"query": query}, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        content_type = response.headers["content-type"]
        if transport == "sse":
            assert content_type.startswith(SSE)
            yield sse_messages(response)
        else:
            assert content_type.startswith("multipart/mixed;boundary=graphql")
            yield multipart_messages(response)


async def next_message(messages: AsyncIterator[Message], *, heartbeat: bool) -> Message:
    """The next heartbeat, or the next message that is not one."""
    async for message in messages:
        if message.heartbeat == heartbeat:
            return message
    raise AssertionError("the stream ended")


def pooled_connections(server: LiveServer) -> int:
    return connections_in_use(server.runtime.engine)


@pytest.mark.parametrize("transport", ["sse", "multipart"])
async def test_closing_the_connection_ends_the_subscription_and_frees_its_resources(
    streaming: Realtime, transport: str
) -> None:
    server, api = streaming.server, streaming.api
    ann = await api.account("Ann")
    channel = user_channel(ann.pk)
    broker = server.runtime.broker

    async def subscribed() -> bool:
        return broker.subscriber_count(channel) == 1

    async with open_stream(server, transport, USER_UPDATES, ann.token) as messages:
        await eventually(subscribed, "the subscription to Ann's channel")
        board = await api.board(ann, "Launch")
        update = await next_message(messages, heartbeat=False)
        assert update.event == "next"
        assert update.payload["data"]["userUpdates"]["id"] == board
        # Idle: kept alive by heartbeats, holding no database connection meanwhile
        # (polled: the relay may be using one for a moment).
        for _ in range(2):
            await next_message(messages, heartbeat=True)

        async def idle() -> bool:
            return pooled_connections(server) == 0

        await eventually(idle, "no database connection held by the idle stream")
        assert broker.subscriber_count(channel) == 1

    async def released() -> bool:
        return broker.subscriber_count(channel) == 0 and pooled_connections(server) == 0

    await eventually(released, "the closed stream's subscription to end")
    # Nothing is left that would still answer: a new change reaches no one.
    await api.card(ann, board, "After the client left")
    assert broker.subscriber_count(channel) == 0


async def account_stream_errors(
    server: LiveServer, transport: str, query: str, token: str | None
) -> list[dict[str, Any]]:
    """The errors of a stream that must fail at once, after checking that it completes."""
    async with open_stream(server, transport, query, token) as messages:
        failure = await next_message(messages, heartbeat=False)
        ending = await next_message(messages, heartbeat=False)
    assert failure.event == "next"
    assert ending.event == "complete"
    assert failure.payload["data"] is None
    errors: list[dict[str, Any]] = failure.payload["errors"]
    return errors


@pytest.mark.parametrize("transport", ["sse", "multipart"])
async def test_stream_errors_carry_codes_and_end_the_stream(
    sqlite_url: str, transport: str
) -> None:
    async with (
        live_server(Settings(database_url=sqlite_url)) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        ann: Account = await GraphQLClient(http, server.runtime).account("Ann")
        cases = [
            ("subscription { userUpdates { nope } }", ann.token, "GRAPHQL_VALIDATION_FAILED"),
            ("subscription { userUpdates {", ann.token, "GRAPHQL_PARSE_FAILED"),
            (
                "subscription { userUpdates(after: 5) { op } }",
                ann.token,
                "GRAPHQL_VALIDATION_FAILED",
            ),
            (USER_UPDATES, None, "UNAUTHENTICATED"),
            (USER_UPDATES, "not.a.jwt", "UNAUTHENTICATED"),
        ]
        for query, token, code in cases:
            errors = await account_stream_errors(server, transport, query, token)
            assert [error["extensions"]["code"] for error in errors] == [code], (query, errors)


# What urql's fetch exchange sends with every request.
GENERAL_PURPOSE_ACCEPT = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)


async def test_queries_from_clients_that_also_accept_streams_get_plain_json(
    sqlite_url: str,
) -> None:
    """A client listing stream types next to JSON (urql) gets JSON for queries and
    mutations, and a stream only for a subscription."""
    async with (
        live_server(Settings(database_url=sqlite_url)) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        ann: Account = await GraphQLClient(http, server.runtime).account("Ann")
        headers = {"Authorization": f"Bearer {ann.token}", "Accept": GENERAL_PURPOSE_ACCEPT}
        response = await http.post(
            "/graphql", json={"query": "{ viewer { name } }"}, headers=headers
        )
        assert response.headers["content-type"].startswith("application/"), response.text
        assert response.json() == {"data": {"viewer": {"name": "Ann"}}}
        async with http.stream(
            "POST", "/graphql", json={"query": USER_UPDATES}, headers=headers
        ) as stream:
            media_type = stream.headers["content-type"].split(";")[0]
            assert media_type in {"text/event-stream", "multipart/mixed"}


CARD_WITH_COMMENTS = (
    "subscription { userUpdates { op id node { id ... on Card { title comments { id } } } } }"
)


@pytest.fixture
async def postgres_redis_server(empty_postgres_url: str, redis_url: str) -> AsyncIterator[Realtime]:
    settings = Settings(database_url=empty_postgres_url, broker_url=redis_url)
    async with (
        live_server(settings, stream_heartbeat_seconds=HEARTBEAT_SECONDS) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        yield Realtime(server, GraphQLClient(http, server.runtime))


@pytest.mark.parametrize("transport", ["sse", "multipart"])
async def test_a_client_that_leaves_while_its_update_is_being_built_leaks_nothing(
    postgres_redis_server: Realtime, empty_postgres_url: str, transport: str
) -> None:
    """PostgreSQL: the subscription's reload is stuck on a lock (the test holds the
    comments table) when the client goes away. Its query is cancelled and its connection
    returned to the pool at once, while the lock is still held."""
    server, api = postgres_redis_server.server, postgres_redis_server.api
    ann = await api.account("Ann")
    board = await api.board(ann, "Launch")
    card = await api.card(ann, board, "Locked out")
    channel = user_channel(ann.pk)
    broker = server.runtime.broker
    dsn = (
        make_url(empty_postgres_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    # The watcher is not the locker: within a transaction PostgreSQL answers every read
    # of pg_stat_activity from a snapshot taken at the first one, so the locker would
    # keep seeing the reload not waiting yet if it first looked before it began to.
    locker, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:

        async def waiting_on_the_lock() -> int:
            count: int = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return count

        async with open_stream(server, transport, CARD_WITH_COMMENTS, ann.token):

            async def subscribed() -> bool:
                return broker.subscriber_count(channel) == 1

            await eventually(subscribed, "the subscription to Ann's channel")
            lock = locker.transaction()
            await lock.start()
            await locker.execute("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE")
            await api.data(
                "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }",
                {"i": {"id": card, "title": "Renamed"}},
                token=ann.token,
            )

            async def reload_blocked() -> bool:
                return await waiting_on_the_lock() == 1 and pooled_connections(server) == 1

            await eventually(reload_blocked, "the update's reload to wait on the lock")

        async def released() -> bool:
            return (
                broker.subscriber_count(channel) == 0
                and pooled_connections(server) == 0
                and await waiting_on_the_lock() == 0
            )

        await eventually(released, "the reload to be cancelled and its connection returned")
        await lock.rollback()
    finally:
        await locker.close()
        await watcher.close()
    # The pool is healthy: the next subscriber gets the next change.
    async with open_stream(server, transport, CARD_WITH_COMMENTS, ann.token) as messages:

        async def resubscribed() -> bool:
            return broker.subscriber_count(channel) == 1

        await eventually(resubscribed, "a new subscription")
        await api.data(
            "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }",
            {"i": {"id": card, "title": "Renamed again"}},
            token=ann.token,
        )
        update = await next_message(messages, heartbeat=False)
        assert update.payload["data"]["userUpdates"]["node"]["title"] == "Renamed again"


def test_shutdown_ends_open_streams_instead_of_waiting_for_them(tmp_path: Path) -> None:
    """`python -m app` stops promptly on SIGTERM with streams open (uvicorn alone would
    wait for them forever), ending them without `complete`: clients see a dropped
    connection and resume elsewhere from their cursor."""
    env = app_environment(DATABASE_URL="sqlite+aiosqlite:///commitcast.db")
    with running_server(env=env, cwd=tmp_path) as server:
        server.wait_until_healthy()
        with (
            httpx.Client(base_url=server.base_url, timeout=STREAM_TIMEOUT) as http,
            ExitStack() as streams,
        ):
            signed_up = http.post(
                "/graphql",
                json={
                    "query": "mutation($i: SignUpInput!) { signUp(input: $i) { token } }",
                    "variables": {
                        "i": {"email": "ann@example.com", "name": "Ann", "password": "long enough"}
                    },
                },
            ).json()
            token = signed_up["data"]["signUp"]["token"]
            headers = {"authorization": f"Bearer {token}"}
            responses = {
                transport: streams.enter_context(
                    http.stream(
                        "POST",
                        "/graphql",
                        json={"query": USER_UPDATES},
                        headers={**headers, "accept": accept},
                    )
                )
                for transport, accept in ACCEPT.items()
            }
            assert all(r.status_code == 200 for r in responses.values())
            started = time.monotonic()
            exit_code = server.stop()
            stopped_in = time.monotonic() - started
            bodies = {transport: r.read().decode() for transport, r in responses.items()}
    assert exit_code in (0, -signal.SIGTERM), server.stderr
    assert stopped_in < 5, f"shutdown took {stopped_in:.1f} s"
    assert "Application shutdown complete." in server.stderr
    assert "Traceback" not in server.stderr, server.stderr
    assert "ERROR" not in server.stderr, server.stderr
    assert "event: complete" not in bodies["sse"]
    assert "--graphql--" not in bodies["multipart"]


async def test_websocket_subscriptions_get_the_same_error_codes(sqlite_url: str) -> None:
    """Coding streamed results (schema.extensions.ErrorCodes.on_stream_result) serves
    the WebSocket transports too: their subscription errors were sent uncoded."""
    async with (
        live_server(Settings(database_url=sqlite_url)) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        ann = await GraphQLClient(http, server.runtime).account("Ann")
        async with graphql_socket(server.ws_url, ann.token) as socket:
            for query, code in [
                ("subscription { userUpdates { nope } }", "GRAPHQL_VALIDATION_FAILED"),
                ("subscription { userUpdates {", "GRAPHQL_PARSE_FAILED"),
            ]:
                await socket.subscribe(query)
                message = await socket.receive()
                assert message["type"] == "error", message
                assert [e["extensions"]["code"] for e in message["payload"]] == [code], message
