// The Relay recipe's documents. relay-compiler reads the graphql`...` tags below and
// writes the artifacts the recipe imports (relay/__generated__/*.graphql.js); this file
// is never executed (apps compile these tags away with babel-plugin-relay).
// After editing: `npx relay-compiler` in clients/recipes (a test checks they are current).

graphql`
  query RelayRecipeBoardQuery($id: ID!) {
    board(id: $id) {
      id
      name
      version
      cards {
        id
        title
        done
        version
      }
    }
  }
`;

// The same fields as the query. Selecting `cards` on Board keeps lists current: creating
// or deleting a card also sends UPDATED for its board, with the new list.
graphql`
  subscription RelayRecipeUpdatesSubscription($after: String) {
    userUpdates(after: $after) {
      cursor
      op
      typename
      id
      node {
        __typename
        id
        ... on Board {
          name
          version
          cards {
            id
            title
            done
            version
          }
        }
        ... on Card {
          title
          done
          version
        }
      }
    }
  }
`;
