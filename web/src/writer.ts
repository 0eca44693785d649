/**
 * Optimistic writes: `append` and `passRing` change the local view at once, are persisted in
 * the outbox, sent in order with their Idempotency-Key and If-Match, and are then either
 * confirmed by their own event on the stream or rolled back with a reason.
 *
 * How an operation's own event is told apart (the Idempotency-Key is not in events): every
 * operation is sent with `If-Match: "<baseSeq>"`, so if the server applies it, its event is
 * exactly seq baseSeq+1 (API.md "HTTP API": If-Match, first writer wins). The event at that seq
 * is ours when it is of the operation's type, caused by us (`user_id`) and carries what we
 * sent (segment content; ring `to_user_id`); any other event at that seq proves ours was not
 * applied and never will be, so the operation is rolled back at once, before its HTTP answer.
 * Once the HTTP answer names the seq, the event at that seq confirms it too.
 */
import { ApiError, backoffDelay, type RestClient } from "./api.js";
import type { Outbox, PendingOp } from "./outbox.js";
import type { ClientErrorCode, DraftEvent, DraftState, ErrorCode, Segment } from "./types.js";

/** A segment of the view: confirmed, or pending (`pending: true`, id < 0, `key` = its op's key). */
export type ViewSegment = Segment & { pending?: boolean; key?: string };
/** The confirmed state with the pending operations applied on top. */
export type ViewState = Omit<DraftState, "segments"> & { segments: ViewSegment[]; pendingCount: number };

/** Why an optimistic operation was undone. */
export interface Conflict {
  op: PendingOp;
  /** For people: "bob appended first", "you no longer hold the ring", … */
  reason: string;
  /** The contract's code (precondition_failed, not_ring_holder, forbidden, …) or the client's own. */
  code: ErrorCode | ClientErrorCode;
  status: number;
  /** Who won the race, when known. */
  by: string | null;
}

/** How an operation ended. */
export type Outcome = { ok: true; op: PendingOp; seq: number } | { ok: false; op: PendingOp; conflict: Conflict };

type Stage = "queued" | "sending" | "sent";
interface Entry {
  op: PendingOp;
  stage: Stage;
  /** The seq of its event once the HTTP answer named it. */
  seq: number | null;
  persisted: Promise<void>;
  resolve: (outcome: Outcome) => void;
  outcome: Promise<Outcome>;
}

const RECENT = 256;
const ROLLBACK_CODES = new Set([400, 403, 404, 409, 412, 413, 415, 422]);

function verb(event: DraftEvent): string {
  switch (event.type) {
    case "collab.segment_added": return "appended";
    case "collab.ring_passed": return "passed the ring";
    case "collab.collaborator_removed": return "removed a collaborator";
    case "collab.role_changed": return "changed a role";
    case "collab.draft_archived": return "archived the draft";
    default: return "changed the draft";
  }
}

/** Whether `event` is `op`'s own event (see the module comment). */
export function isOwnEvent(op: PendingOp, event: DraftEvent, knownSeq: number | null = null): boolean {
  if (event.draft_id !== op.draftId || event.user_id !== op.userId) return false;
  if (event.seq !== (knownSeq ?? op.baseSeq + 1)) return false;
  const d = event.data as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  if (op.kind === "append") return event.type === "collab.segment_added" && d.segment?.content === op.content;
  return event.type === "collab.ring_passed" && d.from_user_id === op.userId && d.to_user_id === op.toUserId;
}

export interface WriterOptions {
  rest: RestClient;
  draftId: string;
  userId: string;
  outbox: Outbox;
  /** The pending operations changed (added, sent, confirmed, rolled back). */
  onChange?: () => void;
  onConflict?: (conflict: Conflict) => void;
  onConfirmed?: (op: PendingOp, seq: number) => void;
  /** Whether sending could succeed now (false: wait for `kick`, or retry on the backoff timer). */
  online?: () => boolean;
  /** Retry cap for a send that found no server, ms (default 5000). */
  retryCapMs?: number;
}

/** The pending operations of one user on one draft, and their sending. */
export class OptimisticWriter {
  private entries: Entry[] = [];
  private readonly recent = new Map<number, DraftEvent>();
  private confirmed: DraftState | null = null;
  private sending = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private nextOrder = 0;
  private isLoaded = false;
  /** Resolves once the outbox's operations of earlier sessions are loaded. */
  readonly loaded: Promise<void>;

