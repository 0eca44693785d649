/**
 * The example React app of @ringlog/web: one draft, live, with useDraftRealtime.
 *
 * Who and what come from the URL: `?draft=<draft id>&user=<dev-auth user id>&api=<server URL>`
 * (api defaults to this page's origin; a page on another origin needs the server's
 * `--allowed-origins`). A JWT instead of a dev-auth user id is typed into the form and kept in
 * sessionStorage, never in the URL.
 */
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { IndexedDbOutbox, MemoryOutbox, tokenSubject, type Conflict, type Outbox } from "@ringlog/web";
import { useDraftRealtime, type DraftRealtime } from "@ringlog/web/react";

const TOKEN_KEY = "ringlog-example-token";

interface SignIn {
  api: string;
  draftId: string;
  userId: string | null;
  token: string | null;
}

function readSignIn(): SignIn | null {
  const q = new URLSearchParams(location.search);
  const draftId = q.get("draft")?.trim() ?? "";
  const userId = q.get("user")?.trim() || null;
  const token = sessionStorage.getItem(TOKEN_KEY) || null;
  if (!draftId || (!userId && !token)) return null;
  return { api: q.get("api")?.trim() || location.origin, draftId, userId, token: userId ? null : token };
}

export function App() {
  const [signIn, setSignIn] = useState<SignIn | null>(readSignIn);
  if (!signIn) return <SignInForm onDone={setSignIn} />;
  return <DraftPage signIn={signIn} onSignOut={() => { sessionStorage.removeItem(TOKEN_KEY); history.pushState(null, "", location.pathname); setSignIn(null); }} />;
}

function SignInForm({ onDone }: { onDone: (s: SignIn) => void }) {
  const q = new URLSearchParams(location.search);
  const [api, setApi] = useState(q.get("api") ?? location.origin);
  const [draftId, setDraftId] = useState(q.get("draft") ?? "");
  const [userId, setUserId] = useState(q.get("user") ?? "");
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!draftId.trim()) return setError("a draft id is needed");
    if (!userId.trim() && !token.trim()) return setError("a user id (dev auth) or a token is needed");
    const next = new URLSearchParams({ api: api.trim(), draft: draftId.trim() });
    if (userId.trim()) next.set("user", userId.trim());
    else sessionStorage.setItem(TOKEN_KEY, token.trim());
    history.pushState(null, "", `${location.pathname}?${next}`);
    onDone(readSignIn()!);
  };
  return (
    <form id="sign-in" onSubmit={submit}>
      <h1>ringlog — React example</h1>
      <label>Server <input id="api" value={api} onChange={(e) => setApi(e.target.value)} /></label>
      <label>Draft id <input id="draft-id" value={draftId} onChange={(e) => setDraftId(e.target.value)} /></label>
      <label>User id (dev auth) <input id="user-id" value={userId} onChange={(e) => setUserId(e.target.value)} /></label>
      <label>or token (JWT) <input id="token" value={token} onChange={(e) => setToken(e.target.value)} /></label>
      <button type="submit">Open the draft</button>
      {error && <p className="error" role="alert">{error}</p>}
    </form>
  );
}

/** The spec's badge (SPEC-phase-6.2 "Status Indicator"). */
function Badge({ status }: { status: DraftRealtime["status"] }) {
  const text = status === "ws" ? "🟢 Live" : status === "polling" ? "🟡 Syncing" : "🔴 Offline";
  return <span id="badge" className={`badge ${status}`} data-status={status}>{text}</span>;
}

function newOutbox(): Outbox {
  try {
    return new IndexedDbOutbox(); // queued writes survive a reload
  } catch {
    return new MemoryOutbox(); // no IndexedDB (a private window in some browsers)
  }
}

