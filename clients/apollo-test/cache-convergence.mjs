#!/usr/bin/env node
// Proof that an unmodified Apollo Client cache converges to what a fresh query returns,
// fed only by Commitcast's `userUpdates` subscription.
//
// User A runs a real ApolloClient (InMemoryCache with no typePolicies, a split link:
// HttpLink for queries and mutations, GraphQLWsLink over graphql-ws for subscriptions).
// It reads the board, subscribes to userUpdates and does nothing for CREATED/UPDATED:
// Apollo normalizes `node` by `__typename:id` on its own. DELETED goes through
// `applyDeletes` below (ten lines, the only client code an app needs).
// User B changes the board over plain HTTP. Then A's cache must equal a fresh query.
//
// Environment (all required except the timeout):
//   COMMITCAST_HTTP_URL   http://HOST:PORT or http://HOST:PORT/graphql
//   COMMITCAST_WS_URL     ws://HOST:PORT/graphql
//   COMMITCAST_TOKEN_A    access token of the observer (a member of the board)
//   COMMITCAST_TOKEN_B    access token of the writer (OWNER or EDITOR on the board)
//   COMMITCAST_BOARD_ID   global id of the board
//   COMMITCAST_TIMEOUT_MS how long to wait for convergence (default 15000)
//
// Exit status: 0 converged, 1 the cache differs from the network (a diff is printed),
// 2 the run could not be carried out (bad environment, server error, timeout on setup).

import { ApolloClient, HttpLink, InMemoryCache, split } from "@apollo/client/core/index.js";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions/index.js";
import { addTypenameToDocument, getMainDefinition } from "@apollo/client/utilities/index.js";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

// Documents, HTTP and the cache comparison are shared with resume.mjs.
import {
  BOARD_QUERY,
  CREATE_BOARD,
  CREATE_CARD,
  SetupError,
  USER_UPDATES,
  deepDiff,
  describe,
  differences,
  graphqlEndpoint,
  post,
  requireEnv,
  withTimeout,
} from "./harness.mjs";

// ---------------------------------------------------------------------------------------
// The eviction helper: the only hand-written cache code a Commitcast client needs.

/**
 * Apply a `userUpdates` item to an Apollo cache. CREATED and UPDATED need nothing: the
 * subscription result is written to the cache and `node` is normalized as
 * `__typename:id`, replacing the fields it selects. DELETED (node: null) evicts the
 * record; `gc()` drops what only it referenced, and lists that still point at it read
 * as if it were not there until the parent's own UPDATED arrives.
 * Returns true when the caller must refetch its queries (RESYNC).
 */
export function applyDeletes(cache, update) {
  if (update.op === "DELETED") {
    cache.evict({ id: cache.identify({ __typename: update.typename, id: update.id }) });
    cache.gc();
  }
  return update.op === "RESYNC";
}

// ---------------------------------------------------------------------------------------

const PROBE_WAIT_MS = 3_000;
const PROBE_ATTEMPTS = 3;

function makeApolloClient({ httpUrl, wsUrl, token, log }) {
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    on: {
      closed: (event) => {
        if (event?.code !== 1000) log(`websocket closed: ${event?.code} ${event?.reason ?? ""}`);
      },
    },
  });
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    new GraphQLWsLink(wsClient),
    new HttpLink({ uri: httpUrl, headers: { authorization: `Bearer ${token}` } }),
  );
  // No typePolicies, no possibleTypes, no merge functions: the defaults are the point.
  const cache = new InMemoryCache();
  const client = new ApolloClient({ link, cache });
  return { client, cache, wsClient };
}