  constructor(private readonly o: WriterOptions) {
    this.loaded = o.outbox.load(o.userId, o.draftId).then(
      (ops) => {
        for (const op of ops) this.entries.push(this.entry(op, Promise.resolve()));
        this.nextOrder = ops.length ? ops[ops.length - 1]!.order + 1 : 0;
        this.isLoaded = true;
        if (ops.length) o.onChange?.();
        this.kick();
      },
      () => { this.isLoaded = true; }, // no outbox to read: nothing from earlier sessions
    );
  }

  /** The pending operations, in order. */
  get pending(): PendingOp[] {
    return this.entries.map((e) => e.op);
  }

  private entry(op: PendingOp, persisted: Promise<void>): Entry {
    let resolve!: (o: Outcome) => void;
    const outcome = new Promise<Outcome>((r) => { resolve = r; });
    return { op, stage: "queued", seq: null, persisted, resolve, outcome };
  }

  /** The confirmed state with every pending operation applied (segments marked pending). */
  view(state: DraftState): ViewState {
    const segments: ViewSegment[] = [...state.segments];
    let ring = state.ring_state;
    for (const { op } of this.entries) {
      if (op.kind === "append") {
        segments.push({ id: -(op.order + 1), author_user_id: op.userId, content: op.content, position: segments.length + 1, created_at: op.createdAt, pending: true, key: op.key });
      } else {
        ring = { current_holder_id: op.toUserId, holders_history: [...ring.holders_history, op.toUserId] };
      }
    }
    return { ...state, segments, ring_state: ring, pendingCount: this.entries.length };
  }

  /** Whether the user may append in the view: holds the ring (after pending passes), not archived. */
  canAppend(state: DraftState): boolean {
    const v = this.view(state);
    return v.ring_state.current_holder_id === this.o.userId && !v.archived;
  }

  /** Queue an append; the view shows it at once. Refused at once (409 not_ring_holder) when the view says the user does not hold the ring. */
  append(content: string): Promise<Outcome> {
    return this.add({ kind: "append", content });
  }

  /** Queue a ring pass; the view (and so the editor) moves the ring at once. */
  passRing(toUserId: string): Promise<Outcome> {
    return this.add({ kind: "pass", toUserId });
  }

  private add(what: { kind: "append"; content: string } | { kind: "pass"; toUserId: string }): Promise<Outcome> {
    if (this.closed) return Promise.reject(new Error("closed"));
    // an operation states the seq it follows: none can be made before the draft was loaded once
    // (and none before the outbox's earlier operations are read: the new one follows them)
    if (!this.confirmed || !this.isLoaded) return Promise.reject(new ApiError(0, "not_loaded", "the draft is not loaded yet"));
    if (!this.canAppend(this.confirmed)) {
      const v = this.view(this.confirmed);
      const why = v.archived ? "the draft is archived" : `${v.ring_state.current_holder_id} holds the ring`;
      return Promise.reject(new ApiError(409, v.archived ? "draft_archived" : "not_ring_holder", why));
    }
    const last = this.entries[this.entries.length - 1];
    const baseSeq = last ? last.op.baseSeq + 1 : this.confirmed.seq;
    const op = { ...what, key: crypto.randomUUID(), userId: this.o.userId, draftId: this.o.draftId, order: this.nextOrder++, baseSeq, createdAt: new Date().toISOString() } as PendingOp;
    const entry = this.entry(op, this.o.outbox.put(op));
    this.entries.push(entry);
    this.o.onChange?.();
    this.kick();
    return entry.outcome;
  }

  /** The confirmed state moved (an event folded, or a whole state adopted). */
  setState(state: DraftState): void {
    this.confirmed = state;
    // an answered operation whose seq the state now includes is done (even if its event was skipped over)
    for (const e of [...this.entries]) if (e.seq !== null && state.seq >= e.seq) this.settleOk(e, e.seq);
  }

  /** One event folded in seq order: confirms our operation, or proves it lost the race. */
  observe(event: DraftEvent): void {
    this.recent.set(event.seq, event);
    if (this.recent.size > RECENT) this.recent.delete(this.recent.keys().next().value!);
    for (const e of [...this.entries]) {
      if (e.seq !== null) {
        if (event.seq === e.seq) this.settleOk(e, e.seq);
      } else if (event.seq === e.op.baseSeq + 1) {
        if (isOwnEvent(e.op, event)) this.settleOk(e, event.seq);
        else {
          const who = event.user_id === e.op.userId ? "you" : event.user_id;
          this.rollback(e, { code: "precondition_failed", status: 412, reason: `${who} ${verb(event)} first${who === "you" ? ", elsewhere" : ""}`, by: event.user_id });
        }
      }
    }
  }

