"""SQLAlchemy models and database plumbing. Imports nothing from GraphQL."""

from models.base import Base, Record, utcnow
from models.board import Board, Membership, Role
from models.card import Card, Comment
from models.changelog import change_audience, change_log
from models.deployment import deployment_id
from models.revocation import token_revocations
from models.user import User

__all__ = [
    "Base",
    "Board",
    "Card",
    "Comment",
    "Membership",
    "Record",
    "Role",
    "User",
    "change_audience",
    "change_log",
    "deployment_id",
    "token_revocations",
    "utcnow",
]
