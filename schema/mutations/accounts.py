"""signUp, logIn and logOut."""

from __future__ import annotations

import strawberry
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

import models
from schema import validation
from schema.context import LOGINS_PER_EMAIL, SIGN_INS_PER_ADDRESS, Info
from schema.errors import CodedError, bad_input, unauthenticated
from schema.inputs import LogInInput, SignUpInput
from schema.types import AuthPayload, User

INVALID_CREDENTIALS = "Invalid email or password."


@strawberry.type
class AccountMutations:
    @strawberry.mutation
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthPayload:
        ctx = info.context
        # Before any work: each signUp hashes a password (deliberately costly).
        await ctx.limit_rate(SIGN_INS_PER_ADDRESS, ctx.client_address)
        email = validation.email("email", input.email)
        name = validation.required_text("name", input.name, validation.USER_NAME_MAX)
        password = validation.password("password", input.password)
        password_hash = await ctx.auth.hash_password(password)
        user = models.User(email=email, name=name, password_hash=password_hash)
        try:
            async with ctx.write() as session:
                session.add(user)
        except IntegrityError:
            raise bad_input("email", "an account with this email already exists") from None
        ctx.act_as(user.id)
        return AuthPayload(token=ctx.auth.issue_token(user.id), user=User.from_model(user))

    @strawberry.mutation
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload:
        ctx = info.context
        await ctx.limit_rate(SIGN_INS_PER_ADDRESS, ctx.client_address)
        # Malformed input gets the same answer as a wrong password: nothing here may
        # tell a caller which addresses have accounts.
        try:
            email = validation.email("email", input.email)
            validation.password("password", input.password)
        except CodedError:
            raise unauthenticated(INVALID_CREDENTIALS) from None
        # Counted per email whether or not it has an account, so the limit itself
        # tells nobody which addresses are registered.
        await ctx.limit_rate(LOGINS_PER_EMAIL, email.lower())
        rows = await ctx.run_query(
            select(models.User).where(func.lower(models.User.email) == email.lower()), {}
        )
        user = rows[0][0] if rows else None
        ok = await ctx.auth.verify_password(user.password_hash if user else None, input.password)
        if user is None or not ok:
            raise unauthenticated(INVALID_CREDENTIALS)
        ctx.act_as(user.id)
        return AuthPayload(token=ctx.auth.issue_token(user.id), user=User.from_model(user))

    @strawberry.mutation(
        description="Revoke the access token this request was sent with (with allSessions, "
        "every token of the viewer issued so far). Requests and new WebSockets with a "
        "revoked token get UNAUTHENTICATED / close 4403; WebSockets open with it are "
        "closed with 4403 within a second, on every server process. Returns true."
    )
    async def log_out(self, info: Info, all_sessions: bool = False) -> bool:
        ctx = info.context
        ctx.require_viewer()
        if ctx.token is None:
            # Signed in by signUp/logIn in this same request: no token was presented.
            raise unauthenticated("logOut needs the request's 'Authorization: Bearer <token>'.")
        await ctx.auth.revoke(ctx.token, all_sessions=all_sessions)
        return True
