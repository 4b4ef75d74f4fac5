"""Settings.from_env: what each variable means, and what the service refuses to start with."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from app.rate_limit import Rate
from app.settings import (
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_TOKEN_TTL_SECONDS,
    DEVELOPMENT_SECRET_KEY,
    ENVIRONMENT_VARIABLES,
    MIN_SECRET_KEY_LENGTH,
    Settings,
    SettingsError,
)
from models.database import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from schema.limits import QueryLimits

STRONG_SECRET = "k" * MIN_SECRET_KEY_LENGTH


class RecordingEnviron(Mapping[str, str]):
    """An environment that remembers which variables were looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./commitcast.db"
    assert settings.broker_url == DEFAULT_BROKER_URL == "memory://"
    assert settings.secret_key == DEVELOPMENT_SECRET_KEY
    assert settings.uses_development_secret
    assert settings.allowed_origins == ()
    assert settings.token_ttl_seconds == DEFAULT_TOKEN_TTL_SECONDS == 7 * 24 * 3600
    assert settings.environment == "development"
    assert not settings.production
    assert settings == Settings()


def test_documented_defaults_match_the_real_ones() -> None:
    documented = {name: default for name, default, _ in ENVIRONMENT_VARIABLES}
    assert documented["DATABASE_URL"] == DEFAULT_DATABASE_URL
    assert documented["BROKER_URL"] == DEFAULT_BROKER_URL
    assert documented["TOKEN_TTL"] == str(DEFAULT_TOKEN_TTL_SECONDS)
    assert documented["COMMITCAST_ENV"] == "development"
    assert documented["DATABASE_POOL_SIZE"] == str(DEFAULT_POOL_SIZE) == "15"
    assert documented["DATABASE_MAX_OVERFLOW"] == str(DEFAULT_MAX_OVERFLOW) == "10"


def test_every_variable_read_is_documented() -> None:
    environ = RecordingEnviron({})
    Settings.from_env(environ)
    assert environ.read == {name for name, _, _ in ENVIRONMENT_VARIABLES}


def test_empty_values_mean_the_default() -> None:
    blank = {name: "  " for name, _, _ in ENVIRONMENT_VARIABLES if name != "SECRET_KEY"}
    assert Settings.from_env({**blank, "SECRET_KEY": ""}) == Settings()


def test_each_variable_is_parsed() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": " postgresql+asyncpg://app@db.internal:5432/commitcast ",
            "BROKER_URL": "redis://cache.internal:6379/2",
            "SECRET_KEY": STRONG_SECRET,
            "ALLOWED_ORIGINS": "https://app.example.com",
            "TOKEN_TTL": " 3600 ",
            "COMMITCAST_ENV": " Production ",
        }
    )
    assert settings == Settings(
        database_url="postgresql+asyncpg://app@db.internal:5432/commitcast",
        broker_url="redis://cache.internal:6379/2",
        secret_key=STRONG_SECRET,
        allowed_origins=("https://app.example.com",),
        token_ttl_seconds=3600,
        environment="production",
    )
    assert settings.production
    assert not settings.uses_development_secret


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:////var/lib/commitcast/db.sqlite", "rediss://cache:6380/0"]
)
def test_other_supported_urls(url: str) -> None:
    variable = "DATABASE_URL" if url.startswith("sqlite") else "BROKER_URL"
    settings = Settings.from_env({variable: url})
    assert url in (settings.database_url, settings.broker_url)


def test_allowed_origins_list_is_trimmed() -> None:
    settings = Settings.from_env(
        {
            "ALLOWED_ORIGINS": " https://a.example.com ,https://b.example.com/ ,, http://localhost:5173,"
        }
    )
    assert settings.allowed_origins == (
        "https://a.example.com",
        "https://b.example.com",
        "http://localhost:5173",
    )


