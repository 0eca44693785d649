/**
 * The fold of a draft's events into its state, and the orderer that feeds it each seq once.
 *
 * A faithful port of projections/fold.py (the only fold on the server): same handlers, same
 * refusals (FoldError for another draft, a seq that is not the next, a second
 * collab.draft_created, a first event of another type), unknown types only advance seq and
 * updated_at. test/fold.test.ts folds every log of test/fixtures/fold.json (written by
 * scripts/web_fold_fixtures.py from the Python fold) and compares each prefix's state.
 */
import type { DraftEvent, DraftState } from "./types.js";

/** An event cannot follow the state it is folded into (wrong draft, seq or type). */
export class FoldError extends Error {
  override name = "FoldError";
}

/** The state after one more event; `state` is null before collab.draft_created. Pure. */
export function foldEvent(state: DraftState | null, event: DraftEvent): DraftState {
  const d = (event.data ?? {}) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  let next: DraftState;
  if (event.type === "collab.draft_created") {
    if (state) throw new FoldError(`draft ${event.draft_id} was already created`);
    next = {
      id: event.draft_id,
      title: d.title,
      description: d.description ?? "",
      creator_id: d.creator_id,
      collaborators: [],
      segments: [],
      ring_state: { current_holder_id: d.creator_id, holders_history: [d.creator_id] },
      archived: false,
      seq: 0,
      created_at: event.ts,
      updated_at: event.ts,
    };
  } else if (!state) {
    throw new FoldError(`draft ${event.draft_id}: first event must be collab.draft_created, got ${event.type}`);
  } else if (event.draft_id !== state.id) {
    throw new FoldError(`event of draft ${event.draft_id} folded into draft ${state.id}`);
  } else {
    next = { ...state };
    switch (event.type) {
      case "collab.segment_added": {
        const s = d.segment;
        next.segments = [
          ...state.segments,
          { id: s.id, author_user_id: s.author_user_id, content: s.content, position: s.position, created_at: s.created_at },
        ];
        break;
      }
      case "collab.ring_passed":
        next.ring_state = { current_holder_id: d.current_holder_id, holders_history: [...d.holders_history] };
        break;
      case "collab.collaborator_added":
        next.collaborators = [...state.collaborators, { user_id: d.collaborator_id, role: d.role, joined_at: d.joined_at }];
        break;
      case "collab.draft_updated":
        if ("title" in d) next.title = d.title;
        if ("description" in d) next.description = d.description;
        break;
      case "collab.collaborator_removed": // a ring they held comes back in the next event (ring_passed)
        next.collaborators = state.collaborators.filter((c) => c.user_id !== d.collaborator_id);
        break;
      case "collab.role_changed":
        next.collaborators = state.collaborators.map((c) =>
          c.user_id === d.collaborator_id ? { ...c, role: d.to_role } : c,
        );
        break;
      case "collab.draft_archived":
        next.archived = true;
        break;
      case "collab.draft_unarchived":
        next.archived = false;
        break;
      default: // a type from a newer server only advances seq
    }
  }
  const before = state ? state.seq : 0;
  if (event.seq !== before + 1) {
    throw new FoldError(`draft ${next.id}: seq ${event.seq} cannot follow seq ${before}`);
  }
  next.seq = event.seq;
  next.updated_at = event.ts;
  return next;
}

/** Fold many events (in seq order) into `state`; null stays null for no events. */
export function foldAll(state: DraftState | null, events: Iterable<DraftEvent>): DraftState | null {
  let s = state;
  for (const e of events) s = foldEvent(s, e);
  return s;
}

/**
 * Releases events strictly as lastSeq+1, lastSeq+2, …: each seq once, whatever the order or
 * number of deliveries (socket, long-poll, gap fetch). Duplicates and seqs at or below lastSeq
 * are dropped; later seqs wait (at most `maxPending`; overflow drops them, to be fetched again).
 */
export class SeqOrderer<E extends { seq: number } = DraftEvent> {
  lastSeq: number;
  readonly maxPending: number;
  private readonly waiting = new Map<number, E>();

  constructor(lastSeq = 0, maxPending = 10000) {
    this.lastSeq = lastSeq;
    this.maxPending = maxPending;
  }

  /** Whether a later seq arrived before its predecessor (a gap to fetch). */
  get hasGap(): boolean {
    return this.waiting.size > 0;
  }

  /** One delivery in; the events now next in order out (maybe none). */
  offer(event: E): E[] {
    const seq = event.seq;
    if (!Number.isInteger(seq) || seq <= this.lastSeq || this.waiting.has(seq)) return [];
    if (seq !== this.lastSeq + 1) {
      // overflow loses nothing: the events are fetched again from lastSeq
      if (this.waiting.size >= this.maxPending) this.waiting.clear();
      this.waiting.set(seq, event);
      return [];
    }
    const ready = [event];
    this.lastSeq = seq;
    for (let next = this.waiting.get(seq + 1); next; next = this.waiting.get(this.lastSeq + 1)) {
      this.waiting.delete(next.seq);
      ready.push(next);
      this.lastSeq = next.seq;
    }
    return ready;
  }
}
