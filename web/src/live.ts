// Live updates: userUpdates feeds the Apollo cache through the tested resume helper of
// clients/recipes (CREATED/UPDATED normalize by __typename + id, DELETED evicts,
// RESYNC refetches the active queries; after a reconnect it resubscribes from the last
// cursor). Two things are the page's own: the connection state it shows, and the
// viewer's board list (see refreshBoardList).
import { followUserUpdates } from "../../clients/recipes/commitcast-link.mjs";
import { USER_UPDATES, VIEWER_QUERY } from "./documents";
import type { Session } from "./client";

/** connecting: first connection; connected: live; reconnecting: the socket dropped and
 * graphql-ws is retrying; resynced: live again after a drop, resumed from the last
 * cursor (or, after a RESYNC, with the screen refetched). */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "resynced";

export function followLiveUpdates(
  { client, wsClient }: Session,
  userId: string,
  onState: (state: ConnectionState) => void,
  onError: (error: unknown) => void,
): () => void {
  // Persisted so that a reload resumes too; a cursor belongs to its user.
  const cursorKey = `commitcast-cursor:${userId}`;
  let everConnected = false;
  onState("connecting");
  const stopListening = [
    wsClient.on("connected", () => {
      onState(everConnected ? "resynced" : "connected");
      everConnected = true;
    }),
    wsClient.on("closed", () => {
      if (everConnected) onState("reconnecting");
    }),
  ];
  const updates = followUserUpdates({
    client,
    wsClient,
    query: USER_UPDATES,
    after: localStorage.getItem(cursorKey),
    onUpdate: (update) => {
      localStorage.setItem(cursorKey, update.cursor);
      if (update.op === "RESYNC") onState("resynced");
      else if (update.typename === "Board" && update.op !== "DELETED") refreshBoardList(update.id);
    },
    onError,
  });
  return () => {
    stopListening.forEach((stop) => stop());
    updates.stop();
  };

  // viewer.boards is the one list the server does not announce a parent for (a
  // membership names its board, not its user). A board update for a board the list does
  // not hold yet (created, or we were just added to it) refetches that list; a deleted
  // board is evicted and drops out of the list by itself.
  function refreshBoardList(boardId: string | null): void {
    const boards = client.readQuery({ query: VIEWER_QUERY })?.viewer?.boards ?? null;
    if (boards && !boards.some((board: { id: string }) => board.id === boardId)) {
      client.refetchQueries({ include: [VIEWER_QUERY] }).catch(onError);
    }
  }
}