@pytest.mark.parametrize("ttl", ["soon", "1.5", "0", "-60"])
def test_token_ttl_must_be_a_positive_whole_number(ttl: str) -> None:
    with pytest.raises(SettingsError, match="TOKEN_TTL"):
        Settings.from_env({"TOKEN_TTL": ttl})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://app@db/commitcast"),
        # The driver-less form is a common slip; refuse it rather than fail at connect.
        ("DATABASE_URL", "postgresql://app@db/commitcast"),
        ("DATABASE_URL", "sqlite:///commitcast.db"),
        ("BROKER_URL", "kafka://broker:9092"),
        ("BROKER_URL", "localhost:6379"),
        ("COMMITCAST_ENV", "staging"),
        ("LOG_FORMAT", "yaml"),
    ],
)
def test_unknown_scheme_or_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_production_refuses_a_missing_secret() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env({"COMMITCAST_ENV": "production"})


def test_production_refuses_the_development_secret_given_explicitly() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env({"COMMITCAST_ENV": "production", "SECRET_KEY": DEVELOPMENT_SECRET_KEY})


def test_production_refuses_a_short_secret() -> None:
    short = "k" * (MIN_SECRET_KEY_LENGTH - 1)
    with pytest.raises(SettingsError, match=f"at least {MIN_SECRET_KEY_LENGTH}"):
        Settings.from_env({"COMMITCAST_ENV": "production", "SECRET_KEY": short})


def test_production_accepts_a_long_secret() -> None:
    settings = Settings.from_env({"COMMITCAST_ENV": "production", "SECRET_KEY": STRONG_SECRET})
    assert settings.production
    assert settings.secret_key == STRONG_SECRET


def test_development_accepts_a_short_secret() -> None:
    assert Settings.from_env({"SECRET_KEY": "dev"}).secret_key == "dev"


def test_secret_key_is_not_in_repr() -> None:
    secret = "s3cr3t-" + "x" * 40
    settings = Settings.from_env({"SECRET_KEY": secret})
    assert secret not in repr(settings)
    assert secret not in str(settings)
    assert DEVELOPMENT_SECRET_KEY not in repr(Settings())
    # The rest of the configuration is still there to read in logs.
    assert "memory://" in repr(settings)


def test_log_format_and_metrics_token() -> None:
    settings = Settings.from_env({"LOG_FORMAT": " JSON ", "METRICS_TOKEN": " scrape-me "})
    assert (settings.log_format, settings.metrics_token) == ("json", "scrape-me")
    assert "scrape-me" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.log_format, defaults.metrics_token) == ("text", None)


def test_limits_and_switches_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "MAX_QUERY_DEPTH": "8",
            "MAX_QUERY_ALIASES": " 4 ",
            "MAX_QUERY_TOKENS": "900",
            "MUTATION_RATE_LIMIT": "20/10",
            "LOGIN_RATE_LIMIT": "off",
            "SIGN_IN_ADDRESS_RATE_LIMIT": " 7/3600 ",
            "GRAPHIQL": "false",
            "INTROSPECTION": "True",
            "DATABASE_POOL_SIZE": " 30 ",
            "DATABASE_MAX_OVERFLOW": "0",
        }
    )
    assert (settings.database_pool_size, settings.database_max_overflow) == (30, 0)
    assert settings.query_limits == QueryLimits(max_depth=8, max_aliases=4, max_tokens=900)
    assert settings.mutation_rate == Rate(20, 10)
    assert settings.login_rate is None
    assert settings.sign_in_address_rate == Rate(7, 3600)
    assert not settings.serves_graphiql
    assert settings.allows_introspection


def test_graphiql_and_introspection_follow_the_environment_unless_set() -> None:
    production = Settings.from_env({"COMMITCAST_ENV": "production", "SECRET_KEY": STRONG_SECRET})
    assert not production.serves_graphiql
    assert not production.allows_introspection
    development = Settings.from_env({})
    assert development.serves_graphiql
    assert development.allows_introspection


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_QUERY_DEPTH", "deep"),
        ("MAX_QUERY_ALIASES", "0"),
        ("MUTATION_RATE_LIMIT", "10"),
        ("LOGIN_RATE_LIMIT", "0/60"),
        ("SIGN_IN_ADDRESS_RATE_LIMIT", "5/minute"),
        ("GRAPHIQL", "maybe"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_POOL_SIZE", "many"),
        ("DATABASE_MAX_OVERFLOW", "-1"),
    ],
)
def test_bad_limits_and_switches_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})
