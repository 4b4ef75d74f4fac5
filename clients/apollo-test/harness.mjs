// Shared by the Apollo proofs (cache-convergence.mjs, resume.mjs): the documents,
// plain GraphQL over HTTP, and the comparison of a normalized cache with a fresh query.

import { gql } from "@apollo/client/core/index.js";
import { print } from "graphql";

// ---------------------------------------------------------------------------------------
// Documents. Queries and the subscription select records through the same fragments, so
// whatever a query put in the cache, an update overwrites field for field.

export const CARD_FIELDS = gql`
  fragment CardFields on Card {
    id
    title
    description
    position
    done
    version
    board {
      id
    }
    comments {
      id
      body
    }
  }
`;

export const BOARD_FIELDS = gql`
  fragment BoardFields on Board {
    id
    name
    version
    cards {
      ...CardFields
    }
  }
  ${CARD_FIELDS}
`;

export const COMMENT_FIELDS = gql`
  fragment CommentFields on Comment {
    id
    body
  }
`;

export const BOARD_QUERY = gql`
  query Board($id: ID!) {
    board(id: $id) {
      ...BoardFields
    }
  }
  ${BOARD_FIELDS}
`;

export const USER_UPDATES = gql`
  subscription UserUpdates($after: String) {
    userUpdates(after: $after) {
      cursor
      op
      typename
      id
      node {
        __typename
        id
        ...CardFields
        ...BoardFields
        ...CommentFields
      }
    }
  }
  ${BOARD_FIELDS}
  ${COMMENT_FIELDS}
`;

export const CREATE_BOARD = gql`
  mutation CreateBoard($name: String!) {
    createBoard(input: { name: $name }) {
      id
      name
      version
    }
  }
`;

export const CREATE_CARD = gql`
  mutation CreateCard($board: ID!, $title: String!) {
    createCard(input: { boardId: $board, title: $title }) {
      ...CardFields
    }
  }
  ${CARD_FIELDS}
`;

// ---------------------------------------------------------------------------------------
// Plumbing

export class SetupError extends Error {}

export function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new SetupError(`${name} is not set (see the header of this script)`);
  return value;
}

export function graphqlEndpoint(url) {
  const parsed = new URL(url);
  if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/graphql";
  return parsed.toString();
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new SetupError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A plain GraphQL-over-HTTP request, bypassing Apollo entirely. */
export async function post(httpUrl, token, document, variables) {
  const response = await fetch(httpUrl, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: typeof document === "string" ? document : print(document),
      variables,
    }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new SetupError(`HTTP ${response.status} with a non-JSON body: ${text.slice(0, 300)}`);
  }
  if (!response.ok || body.errors?.length) {
    throw new SetupError(
      `GraphQL request failed (HTTP ${response.status}): ${JSON.stringify(body.errors ?? body)}`,
    );
  }
  return body.data;
}

// ---------------------------------------------------------------------------------------
// Comparison

export function describe(value) {
  return JSON.stringify(value);
}

/** Paths where `actual` (from the cache) and `expected` (from the network) differ. */
export function deepDiff(actual, expected, path, out) {
  if (Array.isArray(expected) || Array.isArray(actual)) {
    if (!Array.isArray(expected) || !Array.isArray(actual)) {
      out.push(`${path}: cache ${describe(actual)} != network ${describe(expected)}`);
      return out;
    }
    const ids = (list) =>
      list.map((item) => (item && typeof item === "object" ? (item.id ?? item.__ref) : item));
    if (actual.length !== expected.length || ids(actual).some((id, i) => id !== ids(expected)[i])) {
      out.push(
        `${path}: cache ids ${describe(ids(actual))} != network ids ${describe(ids(expected))}`,
      );
      return out;
    }
    expected.forEach((item, i) => deepDiff(actual[i], item, `${path}[${i}]`, out));
    return out;
  }
  if (expected && typeof expected === "object" && actual && typeof actual === "object") {
    for (const key of new Set([...Object.keys(expected), ...Object.keys(actual)])) {
      if (!(key in actual))
        out.push(`${path}.${key}: missing in the cache (network ${describe(expected[key])})`);
      else if (!(key in expected))
        out.push(`${path}.${key}: only in the cache (${describe(actual[key])})`);
      else deepDiff(actual[key], expected[key], `${path}.${key}`, out);
    }
    return out;
  }
  if (!Object.is(actual, expected))
    out.push(`${path}: cache ${describe(actual)} != network ${describe(expected)}`);
  return out;
}

/** A network object as the cache stores it: nested records become references. */
export function asStored(cache, value) {
  if (Array.isArray(value)) return value.map((item) => asStored(cache, item));
  if (value && typeof value === "object") {
    if (value.__typename && value.id !== undefined) {
      return { __ref: cache.identify({ __typename: value.__typename, id: value.id }) };
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asStored(cache, v)]));
  }
  return value;
}

/** Compare one normalized entity with a network record, over the fields both have. */
export function entityDiff(cache, entities, record, out) {
  const key = cache.identify(record);
  const entity = entities[key];
  if (!entity) {
    out.push(`${key}: missing from the cache`);
    return;
  }
  for (const [field, value] of Object.entries(record)) {
    if (!(field in entity)) continue;
    const expected = asStored(cache, value);
    deepDiff(entity[field], expected, `${key}.${field}`, out);
  }
}

/**
 * Everything in which the cache differs from `truth` (the board as the network returns
 * it now); empty when converged. `gone` lists cache ids that must have been evicted.
 */
export function differences(cache, boardId, truth, gone) {
  const out = [];
  const entities = cache.extract();
  for (const card of truth.board.cards) {
    entityDiff(cache, entities, card, out);
    for (const comment of card.comments) entityDiff(cache, entities, comment, out);
  }
  const board = { ...truth.board };
  delete board.cards; // compared card by card above, and as a list below
  entityDiff(cache, entities, board, out);
  for (const id of gone) {
    if (entities[id]) out.push(`${id}: deleted on the server but still in the cache`);
  }
  // The whole query, denormalized from the cache, must equal the network answer
  // (this also checks the order and membership of every list).
  const diff = cache.diff({
    query: BOARD_QUERY,
    variables: { id: boardId },
    returnPartialData: true,
    optimistic: false,
  });
  if (!diff.complete) {
    const missing = (diff.missing ?? []).map((m) => m.message).join("; ");
    out.push(`the cache cannot answer the board query on its own: ${missing || "incomplete"}`);
  }
  deepDiff(diff.result, truth, "query", out);
  return out;
}
