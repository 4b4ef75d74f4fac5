// The shapes the fragments of documents.ts select.
export type UserRef = { id: string; name: string };

export type Comment = { id: string; body: string; version: number; author: UserRef };

export type Card = {
  id: string;
  title: string;
  description: string;
  position: number;
  done: boolean;
  version: number;
  author: UserRef;
  comments: Comment[];
};

export type Member = { id: string; role: "OWNER" | "EDITOR" | "VIEWER"; user: UserRef };

export type Board = {
  id: string;
  name: string;
  version: number;
  owner: UserRef;
  members: Member[];
  cards: Card[];
};
