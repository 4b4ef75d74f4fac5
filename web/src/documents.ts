// Every GraphQL document of the board. Queries and the userUpdates subscription select
// records through the same fragments, so an update overwrites in the cache exactly the
// fields a query put there (and a parent's list, e.g. Board.cards, arrives whole).
import { gql } from "@apollo/client";

export const COMMENT_FIELDS = gql`
  fragment CommentFields on Comment {
    id
    body
    version
    author {
      id
      name
    }
    card {
      id
    }
  }
`;

export const CARD_FIELDS = gql`
  fragment CardFields on Card {
    id
    title
    description
    position
    done
    version
    board {
      id
    }
    author {
      id
      name
    }
    comments {
      ...CommentFields
    }
  }
  ${COMMENT_FIELDS}
`;

export const MEMBER_FIELDS = gql`
  fragment MemberFields on Membership {
    id
    role
    version
    user {
      id
      name
    }
    board {
      id
    }
  }
`;

export const BOARD_FIELDS = gql`
  fragment BoardFields on Board {
    id
    name
    version
    owner {
      id
      name
    }
    members {
      ...MemberFields
    }
    cards {
      ...CardFields
    }
  }
  ${MEMBER_FIELDS}
  ${CARD_FIELDS}
`;

export const VIEWER_QUERY = gql`
  query Viewer {
    viewer {
      id
      name
      email
      boards {
        id
        name
        version
      }
    }
  }
`;

export const BOARD_QUERY = gql`
  query Board($id: ID!) {
    board(id: $id) {
      ...BoardFields
    }
  }
  ${BOARD_FIELDS}
`;

export const USER_UPDATES = gql`
  subscription UserUpdates($after: String) {
    userUpdates(after: $after) {
      cursor
      op
      typename
      id
      node {
        __typename
        id
        ...BoardFields
        ...CardFields
        ...CommentFields
        ...MemberFields
        ... on User {
          name
          version
        }
      }
    }
  }
  ${BOARD_FIELDS}
`;

export const CREATE_BOARD = gql`
  mutation CreateBoard($name: String!) {
    createBoard(input: { name: $name }) {
      id
      name
      version
    }
  }
`;

export const ADD_MEMBER = gql`
  mutation AddMember($boardId: ID!, $email: String!, $role: Role!) {
    addMember(input: { boardId: $boardId, email: $email, role: $role }) {
      ...MemberFields
    }
  }
  ${MEMBER_FIELDS}
`;

export const CREATE_CARD = gql`
  mutation CreateCard($boardId: ID!, $title: String!) {
    createCard(input: { boardId: $boardId, title: $title }) {
      ...CardFields
    }
  }
  ${CARD_FIELDS}
`;

export const UPDATE_CARD = gql`
  mutation UpdateCard($input: UpdateCardInput!) {
    updateCard(input: $input) {
      ...CardFields
    }
  }
  ${CARD_FIELDS}
`;

export const DELETE_CARD = gql`
  mutation DeleteCard($id: ID!) {
    deleteCard(id: $id)
  }
`;

export const ADD_COMMENT = gql`
  mutation AddComment($cardId: ID!, $body: String!) {
    addComment(input: { cardId: $cardId, body: $body }) {
      ...CommentFields
    }
  }
  ${COMMENT_FIELDS}
`;

export const UPDATE_COMMENT = gql`
  mutation UpdateComment($id: ID!, $body: String!) {
    updateComment(input: { id: $id, body: $body }) {
      ...CommentFields
    }
  }
  ${COMMENT_FIELDS}
`;

export const DELETE_COMMENT = gql`
  mutation DeleteComment($id: ID!) {
    deleteComment(id: $id)
  }
`;
