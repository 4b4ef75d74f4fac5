// userUpdates over HTTP streaming with real clients: graphql-sse ("sse") and Apollo
// Client's HttpLink multipart subscriptions ("multipart"), each in turn as listed in
// COMMITCAST_TRANSPORTS, set up exactly as commitcast-http.mjs (the code
// docs/realtime.md shows) does.
//
// A is the app's user; B shares A's board and changes things; C is on no board of A's.
// Prints one line per scenario, "http streaming <transport> <scenario>: OK: ..." or
// "...: FAILED: ...", and exits non-zero on any failure.
import { inspect } from "node:util";
import { gql } from "@apollo/client/core/index.js";
import {
  apolloClient,
  apolloSubscribe,
  followUserUpdates,
  sseClient,
  sseSubscribe,
} from "./commitcast-http.mjs";

const USER_UPDATES = `
  subscription UserUpdates($after: String) {
    userUpdates(after: $after) {
      cursor op typename id
      node { __typename id ... on Board { name version } ... on Card { title version } }
    }
  }`;
const PROBE_WAIT_MS = 500;
const PROBE_ATTEMPTS = 10;
const RETRY_MS = 200;

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const env = {
  transports: requireEnv("COMMITCAST_TRANSPORTS").split(","),
  url: `${requireEnv("COMMITCAST_HTTP_URL").replace(/\/$/, "")}/graphql`,
  tokenA: requireEnv("COMMITCAST_TOKEN_A"),
  tokenB: requireEnv("COMMITCAST_TOKEN_B"),
  tokenC: requireEnv("COMMITCAST_TOKEN_C"),
  ghostToken: requireEnv("COMMITCAST_GHOST_TOKEN"),
  boardA: requireEnv("COMMITCAST_BOARD_ID"),
  boardC: requireEnv("COMMITCAST_OTHER_BOARD_ID"),
  timeoutMs: Number(process.env.COMMITCAST_TIMEOUT_MS ?? 10_000),
};

/**
 * The network between this process and the server: it records each request's variables,
 * and can go down (open streams are cut, new requests fail) and come back. Installed as
 * the global fetch, which both clients use.
 */
class Network {
  up = true;
  open = new Set();
  requests = [];

  constructor() {
    const realFetch = globalThis.fetch;
    globalThis.fetch = async (url, init = {}) => {
      if (!this.up) throw new TypeError("fetch failed: the test's network is down");
      try {
        this.requests.push(JSON.parse(init.body));
      } catch {
        // not JSON: not a GraphQL request
      }
      const cut = new AbortController();
      init.signal?.addEventListener("abort", () => cut.abort(init.signal.reason));
      this.open.add(cut);
      return realFetch(url, { ...init, signal: cut.signal });
    };
  }

  down() {
    this.up = false;
    for (const cut of this.open) cut.abort(new Error("connection cut by the test"));
    this.open.clear();
  }

  restore() {
    this.up = true;
  }

  subscriptionsAfter(index) {
    return this.requests.slice(index).filter((r) => r?.query?.includes("userUpdates"));
  }
}

// B and C write from other devices: their requests do not go through A's network.
const directFetch = globalThis.fetch;
const network = new Network();

