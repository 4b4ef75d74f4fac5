"""GraphQL documents of the convergence test.

The subscription selects every record type through the same fragments as the fresh
queries, so a record normalized from an update and the same record normalized from a
query carry the same fields. Nested records select `__typename id` so they normalize
into references, as Apollo's cache does.
"""

from __future__ import annotations

RECORD_FRAGMENTS = """
fragment UserFields on User { __typename id name version }
fragment MembershipFields on Membership {
  __typename id role version user { ...UserFields } board { __typename id }
}
fragment CommentFields on Comment { __typename id body version card { __typename id } }
fragment CardFields on Card {
  __typename id title description position done version
  board { __typename id } assignee { __typename id } comments { __typename id }
}
fragment BoardFields on Board {
  __typename id name version members { __typename id } cards { __typename id }
}
"""
# A board with everything in it: a query names each record with its fragment.
BOARD_TREE = """
fragment BoardTree on Board {
  ...BoardFields
  members { ...MembershipFields }
  cards { ...CardFields comments { ...CommentFields } }
}
"""

UPDATES = (
    """
subscription Updates($after: String) {
  userUpdates(after: $after) {
    cursor op typename id
    node {
      __typename id
      ...BoardFields ...CardFields ...CommentFields ...MembershipFields ...UserFields
    }
  }
}
"""
    + RECORD_FRAGMENTS
)

# Everything a user can see: the query an app runs on start and after RESYNC.
EVERYTHING = (
    "query Everything { viewer { id boards { ...BoardTree } } }" + BOARD_TREE + RECORD_FRAGMENTS
)

# One board and its contents: what an app loads when a board appears in its list.
ONE_BOARD = (
    "query OneBoard($id: ID!) { board(id: $id) { ...BoardTree } }" + BOARD_TREE + RECORD_FRAGMENTS
)

SIGN_UP = """
mutation SignUp($email: String!, $name: String!, $password: String!) {
  signUp(input: {email: $email, name: $name, password: $password}) { token user { id } }
}"""
CREATE_BOARD = "mutation($n: String!) { createBoard(input: {name: $n}) { id } }"
UPDATE_BOARD = "mutation($id: ID!, $n: String!) { updateBoard(input: {id: $id, name: $n}) { id } }"
ADD_MEMBER = """
mutation($b: ID!, $e: String!, $r: Role!) {
  addMember(input: {boardId: $b, email: $e, role: $r}) { id }
}"""
REMOVE_MEMBER = "mutation($id: ID!) { removeMember(id: $id) }"
CREATE_CARD = """
mutation($b: ID!, $t: String!, $d: String, $p: Float, $a: ID) {
  createCard(input: {boardId: $b, title: $t, description: $d, position: $p, assigneeId: $a}) {
    id version
  }
}"""
UPDATE_CARD = "mutation($input: UpdateCardInput!) { updateCard(input: $input) { id version } }"
DELETE_CARD = "mutation($id: ID!) { deleteCard(id: $id) }"
ADD_COMMENT = "mutation($c: ID!, $b: String!) { addComment(input: {cardId: $c, body: $b}) { id } }"
UPDATE_COMMENT = """
mutation($id: ID!, $b: String!) { updateComment(input: {id: $id, body: $b}) { id version } }"""
DELETE_COMMENT = "mutation($id: ID!) { deleteComment(id: $id) }"
