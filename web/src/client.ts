// One Apollo client per signed-in user: queries and mutations over HTTP, the userUpdates
// subscription over graphql-ws (same origin, token in the connection_init payload).
import { ApolloClient, HttpLink, InMemoryCache, split } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient, type Client as WsClient } from "graphql-ws";

export const GRAPHQL_PATH = "/graphql";

export type Session = { client: ApolloClient<object>; wsClient: WsClient };

function webSocketUrl(): string {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}${GRAPHQL_PATH}`;
}

/** Sooner than graphql-ws's default (1 s + up to 3 s, doubling) for the first tries,
 * since a person is looking at the page; at most ~15 s apart, with jitter so that many
 * pages do not all come back at once after a server restart. */
function retryWait(retries: number): Promise<void> {
  const delay = Math.min(500 * 2 ** retries, 15_000) * (0.5 + Math.random() / 2);
  return new Promise((resolve) => setTimeout(resolve, delay));
}

export function createSession(token: string): Session {
  const authorization = `Bearer ${token}`;
  const wsClient = createClient({
    url: webSocketUrl(),
    connectionParams: () => ({ authorization }),
    // Keep reconnecting for as long as the page is open; live.ts resumes from the cursor.
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait,
  });
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    new GraphQLWsLink(wsClient),
    new HttpLink({ uri: GRAPHQL_PATH, headers: { authorization } }),
  );
  // No merge functions: the server always sends whole lists (a parent is announced as
  // UPDATED whenever one of its lists changes), so replacing a list is right. These
  // policies only say so, which silences Apollo's "cache data may be lost" warning.
  const replace = { merge: false };
  const cache = new InMemoryCache({
    typePolicies: {
      Board: { fields: { cards: replace, members: replace } },
      Card: { fields: { comments: replace } },
      User: { fields: { boards: replace } },
    },
  });
  return { client: new ApolloClient({ link, cache }), wsClient };
}

/** signUp / logIn over plain HTTP: there is no session (and no Apollo client) yet. */
export async function authenticate(
  mode: "signUp" | "logIn",
  input: { email: string; password: string; name?: string },
): Promise<string> {
  const inputType = mode === "signUp" ? "SignUpInput" : "LogInInput";
  const response = await fetch(GRAPHQL_PATH, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      query: `mutation($input: ${inputType}!) { ${mode}(input: $input) { token } }`,
      variables: { input },
    }),
  });
  const body = await response.json();
  if (body.errors?.length) throw new Error(body.errors[0].message);
  return body.data[mode].token;
}
