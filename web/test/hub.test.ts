import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connectDraft, type ConnectionStatus, type DraftConnection } from "../src/connection.js";
import { createSocketHub, type SocketHub } from "../src/hub.js";
import type { DraftEvent, FeedItem, PresenceMember } from "../src/types.js";
import { FakeServer, FakeSocket, settle, until } from "./fakes.js";

let hub: SocketHub | null = null;
const drafts: DraftConnection[] = [];
beforeEach(() => FakeSocket.reset());
afterEach(() => {
  for (const d of drafts.splice(0)) d.close();
  hub?.close();
  hub = null;
});

/** One fake server per draft behind one fetch, plus the caller's feed at /v1/me/events. */
function servers(feed: FeedItem[] = []) {
  const a = new FakeServer("draft_a");
  const b = new FakeServer("draft_b");
  const feedRequests: string[] = [];
  let down = false;
  const fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input));
    if (url.pathname === "/v1/me/events") {
      feedRequests.push(url.search);
      if (down) throw new TypeError("fetch failed");
      const after = Number(url.searchParams.get("after"));
      const data = feed.filter((i) => i.position > after);
      return new Response(JSON.stringify({ data, last_position: data.at(-1)?.position ?? after }), { status: 200 });
    }
    return url.pathname.includes("draft_b") ? b.fetch(input, init) : a.fetch(input, init);
  };
  return { a, b, fetch: fetch as typeof globalThis.fetch, feedRequests, setDown: (d: boolean) => { down = d; a.down = d; b.down = d; } };
}

function follow(draftId: string, fetch: typeof globalThis.fetch, statuses: ConnectionStatus[] = [], presence: PresenceMember[][] = []): DraftConnection {
  const conn = connectDraft(draftId, {
    baseUrl: "http://ringlog.test", userId: "alice", fetch, WebSocket: hub!.WebSocket,
    onStatus: (s) => statuses.push(s), onPresence: (m) => presence.push(m),
  });
  drafts.push(conn);
  return conn;
}

const sentOfType = (sock: FakeSocket, type: string) => sock.sent.filter((m) => m.type === type);

