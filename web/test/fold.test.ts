// The TypeScript fold against the Python fold (projections/fold.py): every prefix of every log
// in fixtures/fold.json (written by scripts/web_fold_fixtures.py) folds to the same state.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { FoldError, SeqOrderer, foldAll, foldEvent } from "../src/fold.js";
import type { DraftEvent, DraftState } from "../src/types.js";

const fixtures = JSON.parse(readFileSync(resolve(__dirname, "fixtures/fold.json"), "utf8")) as {
  logs: { events: DraftEvent[]; states: DraftState[] }[];
  invalid: { name: string; events: DraftEvent[]; refused_at: number }[];
};

/** Canonical JSON (sorted keys), as the server's state.to_json. */
function canon(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) : v);
}

describe("foldEvent equals projections/fold.py", () => {
  it("has fixtures covering every event type and an unknown one", () => {
    const types = new Set(fixtures.logs.flatMap((l) => l.events.map((e) => e.type)));
    expect(fixtures.logs.length).toBeGreaterThan(10);
    for (const t of ["collab.draft_created", "collab.segment_added", "collab.ring_passed", "collab.collaborator_added",
      "collab.draft_updated", "collab.collaborator_removed", "collab.role_changed", "collab.draft_archived",
      "collab.draft_unarchived", "newer.unknown_type"]) expect(types).toContain(t);
  });

  fixtures.logs.forEach((log, n) => {
    it(`log ${n}: every prefix (${log.events.length} events)`, () => {
      let state: DraftState | null = null;
      log.events.forEach((event, i) => {
        const before = state === null ? null : canon(state);
        state = foldEvent(state, event);
        expect(canon(state)).toBe(canon(log.states[i]));
        if (before !== null) expect(before).not.toBe(canon(state)); // seq at least moved; the old state is untouched
      });
      expect(canon(foldAll(null, log.events))).toBe(canon(log.states[log.states.length - 1]));
    });
  });

  fixtures.invalid.forEach((c) => {
    it(`refuses like the Python fold: ${c.name}`, () => {
      let state: DraftState | null = null;
      c.events.forEach((event, i) => {
        if (i === c.refused_at) expect(() => foldEvent(state, event)).toThrow(FoldError);
        else if (i < c.refused_at) state = foldEvent(state, event);
      });
    });
  });

  it("does not change the state it folds into", () => {
    const log = fixtures.logs.find((l) => l.events.length > 5)!;
    const first = foldEvent(null, log.events[0]!);
    const frozen = canon(first);
    foldAll(first, log.events.slice(1));
    expect(canon(first)).toBe(frozen);
  });
});

describe("SeqOrderer", () => {
  const log = fixtures.logs.find((l) => l.events.length >= 10)!.events;

  it("releases duplicated, reordered and gapped deliveries exactly once, in order", () => {
    const orderer = new SeqOrderer(0);
    const deliveries = [log[2]!, log[0]!, log[0]!, log[3]!, log[1]!, log[2]!, log[5]!, log[4]!, log[5]!];
    const released = deliveries.flatMap((e) => orderer.offer(e)).map((e) => e.seq);
    expect(released).toEqual([1, 2, 3, 4, 5, 6]);
    expect(orderer.hasGap).toBe(false);
    expect(orderer.offer(log[7]!)).toEqual([]);
    expect(orderer.hasGap).toBe(true);
  });

  it("drops what it holds beyond maxPending (fetched again later)", () => {
    const orderer = new SeqOrderer(0, 2);
    orderer.offer(log[2]!);
    orderer.offer(log[3]!);
    orderer.offer(log[4]!);
    expect(orderer.offer(log[0]!).map((e) => e.seq)).toEqual([1]);
  });
});