function DraftPage({ signIn, onSignOut }: { signIn: SignIn; onSignOut: () => void }) {
  const outbox = useMemo(newOutbox, []);
  const [conflicts, setConflicts] = useState<Conflict[]>([]);
  const [content, setContent] = useState("");
  const [passTo, setPassTo] = useState("");
  const [error, setError] = useState<string | null>(null);
  const rt = useDraftRealtime({
    draftId: signIn.draftId,
    baseUrl: signIn.api,
    userId: signIn.userId,
    token: signIn.token,
    outbox,
    onConflict: (c) => setConflicts((all) => [c, ...all].slice(0, 20)),
  });
  const { state, status, canAppend, presence, pending } = rt;
  const me = signIn.userId ?? tokenSubject(signIn.token);

  useEffect(() => {
    if (status === "ws") rt.setPresence({ page: "draft" });
  }, [status, rt.setPresence]);

  const final = rt.connectionStatus === "stopped" || rt.connectionStatus === "revoked";
  if (final) {
    return (
      <main>
        <p id="fatal" className="error" role="alert">{rt.statusDetail?.message ?? rt.connectionStatus}</p>
        <button onClick={onSignOut}>Sign in again</button>
      </main>
    );
  }
  if (!state) {
    return (
      <main>
        <Badge status={status} /> <p>Loading draft {signIn.draftId}…</p>
        {status === "offline" && (
          <p id="load-hint" className="hint">
            No answer from {signIn.api} yet: is the server running, and does it allow this page's origin
            ({window.location.origin}) with <code>--allowed-origins</code>?
          </p>
        )}
      </main>
    );
  }
  const holder = state.ring_state.current_holder_id;
  // the ring goes to the creator or a contributor, never to oneself (API.md)
  const writers = [state.creator_id, ...state.collaborators.filter((c) => c.role === "contributor").map((c) => c.user_id)];
  const targets = [...new Set(writers)].filter((u) => u !== holder);
  const chosen = targets.includes(passTo) ? passTo : targets[0]; // a removed or now-holding user is not offered

  const append = async (e: FormEvent) => {
    e.preventDefault();
    if (!content) {
      setError("Write something first.");
      return;
    }
    setError(null);
    const text = content;
    setContent("");
    try {
      await rt.append(text); // a rollback arrives through onConflict
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  const pass = async () => {
    const to = chosen;
    if (!to) return;
    setError(null);
    try {
      await rt.passRing(to);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <main>
      <header>
        <h1 id="title">{state.title}</h1>
        <Badge status={status} />
        {rt.lastEventTs && <small id="updated">Updated {new Date(rt.lastEventTs).toLocaleTimeString()}</small>}
        <p>
          Draft <code id="draft">{state.id}</code> · signed in as <b id="me">{me ?? "(token)"}</b>{" "}
          <button onClick={onSignOut}>Sign out</button>
        </p>
      </header>

      <section aria-label="who is here">
        <h2>Here now</h2>
        <ul id="presence">
          {presence.map((m) => <li key={m.user_id} data-user={m.user_id}>{m.user_id}</li>)}
        </ul>
        {presence.length === 0 && <p className="hint">Presence shows while the socket is live.</p>}
      </section>

      <section aria-label="segments">
        <h2>Story</h2>
        <ol id="segments">
          {state.segments.map((s) => (
            <li key={s.key ?? s.id} data-pending={s.pending ? "true" : "false"} className={s.pending ? "pending" : ""}>
              <span className="content">{s.content}</span> <small className="author">— {s.author_user_id}</small>
              {s.pending && <small className="pending-mark"> (pending)</small>}
            </li>
          ))}
        </ol>
        {pending.length > 0 && <p id="pending-count">{pending.length} change(s) waiting to be sent</p>}
      </section>

      <section aria-label="the ring">
        <h2>The ring</h2>
        <p>Held by <b id="holder">{holder}</b></p>
        <form id="append-form" onSubmit={append}>
          <textarea id="append-content" value={content} disabled={!canAppend} maxLength={10000} onChange={(e) => setContent(e.target.value)}
            placeholder={canAppend ? "Write the next segment" : `${holder} holds the ring`} />
          <button id="append-button" type="submit" disabled={!canAppend}>Append</button>
        </form>
        {canAppend && (targets.length > 0 ? (
          <p>
            <select id="pass-to" value={chosen} onChange={(e) => setPassTo(e.target.value)}>
              {targets.map((t) => <option key={t} value={t}>{t}</option>)}
            </select>{" "}
            <button id="pass-button" onClick={pass}>Pass the ring</button>
          </p>
        ) : <p className="hint">Add a contributor to pass the ring to.</p>)}
        {error && <p id="error" className="error" role="alert">{error}</p>}
      </section>

      {conflicts.length > 0 && (
        <section aria-label="undone">
          <h2>Undone</h2>
          <ul id="conflicts">
            {conflicts.map((c) => <li key={c.op.key} data-code={c.code}>“{c.op.kind === "append" ? c.op.content : `pass to ${c.op.toUserId}`}” was undone: <span className="reason">{c.reason}</span></li>)}
          </ul>
        </section>
      )}
    </main>
  );
}
