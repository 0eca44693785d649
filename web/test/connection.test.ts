import "fake-indexeddb/auto";
import { IDBFactory } from "fake-indexeddb";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { backoffDelay } from "../src/api.js";
import { connectDraft, type ConnectionStatus, type DraftConnection } from "../src/connection.js";
import { IndexedDbOutbox, MemoryOutbox } from "../src/outbox.js";
import type { DraftEvent } from "../src/types.js";
import type { Conflict } from "../src/writer.js";
import { FakeServer, FakeSocket, settle, until } from "./fakes.js";

const open: DraftConnection[] = [];

function connect(server: FakeServer, extra: Parameters<typeof connectDraft>[1] = {}) {
  const statuses: ConnectionStatus[] = [];
  const events: DraftEvent[] = [];
  const conflicts: Conflict[] = [];
  const conn = connectDraft(server.draftId, {
    baseUrl: "http://ringlog.test",
    userId: "alice",
    fetch: server.fetch as typeof fetch,
    WebSocket: FakeSocket,
    onStatus: (s) => statuses.push(s),
    onEvent: (e) => events.push(e),
    onConflict: (c) => conflicts.push(c),
    ...extra,
  });
  open.push(conn);
  return { conn, statuses, events, conflicts };
}

async function live(server: FakeServer, conn: DraftConnection): Promise<FakeSocket> {
  await until(() => FakeSocket.instances.length > 0 && conn.lastSeq !== null);
  const sock = FakeSocket.last();
  sock.connected(server.draftId, server.events.length);
  await until(() => conn.status === "live");
  return sock;
}

beforeEach(() => FakeSocket.reset());
afterEach(() => {
  while (open.length) open.pop()!.close();
});

describe("connectDraft: deliveries", () => {
  it("applies duplicated, reordered and gapped deliveries exactly once, filling a gap from /events", async () => {
    const server = new FakeServer();
    server.addCollaborator("bob");
    const { conn, events } = connect(server);
    const sock = await live(server, conn);
    expect(sock.since).toBe(2);
    const e3 = server.appendSegment("alice", "one");
    const e4 = server.passRing("alice", "bob");
    const e5 = server.appendSegment("bob", "two");
    const e6 = server.appendSegment("bob", "three");
    sock.deliver(e3);
    sock.deliver(e3); // duplicate
    sock.deliver(e5); // early: waits for 4
    sock.deliver(e3);
    sock.deliver(e4); // releases 4 and 5
    sock.deliver(e5);
    expect(events.map((e) => e.seq)).toEqual([3, 4, 5]);
    sock.deliver({ ...e6, seq: 6 });
    const e7 = server.appendSegment("bob", "four");
    const e8 = server.appendSegment("bob", "five");
    sock.deliver(e8); // a gap (7 missing): fetched from /events
    await until(() => conn.lastSeq === 8);
    sock.deliver(e7); // late: already applied
    expect(events.map((e) => e.seq)).toEqual([3, 4, 5, 6, 7, 8]);
    expect(server.requests.some((r) => r.path.includes("/events?since=6"))).toBe(true);
    expect(conn.state).toEqual(server.state);
    expect(conn.state!.segments.map((s) => s.content)).toEqual(["one", "two", "three", "four", "five"]);
  });

  it("resumes the socket from the last seq it applied after a drop", async () => {
    const server = new FakeServer();
    const { conn } = connect(server);
    const first = await live(server, conn);
    first.deliver(server.appendSegment("alice", "a"));
    first.drop(1013, "too slow");
    await until(() => FakeSocket.instances.length === 2, 8000);
    expect(FakeSocket.last().since).toBe(2);
  });
});

