import { ApolloClient, HttpLink, InMemoryCache } from "@apollo/client/core/index.js";
import { createClient } from "graphql-sse";

// graphql-sse: each subscription is one POST to /graphql answered as text/event-stream.
export function sseClient(url, token) {
  return createClient({
    url, // e.g. "http://localhost:8000/graphql"
    headers: { authorization: `Bearer ${token}` },
    // Its own retry would re-send the first request (and its first cursor):
    // followUserUpdates resumes from the last cursor received instead.
    retryAttempts: 0,
  });
}

export const sseSubscribe = (client, query) => (variables, sink) =>
  client.subscribe({ query, variables }, sink);

// Apollo Client: HttpLink streams subscriptions as multipart/mixed, no WebSocket needed.
export function apolloClient(uri, token) {
  return new ApolloClient({
    link: new HttpLink({ uri, headers: { authorization: `Bearer ${token}` } }),
    cache: new InMemoryCache(),
  });
}

export const apolloSubscribe = (client, query) => (variables, sink) => {
  const subscription = client.subscribe({ query, variables }).subscribe(sink);
  return () => subscription.unsubscribe();
};

/**
 * Follows userUpdates across dropped connections: after a network error (or a stream
 * that ended) it subscribes again with the cursor of the last update received, so
 * nothing is missed. A GraphQL error (UNAUTHENTICATED, ...) stops it: onError.
 * On RESYNC, refetch your active queries (client.refetchQueries({ include: "active" })).
 */
export function followUserUpdates({ subscribe, after = null, onUpdate, onError, retryMs = 1000 }) {
  let cursor = after;
  let stopped = false;
  let unsubscribe = () => {};
  const fail = (errors) => {
    stopped = true;
    onError(errors);
  };
  const resume = () => {
    if (!stopped) setTimeout(start, retryMs);
  };
  function start() {
    if (stopped) return;
    unsubscribe = subscribe(
      { after: cursor },
      {
        next: ({ data, errors }) => {
          if (errors?.length) return fail(errors);
          cursor = data.userUpdates.cursor;
          onUpdate(data.userUpdates);
        },
        // Apollo reports GraphQL errors here (graphQLErrors); graphql-sse as `next`.
        error: (error) => (error?.graphQLErrors?.length ? fail(error.graphQLErrors) : resume()),
        complete: resume,
      },
    );
  }
  start();
  return {
    get cursor() {
      return cursor;
    },
    stop() {
      stopped = true;
      unsubscribe();
    },
  };
}
