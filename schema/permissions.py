"""Who may do what on a board. The rules, in one place:

| action                                   | OWNER | EDITOR | VIEWER | author |
|------------------------------------------|-------|--------|--------|--------|
| read the board, its cards and comments   | yes   | yes    | yes    |        |
| rename or delete the board, add members  | yes   |        |        |        |
| remove a member                          | yes   | self   | self   |        |
| create, update, delete cards             | yes   | yes    |        |        |
| add a comment                            | yes   | yes    | yes    |        |
| edit a comment                           |       |        |        | yes    |
| delete a comment                         | yes   |        |        | yes    |

A non-member gets NOT_FOUND for everything on the board, exactly as for a board that
does not exist; FORBIDDEN is only ever said to members.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Membership, Role
from schema.errors import forbidden, not_found

MANAGE_BOARD = frozenset({Role.OWNER})
EDIT_CARDS = frozenset({Role.OWNER, Role.EDITOR})
ANY_MEMBER = frozenset(Role)
COMMENT = ANY_MEMBER


# Built once (asked by every write): building a statement costs more CPU than running it.
ROLE_ON_BOARD = select(Membership.role).where(
    Membership.user_id == bindparam("user_id"), Membership.board_id == bindparam("board_id")
)


async def role_on_board(session: AsyncSession, user_id: int, board_id: int) -> Role | None:
    return await session.scalar(ROLE_ON_BOARD, {"user_id": user_id, "board_id": board_id})


def require_role(role: Role | None, allowed: frozenset[Role], kind: str, action: str) -> Role:
    """NOT_FOUND for non-members (they cannot tell it exists), FORBIDDEN for members."""
    if role is None:
        raise not_found(kind)
    if role not in allowed:
        names = " or ".join(sorted(r.value for r in allowed))
        raise forbidden(f"Only {names} members can {action}.")
    return role


async def require_member(
    session: AsyncSession,
    user_id: int,
    board_id: int,
    allowed: frozenset[Role],
    kind: str,
    action: str,
) -> Role:
    """The user's role on the board, checked against `allowed` (see require_role)."""
    return require_role(await role_on_board(session, user_id, board_id), allowed, kind, action)
