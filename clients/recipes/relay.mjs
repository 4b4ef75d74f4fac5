// Relay (relay-runtime; React apps pass the same environment to
// <RelayEnvironmentProvider>): queries over HTTP, `userUpdates` over graphql-ws. The
// documents are compiled by relay-compiler from relay/RelayRecipe.js.
import { createClient } from "graphql-ws";
import {
  Environment,
  Network,
  Observable,
  RecordSource,
  Store,
  requestSubscription,
} from "relay-runtime";
import WebSocket from "ws"; // Node.js only: browsers and React Native have WebSocket

import UpdatesSubscription from "./relay/__generated__/RelayRecipeUpdatesSubscription.graphql.js";

export function createCommitcastEnvironment({ httpUrl, wsUrl, getToken }) {
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ authorization: `Bearer ${getToken()}` }),
  });
  const fetchFn = async (operation, variables) => {
    const response = await fetch(httpUrl, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${getToken()}` },
      body: JSON.stringify({ query: operation.text, variables }),
    });
    return response.json();
  };
  const subscribeFn = (operation, variables) =>
    Observable.create((sink) =>
      wsClient.subscribe({ operationName: operation.name, query: operation.text, variables }, sink),
    );
  const environment = new Environment({
    network: Network.create(fetchFn, subscribeFn),
    store: new Store(new RecordSource()),
    // Relay identifies records by their `id` alone. UserUpdate.id is the id of the
    // changed record, so the envelope must not be stored under it: give it a client id.
    getDataID: (value, typename) => (typename === "UserUpdate" ? null : value.id),
  });
  return { environment, wsClient };
}

// Follow the viewer's updates from `after` (a cursor you kept, or null for "from now").
// CREATED/UPDATED nodes normalize themselves by `id`. On RESYNC, refetch your queries
// (fetchQuery(...) or a `refetch` with { fetchPolicy: "network-only" }).
export function followUserUpdates(environment, { after = null, onUpdate, onResync }) {
  let cursor = after;
  const { dispose } = requestSubscription(environment, {
    subscription: UpdatesSubscription,
    variables: { after },
    updater: (store, data) => {
      const update = data.userUpdates;
      if (update.op === "DELETED") store.delete(update.id);
    },
    onNext: (data) => {
      cursor = data.userUpdates.cursor;
      if (data.userUpdates.op === "RESYNC") onResync?.();
      onUpdate?.(data.userUpdates);
    },
    onError: (error) => console.error(error),
  });
  return {
    get cursor() {
      return cursor;
    },
    stop: dispose,
  };
}
