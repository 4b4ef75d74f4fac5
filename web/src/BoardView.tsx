// One board: its members, and its cards in the server's order (by position).
import { useState, type FormEvent } from "react";
import { useMutation, useQuery } from "@apollo/client";
import { ADD_MEMBER, BOARD_QUERY, CREATE_CARD, UPDATE_CARD } from "./documents";
import { useReportError } from "./errors";
import { CardView } from "./CardView";
import type { Board, Card } from "./types";

export function BoardView({ boardId }: { boardId: string }) {
  const { data, loading, error } = useQuery<{ board: Board | null }>(BOARD_QUERY, {
    variables: { id: boardId },
  });
  if (loading) return <p className="loading">Loading…</p>;
  if (error) return <p className="problem">{error.message}</p>;
  const board = data?.board;
  if (!board) return <p className="hint">This board does not exist, or you are not a member.</p>;
  return (
    <section className="board" data-testid="board" data-board-id={board.id}>
      <h2 data-testid="board-name">{board.name}</h2>
      <Members board={board} />
      <Cards board={board} />
    </section>
  );
}

function Members({ board }: { board: Board }) {
  const [email, setEmail] = useState("");
  const [role, setRole] = useState("EDITOR");
  const report = useReportError();
  const [addMember] = useMutation(ADD_MEMBER);

  const add = async (event: FormEvent) => {
    event.preventDefault();
    try {
      await addMember({ variables: { boardId: board.id, email, role } });
      setEmail("");
    } catch (error) {
      report(error);
    }
  };

  return (
    <div className="members" data-testid="members">
      <ul>
        {board.members.map((member) => (
          <li key={member.id} data-testid="member">
            {member.user.name} <span className="role">{member.role.toLowerCase()}</span>
          </li>
        ))}
      </ul>
      <form onSubmit={add}>
        <input
          type="email"
          placeholder="Add member by email"
          value={email}
          onChange={(e) => setEmail(e.target.value)}
          data-testid="member-email"
          required
        />
        <select value={role} onChange={(e) => setRole(e.target.value)} data-testid="member-role">
          <option value="EDITOR">editor</option>
          <option value="VIEWER">viewer</option>
        </select>
        <button type="submit" data-testid="member-add">
          Add
        </button>
      </form>
    </div>
  );
}

/** A position between the neighbours a card moves between (the API orders by position). */
function positionAt(cards: Card[], index: number): number {
  const before = cards[index - 1];
  const after = cards[index];
  if (!before) return after.position - 1;
  if (!after) return before.position + 1;
  return (before.position + after.position) / 2;
}

function Cards({ board }: { board: Board }) {
  const [title, setTitle] = useState("");
  const report = useReportError();
  const [createCard] = useMutation(CREATE_CARD);
  const [updateCard] = useMutation(UPDATE_CARD);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    try {
      // The card shows up when its board's UPDATED arrives with the new list.
      await createCard({ variables: { boardId: board.id, title } });
      setTitle("");
    } catch (error) {
      report(error);
    }
  };

  const move = (card: Card, offset: -1 | 1) => {
    const others = board.cards.filter((other) => other.id !== card.id);
    const index = board.cards.indexOf(card) + (offset === 1 ? 1 : -1);
    if (index < 0 || index > others.length) return;
    const position = positionAt(others, index);
    updateCard({ variables: { input: { id: card.id, position } } }).catch(report);
  };

  return (
    <div className="cards">
      <form className="new-card" onSubmit={create}>
        <input
          placeholder="New card title"
          value={title}
          onChange={(e) => setTitle(e.target.value)}
          data-testid="new-card-title"
          required
        />
        <button type="submit" data-testid="new-card-submit">
          Add card
        </button>
      </form>
      {board.cards.length === 0 && <p className="hint">No cards yet.</p>}
      <ol data-testid="cards">
        {board.cards.map((card, index) => (
          <CardView
            key={card.id}
            card={card}
            onMoveUp={index > 0 ? () => move(card, -1) : undefined}
            onMoveDown={index < board.cards.length - 1 ? () => move(card, 1) : undefined}
          />
        ))}
      </ol>
    </div>
  );
}
