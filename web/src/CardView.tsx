// A card with its comments. Edits go to the server; what is shown comes back through
// the cache, which userUpdates keeps current for every member's page alike.
import { useState, type FormEvent } from "react";
import { useMutation } from "@apollo/client";
import {
  ADD_COMMENT,
  DELETE_CARD,
  DELETE_COMMENT,
  UPDATE_CARD,
  UPDATE_COMMENT,
} from "./documents";
import { useReportError } from "./errors";
import type { Card, Comment } from "./types";

type CardViewProps = { card: Card; onMoveUp?: () => void; onMoveDown?: () => void };

export function CardView({ card, onMoveUp, onMoveDown }: CardViewProps) {
  const report = useReportError();
  const [updateCard] = useMutation(UPDATE_CARD);
  const [deleteCard] = useMutation(DELETE_CARD);
  const save = (title: string) =>
    updateCard({ variables: { input: { id: card.id, title } } }).then(() => undefined);

  return (
    <li className={card.done ? "card done" : "card"} data-testid="card" data-card-id={card.id}>
      <div className="card-head">
        <input
          type="checkbox"
          checked={card.done}
          title="Done"
          data-testid="card-done"
          onChange={(e) => {
            const done = e.target.checked;
            // Ticks at once; the server's answer (and everyone's update) confirms it.
            updateCard({
              variables: { input: { id: card.id, done } },
              optimisticResponse: { updateCard: { ...card, done } },
            }).catch(report);
          }}
        />
        <EditableText text={card.title} onSave={save} name="card-title" />
        <span className="actions">
          <button type="button" title="Move up" disabled={!onMoveUp} onClick={onMoveUp}>
            ↑
          </button>
          <button type="button" title="Move down" disabled={!onMoveDown} onClick={onMoveDown}>
            ↓
          </button>
          <button
            type="button"
            className="danger"
            data-testid="card-delete"
            onClick={() => deleteCard({ variables: { id: card.id } }).catch(report)}
          >
            Delete
          </button>
        </span>
      </div>
      <p className="byline">by {card.author.name}</p>
      <Comments card={card} />
    </li>
  );
}

function Comments({ card }: { card: Card }) {
  const [body, setBody] = useState("");
  const report = useReportError();
  const [addComment] = useMutation(ADD_COMMENT);

  const add = async (event: FormEvent) => {
    event.preventDefault();
    try {
      await addComment({ variables: { cardId: card.id, body } });
      setBody("");
    } catch (error) {
      report(error);
    }
  };

  return (
    <div className="comments">
      <ul>
        {card.comments.map((comment) => (
          <CommentView key={comment.id} comment={comment} />
        ))}
      </ul>
      <form onSubmit={add}>
        <input
          placeholder="Comment"
          value={body}
          onChange={(e) => setBody(e.target.value)}
          data-testid="new-comment"
          required
        />
        <button type="submit" data-testid="new-comment-submit">
          Comment
        </button>
      </form>
    </div>
  );
}

function CommentView({ comment }: { comment: Comment }) {
  const report = useReportError();
  const [updateComment] = useMutation(UPDATE_COMMENT);
  const [deleteComment] = useMutation(DELETE_COMMENT);
  const save = (body: string) =>
    updateComment({ variables: { id: comment.id, body } }).then(() => undefined);

  return (
    <li className="comment" data-testid="comment" data-comment-id={comment.id}>
      <span className="author">{comment.author.name}:</span>
      <EditableText text={comment.body} onSave={save} name="comment-body" />
      <button
        type="button"
        className="danger small"
        data-testid="comment-delete"
        onClick={() => deleteComment({ variables: { id: comment.id } }).catch(report)}
      >
        Delete
      </button>
    </li>
  );
}

/** Text with an Edit button that turns it into a one-line form. `name` prefixes the
 * data-testid of its parts: NAME, NAME-edit, NAME-input, NAME-save. */
function EditableText({
  text,
  onSave,
  name,
}: {
  text: string;
  onSave: (text: string) => Promise<void>;
  name: string;
}) {
  const report = useReportError();
  const [draft, setDraft] = useState<string | null>(null);

  if (draft === null) {
    return (
      <span className="editable">
        <span data-testid={name}>{text}</span>
        <button type="button" className="small" data-testid={`${name}-edit`} onClick={() => setDraft(text)}>
          Edit
        </button>
      </span>
    );
  }
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    try {
      await onSave(draft);
      setDraft(null);
    } catch (error) {
      report(error);
    }
  };
  return (
    <form className="editable" onSubmit={submit}>
      <input value={draft} onChange={(e) => setDraft(e.target.value)} data-testid={`${name}-input`} autoFocus required />
      <button type="submit" data-testid={`${name}-save`}>
        Save
      </button>
      <button type="button" onClick={() => setDraft(null)}>
        Cancel
      </button>
    </form>
  );
}
