/**
 * useDraftRealtime: the React hook of SPEC-phase-6.2 ("Frontend hook"), on connectDraft.
 *
 *   const { status, lastEventTs, state, pending, append, passRing } = useDraftRealtime({
 *     draftId, enabled: true, userId: "alice",            // or token: "<JWT>"
 *     onSegmentAdded: (segment) => …, onRingPassed: (from, to) => …,
 *     onConflict: (c) => toast(c.reason),                 // "bob appended first"
 *   });
 *
 * `state` is the view (confirmed state plus pending operations, pending segments marked
 * `pending: true`); `confirmedState` is what the server has. Callbacks may change on every
 * render without reconnecting; a change of draftId, credentials or `enabled` reconnects and
 * clears the previous draft's state at once.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  connectDraft,
  realtimeStatus,
  type ConnectOptions,
  type ConnectionStatus,
  type DraftConnection,
  type RealtimeStatus,
  type StatusDetail,
} from "./connection.js";
import type { Outbox, PendingOp } from "./outbox.js";
import type { Collaborator, DraftEvent, DraftState, PresenceMember, Segment } from "./types.js";
import type { Conflict, Outcome, ViewState } from "./writer.js";

export interface DraftRealtimeOptions {
  draftId: string | null | undefined;
  /** false: no connection (default true). */
  enabled?: boolean;
  baseUrl?: string;
  token?: string | null;
  userId?: string | null;
  getToken?: () => Promise<string> | string;
  /** Where pending operations persist (IndexedDbOutbox to survive reloads). Read once per connection. */
  outbox?: Outbox;
  onSegmentAdded?: (segment: Segment, event: DraftEvent) => void;
  onRingPassed?: (from: string, to: string, event: DraftEvent) => void;
  onCollaboratorAdded?: (collaborator: Collaborator, event: DraftEvent) => void;
  onEvent?: (event: DraftEvent, state: DraftState | null) => void;
  onConflict?: (conflict: Conflict) => void;
  /** For tests: the fetch and WebSocket to use. */
  fetch?: typeof fetch;
  WebSocket?: ConnectOptions["WebSocket"];
}

export interface DraftRealtime {
  /** The spec's badge: "ws" | "polling" | "offline". */
  status: RealtimeStatus;
  /** The connection's own status (adds connecting, stopped, revoked) and why. */
  connectionStatus: ConnectionStatus | null;
  statusDetail: StatusDetail | null;
  /** `ts` of the last event applied (or `updated_at` of a state adopted by polling). */
  lastEventTs: string | null;
  /** The view: confirmed state with pending operations on top. */
  state: ViewState | null;
  confirmedState: DraftState | null;
  pending: PendingOp[];
  presence: PresenceMember[];
  /** Whether the editor is open: the view says the user holds the ring and the draft is not archived. */
  canAppend: boolean;
  append: (content: string) => Promise<Outcome>;
  passRing: (toUserId: string) => Promise<Outcome>;
  setPresence: (state: Record<string, unknown>) => void;
}

/** Follow a draft in a React component; see the module comment. */
export function useDraftRealtime(options: DraftRealtimeOptions): DraftRealtime {
  const { draftId, enabled = true, baseUrl, token, userId } = options;
  const latest = useRef(options);
  latest.current = options;
  const conn = useRef<DraftConnection | null>(null);
  const [connectionStatus, setConnectionStatus] = useState<ConnectionStatus | null>(null);
  const [statusDetail, setStatusDetail] = useState<StatusDetail | null>(null);
  const [lastEventTs, setLastEventTs] = useState<string | null>(null);
  const [view, setView] = useState<ViewState | null>(null);
  const [confirmed, setConfirmed] = useState<DraftState | null>(null);
  const [pending, setPending] = useState<PendingOp[]>([]);
  const [presence, setPresence] = useState<PresenceMember[]>([]);

  useEffect(() => {
    setView(null);
    setConfirmed(null);
    setPending([]);
    setPresence([]);
    setLastEventTs(null);
    setConnectionStatus(null);
    setStatusDetail(null);
    if (!enabled || !draftId) return undefined;
    let live = true;
    const o = latest.current;
    const handle = connectDraft(draftId, {
      baseUrl,
      token,
      userId,
      getToken: o.getToken ? () => latest.current.getToken!() : undefined,
      outbox: o.outbox,
      fetch: o.fetch,
      WebSocket: o.WebSocket,
      onStatus: (s, detail) => { if (live) { setConnectionStatus(s); setStatusDetail(detail); } },
      onState: (s) => { if (live) { setConfirmed(s); setLastEventTs((ts) => (ts === null || s.updated_at > ts ? s.updated_at : ts)); } },
      onView: (v) => { if (live) setView(v); },
      onPending: (p) => { if (live) setPending(p); },
      onPresence: (m) => { if (live) setPresence(m); },
      onConflict: (c) => { if (live) latest.current.onConflict?.(c); },
      onEvent: (event, state) => {
        if (!live) return;
        setLastEventTs(event.ts);
        const cb = latest.current;
        cb.onEvent?.(event, state);
        const d = event.data as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
        if (event.type === "collab.segment_added") cb.onSegmentAdded?.(d.segment, event);
        else if (event.type === "collab.ring_passed") cb.onRingPassed?.(d.from_user_id, d.to_user_id, event);
        else if (event.type === "collab.collaborator_added") cb.onCollaboratorAdded?.({ user_id: d.collaborator_id, role: d.role, joined_at: d.joined_at }, event);
      },
    });
    conn.current = handle;
    return () => {
      live = false;
      if (conn.current === handle) conn.current = null;
      handle.close();
    };
  }, [draftId, enabled, baseUrl, token, userId]);

  const append = useCallback((content: string) => conn.current ? conn.current.append(content) : Promise.reject(new Error("not connected")), []);
  const passRing = useCallback((to: string) => conn.current ? conn.current.passRing(to) : Promise.reject(new Error("not connected")), []);
  const setMyPresence = useCallback((s: Record<string, unknown>) => conn.current?.setPresence(s), []);
  const me = conn.current?.userId ?? userId ?? null;
  const canAppend = !!view && !!me && view.ring_state.current_holder_id === me && !view.archived;

  return {
    status: realtimeStatus(connectionStatus),
    connectionStatus,
    statusDetail,
    lastEventTs,
    state: view,
    confirmedState: confirmed,
    pending,
    presence,
    canAppend,
    append,
    passRing,
    setPresence: setMyPresence,
  };
}
