// Follow Commitcast's `userUpdates` with Apollo Client 3 over graphql-ws, resuming from
// the last cursor after every reconnect. Create the graphql-ws client with
// `retryAttempts: Infinity, shouldRetry: () => true`: it reconnects on its own and then
// resubscribes what is subscribed, with the variables it was subscribed with. So when
// the socket drops, this restarts the subscription with `after: <last cursor>`, and
// that is what goes out once the connection is back; the server sends what was missed.
export function followUserUpdates({ client, wsClient, query, after = null, onUpdate, onError }) {
  const { cache } = client;
  let cursor = after; // persist it (e.g. localStorage) to resume across page loads too
  let live = null;
  let connected = false;
  // Refetch what is on screen; gc() drops records no refetched query reaches any more
  // (deleted while we were not listening).
  const resync = () =>
    client.refetchQueries({ include: "active" }).then(
      () => cache.gc(),
      (error) => onError?.(error),
    );
  const start = () => {
    live?.unsubscribe();
    live = client.subscribe({ query, variables: { after: cursor } }).subscribe({
      next: ({ data, errors }) => {
        const update = data?.userUpdates;
        if (!update) return onError?.(errors);
        cursor = update.cursor;
        if (update.op === "DELETED") {
          cache.evict({ id: cache.identify({ __typename: update.typename, id: update.id }) });
          cache.gc();
        } else if (update.op === "RESYNC") {
          resync(); // and carry on: later updates follow from the RESYNC's cursor
        }
        onUpdate?.(update);
      },
      error: (error) => onError?.(error),
    });
  };
  const listeners = [
    wsClient.on("connected", (_socket, _payload, wasRetry) => {
      connected = true;
      // No update had arrived, so there was no cursor: what happened meanwhile is unknown.
      if (wasRetry && cursor === null) resync();
    }),
    wsClient.on("closed", () => {
      if (!connected) return; // a failed reconnection attempt
      connected = false;
      start();
    }),
  ];
  start();
  return {
    get cursor() {
      return cursor;
    },
    stop() {
      listeners.forEach((stopListening) => stopListening());
      live?.unsubscribe();
    },
  };
}
