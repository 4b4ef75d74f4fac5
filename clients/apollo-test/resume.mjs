#!/usr/bin/env node
// Proof of the resume recipe (README.md, "Resuming after a disconnect"): an Apollo app
// using `followUserUpdates` from commitcast-link.mjs keeps its cache equal to a fresh
// query across a network drop, and refetches on RESYNC.
//
// 1. resume: A's app watches the board (an active query) and follows userUpdates. The
//    network drops: every socket of A's is cut and new ones are refused, so graphql-ws
//    keeps retrying. Meanwhile B creates, edits, moves, comments on and deletes cards.
//    The network comes back; graphql-ws reconnects, the helper resubscribes with
//    `after: <last cursor>`, and the server sends what A missed. A's cache must then
//    equal a fresh query with no refetch at all (the board is fetched once) and no
//    RESYNC, and the resubscription must have carried the last cursor A received.
// 2. resync: a fresh app starts with a cursor the server cannot serve (malformed), after
//    B changed the board behind its back. The server answers RESYNC, the helper refetches
//    the active queries, and the cache must equal a fresh query; a later change then
//    arrives live.
//
// Environment: as cache-convergence.mjs (COMMITCAST_HTTP_URL, COMMITCAST_WS_URL,
// COMMITCAST_TOKEN_A, COMMITCAST_TOKEN_B, COMMITCAST_BOARD_ID, COMMITCAST_TIMEOUT_MS).
// Prints one line per scenario: `apollo resume: OK: ...`, `apollo resync: OK: ...`.
// Exit status: 0 both converged, 1 a cache differs from the network (differences are
// printed), 2 the run could not be carried out.

import net from "node:net";
import { inspect } from "node:util";

import {
  ApolloClient,
  ApolloLink,
  HttpLink,
  InMemoryCache,
  split,
} from "@apollo/client/core/index.js";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions/index.js";
import { addTypenameToDocument, getMainDefinition } from "@apollo/client/utilities/index.js";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

import { followUserUpdates } from "../recipes/commitcast-link.mjs";
import {
  BOARD_QUERY,
  CREATE_BOARD,
  SetupError,
  USER_UPDATES,
  describe,
  differences,
  graphqlEndpoint,
  post,
  requireEnv,
  withTimeout,
} from "./harness.mjs";

// graphql-ws waits this long between reconnection attempts here; apps keep its default
// randomized exponential backoff.
const RETRY_WAIT_MS = 100;
const PROBE_WAIT_MS = 3_000;
const PROBE_ATTEMPTS = 3;
const RECHECK_MS = 50;

// ---------------------------------------------------------------------------------------
// A network that can go down: every WebSocket A's client opens goes through it.

async function unusedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

class Network {
  up = true;
  sockets = new Set();
  subscribes = []; // variables of every subscribe message sent, in order

  constructor(deadUrl, onSend) {
    this.deadUrl = deadUrl;
    this.onSend = onSend;
  }

  /** A WebSocket class for graphql-ws's `webSocketImpl`. */
  webSocketImpl() {
    const network = this;
    return class NetworkWebSocket extends WebSocket {
      constructor(url, protocols) {
        // While down, connections go to a port nothing listens on: refused.
        super(network.up ? url : network.deadUrl, protocols);
        network.sockets.add(this);
        this.on("close", () => network.sockets.delete(this));
      }

      send(data, ...rest) {
        const message = JSON.parse(data);
        // Only what really goes out (graphql-ws may try a socket that just died).
        if (message.type === "subscribe" && this.readyState === WebSocket.OPEN)
          network.subscribes.push(message.payload.variables);
        const result = super.send(data, ...rest);
        network.onSend();
        return result;
      }
    };
  }

  /** Cut every open connection abruptly (no close frame) and refuse new ones. */
  down() {
    this.up = false;
    for (const socket of this.sockets) socket.terminate();
  }

  restore() {
    this.up = true;
  }
}

// ---------------------------------------------------------------------------------------

function makeApp({ httpUrl, wsUrl, token, network, onEvent }) {
  const events = { connected: 0, retries: 0, closed: 0 };
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: network.webSocketImpl(),
    connectionParams: { authorization: `Bearer ${token}` },
    // The recipe: graphql-ws reconnects forever; followUserUpdates resubscribes.
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait: () => new Promise((resolve) => setTimeout(resolve, RETRY_WAIT_MS)),
    on: {
      connected: (_socket, _payload, wasRetry) => {
        events.connected += 1;
        if (wasRetry) events.retries += 1;
        onEvent();
      },
      closed: () => {
        events.closed += 1;
        onEvent();
      },
    },
  });
  // Counts the board queries that reach the network (the first load and any refetch).
  let boardFetches = 0;
  const counting = new ApolloLink((operation, forward) => {
    if (operation.operationName === "Board") boardFetches += 1;
    return forward(operation);
  });
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    new GraphQLWsLink(wsClient),
    counting.concat(
      new HttpLink({ uri: httpUrl, headers: { authorization: `Bearer ${token}` } }),
    ),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return { client, wsClient, events, boardFetches: () => boardFetches };
}

