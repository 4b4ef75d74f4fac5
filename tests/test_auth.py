"""Accounts and access tokens over HTTP: signUp, logIn, and every way a token fails."""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher, extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from sqlalchemy import select

import models
from app.auth import (
    TOKEN_ALGORITHM,
    TOKEN_ISSUER,
    VERIFIED_TOKENS_KEPT,
    Authenticator,
    TokenError,
)
from app.settings import Settings
from schema.errors import BAD_USER_INPUT, UNAUTHENTICATED
from tests.support import PASSWORD, GraphQLClient

SIGN_UP = """
mutation($i: SignUpInput!) { signUp(input: $i) { token user { id email name } } }
"""
LOG_IN = """
mutation($i: LogInInput!) { logIn(input: $i) { token user { id email name } } }
"""
VIEWER = "{ viewer { id email name } }"
OTHER_KEY = "another-deployment-secret-0123456789abcdef"


def claims(user_id: int, *, issued: int, expires: int) -> dict[str, Any]:
    return {"sub": str(user_id), "iat": issued, "exp": expires, "iss": TOKEN_ISSUER, "jti": "t1"}


async def post(http: httpx.AsyncClient, query: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def single_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    return error


async def test_sign_up_token_works_and_the_password_is_stored_hashed(
    api: GraphQLClient,
) -> None:
    payload = (
        await api.data(
            SIGN_UP, {"i": {"email": "Ann@Example.com", "name": " Ann ", "password": PASSWORD}}
        )
    )["signUp"]
    user = payload["user"]
    # The address keeps the casing its owner typed; the name is trimmed.
    assert user == {"id": user["id"], "email": "Ann@Example.com", "name": "Ann"}

    viewer = (await api.data(VIEWER, token=payload["token"]))["viewer"]
    assert viewer == user

    async with api.runtime.read_sessions() as session:
        row = (
            await session.execute(select(models.User).where(models.User.email == "Ann@Example.com"))
        ).scalar_one()
    assert row.password_hash != PASSWORD
    assert PASSWORD not in row.password_hash
    assert row.password_hash.startswith("$argon2id$")


async def test_sign_up_refuses_an_email_differing_only_in_case(api: GraphQLClient) -> None:
    await api.account("Ann")  # ann@example.com
    error = await api.error(
        SIGN_UP, {"i": {"email": "ANN@example.COM", "name": "Imposter", "password": PASSWORD}}
    )
    assert error["extensions"]["code"] == BAD_USER_INPUT
    assert error["extensions"]["field"] == "email"
    assert error["path"] == ["signUp"]


async def test_log_in_ignores_the_case_of_the_email(api: GraphQLClient) -> None:
    ann = await api.account("Ann")
    payload = (await api.data(LOG_IN, {"i": {"email": "ANN@Example.COM", "password": PASSWORD}}))[
        "logIn"
    ]
    assert payload["user"] == {"id": ann.id, "email": ann.email, "name": "Ann"}
    viewer = (await api.data(VIEWER, token=payload["token"]))["viewer"]
    assert viewer["id"] == ann.id


async def test_wrong_password_and_unknown_email_fail_identically(api: GraphQLClient) -> None:
    ann = await api.account("Ann")
    wrong_password = await api.error(
        LOG_IN, {"i": {"email": ann.email, "password": "not the password"}}
    )
    unknown_email = await api.error(
        LOG_IN, {"i": {"email": "nobody@example.com", "password": PASSWORD}}
    )
    assert wrong_password == unknown_email
    assert wrong_password["extensions"] == {"code": UNAUTHENTICATED}
    assert "password" in wrong_password["message"].lower()


async def test_expired_token_says_it_expired(
    api: GraphQLClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    ann = await api.account("Ann")
    now = int(time.time())
    token = jwt.encode(
        claims(ann.pk, issued=now - 7200, expires=now - 60),
        settings.secret_key,
        algorithm=TOKEN_ALGORITHM,
    )
    error = single_error(await post(http, VIEWER, {"Authorization": f"Bearer {token}"}))
    assert error["extensions"]["code"] == UNAUTHENTICATED
    assert "expired" in error["message"].lower()


async def test_token_signed_with_another_key_is_refused(
    api: GraphQLClient, http: httpx.AsyncClient
) -> None:
    ann = await api.account("Ann")
    now = int(time.time())
    forged = jwt.encode(
        claims(ann.pk, issued=now, expires=now + 3600), OTHER_KEY, algorithm=TOKEN_ALGORITHM
    )
    body = await post(http, VIEWER, {"Authorization": f"Bearer {forged}"})
    error = single_error(body)
    assert error["extensions"]["code"] == UNAUTHENTICATED
    assert "expired" not in error["message"].lower()
    assert body["data"] is None


@pytest.mark.parametrize(
    "header",
    ["Token abc", "Bearer", "Bearer ", "Basic YW5uOnB3", "Bearer not.a.jwt", "abc"],
)
async def test_malformed_authorization_is_unauthenticated(
    http: httpx.AsyncClient, header: str
) -> None:
    error = single_error(await post(http, VIEWER, {"Authorization": header}))
    assert error["extensions"]["code"] == UNAUTHENTICATED
    assert error["path"] == ["viewer"]


async def test_bearer_scheme_is_case_insensitive(
    api: GraphQLClient, http: httpx.AsyncClient
) -> None:
    ann = await api.account("Ann")
    body = await post(http, VIEWER, {"Authorization": f"bearer {ann.token}"})
    assert body == {"data": {"viewer": {"id": ann.id, "email": ann.email, "name": "Ann"}}}


async def test_sign_up_and_log_in_work_despite_a_bad_authorization_header(
    api: GraphQLClient, http: httpx.AsyncClient
) -> None:
    # A client holding an expired or broken token must still be able to get a new one.
    bad = {"Authorization": "Token stale"}
    sign_up = (
        'mutation { signUp(input: {email: "bo@example.com", name: "Bo",'
        f' password: "{PASSWORD}"}}) {{ token user {{ id }} }} }}'
    )
    signed_up = await post(http, sign_up, bad)
    assert "errors" not in signed_up, signed_up
    log_in = (
        f'mutation {{ logIn(input: {{email: "bo@example.com", password: "{PASSWORD}"}})'
        " { token user { id } } }"
    )
    logged_in = await post(http, log_in, bad)
    assert "errors" not in logged_in, logged_in
    user_id = signed_up["data"]["signUp"]["user"]["id"]
    assert logged_in["data"]["logIn"]["user"]["id"] == user_id
    for payload in (signed_up["data"]["signUp"], logged_in["data"]["logIn"]):
        viewer = (await api.data(VIEWER, token=payload["token"]))["viewer"]
        assert viewer["id"] == user_id


class RecordingHasher(PasswordHasher):
    """argon2-cffi's hasher, remembering which hashes it verified against."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


async def test_unknown_email_runs_the_same_argon2_verification_as_a_wrong_password() -> None:
    hasher = RecordingHasher()
    authenticator = Authenticator("k" * 40, 3600, hasher=hasher)
    stored = await authenticator.hash_password(PASSWORD)

    assert not await authenticator.verify_password(stored, "not the password")
    assert not await authenticator.verify_password(None, "not the password")
    assert await authenticator.verify_password(stored, PASSWORD)

    wrong_password, unknown_email, _right = hasher.verified
    assert wrong_password == stored
    assert unknown_email != stored
    # The same algorithm, cost parameters and lengths: the same work.
    assert extract_parameters(unknown_email) == extract_parameters(stored)
    assert extract_parameters(stored) == RFC_9106_LOW_MEMORY
    assert stored.startswith("$argon2id$")


def test_a_verified_token_is_refused_once_it_expires() -> None:
    """Verified tokens are kept by their text (app.auth): expiry is still judged on
    every request."""
    now = [time.time()]
    auth = Authenticator("k" * 48, 3600, clock=lambda: now[0])
    token = auth.issue_token(7)
    assert auth.read_token(token).user_id == 7  # verified, and kept
    now[0] += 3599
    assert auth.read_token(token).user_id == 7
    now[0] += 2
    with pytest.raises(TokenError, match="expired"):
        auth.read_token(token)


def test_a_kept_token_vouches_for_nothing_but_its_exact_text() -> None:
    auth = Authenticator("k" * 48, 3600)
    token = auth.issue_token(7)
    assert auth.read_token(token).user_id == 7
    header, payload, signature = token.split(".")
    tampered = ".".join(
        [header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")]
    )
    with pytest.raises(TokenError, match="invalid"):
        auth.read_token(tampered)
    # The same claims signed with another key are refused too.
    forged = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}), OTHER_KEY, algorithm=TOKEN_ALGORITHM
    )
    with pytest.raises(TokenError, match="invalid"):
        auth.read_token(forged)


def test_the_kept_tokens_are_bounded() -> None:
    auth = Authenticator("k" * 48, 3600)
    tokens = [auth.issue_token(n) for n in range(VERIFIED_TOKENS_KEPT + 10)]
    assert [auth.read_token(t).user_id for t in tokens] == list(range(len(tokens)))
    assert len(auth._verified) == VERIFIED_TOKENS_KEPT
