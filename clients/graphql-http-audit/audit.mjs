// Runs graphql-http's server audit (the GraphQL over HTTP spec's requirements) against
// a live Commitcast server and prints one JSON summary line:
//   {"counts": {"MUST": {"ok": n, "warn": n, "error": n}, "SHOULD": ..., "MAY": ...},
//    "failures": [{"id", "name", "status", "reason"}]}
// Exit code 0 when every MUST audit passed, 1 otherwise, 2 on a usage or fatal error.
import { auditServer } from 'graphql-http';

const url = process.env.COMMITCAST_GRAPHQL_URL;
if (!url) {
  console.error('set COMMITCAST_GRAPHQL_URL, e.g. http://127.0.0.1:8000/graphql');
  process.exit(2);
}

const results = await auditServer({ url });
const counts = {};
const failures = [];
for (const result of results) {
  const level = result.name.split(' ')[0];
  counts[level] ??= { ok: 0, warn: 0, error: 0 };
  counts[level][result.status] += 1;
  if (result.status !== 'ok') {
    failures.push({ id: result.id, name: result.name, status: result.status, reason: result.reason });
  }
}
console.log(JSON.stringify({ counts, failures }));
process.exit(counts.MUST?.error ? 1 : 0);
