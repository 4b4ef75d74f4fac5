#!/usr/bin/env node
// Runs one recipe of docs/clients.md against a live server: `node check.mjs apollo|urql|relay`.
//
// User A's app is built exactly as the recipe says. It loads the board, follows
// userUpdates, and (after a probe proves the subscription is live) user B, another
// client, creates a card, edits it and deletes the card A already had. A's normalized
// cache must then hold the board exactly as a fresh query returns it, and the deleted
// card must be gone from the store (it was there before).
//
// Environment: COMMITCAST_HTTP_URL (the server), COMMITCAST_WS_URL,
// COMMITCAST_TOKEN_A (a board member), COMMITCAST_TOKEN_B (an EDITOR or the owner),
// COMMITCAST_BOARD_ID (a board with at least one card), COMMITCAST_TIMEOUT_MS.
// Prints `<recipe> recipe: OK: ...` and exits 0; prints the differences and exits 1 when
// the cache did not converge; exits 2 when the run itself failed.

import { createOperationDescriptor, fetchQuery } from "relay-runtime";

import * as apollo from "./apollo.mjs";
import * as relay from "./relay.mjs";
import BoardQuery from "./relay/__generated__/RelayRecipeBoardQuery.graphql.js";
import * as urql from "./urql.mjs";

const PROBE_WAIT_MS = 1_000;
const PROBE_ATTEMPTS = 6;
const RECHECK_MS = 50;

class SetupError extends Error {}

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new SetupError(`${name} is not set`);
  return value;
}

// The server root or its /graphql endpoint.
const httpUrl = new URL("/graphql", requireEnv("COMMITCAST_HTTP_URL")).toString();
const wsUrl = requireEnv("COMMITCAST_WS_URL");
const tokenA = requireEnv("COMMITCAST_TOKEN_A");
const tokenB = requireEnv("COMMITCAST_TOKEN_B");
const boardId = requireEnv("COMMITCAST_BOARD_ID");
const timeoutMs = Number(process.env.COMMITCAST_TIMEOUT_MS ?? 15_000);

const BOARD_TEXT = `query($id: ID!) { board(id: $id) { id name version cards { id title done version } } }`;
const CARD_NODE = `query RecipeCardNode($id: ID!) { node(id: $id) { __typename id ... on Card { title } } }`;

