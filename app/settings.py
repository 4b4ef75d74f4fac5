"""Configuration, read from the environment once into one typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from strawberry.http.websocket_origin import normalize_allowed_origins

from app.rate_limit import Rate, RateLimitError
from models.database import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from schema.limits import DEFAULT_MAX_ALIASES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_TOKENS, QueryLimits
from subscriptions.broker import BrokerURLError, check_broker_url

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./commitcast.db"
DEFAULT_BROKER_URL = "memory://"
# Public on purpose: anyone can forge tokens signed with it. Development only.
DEVELOPMENT_SECRET_KEY = "commitcast-development-secret-do-not-use-in-production"  # noqa: S105
DEFAULT_TOKEN_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_CHANGE_LOG_RETENTION_SECONDS = 24 * 3600
MIN_SECRET_KEY_LENGTH = 32
DEFAULT_WS_CONNECTION_INIT_TIMEOUT_SECONDS = 10.0
DEFAULT_WS_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_WS_MAX_SUBSCRIPTIONS = 20
DEFAULT_WS_MAX_SOCKETS_PER_USER = 50
DEFAULT_MUTATION_RATE = Rate(300, 60)
DEFAULT_LOGIN_RATE = Rate(10, 300)
DEFAULT_SIGN_IN_ADDRESS_RATE = Rate(100, 300)

Environment = Literal["development", "production"]
LogFormat = Literal["text", "json"]


class SettingsError(ValueError):
    """The environment holds a value the service cannot run with."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # PostgreSQL connections kept open per process, and how many more a burst may open.
    database_pool_size: int = DEFAULT_POOL_SIZE
    database_max_overflow: int = DEFAULT_MAX_OVERFLOW
    broker_url: str = DEFAULT_BROKER_URL
    secret_key: str = field(default=DEVELOPMENT_SECRET_KEY, repr=False)
    allowed_origins: tuple[str, ...] = ()
    token_ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS
    change_log_retention_seconds: int = DEFAULT_CHANGE_LOG_RETENTION_SECONDS
    environment: Environment = "development"
    log_format: LogFormat = "text"
    # When set, /metrics answers only requests bearing it (Authorization: Bearer ...).
    metrics_token: str | None = field(default=None, repr=False)
    # WebSocket limits (see SECURITY.md).
    ws_connection_init_timeout_seconds: float = DEFAULT_WS_CONNECTION_INIT_TIMEOUT_SECONDS
    ws_max_message_bytes: int = DEFAULT_WS_MAX_MESSAGE_BYTES
    ws_max_subscriptions: int = DEFAULT_WS_MAX_SUBSCRIPTIONS
    ws_max_sockets_per_user: int = DEFAULT_WS_MAX_SOCKETS_PER_USER
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    # None: no limit.
    mutation_rate: Rate | None = DEFAULT_MUTATION_RATE
    login_rate: Rate | None = DEFAULT_LOGIN_RATE
    sign_in_address_rate: Rate | None = DEFAULT_SIGN_IN_ADDRESS_RATE
    # None: on in development, off in production.
    graphiql: bool | None = None
    introspection: bool | None = None
    # Freeze what exists once the server has started and collect young objects less
    # often (app/gc_tuning.py).
    gc_tuning: bool = True

    @property
    def serves_graphiql(self) -> bool:
        return self.graphiql if self.graphiql is not None else not self.production

    @property
    def allows_introspection(self) -> bool:
        return self.introspection if self.introspection is not None else not self.production

    @property
    def uses_development_secret(self) -> bool:
        return self.secret_key == DEVELOPMENT_SECRET_KEY

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def __post_init__(self) -> None:
        try:
            check_broker_url(self.broker_url)
        except BrokerURLError as exc:
            raise SettingsError(str(exc)) from None
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise SettingsError(
                f"DATABASE_URL {self.database_url!r}: use sqlite+aiosqlite:///path.db "
                "or postgresql+asyncpg://user@host/db"
            )
        if self.database_pool_size <= 0:
            raise SettingsError("DATABASE_POOL_SIZE must be a positive whole number")
        if self.database_max_overflow < 0:
            raise SettingsError("DATABASE_MAX_OVERFLOW must be a whole number, 0 or more")
        try:
            normalize_allowed_origins(self.allowed_origins)
        except ValueError as exc:
            raise SettingsError(f"ALLOWED_ORIGINS: {exc}") from None
        if self.token_ttl_seconds <= 0:
            raise SettingsError("TOKEN_TTL must be a positive number of seconds")
        if self.change_log_retention_seconds <= 0:
            raise SettingsError("CHANGE_LOG_RETENTION must be a positive number of seconds")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT {self.log_format!r}: use 'text' or 'json'")
        if self.ws_connection_init_timeout_seconds <= 0:
            raise SettingsError("WS_CONNECTION_INIT_TIMEOUT must be a positive number of seconds")
        for name, value in (
            ("WS_MAX_MESSAGE_SIZE", self.ws_max_message_bytes),
            ("WS_MAX_SUBSCRIPTIONS", self.ws_max_subscriptions),
            ("WS_MAX_SOCKETS_PER_USER", self.ws_max_sockets_per_user),
        ):
            if value <= 0:
                raise SettingsError(f"{name} must be a positive whole number")
        for name, value in (
            ("MAX_QUERY_DEPTH", self.query_limits.max_depth),
            ("MAX_QUERY_ALIASES", self.query_limits.max_aliases),
            ("MAX_QUERY_TOKENS", self.query_limits.max_tokens),
        ):
            if value <= 0:
                raise SettingsError(f"{name} must be a positive number")
        if self.production and self.uses_development_secret:
            raise SettingsError(
                "COMMITCAST_ENV=production refuses the development SECRET_KEY: "
                "set SECRET_KEY to a random string of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters"
            )
        if self.production and len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise SettingsError(
                f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters in production"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        environment = env.get("COMMITCAST_ENV", "development").strip().lower() or "development"
        if environment not in ("development", "production"):
            raise SettingsError(
                f"COMMITCAST_ENV {environment!r}: use 'development' or 'production'"
            )
        log_format = env.get("LOG_FORMAT", "").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT {log_format!r}: use 'text' or 'json'")
        return cls(
            database_url=env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL,
            database_pool_size=_number("DATABASE_POOL_SIZE", env, DEFAULT_POOL_SIZE),
            database_max_overflow=_number("DATABASE_MAX_OVERFLOW", env, DEFAULT_MAX_OVERFLOW),
            broker_url=env.get("BROKER_URL", "").strip() or DEFAULT_BROKER_URL,
            secret_key=env.get("SECRET_KEY", "") or DEVELOPMENT_SECRET_KEY,
            allowed_origins=_parse_origins(env.get("ALLOWED_ORIGINS", "")),
            token_ttl_seconds=_seconds(
                "TOKEN_TTL", env.get("TOKEN_TTL", ""), DEFAULT_TOKEN_TTL_SECONDS
            ),
            change_log_retention_seconds=_seconds(
                "CHANGE_LOG_RETENTION",
                env.get("CHANGE_LOG_RETENTION", ""),
                DEFAULT_CHANGE_LOG_RETENTION_SECONDS,
            ),
            environment="production" if environment == "production" else "development",
            log_format="json" if log_format == "json" else "text",
            metrics_token=env.get("METRICS_TOKEN", "").strip() or None,
            ws_connection_init_timeout_seconds=_positive_float(
                "WS_CONNECTION_INIT_TIMEOUT",
                env.get("WS_CONNECTION_INIT_TIMEOUT", ""),
                DEFAULT_WS_CONNECTION_INIT_TIMEOUT_SECONDS,
            ),
            ws_max_message_bytes=_whole(
                "WS_MAX_MESSAGE_SIZE",
                env.get("WS_MAX_MESSAGE_SIZE", ""),
                DEFAULT_WS_MAX_MESSAGE_BYTES,
            ),
            ws_max_subscriptions=_whole(
                "WS_MAX_SUBSCRIPTIONS",
                env.get("WS_MAX_SUBSCRIPTIONS", ""),
                DEFAULT_WS_MAX_SUBSCRIPTIONS,
            ),
            ws_max_sockets_per_user=_whole(
                "WS_MAX_SOCKETS_PER_USER",
                env.get("WS_MAX_SOCKETS_PER_USER", ""),
                DEFAULT_WS_MAX_SOCKETS_PER_USER,
            ),
            query_limits=QueryLimits(
                max_depth=_number("MAX_QUERY_DEPTH", env, DEFAULT_MAX_DEPTH),
                max_aliases=_number("MAX_QUERY_ALIASES", env, DEFAULT_MAX_ALIASES),
                max_tokens=_number("MAX_QUERY_TOKENS", env, DEFAULT_MAX_TOKENS),
            ),
            mutation_rate=_rate("MUTATION_RATE_LIMIT", env, DEFAULT_MUTATION_RATE),
            login_rate=_rate("LOGIN_RATE_LIMIT", env, DEFAULT_LOGIN_RATE),
            sign_in_address_rate=_rate(
                "SIGN_IN_ADDRESS_RATE_LIMIT", env, DEFAULT_SIGN_IN_ADDRESS_RATE
            ),
            graphiql=_switch("GRAPHIQL", env),
            introspection=_switch("INTROSPECTION", env),
            gc_tuning=_switch("GC_TUNING", env) is not False,
        )


def _number(name: str, env: Mapping[str, str], default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} {raw!r}: a whole number, such as {default}") from None


def _rate(name: str, env: Mapping[str, str], default: Rate) -> Rate | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return Rate.parse(name, raw)
    except RateLimitError as exc:
        raise SettingsError(str(exc)) from None


def _switch(name: str, env: Mapping[str, str]) -> bool | None:
    """true/false, or None when unset (the environment's default)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} {raw!r}: use true or false")


def _parse_origins(raw: str) -> tuple[str, ...]:
    return tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())


def _seconds(name: str, raw: str, default: int) -> int:
    raw = raw.strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} {raw!r}: a whole number of seconds, such as 3600") from None


def _whole(name: str, raw: str, default: int) -> int:
    raw = raw.strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} {raw!r}: a whole number, such as {default}") from None


def _positive_float(name: str, raw: str, default: float) -> float:
    raw = raw.strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} {raw!r}: a number of seconds, such as {default:g}") from None


# Documented once, used by `--help` and checked against the README by a test.
ENVIRONMENT_VARIABLES: tuple[tuple[str, str, str], ...] = (
    (
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        "SQLAlchemy async URL: sqlite+aiosqlite:///file.db or postgresql+asyncpg://user@host/db",
    ),
    (
        "DATABASE_POOL_SIZE",
        str(DEFAULT_POOL_SIZE),
        "PostgreSQL connections each process keeps open for reuse",
    ),
    (
        "DATABASE_MAX_OVERFLOW",
        str(DEFAULT_MAX_OVERFLOW),
        "PostgreSQL connections a process may open beyond DATABASE_POOL_SIZE under load",
    ),
    (
        "BROKER_URL",
        DEFAULT_BROKER_URL,
        "memory:// (one process) or redis://host:6379/0 (several processes)",
    ),
    (
        "SECRET_KEY",
        "(development key)",
        "signs access tokens; the default is public and refused in production",
    ),
    (
        "ALLOWED_ORIGINS",
        "(none)",
        "comma-separated browser origins allowed to open WebSockets, besides same-origin",
    ),
    ("TOKEN_TTL", str(DEFAULT_TOKEN_TTL_SECONDS), "access token lifetime in seconds"),
    (
        "CHANGE_LOG_RETENTION",
        str(DEFAULT_CHANGE_LOG_RETENTION_SECONDS),
        "seconds a change stays resumable (older cursors get RESYNC)",
    ),
    (
        "WS_CONNECTION_INIT_TIMEOUT",
        f"{DEFAULT_WS_CONNECTION_INIT_TIMEOUT_SECONDS:g}",
        "seconds a new WebSocket has to send connection_init (then closed with 4408)",
    ),
    (
        "WS_MAX_MESSAGE_SIZE",
        str(DEFAULT_WS_MAX_MESSAGE_BYTES),
        "largest WebSocket message accepted, in bytes (larger: closed with 1009)",
    ),
    (
        "WS_MAX_SUBSCRIPTIONS",
        str(DEFAULT_WS_MAX_SUBSCRIPTIONS),
        "operations running at once on one WebSocket (more: error RATE_LIMITED)",
    ),
    (
        "WS_MAX_SOCKETS_PER_USER",
        str(DEFAULT_WS_MAX_SOCKETS_PER_USER),
        "WebSockets one user may hold open per server process (more: closed with 4403)",
    ),
    (
        "COMMITCAST_ENV",
        "development",
        "development or production (production refuses the default SECRET_KEY and turns "
        "GraphiQL and introspection off)",
    ),
    (
        "GRAPHIQL",
        "(on in development, off in production)",
        "true or false: serve GraphiQL to browsers at /graphql",
    ),
    (
        "INTROSPECTION",
        "(on in development, off in production)",
        "true or false: answer introspection (__schema, __type) queries",
    ),
    ("MAX_QUERY_DEPTH", str(DEFAULT_MAX_DEPTH), "deepest field nesting a document may have"),
    ("MAX_QUERY_ALIASES", str(DEFAULT_MAX_ALIASES), "aliases a document may use"),
    (
        "MAX_QUERY_TOKENS",
        str(DEFAULT_MAX_TOKENS),
        "lexical tokens (comments included) a document may have",
    ),
    (
        "MUTATION_RATE_LIMIT",
        str(DEFAULT_MUTATION_RATE),
        "mutations per user, ATTEMPTS/SECONDS (or off); shared by all processes on Redis",
    ),
    (
        "LOGIN_RATE_LIMIT",
        str(DEFAULT_LOGIN_RATE),
        "logIn attempts per email address, ATTEMPTS/SECONDS (or off)",
    ),
    (
        "SIGN_IN_ADDRESS_RATE_LIMIT",
        str(DEFAULT_SIGN_IN_ADDRESS_RATE),
        "signUp and logIn attempts per client IP address, ATTEMPTS/SECONDS (or off)",
    ),
    (
        "LOG_FORMAT",
        "text",
        "text (one readable line per event) or json (one JSON object per line)",
    ),
    (
        "METRICS_TOKEN",
        "(none: /metrics is open)",
        "when set, /metrics requires the header Authorization: Bearer <token>",
    ),
    (
        "GC_TUNING",
        "true",
        "true or false: once started, freeze what exists in the garbage collector and "
        "collect young objects less often",
    ),
)
