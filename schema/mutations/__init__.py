"""The Mutation root, merged from one module per area."""

from strawberry.tools import merge_types

from schema.mutations.accounts import AccountMutations
from schema.mutations.boards import BoardMutations
from schema.mutations.cards import CardMutations
from schema.mutations.comments import CommentMutations

Mutation = merge_types(
    "Mutation", (AccountMutations, BoardMutations, CardMutations, CommentMutations)
)

__all__ = ["Mutation"]