describe("connectDraft: status", () => {
  it("goes ws → polling → ws when the socket drops and comes back", async () => {
    const server = new FakeServer();
    const { conn, statuses } = connect(server);
    const first = await live(server, conn);
    first.drop(1001, "going away");
    expect(conn.status).toBe("syncing");
    // the long-poll carries the events meanwhile
    server.appendSegment("alice", "while polling");
    await until(() => conn.lastSeq === 2);
    await until(() => FakeSocket.instances.length === 2, 8000);
    FakeSocket.last().connected(server.draftId, 2);
    await until(() => conn.status === "live");
    expect(statuses).toEqual(["connecting", "live", "syncing", "live"]);
  });

  it("shows offline while the server is down and polling within ~3 s of its return", async () => {
    const server = new FakeServer();
    const { conn } = connect(server);
    const first = await live(server, conn);
    server.down = true;
    FakeSocket.onCreate = (s) => { if (server.down) s.drop(1006); };
    first.drop(1006);
    await until(() => conn.status === "offline", 8000);
    server.appendSegment("bob", "while down"); // bob wrote on another node meanwhile
    server.down = false;
    FakeSocket.onCreate = null;
    const back = Date.now();
    await until(() => conn.status === "syncing" || conn.status === "live", 8000);
    expect(Date.now() - back).toBeLessThan(4500);
    await until(() => conn.lastSeq === 2);
  });

  it("retries the socket at once when a hidden page becomes visible", async () => {
    const server = new FakeServer();
    let visible = false;
    const { conn } = connect(server, { isVisible: () => visible });
    await live(server, conn);
    FakeSocket.last().drop(1006); // the retry waits a hidden page's backoff (timers cannot fire before the next line)
    const before = FakeSocket.instances.length;
    visible = true;
    document.dispatchEvent(new Event("visibilitychange"));
    expect(FakeSocket.instances.length).toBe(before + 1);
  });

  it("drops a socket that still looks open when the browser goes offline, queues writes, and retries at once when online", async () => {
    const server = new FakeServer();
    const network = new EventTarget();
    const { conn, statuses } = connect(server, { network });
    const first = await live(server, conn);
    server.down = true; // the browser's network is gone: no request gets anywhere
    FakeSocket.onCreate = (s) => { if (server.down) s.drop(1006); };
    network.dispatchEvent(new Event("offline"));
    expect(conn.status).toBe("offline"); // at once, although no close frame came
    expect(first.readyState).toBe(3);
    const outcome = conn.append("written offline");
    expect(conn.view!.segments.map((s) => [s.content, s.pending])).toEqual([["written offline", true]]);
    await settle();
    expect(server.events.length).toBe(1); // nothing reached the server
    server.down = false;
    FakeSocket.onCreate = null;
    const before = FakeSocket.instances.length;
    network.dispatchEvent(new Event("online"));
    expect(FakeSocket.instances.length).toBe(before + 1); // retried at once, not after its backoff
    FakeSocket.last().connected(server.draftId, 1);
    await until(() => conn.status === "live");
    await until(() => server.events.length === 2, 8000);
    FakeSocket.last().deliver(server.events[1]!);
    await expect(outcome).resolves.toMatchObject({ ok: true, seq: 2 });
    expect(server.mutations("/segments")).toBeGreaterThanOrEqual(1);
    expect(server.events.filter((e) => e.type === "collab.segment_added")).toHaveLength(1);
    expect(statuses.slice(0, 3)).toEqual(["connecting", "live", "offline"]);
    expect(statuses.at(-1)).toBe("live");
  });

  it("caps the socket's backoff at 5 s while visible", () => {
    for (const attempt of [0, 3, 10, 40]) expect(backoffDelay(attempt, { random: () => 0.999999 })).toBeLessThanOrEqual(5000);
    expect(backoffDelay(40, { random: () => 1 })).toBe(5000);
  });
});