/** GraphQL over plain HTTP, for the writers. */
async function post(token, query, variables = {}) {
  const response = await directFetch(env.url, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query}: ${inspect(body.errors)}`);
  return body.data;
}

const writer = (token) => ({
  createBoard: async (name) =>
    (await post(token, "mutation($n: String!) { createBoard(input: {name: $n}) { id } }", { n: name }))
      .createBoard.id,
  createCard: async (boardId, title) =>
    (
      await post(
        token,
        "mutation($b: ID!, $t: String!) { createCard(input: {boardId: $b, title: $t}) { id } }",
        { b: boardId, t: title },
      )
    ).createCard.id,
  renameCard: (id, title) =>
    post(token, "mutation($i: UpdateCardInput!) { updateCard(input: $i) { id } }", {
      i: { id, title },
    }),
  deleteCard: (id) => post(token, "mutation($id: ID!) { deleteCard(id: $id) }", { id }),
});

/** A's side: one subscription through the transport under test. */
let transport = null;

function subscriber(token) {
  if (transport === "sse") return sseSubscribe(sseClient(env.url, token), USER_UPDATES);
  if (transport === "multipart")
    return apolloSubscribe(apolloClient(env.url, token), gql(USER_UPDATES));
  throw new Error(`transport ${transport}: use sse or multipart`);
}

/** What one followUserUpdates received, and bounded waits for it. */
class Inbox {
  updates = [];
  errors = null;
  waiters = new Set();

  onUpdate = (update) => {
    this.updates.push(update);
    this.check();
  };

  onError = (errors) => {
    this.errors = errors;
    this.check();
  };

  check() {
    for (const waiter of [...this.waiters]) waiter();
  }

  has(op, id, test = () => true) {
    return this.updates.some((u) => u.op === op && u.id === id && test(u));
  }

  waitFor(predicate, what, ms = env.timeoutMs) {
    let waiter;
    let timer;
    return new Promise((resolve, reject) => {
      timer = setTimeout(() => {
        const seen = this.updates.map((u) => `${u.op} ${u.typename} ${u.id}`).join(", ");
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; received: ${seen}`));
      }, ms);
      waiter = () => {
        if (this.errors && !predicate()) reject(new Error(`errors: ${inspect(this.errors)}`));
        else if (predicate()) resolve();
      };
      this.waiters.add(waiter);
      waiter();
    }).finally(() => {
      clearTimeout(timer);
      this.waiters.delete(waiter);
    });
  }
}

/**
 * A makes a board of its own and waits for its CREATED: the subscription is live, and
 * (one user's updates arrive in commit order) everything committed before has arrived.
 * A probe committed before the server subscribed is never announced: probe again.
 */
async function probe(inbox, a) {
  for (let attempt = 1; ; attempt++) {
    const id = await a.createBoard(`probe ${attempt} ${Date.now()}`);
    try {
      await inbox.waitFor(() => inbox.has("CREATED", id), `probe ${attempt}`, PROBE_WAIT_MS);
      return id;
    } catch (error) {
      if (inbox.errors || attempt === PROBE_ATTEMPTS) throw error;
    }
  }
}

async function liveResumeAndAuthorization() {
  const a = writer(env.tokenA);
  const b = writer(env.tokenB);
  const c = writer(env.tokenC);
  const inbox = new Inbox();
  const follow = followUserUpdates({
    subscribe: subscriber(env.tokenA),
    onUpdate: inbox.onUpdate,
    onError: inbox.onError,
    retryMs: RETRY_MS,
  });
  try {
    await probe(inbox, a);
    // Live: B's card on A's board arrives; C's card on C's own board does not.
    const cOwn = [await c.createCard(env.boardC, "Not for A")];
    const kept = await b.createCard(env.boardA, "Live");
    const doomed = await b.createCard(env.boardA, "Deleted while A is offline");
    await inbox.waitFor(() => inbox.has("CREATED", doomed), "B's cards, live");

    // Offline: A's stream is cut and reconnecting fails until the network is back.
    const lastCursor = follow.cursor;
    const requestsBefore = network.requests.length;
    const receivedBefore = inbox.updates.length;
    network.down();
    let added;
    let whileOffline;
    try {
      await b.renameCard(kept, "Renamed while A is offline");
      added = await b.createCard(env.boardA, "Added while A is offline");
      await b.deleteCard(doomed);
      cOwn.push(await c.createCard(env.boardC, "Still not for A"));
      await new Promise((resolve) => setTimeout(resolve, 3 * RETRY_MS)); // failed retries
      whileOffline = inbox.updates.length - receivedBefore;
    } finally {
      network.restore();
    }

    await inbox.waitFor(
      () =>
        inbox.has("UPDATED", kept, (u) => u.node?.title === "Renamed while A is offline") &&
        inbox.has("CREATED", added) &&
        inbox.has("DELETED", doomed),
      "what was missed while offline",
    );
    await probe(inbox, a); // flush: C's changes, had they been A's, would be in by now
    const problems = [];
    if (whileOffline) problems.push(`${whileOffline} updates arrived while offline`);
    const resubscriptions = network.subscriptionsAfter(requestsBefore);
    if (!resubscriptions.some((r) => r.variables?.after === lastCursor))
      problems.push(`no resubscription from the last cursor ${lastCursor}`);
    const leaked = inbox.updates.filter((u) => cOwn.includes(u.id) || u.id === env.boardC);
    if (leaked.length) problems.push(`A received C's records: ${inspect(leaked)}`);
    const resyncs = inbox.updates.filter((u) => u.op === "RESYNC").length;
    if (resyncs) problems.push(`${resyncs} RESYNC (none expected)`);
    const missed = inbox.updates.slice(receivedBefore);
    return [
      problems,
      `B's cards arrived live; offline ${3 * RETRY_MS} ms (stream cut, retries refused), ` +
        `then resubscribed with after: ${lastCursor} and received ` +
        `${missed.map((u) => `${u.op} ${u.typename}`).join(", ")}; none of C's ` +
        `${cOwn.length} cards, no RESYNC`,
    ];
  } finally {
    follow.stop();
  }
}

