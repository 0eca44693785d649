/**
 * A fake ringlog for the unit tests: an in-memory draft log behind a fake `fetch` (the REST
 * calls the client makes, with Idempotency-Key and If-Match as API.md says) and a fake
 * WebSocket whose messages the test scripts. Not the thing under test: the client is.
 */
import { foldEvent } from "../src/fold.js";
import type { DraftEvent, DraftState } from "../src/types.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export class FakeSocket {
  static instances: FakeSocket[] = [];
  readyState = 0;
  onmessage: ((m: { data: unknown }) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  sent: Json[] = [];
  /** Called for each new socket (a test can drop it at once, as a down server would). */
  static onCreate: ((s: FakeSocket) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.instances.push(this);
    const hook = FakeSocket.onCreate;
    if (hook) queueMicrotask(() => hook(this));
  }
  get since(): number {
    return Number(new URL(this.url).searchParams.get("since"));
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  /** The server side says something. */
  deliver(msg: Json): void {
    this.readyState = 1;
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  connected(draftId: string, headSeq: number, userId = "alice"): void {
    this.deliver({ type: "connected", draft_id: draftId, user_id: userId, ts: "2026-01-01T00:00:00.000Z", head_seq: headSeq });
  }
  /** The server closes it. */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  close(code = 1000): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  static reset(): void {
    FakeSocket.instances = [];
    FakeSocket.onCreate = null;
  }
  static last(): FakeSocket {
    const s = FakeSocket.instances[FakeSocket.instances.length - 1];
    if (!s) throw new Error("no socket opened");
    return s;
  }
}

interface Waiter { since: number; resolve: () => void }

/** One draft's log and the REST API over it. */
export class FakeServer {
  events: DraftEvent[] = [];
  state: DraftState | null = null;
  /** When true, every request fails as if the server were unreachable. */
  down = false;
  requests: { method: string; path: string; headers: Record<string, string>; body: Json | null }[] = [];
  private keys = new Map<string, { status: number; body: Json }>();
  private waiters: Waiter[] = [];
  private nextSegmentId = 100;
  /** Answers to force for the next mutations (status, code), one per request. */
  forced: { status: number; code: string; message: string }[] = [];
  /** When set, a mutation's answer waits for it (after the append): the event can arrive first. */
  gate: Promise<void> | null = null;
  /** Apply the next mutation but lose its answer (the client sees a network error). */
  loseNextAnswer = false;

  constructor(readonly draftId = "draft_a", creator = "alice") {
    this.add("collab.draft_created", creator, { title: "T", description: "", creator_id: creator });
  }

  ts(seq: number): string {
    return `2026-01-01T00:00:${String(seq % 60).padStart(2, "0")}.000Z`;
  }

  /** Append an event as the server would (and wake long-polls). */
  add(type: string, userId: string, data: Json): DraftEvent {
    const seq = this.events.length + 1;
    const event = { type, draft_id: this.draftId, seq, ts: this.ts(seq), user_id: userId, data } as DraftEvent;
    this.events.push(event);
    this.state = foldEvent(this.state, event);
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w.resolve();
    return event;
  }

  appendSegment(userId: string, content: string): DraftEvent {
    const position = this.state!.segments.length + 1;
    return this.add("collab.segment_added", userId, { segment: { id: this.nextSegmentId++, author_user_id: userId, content, position, created_at: this.ts(this.events.length + 1) } });
  }

  passRing(from: string, to: string): DraftEvent {
    const history = [...this.state!.ring_state.holders_history, to];
    return this.add("collab.ring_passed", from, { from_user_id: from, to_user_id: to, current_holder_id: to, holders_history: history });
  }

  addCollaborator(who: string, role = "contributor"): DraftEvent {
    return this.add("collab.collaborator_added", this.state!.creator_id, { collaborator_id: who, role, joined_at: this.ts(this.events.length + 1) });
  }

  /** Mutations that reached the server (and were not idempotent replays), by path suffix. */
  mutations(suffix: string): number {
    return this.requests.filter((r) => r.method === "POST" && r.path.endsWith(suffix)).length;
  }

  private reply(status: number, body: Json, headers: Record<string, string> = {}): Response {
    return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
  }

  private error(status: number, code: string, message = code): Response {
    return this.reply(status, { error: { code, message } });
  }

  fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input));
    const method = init.method ?? "GET";
    const headers = (init.headers ?? {}) as Record<string, string>;
    const body = init.body ? (JSON.parse(String(init.body)) as Json) : null;
    this.requests.push({ method, path: url.pathname + url.search, headers, body });
    if (this.down) throw new TypeError("fetch failed");
    const user = headers["X-User-Id"] ?? "";
    const base = `/v1/collab/drafts/${this.draftId}`;
    if (method === "GET" && url.pathname === base) return this.reply(200, { data: this.state }, { ETag: `"${this.state!.seq}"` });
    if (method === "GET" && url.pathname === `${base}/events`) {
      const since = Number(url.searchParams.get("since"));
      const limit = Number(url.searchParams.get("limit") ?? 500);
      const wait = Number(url.searchParams.get("wait") ?? 0);
      if (wait > 0 && this.events.length <= since) {
        await new Promise<void>((resolve) => {
          this.waiters.push({ since, resolve });
          init.signal?.addEventListener("abort", () => resolve(), { once: true });
        });
        if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
        if (this.down) throw new TypeError("fetch failed");
      }
      return this.reply(200, { data: this.events.filter((e) => e.seq > since).slice(0, limit), head_seq: this.events.length });
    }
    if (method === "POST") {
      const key = headers["Idempotency-Key"];
      const remembered = key ? this.keys.get(`${user}:${key}`) : undefined;
      if (remembered) return this.reply(remembered.status, remembered.body);
      const forced = this.forced.shift();
      if (forced) return this.error(forced.status, forced.code, forced.message);
      const ifMatch = headers["If-Match"];
      if (ifMatch !== undefined && ifMatch !== `"${this.state!.seq}"`) return this.error(412, "precondition_failed", "the draft changed");
      let status: number;
      let out: Json;
      if (url.pathname === `${base}/segments`) {
        if (this.state!.ring_state.current_holder_id !== user) return this.error(409, "not_ring_holder", "you do not hold the ring");
        const e = this.appendSegment(user, body!.content);
        status = 201;
        out = { data: { segment: (e.data as Json).segment, seq: e.seq } };
      } else if (url.pathname === `${base}/ring/pass`) {
        if (this.state!.ring_state.current_holder_id !== user) return this.error(409, "not_ring_holder", "you do not hold the ring");
        const e = this.passRing(user, body!.to_user_id);
        status = 200;
        out = { data: { ring_state: this.state!.ring_state, seq: e.seq } };
      } else {
        return this.error(404, "not_found");
      }
      if (key) this.keys.set(`${user}:${key}`, { status, body: out });
      if (this.gate) await this.gate;
      if (this.loseNextAnswer) {
        this.loseNextAnswer = false;
        throw new TypeError("connection reset");
      }
      return this.reply(status, out);
    }
    return this.error(404, "not_found");
  };
}

/** Let pending promises and timers of 0 ms run. */
export async function settle(rounds = 10): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 0));
}

/** Wait until `check()` is true (polling the event loop), at most `ms`. */
export async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
