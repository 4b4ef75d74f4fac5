"""A board with one user in each role, and the documents the role tests send.

Used by test_permissions, test_visibility, test_validation and test_versions.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

import models
from app.auth import TOKEN_ALGORITHM, TOKEN_ISSUER
from schema.ids import encode_id
from tests.support import Account, GraphQLClient, password_hash

# An id of each type whose record does not exist (pk far beyond anything a test makes).
MISSING_PK = 987_654_321


def missing_id(typename: str) -> str:
    return encode_id(typename, MISSING_PK)


def signed_token(user_pk: int, key: str, *, expires_in: int = 3600) -> str:
    """A token with every claim the server requires, signed with `key`."""
    now = int(time.time())
    claims = {
        "sub": str(user_pk),
        "iat": now - 7200,
        "exp": now + expires_in,
        "iss": TOKEN_ISSUER,
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, key, algorithm=TOKEN_ALGORITHM)


def forged_token(user_pk: int) -> str:
    """Well-formed, unexpired, but signed with a key the server does not have."""
    return signed_token(user_pk, "not-the-server-key-" + secrets.token_hex(16))


UPDATE_BOARD = """
mutation($id: ID!, $name: String, $v: Int) {
  updateBoard(input: {id: $id, name: $name, expectedVersion: $v}) {
    id name version createdAt updatedAt
  }
}"""
DELETE_BOARD = "mutation($id: ID!) { deleteBoard(id: $id) }"
ADD_MEMBER = """
mutation($b: ID!, $e: String!, $r: Role!) {
  addMember(input: {boardId: $b, email: $e, role: $r}) { id role version user { id } }
}"""
REMOVE_MEMBER = "mutation($id: ID!) { removeMember(id: $id) }"
CREATE_CARD = """
mutation($b: ID!, $t: String!, $d: String, $p: Float, $a: ID) {
  createCard(input: {boardId: $b, title: $t, description: $d, position: $p, assigneeId: $a}) {
    id title description position done version assignee { id }
  }
}"""
UPDATE_CARD = """
mutation($input: UpdateCardInput!) {
  updateCard(input: $input) {
    id title description position done version createdAt updatedAt assignee { id }
  }
}"""
DELETE_CARD = "mutation($id: ID!) { deleteCard(id: $id) }"
ADD_COMMENT = """
mutation($c: ID!, $b: String!) { addComment(input: {cardId: $c, body: $b}) { id body version } }
"""
UPDATE_COMMENT = """
mutation($id: ID!, $b: String!, $v: Int) {
  updateComment(input: {id: $id, body: $b, expectedVersion: $v}) {
    id body version createdAt updatedAt
  }
}"""
DELETE_COMMENT = "mutation($id: ID!) { deleteComment(id: $id) }"

BOARD = """
query($id: ID!) {
  board(id: $id) {
    id name version createdAt updatedAt
    members { id role user { id } }
    cards { id title description position done version assignee { id }
            comments { id body version } }
  }
}"""
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"


@dataclass(frozen=True)
class Team:
    """One board: OWNER, EDITOR and VIEWER members and an OUTSIDER who is on no board."""

    api: GraphQLClient
    owner: Account
    editor: Account
    viewer: Account
    outsider: Account
    board: str
    # Membership ids by role.
    memberships: dict[str, str]

    def member(self, role: str) -> Account:
        """The account for "OWNER", "EDITOR", "VIEWER" or "OUTSIDER"."""
        accounts = {
            "OWNER": self.owner,
            "EDITOR": self.editor,
            "VIEWER": self.viewer,
            "OUTSIDER": self.outsider,
        }
        return accounts[role]

    async def board_as(self, who: Account | None = None) -> dict[str, Any] | None:
        """The board as `who` (default: the owner) reads it; None when hidden."""
        data = await self.api.data(BOARD, {"id": self.board}, token=(who or self.owner).token)
        board: dict[str, Any] | None = data["board"]
        return board

    async def node_as(self, who: Account, global_id: str) -> dict[str, Any] | None:
        data = await self.api.data(NODE, {"id": global_id}, token=who.token)
        node: dict[str, Any] | None = data["node"]
        return node

    async def card_as(self, who: Account, card_id: str) -> dict[str, Any] | None:
        data = await self.api.data(
            "query($id: ID!) { node(id: $id) { ... on Card {"
            " id title description position done version createdAt updatedAt"
            " assignee { id } comments { id body } } } }",
            {"id": card_id},
            token=who.token,
        )
        card: dict[str, Any] | None = data["node"]
        return card

    async def comment_as(self, who: Account, comment_id: str) -> dict[str, Any] | None:
        data = await self.api.data(
            "query($id: ID!) { node(id: $id) { ... on Comment {"
            " id body version createdAt updatedAt } } }",
            {"id": comment_id},
            token=who.token,
        )
        comment: dict[str, Any] | None = data["node"]
        return comment


async def make_team(api: GraphQLClient, prefix: str = "") -> Team:
    """Inserted directly, in one transaction (fast); the mutations themselves are tested
    elsewhere, and everything after set-up goes through the API."""
    names = {"OWNER": "Owen", "EDITOR": "Edie", "VIEWER": "Vera", "OUTSIDER": "Oscar"}
    async with api.runtime.write_sessions() as session, session.begin():
        users = {
            role: models.User(
                email=f"{prefix}{name}@example.com".lower(),
                name=f"{prefix}{name}",
                password_hash=password_hash(),
            )
            for role, name in names.items()
        }
        session.add_all(users.values())
        await session.flush()
        board = models.Board(name="Roadmap", owner_id=users["OWNER"].id)
        session.add(board)
        await session.flush()
        rows = {
            role: models.Membership(
                board_id=board.id, user_id=users[role].id, role=models.Role(role)
            )
            for role in ("OWNER", "EDITOR", "VIEWER")
        }
        session.add_all(rows.values())
    accounts = {
        role: Account(
            user.id,
            encode_id("User", user.id),
            user.email,
            user.name,
            api.runtime.authenticator.issue_token(user.id),
        )
        for role, user in users.items()
    }
    return Team(
        api,
        accounts["OWNER"],
        accounts["EDITOR"],
        accounts["VIEWER"],
        accounts["OUTSIDER"],
        encode_id("Board", board.id),
        {role: encode_id("Membership", row.id) for role, row in rows.items()},
    )
