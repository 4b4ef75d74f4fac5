"""Passwords (argon2id) and access tokens (HS256 JWTs signed with SECRET_KEY)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger("commitcast.auth")

TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret
TOKEN_ISSUER = "commitcast"  # noqa: S105 - the iss claim, not a secret


class TokenError(Exception):
    """The token cannot be used; the message says why, in words fit for a client."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_id: str
    expires_at: int
    # Seconds since the epoch, to the millisecond: logOut(allSessions) revokes every
    # token issued up to a moment, and a logIn right after it must not be caught.
    issued_at: float

    @property
    def issued_at_ms(self) -> int:
        return round(self.issued_at * 1000)


class Revocations(Protocol):
    """Where revoked tokens are kept (app.revocation.TokenRevocations)."""

    async def is_revoked(self, claims: TokenClaims) -> bool: ...

    async def revoke(self, claims: TokenClaims, *, all_sessions: bool) -> None: ...


REVOKED = "The access token was revoked (logged out); log in again."
EXPIRED = "The access token has expired; log in again."
INVALID = "The access token is invalid."
# Tokens whose signature and claims were verified, by their exact text: a client sends
# the same token with every request, and verifying it again costs more CPU than the
# rest of the authentication. Expiry is still checked every time; revocation is not
# cached at all (authenticate asks the database for every request).
VERIFIED_TOKENS_KEPT = 1024
UNCHECKED = "The access token could not be checked right now; try again."


class Authenticator:
    """The app's implementation of schema.Auth.

    Hashing runs in a worker thread: argon2 is deliberately slow (tens of ms) and
    must not stall the event loop that serves every socket.
    """

    def __init__(
        self,
        secret_key: str,
        token_ttl_seconds: int,
        revocations: Revocations | None = None,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret_key = secret_key
        self._token_ttl = token_ttl_seconds
        self._revocations = revocations
        # argon2-cffi's defaults (RFC 9106 low-memory profile: argon2id, t=3, m=64 MiB, p=4,
        # 16-byte salt, 32-byte hash), documented in SECURITY.md.
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()
        self._clock = clock  # judges the expiry of kept tokens

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify_password(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        # For an unknown email, verify against a throwaway hash made by the same hasher
        # (so with the same parameters), so that both failures run the same code and
        # cost the same. It is made on first use (not at start: it takes ~0.1 s).
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def issue_token(self, user_id: int) -> str:
        now = time.time()
        claims = {
            "sub": str(user_id),
            # A NumericDate may have a fraction (RFC 7519 section 2).
            "iat": round(now, 3),
            "exp": int(now) + self._token_ttl,
            "iss": TOKEN_ISSUER,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._secret_key, algorithm=TOKEN_ALGORITHM)

    def read_token(self, token: str) -> TokenClaims:
        verified = self._verified
        claims = verified.get(token)
        if claims is None:
            claims = verified[token] = self._verify_token(token)
            if len(verified) > VERIFIED_TOKENS_KEPT:
                verified.popitem(last=False)
        else:
            verified.move_to_end(token)
        # As PyJWT judges it (no leeway): expired from the second `exp` names.
        if claims.expires_at <= self._clock():
            verified.pop(token, None)
            raise TokenError(EXPIRED)
        return claims

    def _verify_token(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret_key,
                algorithms=[TOKEN_ALGORITHM],
                issuer=TOKEN_ISSUER,
                options={"require": ["sub", "exp", "iat", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError(EXPIRED) from None
        except jwt.InvalidTokenError:
            raise TokenError(INVALID) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.isdigit():
            raise TokenError(INVALID)
        issued_at = claims["iat"]
        if not isinstance(issued_at, int | float):
            raise TokenError(INVALID)
        return TokenClaims(int(subject), str(claims["jti"]), int(claims["exp"]), float(issued_at))

    def read_authorization(self, header: str | None) -> TokenClaims | None:
        """Parse an `Authorization` value; None when absent, TokenError when unusable."""
        if header is None or not header.strip():
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenError("Send the token as 'Authorization: Bearer <token>'.")
        return self.read_token(token.strip())

    async def authenticate(self, header: str | None) -> TokenClaims | None:
        """read_authorization, and refused (TokenError) when logOut revoked the token."""
        claims = self.read_authorization(header)
        revocations = self._revocations
        if claims is None or revocations is None:
            return claims
        try:
            revoked = await revocations.is_revoked(claims)
        except Exception:  # the database is unreachable: refuse, but never with a 500
            logger.exception("could not check whether an access token was revoked")
            raise TokenError(UNCHECKED) from None
        if revoked:
            raise TokenError(REVOKED)
        return claims

    async def revoke(self, token: Any, *, all_sessions: bool) -> None:
        if not isinstance(token, TokenClaims) or self._revocations is None:
            raise RuntimeError("revoke() needs the TokenClaims of a server with revocations")
        await self._revocations.revoke(token, all_sessions=all_sessions)
