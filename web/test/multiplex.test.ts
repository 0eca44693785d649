import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connectMultiplex, type MultiplexConnection } from "../src/multiplex.js";
import type { DraftEvent, PresenceMember } from "../src/types.js";
import { FakeServer, FakeSocket, until } from "./fakes.js";

let mux: MultiplexConnection | null = null;
beforeEach(() => FakeSocket.reset());
afterEach(() => mux?.close());

describe("connectMultiplex (/v1/ws)", () => {
  it("subscribes, applies each draft's events once in order, and resubscribes from each last seq", async () => {
    const a = new FakeServer("draft_a");
    const statuses: string[] = [];
    mux = connectMultiplex({ baseUrl: "http://ringlog.test", userId: "alice", fetch: a.fetch as typeof fetch, WebSocket: FakeSocket, onStatus: (s) => statuses.push(s) });
    const seenA: number[] = [];
    const seenB: number[] = [];
    const presence: PresenceMember[][] = [];
    const subA = mux.subscribe("draft_a", { onEvent: (e) => seenA.push(e.seq), onPresence: (m) => presence.push(m) }, { since: 1, state: a.state });
    mux.subscribe("draft_b", { onEvent: (e) => seenB.push(e.seq) });
    const sock = FakeSocket.last();
    expect(new URL(sock.url).pathname).toBe("/v1/ws");
    sock.connected("", 0);
    expect(sock.sent).toEqual([
      { type: "subscribe", draft_id: "draft_a", since: 1 },
      { type: "subscribe", draft_id: "draft_b" },
    ]);
    sock.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 1 });
    sock.deliver({ type: "presence_sync", draft_id: "draft_a", members: [{ user_id: "bob", state: {}, since: "t" }] });
    sock.deliver({ type: "subscribed", draft_id: "draft_b", head_seq: 4 });
    const e2 = a.appendSegment("alice", "x");
    const e3 = a.appendSegment("alice", "y");
    sock.deliver(e3);
    sock.deliver(e2);
    sock.deliver(e2);
    const b5 = { type: "collab.segment_added", draft_id: "draft_b", seq: 5, ts: "t", user_id: "bob", data: {} } as unknown as DraftEvent;
    sock.deliver(b5);
    sock.deliver(b5);
    sock.deliver({ type: "presence", draft_id: "draft_a", event: "leave", user_id: "bob", state: {}, ts: "t" });
    expect(seenA).toEqual([2, 3]);
    expect(seenB).toEqual([5]);
    expect(subA.state!.segments.map((s) => s.content)).toEqual(["x", "y"]);
    expect(presence.map((m) => m.map((x) => x.user_id))).toEqual([["bob"], []]);

    sock.drop(1013);
    await until(() => FakeSocket.instances.length === 2, 8000);
    const again = FakeSocket.last();
    again.connected("", 0);
    expect(again.sent).toEqual([
      { type: "subscribe", draft_id: "draft_a", since: 3 },
      { type: "subscribe", draft_id: "draft_b", since: 5 },
    ]);
    expect(statuses).toEqual(["live", "offline", "live"]);
  });

  it("drops a socket that still looks open when the browser goes offline and retries at once when online", async () => {
    const a = new FakeServer("draft_a");
    const network = new EventTarget();
    const statuses: string[] = [];
    mux = connectMultiplex({ baseUrl: "http://ringlog.test", userId: "alice", fetch: a.fetch as typeof fetch, WebSocket: FakeSocket, network, onStatus: (s) => statuses.push(s) });
    const seen: number[] = [];
    mux.subscribe("draft_a", { onEvent: (e) => seen.push(e.seq) }, { since: 1, state: a.state });
    const first = FakeSocket.last();
    first.connected("", 0);
    first.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 1 });
    network.dispatchEvent(new Event("offline"));
    expect(mux.status).toBe("offline"); // at once, with no close frame from anywhere
    expect(first.readyState).toBe(3);
    first.deliver(a.appendSegment("bob", "late")); // the old socket is not listened to any more
    expect(seen).toEqual([]);
    const before = FakeSocket.instances.length;
    network.dispatchEvent(new Event("online"));
    expect(FakeSocket.instances.length).toBe(before + 1); // not after its backoff
    const again = FakeSocket.last();
    again.connected("", 0);
    expect(again.sent).toEqual([{ type: "subscribe", draft_id: "draft_a", since: 1 }]);
    again.deliver(a.events[1]!);
    expect(seen).toEqual([2]);
    expect(statuses).toEqual(["live", "offline", "live"]);
  });

  it("fills a gap from /events and ends only the refused subscription", async () => {
    const a = new FakeServer("draft_a");
    mux = connectMultiplex({ baseUrl: "http://ringlog.test", userId: "alice", fetch: a.fetch as typeof fetch, WebSocket: FakeSocket });
    const seen: number[] = [];
    const ended: string[] = [];
    mux.subscribe("draft_a", { onEvent: (e) => seen.push(e.seq) }, { since: 1, state: a.state });
    mux.subscribe("draft_x", { onEnd: (code) => ended.push(code) });
    const sock = FakeSocket.last();
    sock.connected("", 0);
    a.appendSegment("alice", "x");
    const e3 = a.appendSegment("alice", "y");
    sock.deliver({ type: "error", code: "forbidden", draft_id: "draft_x" });
    sock.deliver(e3);
    await until(() => seen.length === 2);
    expect(seen).toEqual([2, 3]);
    expect(ended).toEqual(["forbidden"]);
    expect(mux.status).toBe("live");
  });

  it("follows the caller's feed and resumes after the last position", async () => {
    mux = connectMultiplex({ baseUrl: "http://ringlog.test", userId: "alice", WebSocket: FakeSocket });
    const positions: number[] = [];
    mux.subscribeMe((item) => positions.push(item.position), 10);
    const sock = FakeSocket.last();
    sock.connected("", 0);
    expect(sock.sent).toEqual([{ type: "subscribe_me", after: 10 }]);
    const event = { type: "collab.draft_created", draft_id: "d", seq: 1, ts: "t", user_id: "alice", data: {} };
    sock.deliver({ type: "me", position: 12, event });
    sock.deliver({ type: "me", position: 12, event });
    sock.deliver({ type: "me", position: 15, event });
    expect(positions).toEqual([12, 15]);
    sock.drop(1001);
    await until(() => FakeSocket.instances.length === 2, 8000);
    FakeSocket.last().connected("", 0);
    expect(FakeSocket.last().sent).toEqual([{ type: "subscribe_me", after: 15 }]);
  });
});