describe("connectDraft: optimistic writes", () => {
  it("shows an append at once as pending and confirms it by its own event before the HTTP answer", async () => {
    const server = new FakeServer();
    const { conn } = connect(server);
    const sock = await live(server, conn);
    let open!: () => void;
    server.gate = new Promise((r) => { open = r; });
    const outcome = conn.append("hello");
    const pending = conn.view!.segments.at(-1)!;
    expect(pending).toMatchObject({ content: "hello", pending: true, author_user_id: "alice" });
    expect(conn.state!.segments).toEqual([]);
    await until(() => server.events.length === 2);
    const post = server.requests.find((r) => r.method === "POST")!;
    expect(post.headers["If-Match"]).toBe('"1"');
    expect(post.headers["Idempotency-Key"]).toBe(conn.pending[0]!.key);
    sock.deliver(server.events[1]!); // its own event, while the HTTP answer is held back
    await expect(outcome).resolves.toMatchObject({ ok: true, seq: 2 });
    expect(conn.pending).toEqual([]);
    expect(conn.view!.segments).toEqual([{ ...server.state!.segments[0] }]);
    open();
  });

  it("rolls back on 412 with who won: 'bob appended first'", async () => {
    const server = new FakeServer();
    server.addCollaborator("bob");
    const { conn, conflicts } = connect(server);
    const sock = await live(server, conn);
    conn.append("mine"); // sent with If-Match "2"
    const won = server.appendSegment("bob", "bob's"); // the race: bob's append landed first
    await until(() => conflicts.length === 1);
    expect(conflicts[0]).toMatchObject({ code: "precondition_failed", status: 412, by: "bob", reason: "bob appended first" });
    expect(conn.pending).toEqual([]);
    sock.deliver(won);
    expect(conn.view!.segments.map((s) => s.content)).toEqual(["bob's"]);
  });

  it("rolls back a race loser from the stream alone, naming the winner", async () => {
    const server = new FakeServer();
    const { conn, conflicts } = connect(server);
    const sock = await live(server, conn);
    server.gate = new Promise(() => undefined); // the HTTP answer never comes
    server.forced.push({ status: 412, code: "precondition_failed", message: "x" });
    const outcome = conn.append("mine");
    sock.deliver(server.add("collab.draft_updated", "bob", { title: "bob's title" }));
    await expect(outcome).resolves.toMatchObject({ ok: false, conflict: { reason: "bob changed the draft first", by: "bob" } });
    expect(conflicts).toHaveLength(1);
    expect(conn.view!.segments).toEqual([]);
  });

  it("rolls back on 409 not_ring_holder and undoes the operations queued after it", async () => {
    const server = new FakeServer();
    const { conn, conflicts } = connect(server);
    await live(server, conn);
    server.forced.push({ status: 409, code: "not_ring_holder", message: "you do not hold the ring" });
    const first = conn.append("one");
    const second = conn.append("two");
    expect(conn.view!.segments.map((s) => [s.content, s.pending])).toEqual([["one", true], ["two", true]]);
    await expect(first).resolves.toMatchObject({ ok: false, conflict: { code: "not_ring_holder", reason: "you no longer hold the ring" } });
    await expect(second).resolves.toMatchObject({ ok: false, conflict: { code: "earlier_undone" } });
    expect(conflicts.map((c) => c.op.kind === "append" && c.op.content)).toEqual(["one", "two"]);
    expect(conn.view!.segments).toEqual([]);
    expect(server.mutations("/segments")).toBe(1);
  });

  it("locks the editor at once on a pass, and confirms the pass by its event", async () => {
    const server = new FakeServer();
    server.addCollaborator("bob");
    const { conn } = connect(server);
    const sock = await live(server, conn);
    const passed = conn.passRing("bob");
    expect(conn.view!.ring_state.current_holder_id).toBe("bob");
    await expect(conn.append("too late")).rejects.toMatchObject({ code: "not_ring_holder" });
    await until(() => server.events.length === 3);
    sock.deliver(server.events[2]!);
    await expect(passed).resolves.toMatchObject({ ok: true, seq: 3 });
    expect(server.mutations("/segments")).toBe(0);
  });

  it("refuses a write before the draft was ever loaded (it could not state the seq it follows)", async () => {
    const server = new FakeServer();
    server.down = true;
    const { conn } = connect(server);
    await expect(conn.append("early")).rejects.toMatchObject({ code: "not_loaded" });
    expect(conn.pending).toEqual([]);
  });

  it("undoes every pending operation, and clears the outbox, when access is revoked", async () => {
    const outbox = new MemoryOutbox();
    const server = new FakeServer();
    const { conn, conflicts } = connect(server, { outbox });
    const sock = await live(server, conn);
    server.gate = new Promise(() => undefined);
    void conn.append("one");
    void conn.append("two");
    await settle();
    sock.deliver({ type: "error", code: "access_revoked", draft_id: server.draftId, message: "removed" });
    sock.drop(4403);
    expect(conn.status).toBe("revoked");
    expect(conflicts.map((c) => [c.code, c.reason])).toEqual([
      ["access_revoked", "you no longer have access to this draft"],
      ["earlier_undone", "undone with an earlier change: you no longer have access to this draft"],
    ]);
    await settle();
    expect(await outbox.load("alice", server.draftId)).toEqual([]);
  });

  it("retries with the same key when an answer is lost: the server applies it once", async () => {
    const server = new FakeServer();
    const { conn } = connect(server);
    const sock = await live(server, conn);
    server.loseNextAnswer = true;
    const outcome = conn.append("once");
    await until(() => server.requests.filter((r) => r.method === "POST").length >= 2, 8000);
    const keys = new Set(server.requests.filter((r) => r.method === "POST").map((r) => r.headers["Idempotency-Key"]));
    expect(keys.size).toBe(1);
    sock.deliver(server.events[1]!);
    await expect(outcome).resolves.toMatchObject({ ok: true, seq: 2 });
    expect(server.state!.segments.map((s) => s.content)).toEqual(["once"]);
  });
});

