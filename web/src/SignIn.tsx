import { useState, type FormEvent } from "react";
import { authenticate } from "./client";
import { messageOf } from "./errors";

export function SignIn({ onToken }: { onToken: (token: string) => void }) {
  const [mode, setMode] = useState<"logIn" | "signUp">("logIn");
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [problem, setProblem] = useState<string | null>(null);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(null);
    try {
      const input = mode === "signUp" ? { email, name, password } : { email, password };
      onToken(await authenticate(mode, input));
    } catch (error) {
      setProblem(messageOf(error));
    }
  };

  return (
    <form className="sign-in" onSubmit={submit} data-testid="sign-in">
      <h1>Commitcast</h1>
      <div className="tabs">
        <button type="button" className={mode === "logIn" ? "active" : ""} onClick={() => setMode("logIn")}>
          Log in
        </button>
        <button
          type="button"
          className={mode === "signUp" ? "active" : ""}
          onClick={() => setMode("signUp")}
          data-testid="sign-up-tab"
        >
          Sign up
        </button>
      </div>
      <input type="email" placeholder="Email" value={email} onChange={(e) => setEmail(e.target.value)} required />
      {mode === "signUp" && (
        <input placeholder="Name" value={name} onChange={(e) => setName(e.target.value)} required />
      )}
      <input
        type="password"
        placeholder="Password"
        value={password}
        onChange={(e) => setPassword(e.target.value)}
        required
      />
      <button type="submit" data-testid="sign-in-submit">
        {mode === "signUp" ? "Create account" : "Log in"}
      </button>
      {problem && <p className="problem">{problem}</p>}
    </form>
  );
}
