// urql (@urql/core; React apps pass the same client to urql's <Provider>) with the
// Graphcache normalized cache: queries over HTTP, `userUpdates` over graphql-ws.
import { readFileSync } from "node:fs";

import { Client, fetchExchange, gql, subscriptionExchange } from "@urql/core";
import { cacheExchange } from "@urql/exchange-graphcache";
import { buildSchema, introspectionFromSchema } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws"; // Node.js only: browsers and React Native have WebSocket

// Graphcache needs the schema to match `... on Card` inside `node: Node` exactly, and to
// read a nullable field that is gone from the cache as null. Apps usually generate this
// introspection JSON at build time; here it is built from the repository's schema.graphql.
const schema = introspectionFromSchema(
  buildSchema(readFileSync(new URL("../../schema.graphql", import.meta.url), "utf8")),
);

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

// The same fields as the query. Selecting `cards` on Board keeps lists current: creating
// or deleting a card also sends UPDATED for its board, with the new list.
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

const commitcastCache = cacheExchange({
  schema,
  // UserUpdate.id is the changed record's id (and null on RESYNC): the envelope is not
  // an entity of its own, so embed it in its parent instead of keying it.
  keys: { UserUpdate: () => null },
  updates: {
    Subscription: {
      // CREATED/UPDATED nodes normalize themselves by `__typename` + `id`.
      userUpdates({ userUpdates: update }, _args, cache) {
        if (update.op === "DELETED") {
          cache.invalidate({ __typename: update.typename, id: update.id });
        }
      },
    },
  },
});

export function createCommitcastClient({ httpUrl, wsUrl, getToken }) {
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ authorization: `Bearer ${getToken()}` }),
  });
  const client = new Client({
    url: httpUrl,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${getToken()}` } }),
    exchanges: [
      commitcastCache,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({
            unsubscribe: wsClient.subscribe({ ...request, query: request.query ?? "" }, sink),
          }),
        }),
      }),
      fetchExchange,
    ],
  });
  return { client, wsClient };
}

// Follow the viewer's updates from `after` (a cursor you kept, or null for "from now").
// On RESYNC, re-run your queries with { requestPolicy: "network-only" } (each useQuery
// returns reexecuteQuery for that).
export function followUserUpdates(client, { after = null, onUpdate, onResync }) {
  let cursor = after;
  const { unsubscribe } = client
    .subscription(USER_UPDATES, { after })
    .subscribe(({ data, error }) => {
      if (error) return console.error(error);
      cursor = data.userUpdates.cursor;
      if (data.userUpdates.op === "RESYNC") onResync?.();
      onUpdate?.(data.userUpdates);
    });
  return {
    get cursor() {
      return cursor;
    },
    stop: unsubscribe,
  };
}
