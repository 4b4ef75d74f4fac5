"""The convergence harness: writers, fault injector and Apollo-like subscribers that
prove every client's normalized cache ends equal to a fresh query (issue 4, item 6).

- `documents`: the GraphQL documents; the subscription and the fresh queries share the
  same fragments, so both sides normalize into records with the same fields.
- `store`: the normalized map (`typename:id` -> fields, references as `{"__ref": key}`),
  garbage collection from the viewer's boards, and the final comparison.
- `api`: a small GraphQL-over-HTTP client with typed errors.
- `cluster`: a private Redis, two app processes, and the TCP proxies between them.
- `subscriber`: one client over a real WebSocket that reconnects and resumes.
- `writers`: random mutations through both processes, bounded in count and rate.
- `faults`: the fault injector (Redis restarts, cut connections, SIGKILL).
- `scenario`: the run from set-up to comparison; `report`: what it prints and the full
  record it writes (every mutation, every update each client applied).
"""