/** Updates as they arrive, and bounded waits for conditions re-checked on each one. */
class Inbox {
  updates = [];
  failure = null;
  waiters = new Set();

  receive = (update) => {
    this.updates.push(update);
    this.check();
  };

  fail = (error) => {
    this.failure ??= new SetupError(
      `subscription failed: ${error?.message ?? describe(error ?? "unknown error")}`,
    );
    this.check();
  };

  check() {
    for (const check of [...this.waiters]) check();
  }

  count(op) {
    return this.updates.filter((u) => u.op === op).length;
  }

  tally(updates = this.updates) {
    const counts = {};
    for (const u of updates) counts[u.op] = (counts[u.op] ?? 0) + 1;
    return (
      Object.entries(counts)
        .map(([op, n]) => `${n} ${op}`)
        .join(", ") || "none"
    );
  }

  /** Resolves once `predicate()` holds, re-checked on every update and socket event,
   * and every RECHECK_MS (a refetch followed by gc() notifies nothing); at most `ms`. */
  waitFor(predicate, ms, what) {
    let check;
    const timer = setInterval(() => check(), RECHECK_MS);
    return withTimeout(
      new Promise((resolve, reject) => {
        check = () => {
          if (this.failure) reject(this.failure);
          else if (predicate()) resolve();
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      what,
    ).finally(() => {
      clearInterval(timer);
      this.waiters.delete(check);
    });
  }
}

/** B's writes, over plain HTTP (B is another user on another device). */
function writer(httpUrl, token, boardId) {
  const run = (query, variables) => post(httpUrl, token, query, variables);
  return {
    createCard: async (title) =>
      (
        await run(
          "mutation($b: ID!, $t: String!) { createCard(input: {boardId: $b, title: $t}) { id } }",
          { b: boardId, t: title },
        )
      ).createCard.id,
    updateCard: (input) =>
      run("mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }", { i: input }),
    deleteCard: (id) => run("mutation($id: ID!) { deleteCard(id: $id) }", { id }),
    addComment: async (cardId, body) =>
      (
        await run(
          "mutation($c: ID!, $b: String!) { addComment(input: {cardId: $c, body: $b}) { id } }",
          { c: cardId, b: body },
        )
      ).addComment.id,
    deleteComment: (id) => run("mutation($id: ID!) { deleteComment(id: $id) }", { id }),
  };
}

/** The board as a fresh request returns it now (plain HTTP as A, with __typename). */
const freshBoard = (env) =>
  post(env.httpUrl, env.tokenA, addTypenameToDocument(BOARD_QUERY), { id: env.boardId });

/** An app screen: the board query, watched (so it is "active" for refetchQueries). */
async function watchBoard(client, boardId, inbox) {
  const query = client.watchQuery({ query: BOARD_QUERY, variables: { id: boardId } });
  let loaded;
  const first = new Promise((resolve) => (loaded = resolve));
  const subscription = query.subscribe({
    next: ({ data }) => {
      if (data?.board) loaded();
      inbox.check(); // the cache changed (a refetch, say): re-check what is awaited
    },
    error: (error) => inbox.fail(error),
  });
  await withTimeout(first, 10_000, "the first board query");
  return subscription;
}

/**
 * A makes a board of its own and waits for its CREATED: the subscription is live (and,
 * since one user's updates arrive in commit order, everything committed before has
 * been received). A probe that committed before the server subscribed never arrives, so
 * after PROBE_WAIT_MS another is made.
 */
async function probe(client, inbox, remaining, log) {
  for (let attempt = 1; attempt <= PROBE_ATTEMPTS; attempt++) {
    const name = `probe ${attempt} ${process.pid} ${Date.now()}`;
    const result = await client.mutate({ mutation: CREATE_BOARD, variables: { name } });
    const id = result.data.createBoard.id;
    try {
      await inbox.waitFor(
        () => inbox.updates.some((u) => u.op === "CREATED" && u.id === id),
        Math.min(PROBE_WAIT_MS, remaining()),
        `the CREATED update of probe board ${name}`,
      );
      return;
    } catch (error) {
      const last = attempt === PROBE_ATTEMPTS;
      if (!(error instanceof SetupError) || inbox.failure || last) throw error;
      log(`${error.message}; probing again`);
    }
  }
}

/** Wait (bounded) until the cache equals `truth`, then flush with a probe and compare. */
async function converge(app, inbox, env, truth, gone, remaining, log) {
  const diff = () => differences(app.client.cache, env.boardId, truth, gone);
  try {
    await inbox.waitFor(() => diff().length === 0, remaining(), "convergence");
    await probe(app.client, inbox, remaining, log);
  } catch (error) {
    if (!(error instanceof SetupError) || inbox.failure) throw error;
    log(`${error.message}; differences: ${describe(diff())}`);
  }
  return diff();
}

function report(name, problems, inbox, summary) {
  if (problems.length === 0) {
    console.log(`apollo ${name}: OK: ${summary}`);
    return 0;
  }
  console.log(`apollo ${name}: FAILED: ${problems.length} differences (${summary}):`);
  for (const problem of problems) console.log(`  - ${problem}`);
  console.log("updates received, in order:");
  for (const u of inbox.updates)
    console.log(`  ${u.op} ${u.typename} ${u.id} ${u.node?.version ?? ""} ${u.cursor}`);
  return 1;
}

// ---------------------------------------------------------------------------------------

async function resumeAfterNetworkDrop(env) {
  const started = Date.now();
  const remaining = () => Math.max(1, started + env.timeoutMs - Date.now());
  const log = (message) => console.error(`[resume] ${message}`);
  const inbox = new Inbox();
  const network = new Network(env.deadUrl, () => inbox.check());
  const app = makeApp({ ...env, token: env.tokenA, network, onEvent: () => inbox.check() });
  const b = writer(env.httpUrl, env.tokenB, env.boardId);
  let follow = null;
  let screen = null;
  try {
    screen = await watchBoard(app.client, env.boardId, inbox);
    follow = followUserUpdates({
      client: app.client,
      wsClient: app.wsClient,
      query: USER_UPDATES,
      onUpdate: inbox.receive,
      onError: inbox.fail,
    });
    // The subscription has gone out before the probe's mutation (which must commit after
    // the server has subscribed, or it is never announced).
    await inbox.waitFor(() => network.subscribes.length > 0, remaining(), "the subscribe");
    await probe(app.client, inbox, remaining, log);

    // Live before the drop: A sees B's card arrive, and has a cursor.
    const kept = await b.createCard("Before the drop");
    const doomed = await b.createCard("Deleted while A is away");
    const doomedComment = await b.addComment(doomed, "Goes with its card");
    await inbox.waitFor(
      () => inbox.updates.some((u) => u.id === doomedComment),
      remaining(),
      "the comment made before the drop",
    );

    // The drop. Nothing reaches A until the network is back.
    const closedBefore = app.events.closed;
    const lastCursor = follow.cursor;
    const receivedBefore = inbox.updates.length;
    const subscribesBefore = network.subscribes.length;
    network.down();
    await inbox.waitFor(() => app.events.closed > closedBefore, remaining(), "the drop");

    const added = await b.createCard("Added while A is away");

    await b.updateCard({ id: kept, title: "Renamed while A is away", description: "Missed." });
    await b.updateCard({ id: added, position: -1, done: true }); // moves to the top
    const comment = await b.addComment(kept, "Said while A is away");
    const retracted = await b.addComment(kept, "Retracted while A is away");
    await b.deleteComment(retracted);
    const flash = await b.createCard("Created and deleted while A is away");
    await b.deleteCard(flash);
    await b.deleteCard(doomed);
    const truth = await freshBoard(env);
    const gone = [
      ["Card", doomed],
      ["Comment", doomedComment],
      ["Comment", retracted],
      ["Card", flash],
    ].map(([__typename, id]) => app.client.cache.identify({ __typename, id }));
    const receivedWhileAway = inbox.updates.length - receivedBefore;

    // Back online: graphql-ws reconnects; the helper resubscribes from the last cursor.
    network.restore();
    const problems = await converge(app, inbox, env, truth, gone, remaining, log);
    const resubscribed = network.subscribes.slice(subscribesBefore);
    if (receivedWhileAway) problems.push(`${receivedWhileAway} updates arrived while offline`);
    if (app.events.retries < 1) problems.push("graphql-ws never reconnected");
    if (!resubscribed.some((variables) => variables?.after === lastCursor))
      problems.push(
        `no resubscription with the last cursor ${lastCursor}: ${describe(resubscribed)}`,
      );
    if (inbox.count("RESYNC")) problems.push(`${inbox.count("RESYNC")} RESYNC (none expected)`);
    if (app.boardFetches() !== 1)
      problems.push(`the board was fetched ${app.boardFetches()} times (once expected)`);
    const missed = inbox.updates.slice(receivedBefore);
    const seconds = ((Date.now() - started) / 1000).toFixed(2);
    return report(
      "resume",
      problems,
      inbox,
      `${receivedBefore} updates before the drop, the last with cursor ${lastCursor}; ` +
        `${app.events.retries} reconnect(s), subscribing with after: ` +
        `${describe(resubscribed.map((variables) => variables?.after ?? null))}; ` +
        `${inbox.tally(missed)} since ` +
        `(missed ones and a probe); board, ${truth.board.cards.length} cards and their ` +
        `comments equal a fresh query, ${gone.length} deleted records absent; ` +
        `${app.boardFetches()} board fetch, 0 resyncs; ${seconds} s`,
    );
  } finally {
    follow?.stop();
    screen?.unsubscribe();
    app.client.stop();
    // Rejects when a reconnection attempt is pending; nothing is left to clean up then.
    await app.wsClient.dispose().catch(() => {});
  }
}

async function resyncFromAnUnusableCursor(env) {
  const started = Date.now();
  const remaining = () => Math.max(1, started + env.timeoutMs - Date.now());
  const log = (message) => console.error(`[resync] ${message}`);
  const inbox = new Inbox();
  const network = new Network(env.deadUrl, () => inbox.check());
  const app = makeApp({ ...env, token: env.tokenA, network, onEvent: () => inbox.check() });
  const b = writer(env.httpUrl, env.tokenB, env.boardId);
  let follow = null;
  let screen = null;
  try {
    const victim = await b.createCard("Cached, then deleted behind A's back");
    screen = await watchBoard(app.client, env.boardId, inbox);
    // Behind A's back (A follows nothing yet), then A resumes from a cursor the server
    // cannot serve: a malformed one here; a cursor of another user's, or older than
    // CHANGE_LOG_RETENTION, gets the same answer.
    const added = await b.createCard("Added behind A's back");
    await b.updateCard({ id: added, description: "Never announced to A", position: -2 });
    await b.deleteCard(victim);
    const truth = await freshBoard(env);
    const gone = [app.client.cache.identify({ __typename: "Card", id: victim })];
    follow = followUserUpdates({
      client: app.client,
      wsClient: app.wsClient,
      query: USER_UPDATES,
      after: "not-a-cursor",
      onUpdate: inbox.receive,
      onError: inbox.fail,
    });
    await inbox.waitFor(() => inbox.count("RESYNC") > 0, remaining(), "RESYNC");
    const problems = await converge(app, inbox, env, truth, gone, remaining, log);

    // After RESYNC the stream carries on from its cursor: a new change arrives live.
    let liveProblems = [];
    if (problems.length === 0) {
      await b.updateCard({ id: added, title: "Changed after the RESYNC" });
      const later = await freshBoard(env);
      liveProblems = await converge(app, inbox, env, later, gone, remaining, log);
    }
    problems.push(...liveProblems);
    if (inbox.count("RESYNC") !== 1)
      problems.push(`${inbox.count("RESYNC")} RESYNC updates (one expected)`);
    if (inbox.updates[0]?.op !== "RESYNC")
      problems.push(`the first update was ${inbox.updates[0]?.op}, not RESYNC`);
    if (app.boardFetches() < 2)
      problems.push("RESYNC did not refetch the board (fetched once, at load)");
    const seconds = ((Date.now() - started) / 1000).toFixed(2);
    return report(
      "resync",
      problems,
      inbox,
      `the malformed cursor got RESYNC first; ${inbox.tally()} in all; the board was ` +
        `refetched (${app.boardFetches()} fetches) and equals a fresh query, the card ` +
        `deleted behind A's back is gone, a later change arrived live; ${seconds} s`,
    );
  } finally {
    follow?.stop();
    screen?.unsubscribe();
    app.client.stop();
    // Rejects when a reconnection attempt is pending; nothing is left to clean up then.
    await app.wsClient.dispose().catch(() => {});
  }
}

async function main() {
  const env = {
    httpUrl: graphqlEndpoint(requireEnv("COMMITCAST_HTTP_URL")),
    wsUrl: requireEnv("COMMITCAST_WS_URL"),
    tokenA: requireEnv("COMMITCAST_TOKEN_A"),
    tokenB: requireEnv("COMMITCAST_TOKEN_B"),
    boardId: requireEnv("COMMITCAST_BOARD_ID"),
    timeoutMs: Number(process.env.COMMITCAST_TIMEOUT_MS ?? 15_000),
    deadUrl: `ws://127.0.0.1:${await unusedPort()}/graphql`,
  };
  const resumed = await resumeAfterNetworkDrop(env);
  const resynced = await resyncFromAnUnusableCursor(env);
  return Math.max(resumed, resynced);
}

main().then(
  (code) => process.exit(code),
  (error) => {
    const reason =
      error instanceof SetupError ? error.message : (error?.stack ?? inspect(error));
    console.log(`apollo resume: ERROR: ${reason}`);
    process.exit(2);
  },
);