async function resyncFromAMalformedCursor() {
  const b = writer(env.tokenB);
  const inbox = new Inbox();
  const follow = followUserUpdates({
    subscribe: subscriber(env.tokenA),
    after: "not-a-cursor",
    onUpdate: inbox.onUpdate,
    onError: inbox.onError,
    retryMs: RETRY_MS,
  });
  try {
    await inbox.waitFor(() => inbox.updates.length > 0, "the first update");
    const problems = [];
    const first = inbox.updates[0];
    if (first.op !== "RESYNC") problems.push(`the first update was ${first.op}, not RESYNC`);
    // The stream goes on from the RESYNC's cursor: a later change arrives live.
    const card = await b.createCard(env.boardA, "After the RESYNC");
    await inbox.waitFor(() => inbox.has("CREATED", card), "a change after the RESYNC");
    return [problems, `RESYNC (cursor ${first.cursor}) first, then live updates`];
  } finally {
    follow.stop();
  }
}

async function refusedWithoutAUsableToken() {
  const problems = [];
  const seen = [];
  for (const [what, token, expected] of [
    ["an empty token", "", "Authorization: Bearer"],
    ["a malformed token", "not.a.jwt", "invalid"],
    ["a token whose account is gone", env.ghostToken, "no longer exists"],
  ]) {
    const inbox = new Inbox();
    const follow = followUserUpdates({
      subscribe: subscriber(token),
      onUpdate: inbox.onUpdate,
      onError: inbox.onError,
      retryMs: RETRY_MS,
    });
    try {
      await inbox.waitFor(() => inbox.errors !== null, `the error for ${what}`);
    } catch (error) {
      problems.push(`${what}: ${error.message}`);
      continue;
    } finally {
      follow.stop();
    }
    const [error] = inbox.errors;
    const code = error?.extensions?.code;
    if (code !== "UNAUTHENTICATED" || !error.message.includes(expected))
      problems.push(`${what}: ${inspect(inbox.errors)}`);
    if (inbox.updates.length) problems.push(`${what}: received ${inbox.updates.length} updates`);
    seen.push(`${what}: ${code} "${error?.message}"`);
  }
  return [problems, seen.join("; ")];
}

async function main() {
  const scenarios = {
    live: liveResumeAndAuthorization,
    resync: resyncFromAMalformedCursor,
    auth: refusedWithoutAUsableToken,
  };
  let failed = 0;
  for (transport of env.transports) {
    for (const [name, scenario] of Object.entries(scenarios)) {
      const started = Date.now();
      let problems;
      let summary = "";
      try {
        [problems, summary] = await scenario();
      } catch (error) {
        problems = [error?.stack ?? inspect(error)];
      }
      const seconds = ((Date.now() - started) / 1000).toFixed(2);
      const label = `http streaming ${transport} ${name}`;
      if (problems.length === 0) {
        console.log(`${label}: OK: ${summary}; ${seconds} s`);
      } else {
        failed += 1;
        console.log(`${label}: FAILED: ${problems.join("; ")}`);
      }
    }
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.log(`http streaming ${transport}: ERROR: ${error?.stack ?? inspect(error)}`);
    process.exit(2);
  },
);
