// Types of commitcast-link.mjs, for TypeScript apps that import it (web/ does). They
// import nothing, so they hold whichever copy of @apollo/client and graphql-ws the app
// resolves: `client` is an ApolloClient, `wsClient` a graphql-ws Client, `query` the
// userUpdates subscription document.

export type UserUpdate = {
  cursor: string;
  op: "CREATED" | "UPDATED" | "DELETED" | "RESYNC";
  typename: string | null;
  id: string | null;
  node: unknown;
};

export function followUserUpdates(options: {
  client: object;
  wsClient: { on(event: "connected" | "closed", listener: (...args: never[]) => void): () => void };
  query: object;
  after?: string | null;
  onUpdate?: (update: UserUpdate) => void;
  onError?: (error: unknown) => void;
}): { readonly cursor: string | null; stop(): void };
