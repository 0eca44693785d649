import { act, render, renderHook, screen, waitFor } from "@testing-library/react";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { useDraftRealtime } from "../src/react.js";
import { FakeServer, FakeSocket } from "./fakes.js";

beforeEach(() => FakeSocket.reset());

function options(server: FakeServer) {
  return { baseUrl: "http://ringlog.test", userId: "alice", fetch: server.fetch as typeof fetch, WebSocket: FakeSocket };
}

describe("useDraftRealtime", () => {
  it("goes live, calls the spec's callbacks and tracks lastEventTs", async () => {
    const server = new FakeServer();
    const onSegmentAdded = vi.fn();
    const onRingPassed = vi.fn();
    const onCollaboratorAdded = vi.fn();
    const { result, unmount } = renderHook(() =>
      useDraftRealtime({ draftId: server.draftId, ...options(server), onSegmentAdded, onRingPassed, onCollaboratorAdded }));
    expect(result.current.status).toBe("offline");
    await waitFor(() => expect(FakeSocket.instances).toHaveLength(1));
    act(() => FakeSocket.last().connected(server.draftId, 1));
    expect(result.current.status).toBe("ws");
    act(() => {
      const sock = FakeSocket.last();
      sock.deliver(server.addCollaborator("bob"));
      sock.deliver(server.appendSegment("alice", "hi"));
      sock.deliver(server.passRing("alice", "bob"));
    });
    expect(onCollaboratorAdded).toHaveBeenCalledWith({ user_id: "bob", role: "contributor", joined_at: server.ts(2) }, expect.anything());
    expect(onSegmentAdded).toHaveBeenCalledWith(expect.objectContaining({ content: "hi" }), expect.anything());
    expect(onRingPassed).toHaveBeenCalledWith("alice", "bob", expect.anything());
    expect(result.current.lastEventTs).toBe(server.ts(4));
    expect(result.current.state!.seq).toBe(4);
    expect(result.current.canAppend).toBe(false);
    act(() => FakeSocket.last().drop(1006));
    expect(result.current.status).toBe("polling");
    await waitFor(() => expect(FakeSocket.instances).toHaveLength(2), { timeout: 8000 });
    expect(FakeSocket.last().since).toBe(4);
    act(() => FakeSocket.last().connected(server.draftId, 4));
    expect(result.current.status).toBe("ws");
    unmount();
  });

  it("append shows a pending segment at once; a conflict undoes it and reports the reason", async () => {
    const server = new FakeServer();
    const conflicts: string[] = [];
    const { result, unmount } = renderHook(() =>
      useDraftRealtime({ draftId: server.draftId, ...options(server), onConflict: (c) => conflicts.push(c.reason) }));
    await waitFor(() => expect(result.current.state).not.toBeNull());
    act(() => FakeSocket.last().connected(server.draftId, 1));
    server.gate = new Promise(() => undefined);
    let outcome!: Promise<unknown>;
    act(() => { outcome = result.current.append("mine"); });
    expect(result.current.state!.segments).toMatchObject([{ content: "mine", pending: true }]);
    expect(result.current.pending).toHaveLength(1);
    // bob won the race: his event takes the seq ours needed
    server.gate = null;
    act(() => FakeSocket.last().deliver(server.add("collab.draft_updated", "bob", { title: "bob's" })));
    await act(async () => { await outcome; });
    expect(conflicts).toEqual(["bob changed the draft first"]);
    expect(result.current.state!.segments).toEqual([]);
    expect(result.current.pending).toEqual([]);
    unmount();
  });

  it("passRing locks the editor at once; a new draftId clears the old draft's state", async () => {
    const server = new FakeServer();
    server.addCollaborator("bob");
    const other = new FakeServer("draft_b");
    function Page({ id }: { id: string }) {
      const rt = useDraftRealtime({ draftId: id, ...options(id === "draft_a" ? server : other) });
      return (
        <div>
          <span data-testid="title">{rt.state ? `${rt.state.id}:${rt.state.seq}` : "loading"}</span>
          <button disabled={!rt.canAppend} onClick={() => void rt.passRing("bob")}>pass</button>
        </div>
      );
    }
    const view = render(<Page id="draft_a" />);
    await waitFor(() => expect(screen.getByTestId("title").textContent).toBe("draft_a:2"));
    const button = screen.getByRole("button");
    expect(button).toHaveProperty("disabled", false);
    act(() => button.click());
    expect(button).toHaveProperty("disabled", true); // locked before any answer
    view.rerender(<Page id="draft_b" />);
    expect(screen.getByTestId("title").textContent).toBe("loading");
    await waitFor(() => expect(screen.getByTestId("title").textContent).toBe("draft_b:1"));
    view.unmount();
  });

  it("enabled: false opens nothing", () => {
    const server = new FakeServer();
    const { result } = renderHook(() => useDraftRealtime({ draftId: server.draftId, enabled: false, ...options(server) }));
    expect(result.current.status).toBe("offline");
    expect(server.requests).toEqual([]);
    expect(FakeSocket.instances).toEqual([]);
  });
});
