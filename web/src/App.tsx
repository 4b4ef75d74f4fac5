// The shell: sign in, then one Apollo session per token with the live updates running.
import { useEffect, useMemo, useState } from "react";
import { ApolloProvider, useQuery } from "@apollo/client";
import { createSession, type Session } from "./client";
import { followLiveUpdates, type ConnectionState } from "./live";
import { VIEWER_QUERY } from "./documents";
import { ErrorContext, messageOf } from "./errors";
import { SignIn } from "./SignIn";
import { BoardList } from "./BoardList";
import { BoardView } from "./BoardView";

const TOKEN_KEY = "commitcast-token";

export function App() {
  const [token, setToken] = useState(() => localStorage.getItem(TOKEN_KEY));
  if (!token) {
    return (
      <SignIn
        onToken={(newToken) => {
          localStorage.setItem(TOKEN_KEY, newToken);
          setToken(newToken);
        }}
      />
    );
  }
  return <SignedIn token={token} />;
}

function signOut(): void {
  localStorage.removeItem(TOKEN_KEY);
  // A fresh page drops the cache, the socket and every listener at once.
  window.location.hash = "";
  window.location.reload();
}

function SignedIn({ token }: { token: string }) {
  const session = useMemo(() => createSession(token), [token]);
  return (
    <ApolloProvider client={session.client}>
      <Workspace session={session} />
    </ApolloProvider>
  );
}

function Workspace({ session }: { session: Session }) {
  const { data, error } = useQuery(VIEWER_QUERY);
  const [connection, setConnection] = useState<ConnectionState>("connecting");
  const [problem, setProblem] = useState<string | null>(null);
  const boardId = useHashBoardId();
  const viewer = data?.viewer;
  const report = useMemo(() => (failure: unknown) => setProblem(messageOf(failure)), []);

  useEffect(() => {
    if (!viewer?.id) return undefined;
    return followLiveUpdates(session, viewer.id, setConnection, report);
  }, [session, viewer?.id, report]);

  const unauthenticated = !!error?.graphQLErrors.some((e) => e.extensions?.code === "UNAUTHENTICATED");
  useEffect(() => {
    if (unauthenticated) signOut(); // the token expired or the server's key changed
  }, [unauthenticated]);
  if (!viewer) return <p className="loading">{error ? messageOf(error) : "Loading…"}</p>;

  return (
    <ErrorContext.Provider value={report}>
      <header className="top">
        <h1>Commitcast</h1>
        <ConnectionIndicator state={connection} />
        <span className="viewer" data-testid="viewer">
          {viewer.name}
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      {problem && (
        <p className="problem" data-testid="error" onClick={() => setProblem(null)}>
          {problem}
        </p>
      )}
      <div className="layout">
        <BoardList boards={viewer.boards} selected={boardId} />
        <main>
          {boardId ? <BoardView boardId={boardId} /> : <p className="hint">Pick or create a board.</p>}
        </main>
      </div>
    </ErrorContext.Provider>
  );
}

const LABELS: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting…",
  resynced: "Live (resynced)",
};

function ConnectionIndicator({ state }: { state: ConnectionState }) {
  return (
    <span className={`connection ${state}`} data-testid="connection" data-state={state}>
      {LABELS[state]}
    </span>
  );
}

/** The open board lives in the URL (#board=<id>), so a reload shows the same board. */
function useHashBoardId(): string | null {
  const read = () => new URLSearchParams(window.location.hash.slice(1)).get("board");
  const [boardId, setBoardId] = useState(read);
  useEffect(() => {
    const onChange = () => setBoardId(read());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return boardId;
}
