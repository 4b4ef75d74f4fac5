import { useState, type FormEvent } from "react";
import { useMutation } from "@apollo/client";
import { CREATE_BOARD } from "./documents";
import { useReportError } from "./errors";

type BoardSummary = { id: string; name: string };

export function BoardList({ boards, selected }: { boards: BoardSummary[]; selected: string | null }) {
  const [name, setName] = useState("");
  const report = useReportError();
  const [createBoard] = useMutation(CREATE_BOARD);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    try {
      const { data } = await createBoard({ variables: { name } });
      setName("");
      // The list itself follows from the board's CREATED update (see live.ts).
      window.location.hash = `board=${encodeURIComponent(data.createBoard.id)}`;
    } catch (error) {
      report(error);
    }
  };

  return (
    <nav className="boards" data-testid="board-list">
      <h2>Boards</h2>
      <ul>
        {boards.map((board) => (
          <li key={board.id} className={board.id === selected ? "selected" : ""}>
            <a href={`#board=${encodeURIComponent(board.id)}`}>{board.name}</a>
          </li>
        ))}
      </ul>
      <form onSubmit={create}>
        <input placeholder="New board" value={name} onChange={(e) => setName(e.target.value)} required />
        <button type="submit">Create</button>
      </form>
    </nav>
  );
}