describe("connectDraft: offline outbox", () => {
  it("keeps operations across a reload and sends each exactly once, in order, with its key", async () => {
    const idb = new IDBFactory();
    const server = new FakeServer();
    const first = connect(server, { outbox: new IndexedDbOutbox("outbox", idb) });
    await live(server, first.conn);
    server.down = true;
    FakeSocket.onCreate = (s) => { if (server.down) s.drop(1006); };
    FakeSocket.last().drop(1006);
    await until(() => first.conn.status === "offline", 8000);
    void first.conn.append("one");
    void first.conn.append("two");
    expect(first.conn.view!.segments.map((s) => s.pending)).toEqual([true, true]);
    const keys = first.conn.pending.map((op) => op.key);
    await settle(20);
    first.conn.close(); // the page reloads
    expect(server.state!.segments).toEqual([]);

    const second = connect(server, { outbox: new IndexedDbOutbox("outbox", idb) });
    await until(() => second.conn.pending.length === 2);
    expect(second.conn.pending.map((op) => op.key)).toEqual(keys);
    // the server is still down: the last state seen (kept in IndexedDB) with the pending writes
    await until(() => second.conn.view !== null, 8000);
    expect(second.conn.view!.segments.map((s) => [s.content, s.pending])).toEqual([["one", true], ["two", true]]);
    server.down = false;
    FakeSocket.onCreate = null;
    await until(() => second.conn.state !== null, 8000);
    expect(second.conn.view!.segments.map((s) => [s.content, s.pending])).toEqual([["one", true], ["two", true]]);
    await until(() => server.events.length === 3, 8000);
    const sock = await live(server, second.conn);
    sock.deliver(server.events[1]!);
    sock.deliver(server.events[2]!);
    await until(() => second.conn.pending.length === 0);
    expect(server.state!.segments.map((s) => s.content)).toEqual(["one", "two"]);
    // every attempt (including any made while the server was down) used the op's first key, in order
    const sentKeys = server.requests.filter((r) => r.method === "POST").map((r) => r.headers["Idempotency-Key"]);
    expect([...new Set(sentKeys)]).toEqual(keys);
    await settle(20);
    second.conn.close();

    const third = connect(server, { outbox: new IndexedDbOutbox("outbox", idb) });
    await live(server, third.conn);
    await settle(20);
    expect(third.conn.pending).toEqual([]);
    expect(server.events).toHaveLength(3);
  });

  it("after a reload while the server is still away, shows the last state with the pending writes and lets the user write", async () => {
    const idb = new IDBFactory();
    const server = new FakeServer();
    const first = connect(server, { outbox: new IndexedDbOutbox("outbox", idb) });
    const sock = await live(server, first.conn);
    sock.deliver(server.appendSegment("alice", "seen"));
    await until(() => first.conn.lastSeq === 2);
    server.down = true;
    FakeSocket.onCreate = (s) => { if (server.down) s.drop(1006); };
    sock.drop(1006);
    await until(() => first.conn.status === "offline", 8000);
    void first.conn.append("queued before the reload");
    await settle(20);
    first.conn.close(); // the page reloads; the server is still down

    const second = connect(server, { outbox: new IndexedDbOutbox("outbox", idb) });
    await until(() => second.conn.view !== null && second.conn.pending.length === 1, 8000);
    expect(second.conn.status).toBe("offline");
    expect(second.conn.view!.segments.map((s) => [s.content, !!s.pending])).toEqual([["seen", false], ["queued before the reload", true]]);
    void second.conn.append("queued after the reload");
    expect(second.conn.pending.map((op) => op.baseSeq)).toEqual([2, 3]);
    server.down = false;
    FakeSocket.onCreate = null;
    await until(() => server.events.length === 4, 8000);
    await until(() => second.conn.pending.length === 0, 8000); // confirmed through polling or the socket
    expect(server.state!.segments.map((s) => s.content)).toEqual(["seen", "queued before the reload", "queued after the reload"]);
    expect(second.conn.state!.seq).toBe(4);
  });

  it("keeps the state a queued write follows without waiting for close() (a real reload never calls it)", async () => {
    const idb = new IDBFactory();
    const server = new FakeServer();
    const network = new EventTarget();
    const first = connect(server, { outbox: new IndexedDbOutbox("outbox", idb), network });
    const sock = await live(server, first.conn);
    sock.deliver(server.appendSegment("alice", "seen")); // a save of seq 2 now waits on its 1 s timer
    await until(() => first.conn.lastSeq === 2);
    const reader = new IndexedDbOutbox("outbox", idb);
    server.down = true; // nothing reaches the server from here on
    FakeSocket.onCreate = (s) => { if (server.down) s.drop(1006); };
    network.dispatchEvent(new Event("offline")); // the browser goes offline: written at once
    await until(() => first.conn.status === "offline");
    void first.conn.append("queued"); // and the write follows that state
    await settle(20); // the outbox's writes land (the 1 s save timer has not fired)
    // the page unloads now, so no close(): the state is already there, the write's seq 2
    const kept = await reader.loadState("alice", server.draftId);
    expect(kept?.seq).toBe(2);
    expect(kept?.segments.map((s) => s.content)).toEqual(["seen"]);
    expect((await reader.load("alice", server.draftId)).map((op) => op.kind === "append" && op.content)).toEqual(["queued"]);
    first.conn.close();

    // the reloaded page finds the server still away: it shows what was kept
    const second = connect(server, { outbox: new IndexedDbOutbox("outbox", idb), network: null });
    await until(() => second.conn.view !== null && second.conn.pending.length === 1, 8000);
    expect(second.conn.view!.segments.map((s) => [s.content, !!s.pending])).toEqual([["seen", false], ["queued", true]]);
  });

  it("rolls back a replayed operation that lost while offline", async () => {
    const outbox = new MemoryOutbox();
    const server = new FakeServer();
    server.addCollaborator("bob");
    const first = connect(server, { outbox });
    await live(server, first.conn);
    server.down = true;
    FakeSocket.onCreate = (s) => { if (server.down) s.drop(1006); };
    FakeSocket.last().drop(1006);
    await until(() => first.conn.status === "offline", 8000);
    void first.conn.append("offline words");
    await settle(10);
    first.conn.close();
    server.passRing("alice", "bob"); // from another device, while this one was away
    server.appendSegment("bob", "bob's words");
    server.down = false;
    FakeSocket.onCreate = null;
    const second = connect(server, { outbox });
    await until(() => second.conflicts.length === 1, 8000);
    expect(second.conflicts[0]!.reason).toBe("you passed the ring first, elsewhere");
    expect(second.conn.pending).toEqual([]);
    expect(await outbox.load("alice", server.draftId)).toEqual([]);
    expect(server.state!.segments.map((s) => s.content)).toEqual(["bob's words"]);
  });
});