describe("createSocketHub: every draft over one /v1/ws", () => {
  it("carries several connectDrafts on one socket, each resuming from its own last seq after a drop", async () => {
    const { a, b, fetch } = servers();
    hub = createSocketHub({ baseUrl: "http://ringlog.test", userId: "alice", fetch, WebSocket: FakeSocket });
    const statusesA: ConnectionStatus[] = [];
    const presenceA: PresenceMember[][] = [];
    const connA = follow("draft_a", fetch, statusesA, presenceA);
    const connB = follow("draft_b", fetch);
    await until(() => FakeSocket.instances.length === 1 && connA.state !== null && connB.state !== null);
    const sock = FakeSocket.last();
    expect(new URL(sock.url).pathname).toBe("/v1/ws");
    sock.deliver({ type: "connected", user_id: "alice", ts: "t" });
    await until(() => sentOfType(sock, "subscribe").length === 2);
    expect(sentOfType(sock, "subscribe")).toEqual([
      { type: "subscribe", draft_id: "draft_a", since: 1 },
      { type: "subscribe", draft_id: "draft_b", since: 1 },
    ]);
    sock.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 1 });
    sock.deliver({ type: "presence_sync", draft_id: "draft_a", members: [{ user_id: "alice", state: {}, since: "t" }] });
    sock.deliver({ type: "subscribed", draft_id: "draft_b", head_seq: 1 });
    await until(() => connA.status === "live" && connB.status === "live");

    connA.setPresence({ typing: true });
    expect(sentOfType(sock, "presence")).toEqual([{ type: "presence", draft_id: "draft_a", state: { typing: true } }]);
    const a2 = a.appendSegment("bob", "for a");
    const b2 = b.appendSegment("bob", "for b");
    sock.deliver(b2);
    sock.deliver(a2);
    sock.deliver(a2); // a duplicate is folded once
    expect(connA.state!.segments.map((s) => s.content)).toEqual(["for a"]);
    expect(connB.state!.segments.map((s) => s.content)).toEqual(["for b"]);
    expect(presenceA.at(-1)!.map((m) => m.user_id)).toEqual(["alice"]);

    sock.drop(1001, "going away"); // the server restarts: both drafts resume, on one new socket
    await until(() => connA.status === "syncing" && connB.status === "syncing");
    expect(presenceA.at(-1)).toEqual([]);
    a.appendSegment("bob", "while away");
    await until(() => FakeSocket.instances.length === 2, 8000);
    await settle();
    const again = FakeSocket.last();
    again.deliver({ type: "connected", user_id: "alice", ts: "t" });
    await until(() => connA.state!.seq === 3);
    await until(() => sentOfType(again, "subscribe").length === 2, 8000);
    expect(sentOfType(again, "subscribe")).toContainEqual({ type: "subscribe", draft_id: "draft_b", since: 2 });
    const resumeA = sentOfType(again, "subscribe").find((m) => m.draft_id === "draft_a")!;
    expect([2, 3]).toContain(resumeA.since); // from what it had when its channel opened
    again.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 3 });
    again.deliver({ type: "subscribed", draft_id: "draft_b", head_seq: 2 });
    await until(() => connA.status === "live" && connB.status === "live");
    expect(sentOfType(again, "presence")).toEqual([{ type: "presence", draft_id: "draft_a", state: { typing: true } }]);
    expect(FakeSocket.instances.length).toBe(2);
    expect(hub.socketsOpened).toBe(2);
    expect(connA.state!.segments.map((s) => s.content)).toEqual(["for a", "while away"]);
    expect(statusesA).not.toContain("stopped");
  });

  it("ends only the draft a refusal names: revoked, not found; the socket and the other draft stay", async () => {
    const { a, fetch } = servers();
    hub = createSocketHub({ baseUrl: "http://ringlog.test", userId: "alice", fetch, WebSocket: FakeSocket });
    const connA = follow("draft_a", fetch);
    const connB = follow("draft_b", fetch);
    await until(() => FakeSocket.instances.length === 1 && connA.state !== null && connB.state !== null);
    const sock = FakeSocket.last();
    sock.deliver({ type: "connected", user_id: "alice", ts: "t" });
    await until(() => sentOfType(sock, "subscribe").length === 2);
    sock.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 1 });
    sock.deliver({ type: "subscribed", draft_id: "draft_b", head_seq: 1 });
    await until(() => connA.status === "live" && connB.status === "live");
    sock.deliver(a.addCollaborator("zed"));
    sock.deliver({ type: "error", code: "access_revoked", message: "removed", draft_id: "draft_a" });
    await until(() => connA.status === "revoked");
    expect(connA.state!.seq).toBe(2); // the removal was folded before the refusal
    expect(connB.status).toBe("live");
    expect(sock.readyState).toBe(1);
    expect(FakeSocket.instances.length).toBe(1);
    await settle();
    expect(sentOfType(sock, "unsubscribe")).toEqual([]); // the server already ended it
  });

  it("a silent channel (no pong) drops the shared socket so every draft resumes", async () => {
    hub = createSocketHub({ baseUrl: "http://ringlog.test", userId: "alice", WebSocket: FakeSocket });
    const one = new hub.WebSocket("ws://ringlog.test/v1/ws/drafts/draft_a?since=4&user_id=alice");
    const two = new hub.WebSocket("ws://ringlog.test/v1/ws/drafts/draft_b?since=0&user_id=alice");
    const closes: [string, number][] = [];
    one.onclose = (e) => closes.push(["one", e.code]);
    two.onclose = (e) => closes.push(["two", e.code]);
    const got: string[] = [];
    two.onmessage = (m) => got.push(JSON.parse(String(m.data)).type);
    const sock = FakeSocket.last();
    sock.deliver({ type: "connected", user_id: "alice", ts: "t" });
    expect(sentOfType(sock, "subscribe")).toEqual([
      { type: "subscribe", draft_id: "draft_a", since: 4 },
      { type: "subscribe", draft_id: "draft_b", since: 0 },
    ]);
    sock.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 4 });
    sock.deliver({ type: "subscribed", draft_id: "draft_b", head_seq: 0 });
    one.send(JSON.stringify({ type: "ping" }));
    sock.deliver({ type: "pong", ts: "t" });
    expect(got).toEqual(["connected", "pong"]); // a pong reaches every channel
    expect(sentOfType(sock, "ping").length).toBe(1);
    one.close(4000); // connectDraft heard nothing for too long
    expect(sock.readyState).toBe(3);
    expect(closes).toEqual([["two", 1006]]);
    const later = new hub.WebSocket("ws://ringlog.test/v1/ws/drafts/draft_a?since=4&user_id=alice");
    expect(FakeSocket.instances.length).toBe(2);
    expect(later.readyState).toBe(0);
  });

  it("refuses a second channel for a draft already followed", async () => {
    hub = createSocketHub({ baseUrl: "http://ringlog.test", userId: "alice", WebSocket: FakeSocket });
    new hub.WebSocket("ws://ringlog.test/v1/ws/drafts/draft_a?since=1");
    const second = new hub.WebSocket("ws://ringlog.test/v1/ws/drafts/draft_a?since=1");
    const heard: string[] = [];
    second.onmessage = (m) => heard.push(JSON.parse(String(m.data)).code);
    let code = 0;
    second.onclose = (e) => { code = e.code; };
    await settle();
    expect(heard).toEqual(["already_followed"]);
    expect(code).toBe(1008);
    expect(FakeSocket.instances.length).toBe(1);
  });

  it("follows the feed once per position, resumes after the last one, and reads it over HTTP while the socket is down", async () => {
    const event = { type: "collab.ring_passed", draft_id: "draft_a", seq: 2, ts: "t", user_id: "bob", data: {} } as unknown as DraftEvent;
    const feed: FeedItem[] = [{ position: 7, event }, { position: 9, event }];
    const { fetch, feedRequests } = servers(feed);
    hub = createSocketHub({ baseUrl: "http://ringlog.test", userId: "alice", fetch, WebSocket: FakeSocket });
    const positions: number[] = [];
    const follow = hub.subscribeMe((item) => positions.push(item.position), 0);
    const sock = FakeSocket.last();
    sock.deliver({ type: "connected", user_id: "alice", ts: "t" });
    expect(sock.sent).toEqual([{ type: "subscribe_me", after: 0 }]);
    sock.deliver({ type: "subscribed_me", last_position: 9 });
    sock.deliver({ type: "me", position: 7, event });
    sock.deliver({ type: "me", position: 7, event });
    expect(positions).toEqual([7]);
    expect(follow.lastPosition).toBe(7);

    FakeSocket.onCreate = (s) => s.drop(1006); // sockets cannot open; HTTP still answers
    sock.drop(1006);
    await until(() => positions.length === 2, 8000);
    expect(positions).toEqual([7, 9]);
    expect(feedRequests[0]).toContain("after=7");
    FakeSocket.onCreate = null;
    await until(() => FakeSocket.last().readyState === 0 && FakeSocket.instances.length >= 3, 8000);
    const back = FakeSocket.last();
    back.deliver({ type: "connected", user_id: "alice", ts: "t" });
    expect(back.sent).toEqual([{ type: "subscribe_me", after: 9 }]);
    back.deliver({ type: "me", position: 9, event }); // already shown
    back.deliver({ type: "me", position: 12, event });
    expect(positions).toEqual([7, 9, 12]);
  });

  it("drops the shared socket when the browser goes offline and retries at once when it is back", async () => {
    const network = new EventTarget();
    hub = createSocketHub({ baseUrl: "http://ringlog.test", userId: "alice", WebSocket: FakeSocket, network });
    hub.subscribeMe(() => undefined, 0);
    const ch = new hub.WebSocket("ws://ringlog.test/v1/ws/drafts/draft_a?since=1");
    let code = 0;
    ch.onclose = (e) => { code = e.code; };
    const sock = FakeSocket.last();
    sock.deliver({ type: "connected", user_id: "alice", ts: "t" });
    sock.deliver({ type: "subscribed", draft_id: "draft_a", head_seq: 1 });
    network.dispatchEvent(new Event("offline"));
    expect(code).toBe(1006); // connectDraft resumes: polls, then a new channel
    expect(sock.readyState).toBe(3);
    expect(hub.status).toBe("offline");
    network.dispatchEvent(new Event("online")); // the feed's reconnect does not wait its backoff
    expect(FakeSocket.instances.length).toBe(2);
  });
});
