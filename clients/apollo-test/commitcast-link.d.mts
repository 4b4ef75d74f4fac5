// Types of commitcast-link.mjs, for TypeScript apps that import it (web/ does).
import type { ApolloClient, DocumentNode } from "@apollo/client";
import type { Client } from "graphql-ws";

export type UserUpdate = {
  cursor: string;
  op: "CREATED" | "UPDATED" | "DELETED" | "RESYNC";
  typename: string | null;
  id: string | null;
  node: unknown;
};

export function followUserUpdates(options: {
  client: ApolloClient<object>;
  wsClient: Client;
  query: DocumentNode;
  after?: string | null;
  onUpdate?: (update: UserUpdate) => void;
  onError?: (error: unknown) => void;
}): { readonly cursor: string | null; stop(): void };
