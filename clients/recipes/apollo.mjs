// Apollo Client 3 (the framework-agnostic core; React apps pass the same client to
// <ApolloProvider>): queries and mutations over HTTP, `userUpdates` over graphql-ws.
import { ApolloClient, HttpLink, InMemoryCache, gql, split } from "@apollo/client/core/index.js";
import { setContext } from "@apollo/client/link/context/index.js";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions/index.js";
import { getMainDefinition } from "@apollo/client/utilities/index.js";
import { createClient } from "graphql-ws";
import WebSocket from "ws"; // Node.js only: browsers and React Native have WebSocket

import { followUserUpdates } from "./commitcast-link.mjs";

const CARD = gql`
  fragment RecipeCard on Card {
    id
    title
    done
    version
  }
`;

export const BOARD_QUERY = gql`
  query RecipeBoard($id: ID!) {
    board(id: $id) {
      id
      name
      version
      cards {
        ...RecipeCard
      }
    }
  }
  ${CARD}
`;

// The same fields as the query, so an update replaces what the query cached. Selecting
// `cards` on Board is what keeps lists current: creating or deleting a card also sends
// UPDATED for its board, with the new list.
export const USER_UPDATES = gql`
  subscription RecipeUpdates($after: String) {
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
            ...RecipeCard
          }
        }
        ...RecipeCard
      }
    }
  }
  ${CARD}
`;

export function createCommitcastClient({ httpUrl, wsUrl, getToken, onUpdate, onError }) {
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ authorization: `Bearer ${getToken()}` }),
    retryAttempts: Infinity, // keep reconnecting; followUserUpdates resumes from the cursor
    shouldRetry: () => true,
  });
  const withToken = setContext((_, { headers }) => ({
    headers: { ...headers, authorization: `Bearer ${getToken()}` },
  }));
  const isSubscription = ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  };
  const httpLink = new HttpLink({ uri: httpUrl });
  const client = new ApolloClient({
    link: split(isSubscription, new GraphQLWsLink(wsClient), withToken.concat(httpLink)),
    cache: new InMemoryCache({
      // The server always sends whole lists: replacing is right (this only silences
      // Apollo's "Cache data may be lost" warning when a list gets shorter).
      typePolicies: { Board: { fields: { cards: { merge: false } } } },
    }),
  });
  // CREATED/UPDATED normalize themselves (`__typename` + `id`); followUserUpdates evicts
  // DELETED records, refetches on RESYNC and resumes from the last cursor on reconnect.
  const updates = followUserUpdates({ client, wsClient, query: USER_UPDATES, onUpdate, onError });
  return {
    client,
    updates,
    stop() {
      updates.stop();
      client.stop();
      return wsClient.dispose();
    },
  };
}