  private settleOk(e: Entry, seq: number): void {
    const i = this.entries.indexOf(e);
    if (i < 0) return;
    this.entries.splice(i, 1);
    void this.o.outbox.delete(e.op).catch(() => undefined);
    e.resolve({ ok: true, op: e.op, seq });
    this.o.onConfirmed?.(e.op, seq);
    this.o.onChange?.();
  }

  /** Undo `e` and every later operation (each was predicated on the one before it). */
  private rollback(e: Entry, why: Omit<Conflict, "op">): void {
    const i = this.entries.indexOf(e);
    if (i < 0) return;
    const undone = this.entries.splice(i);
    undone.forEach((x, n) => {
      void this.o.outbox.delete(x.op).catch(() => undefined);
      const conflict: Conflict = n === 0 ? { ...why, op: x.op } : { op: x.op, code: "earlier_undone", status: why.status, by: why.by, reason: `undone with an earlier change: ${why.reason}` };
      x.resolve({ ok: false, op: x.op, conflict });
      this.o.onConflict?.(conflict);
    });
    this.o.onChange?.();
  }

  private async reasonFor(e: Entry, err: ApiError): Promise<Omit<Conflict, "op">> {
    const base = { code: err.code, status: err.status };
    if (err.status === 412 || err.code === "not_ring_holder" || err.code === "conflict") {
      let winner = this.recent.get(e.op.baseSeq + 1);
      if (!winner) {
        try {
          winner = (await this.o.rest.events(e.op.draftId, e.op.baseSeq, { limit: 1 })).data[0];
        } catch {
          winner = undefined;
        }
      }
      if (winner && winner.user_id !== e.op.userId) return { ...base, reason: `${winner.user_id} ${verb(winner)} first`, by: winner.user_id };
      if (winner) return { ...base, reason: `you ${verb(winner)} first, elsewhere`, by: winner.user_id };
      if (err.code === "not_ring_holder") return { ...base, reason: "you no longer hold the ring", by: null };
      return { ...base, reason: "the draft changed first", by: null };
    }
    if (err.status === 403) return { ...base, reason: "you may no longer write to this draft", by: null };
    return { ...base, reason: err.message, by: null };
  }

  /** Send what is queued, in order (call when the connection comes back). */
  kick(): void {
    if (this.closed || this.sending) return;
    if (this.retryTimer !== null) { clearTimeout(this.retryTimer); this.retryTimer = null; }
    void this.sendLoop();
  }

  private async sendLoop(): Promise<void> {
    this.sending = true;
    try {
      await this.loaded;
      for (let e = this.entries.find((x) => x.stage === "queued"); e && !this.closed; e = this.entries.find((x) => x.stage === "queued")) {
        if (this.o.online && !this.o.online()) return this.retryLater();
        e.stage = "sending";
        await e.persisted.catch(() => undefined); // sent only once a reload would find it again
        const opts = { idempotencyKey: e.op.key, ifMatch: e.op.baseSeq };
        let seq: number;
        try {
          const { op } = e;
          seq = op.kind === "append"
            ? (await this.o.rest.appendSegment(op.draftId, op.content, opts)).seq
            : (await this.o.rest.passRing(op.draftId, op.toUserId, opts)).seq;
        } catch (err) {
          if (!this.entries.includes(e)) continue; // settled by the stream meanwhile
          if (err instanceof ApiError && ROLLBACK_CODES.has(err.status)) {
            this.rollback(e, await this.reasonFor(e, err));
            continue;
          }
          e.stage = "queued"; // no server, 401, 429, 5xx: the same key again later
          return this.retryLater(err instanceof ApiError ? err.retryAfterMs : 0);
        }
        this.attempt = 0;
        if (!this.entries.includes(e)) continue;
        e.stage = "sent";
        e.seq = seq;
        if (this.confirmed && this.confirmed.seq >= seq) this.settleOk(e, seq); // its event came first
        this.o.onChange?.();
      }
    } finally {
      this.sending = false;
    }
  }

  private retryLater(retryAfterMs = 0): void {
    if (this.closed || this.retryTimer !== null) return;
    const delay = Math.max(retryAfterMs, backoffDelay(this.attempt++, { cap: this.o.retryCapMs ?? 5000 }));
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.kick(); }, delay);
  }

  /** Undo every pending operation (the user lost access: none can ever apply) and clear them from the outbox. */
  abandon(code: string, reason: string): void {
    const first = this.entries[0];
    if (first) this.rollback(first, { code, status: 403, reason, by: null });
  }

  /** Stop sending (pending operations stay in the outbox for the next session). */
  close(): void {
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
  }
}