// ---------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  const httpUrl = graphqlEndpoint(requireEnv("COMMITCAST_HTTP_URL"));
  const wsUrl = requireEnv("COMMITCAST_WS_URL");
  const tokenA = requireEnv("COMMITCAST_TOKEN_A");
  const tokenB = requireEnv("COMMITCAST_TOKEN_B");
  const boardId = requireEnv("COMMITCAST_BOARD_ID");
  const timeoutMs = Number(process.env.COMMITCAST_TIMEOUT_MS ?? 15_000);
  const deadline = started + timeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());
  const log = (message) => console.error(`[apollo] ${message}`);

  const { client, cache, wsClient } = makeApolloClient({ httpUrl, wsUrl, token: tokenA, log });
  const counts = { CREATED: 0, UPDATED: 0, DELETED: 0, RESYNC: 0 };
  const seen = []; // every update, in arrival order
  const waiters = new Set(); // re-checked on every update
  let subscriptionError = null;
  let resyncs = 0;

  const waitFor = (predicate, ms, what) =>
    withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          if (subscriptionError) {
            waiters.delete(check);
            reject(subscriptionError);
          } else if (predicate()) {
            waiters.delete(check);
            resolve();
          }
        };
        waiters.add(check);
        check();
      }),
      ms,
      what,
    );

  try {
    // 1. A reads the board (the cache is empty, so this goes to the network).
    const first = await client.query({ query: BOARD_QUERY, variables: { id: boardId } });
    if (!first.data?.board) throw new SetupError(`user A cannot see board ${boardId}`);

    // 2. A subscribes. Nothing here writes CREATED/UPDATED into the cache by hand.
    const subscription = client.subscribe({ query: USER_UPDATES }).subscribe({
      next: ({ data, errors }) => {
        if (errors?.length) {
          subscriptionError = new SetupError(`subscription errors: ${describe(errors)}`);
        } else {
          const update = data.userUpdates;
          counts[update.op] = (counts[update.op] ?? 0) + 1;
          seen.push(update);
          if (applyDeletes(cache, update)) {
            // RESYNC: this run never passes `after`, so it is not expected; an app would
            // refetch its active queries and go on.
            resyncs += 1;
            client.refetchQueries({ include: "active" });
          }
        }
        for (const check of [...waiters]) check();
      },
      error: (error) => {
        subscriptionError = new SetupError(
          `subscription failed: ${error?.message ?? describe(error)}`,
        );
        for (const check of [...waiters]) check();
      },
    });

    // A probe proves the subscription is live before B starts: A makes a board of its
    // own and waits for its CREATED. Neither protocol confirms a subscription, and a
    // probe that committed before the server subscribed never arrives, so after
    // PROBE_WAIT_MS another is made. Updates of one user arrive in commit order, so a
    // probe also works as a barrier later.
    let probes = 0;
    const probe = async () => {
      for (let attempt = 1; attempt <= PROBE_ATTEMPTS; attempt++) {
        probes += 1;
        const name = `apollo probe ${probes} ${process.pid}`;
        const result = await client.mutate({ mutation: CREATE_BOARD, variables: { name } });
        const id = result.data.createBoard.id;
        try {
          await waitFor(
            () => seen.some((u) => u.op === "CREATED" && u.typename === "Board" && u.id === id),
            Math.min(PROBE_WAIT_MS, remaining()),
            `the CREATED update of probe board ${probes}`,
          );
          return;
        } catch (error) {
          if (!(error instanceof SetupError) || subscriptionError || attempt === PROBE_ATTEMPTS)
            throw error;
          log(`${error.message}; probing again`);
        }
      }
    };
    await probe();

    // 3. B changes the board over plain HTTP; A's client also writes through Apollo.
    const createCard = async (title) =>
      (
        await post(
          httpUrl,
          tokenB,
          "mutation($b: ID!, $t: String!) { createCard(input: {boardId: $b, title: $t}) { id } }",
          { b: boardId, t: title },
        )
      ).createCard.id;
    const updateCard = (input) =>
      post(
        httpUrl,
        tokenB,
        "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id version } }",
        { i: input },
      );
    const addComment = async (cardId, body) =>
      (
        await post(
          httpUrl,
          tokenB,
          "mutation($c: ID!, $b: String!) { addComment(input: {cardId: $c, body: $b}) { id } }",
          { c: cardId, b: body },
        )
      ).addComment.id;

    const titles = [
      "Plan the launch",
      "Write the changelog",
      "Record the demo",
      "Doomed card",
      "Fix the footer",
    ];
    const cards = [];
    for (const title of titles) cards.push(await createCard(title));
    const [plan, changelog, demo, doomed, footer] = cards;
    await updateCard({
      id: plan,
      title: "Plan the launch (v2)",
      description: "Dates, owners, risks.",
    });
    await updateCard({ id: changelog, done: true });
    await updateCard({ id: demo, position: -1 }); // moves to the top of Board.cards
    await updateCard({
      id: footer,
      title: "Fix the footer links",
      done: true,
      description: "Both columns.",
    });
    await addComment(plan, "Looks good to me");
    await addComment(changelog, "Shipped");
    const doomedComment = await addComment(doomed, "Goes away with its card");
    // A writes through its Apollo client too: the mutation result and the pushed
    // update both land on Card:<id>.
    const own = await client.mutate({
      mutation: CREATE_CARD,
      variables: { board: boardId, title: "Added by A" },
    });
    await updateCard({ id: own.data.createCard.id, description: "Edited by B" });
    // Deleted last: nothing is created after it, so the check that its ids are gone
    // cannot be confused by a new record reusing one (SQLite reuses the highest rowid
    // after a delete; see README.md).
    await post(httpUrl, tokenB, "mutation($id: ID!) { deleteCard(id: $id) }", { id: doomed });

    const gone = [
      cache.identify({ __typename: "Card", id: doomed }),
      cache.identify({ __typename: "Comment", id: doomedComment }),
    ];

    // 4. The truth: the board as a fresh request returns it now (plain HTTP as A, with
    //    __typename like Apollo adds it). Every change above has committed.
    const truth = await post(httpUrl, tokenA, addTypenameToDocument(BOARD_QUERY), { id: boardId });

    // 5. Wait (bounded) until the cache equals it, re-checking on every update; then a
    //    second probe flushes the stream, so no late update can undo the result.
    let stalled = null;
    try {
      await waitFor(
        () => differences(cache, boardId, truth, gone).length === 0,
        remaining(),
        "convergence",
      );
      await probe();
    } catch (error) {
      if (!(error instanceof SetupError) || subscriptionError) throw error;
      stalled = error.message;
      log(stalled);
    }
    let problems = differences(cache, boardId, truth, gone);

    // 6. A network-only refetch through Apollo must change nothing in the cache: a
    //    refresh shows exactly what the pushed updates already did.
    if (problems.length === 0) {
      const keys = [
        boardId,
        ...truth.board.cards.flatMap((c) => [c.id, ...c.comments.map((m) => m.id)]),
      ];
      const before = structuredClone(cache.extract());
      await client.query({
        query: BOARD_QUERY,
        variables: { id: boardId },
        fetchPolicy: "network-only",
      });
      const after = cache.extract();
      for (const key of Object.keys(after).filter((k) => keys.some((id) => k.endsWith(`:${id}`)))) {
        deepDiff(before[key], after[key], `refetch changed ${key}`, problems);
      }
      if (problems.length === 0 && stalled) problems = [stalled];
    }

    subscription.unsubscribe();
    const seconds = ((Date.now() - started) / 1000).toFixed(2);
    const tally = Object.entries(counts)
      .filter(([, n]) => n)
      .map(([op, n]) => `${n} ${op}`)
      .join(", ");
    const commentCount = truth.board.cards.reduce((n, c) => n + c.comments.length, 0);
    if (problems.length) {
      console.log(
        `apollo cache convergence: FAILED after ${seen.length} updates (${tally}) in ${seconds} s; ${problems.length} differences:`,
      );
      for (const problem of problems) console.log(`  - ${problem}`);
      console.log(`updates received, in order:`);
      for (const u of seen)
        console.log(
          `  ${u.op} ${u.typename} ${u.id}${u.node?.version !== undefined ? ` v${u.node.version}` : ""}`,
        );
      return 1;
    }
    console.log(
      `apollo cache convergence: OK: ${seen.length} updates (${tally}); board, ` +
        `${truth.board.cards.length} cards and ${commentCount} comments equal a fresh query; ` +
        `${gone.length} deleted records evicted; ${resyncs} resyncs; ${seconds} s`,
    );
    return 0;
  } finally {
    client.stop();
    await wsClient.dispose();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.log(
      `apollo cache convergence: ERROR: ${error instanceof SetupError ? error.message : (error?.stack ?? error)}`,
    );
    process.exit(2);
  },
);