async function post(token, query, variables) {
  const response = await fetch(httpUrl, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.json();
  if (!response.ok || body.errors?.length) {
    throw new SetupError(`GraphQL request failed: ${JSON.stringify(body.errors ?? body)}`);
  }
  return body.data;
}

function pick(record, ...fields) {
  return Object.fromEntries(fields.map((field) => [field, record[field]]));
}

/** The fields the recipes select, in a canonical shape (no __typename, sorted keys). */
function project(board) {
  if (!board) return board;
  return {
    ...pick(board, "id", "name", "version"),
    // A list may briefly point at a deleted record (Relay reads it as null) until the
    // board's own UPDATED replaces the list.
    cards: (board.cards ?? []).map((card) => card && pick(card, "id", "title", "done", "version")),
  };
}

// ---------------------------------------------------------------------------------------
// How each recipe's app is started and how its cache is read (the reading is test code:
// an app reads through its queries).

const apps = {
  async apollo(onUpdate) {
    const app = apollo.createCommitcastClient({ httpUrl, wsUrl, getToken: () => tokenA, onUpdate });
    const variables = { id: boardId };
    // An active query, as a screen showing the board would have.
    app.client.watchQuery({ query: apollo.BOARD_QUERY, variables }).subscribe(() => {});
    await app.client.query({ query: apollo.BOARD_QUERY, variables });
    return {
      board: () => app.client.readQuery({ query: apollo.BOARD_QUERY, variables })?.board,
      hasCard: (id) => app.client.cache.identify({ __typename: "Card", id }) in app.client.cache.extract(),
      stop: () => app.stop(),
    };
  },

  async urql(onUpdate) {
    const { client, wsClient } = urql.createCommitcastClient({ httpUrl, wsUrl, getToken: () => tokenA });
    const variables = { id: boardId };
    const screen = client.query(urql.BOARD_QUERY, variables).subscribe(() => {});
    await client.query(urql.BOARD_QUERY, variables).toPromise();
    const following = urql.followUserUpdates(client, { onUpdate });
    return {
      // Graphcache keeps no link from node(id:) to a card it has not queried that way:
      // the check queries each card by node(id:) once, then reads that from the cache.
      prepareCard: (id) => client.query(CARD_NODE, { id }, { requestPolicy: "network-only" }).toPromise(),
      board: () => client.readQuery(urql.BOARD_QUERY, variables)?.data?.board,
      hasCard: (id) => Boolean(client.readQuery(CARD_NODE, { id })?.data?.node),
      stop: () => {
        following.stop();
        screen.unsubscribe();
        return wsClient.dispose();
      },
    };
  },

  async relay(onUpdate) {
    const { environment, wsClient } = relay.createCommitcastEnvironment({
      httpUrl,
      wsUrl,
      getToken: () => tokenA,
    });
    const operation = createOperationDescriptor(BoardQuery, { id: boardId });
    const retained = environment.retain(operation);
    await fetchQuery(environment, BoardQuery, { id: boardId }).toPromise();
    const following = relay.followUserUpdates(environment, { onUpdate });
    return {
      board: () => environment.lookup(operation.fragment).data?.board,
      hasCard: (id) => environment.getStore().getSource().get(id) != null,
      stop: () => {
        following.stop();
        retained.dispose();
        return wsClient.dispose();
      },
    };
  },
};

// ---------------------------------------------------------------------------------------

async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new SetupError(`timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, RECHECK_MS));
  }
}

async function main(name) {
  const start = apps[name];
  if (!start) throw new SetupError(`unknown recipe ${name}: use one of ${Object.keys(apps)}`);
  const began = Date.now();
  const updates = [];
  const app = await start((update) => updates.push(update));
  try {
    const before = project(app.board());
    if (!before?.cards?.length) throw new SetupError(`the board has no card to delete: ${JSON.stringify(before)}`);
    const doomed = before.cards[0].id;
    await app.prepareCard?.(doomed);
    if (!app.hasCard(doomed)) throw new SetupError(`card ${doomed} is not in the cache to begin with`);

    // Neither graphql-ws nor the server confirms a subscription: A makes a board of its
    // own until its CREATED comes back.
    let live = false;
    for (let attempt = 1; attempt <= PROBE_ATTEMPTS && !live; attempt += 1) {
      const probe = (await post(tokenA, `mutation($n: String!) { createBoard(input: {name: $n}) { id } }`, { n: `probe ${attempt}` })).createBoard.id;
      try {
        await waitFor(() => updates.some((u) => u.op === "CREATED" && u.id === probe), PROBE_WAIT_MS, "probe");
        live = true;
      } catch (error) {
        if (!(error instanceof SetupError)) throw error;
      }
    }
    if (!live) throw new SetupError(`no probe came back in ${PROBE_ATTEMPTS} attempts`);

    // B changes the board.
    const created = (await post(tokenB, `mutation($b: ID!) { createCard(input: {boardId: $b, title: "From B"}) { id } }`, { b: boardId })).createCard.id;
    await post(tokenB, `mutation($c: ID!) { updateCard(input: {id: $c, title: "From B, edited", done: true}) { id } }`, { c: created });
    await post(tokenB, `mutation($c: ID!) { deleteCard(id: $c) }`, { c: doomed });
    const truth = project((await post(tokenA, BOARD_TEXT, { id: boardId })).board);

    const converged = () => JSON.stringify(project(app.board())) === JSON.stringify(truth) && !app.hasCard(doomed);
    try {
      await waitFor(converged, timeoutMs, "the cache to equal a fresh query");
    } catch (error) {
      if (!(error instanceof SetupError)) throw error;
      console.log(`${name} recipe: FAILED: the cache did not converge within ${timeoutMs} ms`);
      console.log(`cache:   ${JSON.stringify(project(app.board()))}`);
      console.log(`network: ${JSON.stringify(truth)}`);
      console.log(`deleted card ${doomed} still in the cache: ${app.hasCard(doomed)}`);
      console.log(`updates: ${JSON.stringify(updates.map(({ op, typename, id }) => [op, typename, id]))}`);
      return 1;
    }
    const edited = truth.cards.find((card) => card.id === created);
    if (edited?.title !== "From B, edited" || edited.done !== true) {
      throw new SetupError(`the fresh query does not show B's card: ${JSON.stringify(truth)}`);
    }
    const ops = updates.reduce((counts, { op }) => ({ ...counts, [op]: (counts[op] ?? 0) + 1 }), {});
    console.log(
      `${name} recipe: OK: ${updates.length} updates ${JSON.stringify(ops)}; the board and its ` +
        `${truth.cards.length} cards equal a fresh query; the deleted card is evicted; ` +
        `${((Date.now() - began) / 1000).toFixed(2)} s`,
    );
    return 0;
  } finally {
    await app.stop();
  }
}

main(process.argv[2]).then(
  (code) => process.exit(code),
  (error) => {
    console.log(`${process.argv[2]} recipe: ERROR: ${error instanceof SetupError ? error.message : error.stack}`);
    process.exit(2);
  },
);
