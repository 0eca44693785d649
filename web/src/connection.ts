/**
 * connectDraft: keeps one draft's state current, over its per-draft socket
 * (`/v1/ws/drafts/{id}?since=N`) with a long-poll/GET fallback, and carries the user's
 * optimistic writes (see writer.ts) and offline outbox (outbox.ts).
 *
 * It loads the state with GET, then streams the socket from since = state.seq, so nothing
 * falls between load and subscribe. Every event, from the socket, from polling or from a gap
 * fetch, goes through one SeqOrderer: each seq is folded once, in order; a hole is fetched from
 * `/events` first. When the socket cannot open or drops, it long-polls `/events` (a GET of the
 * state every ~3 s if that fails too) and retries the socket with full-jitter backoff, capped at
 * 5 s while the page is visible (30 s while hidden; a page shown again retries at once). The
 * first poll that reaches the server after an offline round asks without waiting and, if
 * answered, opens the socket at once: live again within ~3 s of the server's return. When the server takes the
 * caller's access away (close 4403 after `access_revoked`, API.md "Access that changes live"),
 * or answers 403 once the draft was loaded, it stops for good with status "revoked".
 */
import { ApiError, RestClient, backoffDelay, sleep } from "./api.js";
import { SeqOrderer, foldEvent } from "./fold.js";
import { MemoryOutbox, type Outbox, type PendingOp } from "./outbox.js";
import type { Credentials, DraftEvent, DraftState, ErrorMessage, PresenceMember } from "./types.js";
import { OptimisticWriter, type Conflict, type Outcome, type ViewState } from "./writer.js";

export const CONNECTING = "connecting";
export const LIVE = "live";
export const SYNCING = "syncing";
export const OFFLINE = "offline";
export const STOPPED = "stopped";
export const REVOKED = "revoked";

/** The connection's status; "stopped" and "revoked" are final. */
export type ConnectionStatus = "connecting" | "live" | "syncing" | "offline" | "stopped" | "revoked";
/** The spec's three-state badge (SPEC-phase-6.2 "Status Indicator"). */
export type RealtimeStatus = "ws" | "polling" | "offline";

/** live → "ws", syncing → "polling", anything else → "offline". */
export function realtimeStatus(status: ConnectionStatus | null): RealtimeStatus {
  return status === LIVE ? "ws" : status === SYNCING ? "polling" : "offline";
}

/** The close code of a socket whose user lost view access (API.md "Access that changes live"). */
export const CLOSE_ACCESS_REVOKED = 4403;

const LONG_POLL_WAIT_S = 25;
const STATE_POLL_MS = 3000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_VISIBLE_MS = 5000;
const BACKOFF_CAP_HIDDEN_MS = 30000;
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 50000;
const MAX_PAGES = 1000;
const STATE_SAVE_MS = 1000;

export interface StatusDetail { code: string; message: string }

/** The WebSocket constructor shape used (tests pass a fake). */
export interface SocketLike {
  readyState: number;
  onmessage: ((message: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onopen?: ((event: unknown) => void) | null;
  onerror?: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketFactory = new (url: string) => SocketLike;

export interface ConnectOptions extends Credentials {
  /** Default: this page's origin. */
  baseUrl?: string;
  /** Skip the initial GET and start after this seq (pass `state` too to keep folding). */
  since?: number;
  state?: DraftState | null;
  /** Called on close 4401 for a fresh token. */
  getToken?: () => Promise<string> | string;
  /** Every event, once, in seq order, with the confirmed state after it. */
  onEvent?: (event: DraftEvent, state: DraftState | null) => void;
  /** The confirmed state (only events folded; no pending operation). */
  onState?: (state: DraftState) => void;
  /** The view: the confirmed state with pending operations on top. */
  onView?: (view: ViewState) => void;
  onStatus?: (status: ConnectionStatus, detail: StatusDetail | null) => void;
  /** Presence on the draft (v2 "Presence"): the whole member list after each change. */
  onPresence?: (members: PresenceMember[]) => void;
  /** An optimistic operation was rolled back. */
  onConflict?: (conflict: Conflict) => void;
  /** The pending operations changed. */
  onPending?: (pending: PendingOp[]) => void;
  /** Where pending operations persist (default: in memory; pass an IndexedDbOutbox to survive reloads). */
  outbox?: Outbox;
  /** The fetch and WebSocket to use (default: the globals). */
  fetch?: typeof fetch;
  WebSocket?: SocketFactory;
  /** Whether the page is visible (default: document.visibilityState). */
  isVisible?: () => boolean;
  /**
   * Where the browser's `offline` / `online` events fire (default: the window; null: ignore them).
   * A browser that goes offline often leaves its open socket looking alive until a ping times out,
   * so on `offline` the socket is dropped at once (status "offline", writes queue); on `online`
   * it is retried at once.
   */
  network?: EventTarget | null;
}

/** What connectDraft returns. */
export interface DraftConnection {
  close(): void;
  readonly state: DraftState | null;
  readonly view: ViewState | null;
  readonly status: ConnectionStatus | null;
  readonly lastSeq: number | null;
  readonly pending: PendingOp[];
  readonly presence: PresenceMember[];
  /** The user the optimistic writes are made as (from the credentials, or the socket's `connected`). */
  readonly userId: string | null;
  /** Optimistic append: in the view at once, settled by its own event or rolled back. */
  append(content: string): Promise<Outcome>;
  /** Optimistic ring pass: the view's ring moves at once (the editor locks). */
  passRing(toUserId: string): Promise<Outcome>;
  /** Set the caller's presence state on the draft (sent on the socket when live). */
  setPresence(state: Record<string, unknown>): void;
  readonly rest: RestClient;
}

/** The `sub` of a JWT, without checking it (the server checks). */
export function tokenSubject(token: string | null | undefined): string | null {
  if (!token) return null;
  try {
    const part = token.split(".")[1] ?? "";
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : null;
  } catch {
    return null;
  }
}

/**
 * Follow a draft. See {@link ConnectOptions}; statuses: connecting, live, syncing, offline,
 * stopped, revoked (detail null or `{code, message}`). "stopped" and "revoked" are final.
 */
export function connectDraft(draftId: string, options: ConnectOptions = {}): DraftConnection {
  const origin = (globalThis as { location?: Location }).location?.origin ?? "";
  const baseUrl = (options.baseUrl ?? origin).replace(/\/+$/, "");
  const wsBase = baseUrl.replace(/^http/, "ws");
  const rest = new RestClient({ baseUrl, token: options.token, userId: options.userId, fetch: options.fetch, retries: 0 });
  const Socket: SocketFactory = options.WebSocket ?? (globalThis.WebSocket as unknown as SocketFactory);
  const isVisible = options.isVisible ?? (() => (globalThis as { document?: Document }).document?.visibilityState !== "hidden");
  let token = options.token ?? null;
  const userId = options.userId ?? tokenSubject(token);

  let state: DraftState | null = options.state ?? null;
  let orderer: SeqOrderer | null = null;
  let status: ConnectionStatus | null = null;
  let closed = false;
  let ws: SocketLike | null = null;
  let attempt = 0;
  let serverRetryAfter = 0;
  let reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  let pingTimer: ReturnType<typeof setInterval> | null = null;
  let pollAbort: AbortController | null = null;
  let polling = false;
  let fillingGap = false;
  let admitted = false; // the server let us read this draft at least once
  let presence = new Map<string, PresenceMember>();
  let myPresence: Record<string, unknown> | null = null;
  const lifetime = new AbortController();

  const outbox: Outbox = options.outbox ?? new MemoryOutbox();
  let saveTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * Keep the confirmed state for a reload while offline (at most once a second). A page that
   * unloads never calls close(), so a save still waiting on its timer would be lost: it is written
   * at once when a write is queued (the write must find the state it follows after a reload), when
   * the browser goes offline and when the page is hidden (a reload or a tab switch may follow).
   */
  function scheduleSave(): void {
    if (!userId || !outbox.saveState || saveTimer !== null || closed) return;
    saveTimer = setTimeout(saveNow, STATE_SAVE_MS);
  }
  function saveNow(): void {
    if (saveTimer !== null) clearTimeout(saveTimer);
    saveTimer = null;
    if (userId && state && outbox.saveState) void outbox.saveState(userId, draftId, state).catch(() => undefined);
  }

  /** Write a save still waiting on its timer now (see scheduleSave). */
  function flushSave(): void {
    if (saveTimer !== null) saveNow();
  }

  const writerRest = new RestClient({ baseUrl, token: options.token, userId: options.userId, fetch: options.fetch, retries: 2 });
  const writer = userId
    ? new OptimisticWriter({
        rest: writerRest,
        draftId,
        userId,
        outbox,
        onChange: () => { flushSave(); options.onPending?.(writer!.pending); emitView(); },
        onConflict: (c) => options.onConflict?.(c),
        online: () => status !== OFFLINE && status !== STOPPED && status !== REVOKED,
      })
    : null;

  function view(): ViewState | null {
    if (!state) return null;
    return writer ? writer.view(state) : { ...state, pendingCount: 0 };
  }

  function emitView(): void {
    const v = view();
    if (v) options.onView?.(v);
  }

  function setStatus(next: ConnectionStatus, detail: StatusDetail | null = null): void {
    if (next === status && detail === null) return;
    status = next;
    options.onStatus?.(next, detail);
    if (next === LIVE || next === SYNCING) writer?.kick();
  }

  async function api<T>(path: string, signal?: AbortSignal): Promise<T> {
    try {
      const body = await rest.request<T>("GET", path, { signal: signal ?? lifetime.signal });
      admitted = true;
      return body;
    } catch (e) {
      if (e instanceof ApiError) serverRetryAfter = Math.max(serverRetryAfter, e.retryAfterMs);
      throw e;
    }
  }

  const isFatal = (e: unknown): e is ApiError => e instanceof ApiError && [400, 401, 403, 404].includes(e.status);

  function stop(code: string, message: string): void {
    if (closed) return;
    shutdown();
    setStatus(STOPPED, { code, message });
  }

  function revoke(code: string, message: string): void {
    if (closed) return;
    writer?.abandon(code, "you no longer have access to this draft");
    shutdown();
    setStatus(REVOKED, { code, message });
  }

  // a 403 once the draft was loaded: access was taken away while no socket was listening
  function refused(e: ApiError): void {
    if (e.status === 403 && admitted) return revoke(e.code, e.message);
    return stop(e.code, e.message);
  }

  function shutdown(): void {
    flushSave();
    closed = true;
    writer?.close();
    lifetime.abort();
    if (reconnectTimer) clearTimeout(reconnectTimer);
    if (pingTimer) clearInterval(pingTimer);
    pollAbort?.abort();
    if (ws) {
      const sock = ws;
      ws = null;
      sock.close(1000);
    }
  }

  function applyEvents(events: DraftEvent[]): void {
    if (!orderer) return;
    let changed = false;
    for (const raw of events) {
      for (const event of orderer.offer(raw)) {
        if (state !== null || event.type === "collab.draft_created") state = foldEvent(state, event);
        changed = true;
        if (state) writer?.setState(state);
        writer?.observe(event);
        options.onEvent?.(event, state);
      }
    }
    if (changed && state !== null) {
      options.onState?.(state);
      emitView();
      scheduleSave();
    }
    if (orderer.hasGap) void fillGap();
  }

  async function fillGap(): Promise<void> {
    if (fillingGap || !orderer) return;
    fillingGap = true;
    try {
      for (let page = 0; page < MAX_PAGES && orderer.hasGap && !closed; page++) {
        const body = await api<{ data: DraftEvent[] }>(`${draftPath}/events?since=${orderer.lastSeq}&limit=1000`);
        if (body.data.length === 0) break;
        applyEvents(body.data);
      }
    } catch {
      // polling or the next socket fills it from lastSeq
    } finally {
      fillingGap = false;
    }
  }

  function adoptState(fresh: DraftState): void {
    // the fallback of the fallback: a whole state newer than ours replaces it (nothing is re-applied)
    if (!orderer || fresh.seq <= orderer.lastSeq) return;
    state = fresh;
    orderer = new SeqOrderer(fresh.seq);
    writer?.setState(fresh);
    options.onState?.(state);
    emitView();
    scheduleSave();
  }

  const draftPath = `/v1/collab/drafts/${encodeURIComponent(draftId)}`;
  const isLive = (): boolean => status === LIVE && ws !== null;

  function presenceChanged(): void {
    options.onPresence?.([...presence.values()]);
  }

  function sendPresence(): void {
    if (ws && ws.readyState === 1 && myPresence) ws.send(JSON.stringify({ type: "presence", state: myPresence }));
  }

  // The server answers again (a poll got through after an offline round): try the socket now
  // instead of at the end of its backoff.
  function serverBack(): void {
    if (closed || ws || !orderer) return;
    attempt = 0;
    openSocket();
  }

  function openSocket(): void {
    if (closed || ws || !orderer) return;
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const query = new URLSearchParams({ since: String(orderer.lastSeq) });
    if (token) query.set("access_token", token);
    else query.set("user_id", userId ?? "");
    const sock = new Socket(`${wsBase}/v1/ws/drafts/${encodeURIComponent(draftId)}?${query}`);
    ws = sock;
    let lastError: ErrorMessage | null = null;
    let heardAt = Date.now();
    sock.onmessage = (message) => {
      if (ws !== sock) return;
      heardAt = Date.now();
      let msg: { type?: unknown } & Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      try {
        msg = JSON.parse(String(message.data));
      } catch {
        return;
      }
      if (msg.type === "connected") {
        admitted = true;
        attempt = 0;
        serverRetryAfter = 0;
        pollAbort?.abort();
        setStatus(LIVE);
        sendPresence();
      } else if (msg.type === "error") {
        lastError = msg as ErrorMessage;
      } else if (msg.type === "presence_sync") {
        presence = new Map((msg.members as PresenceMember[]).map((m) => [m.user_id, m]));
        presenceChanged();
      } else if (msg.type === "presence") {
        if (msg.event === "leave") presence.delete(msg.user_id);
        else presence.set(msg.user_id, { user_id: msg.user_id, state: msg.state, since: presence.get(msg.user_id)?.since ?? msg.ts });
        presenceChanged();
      } else if (typeof msg.type === "string" && msg.type.startsWith("collab.")) {
        applyEvents([msg as DraftEvent]);
      }
    };
    sock.onclose = (event) => {
      if (ws !== sock) return;
      ws = null;
      if (pingTimer) clearInterval(pingTimer);
      if (presence.size) { presence = new Map(); presenceChanged(); }
      if (!closed) socketClosed(event.code, lastError, event.reason);
    };
    if (pingTimer) clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (ws !== sock || sock.readyState !== 1) return;
      if (Date.now() - heardAt > SILENCE_LIMIT_MS) sock.close(4000, "silent"); // half-open: resume
      else sock.send(JSON.stringify({ type: "ping" }));
    }, PING_EVERY_MS);
  }

  function socketClosed(code: number, lastError: ErrorMessage | null, reason: string): void {
    const why = lastError?.message || reason || `closed with ${code}`;
    if (code === CLOSE_ACCESS_REVOKED || lastError?.code === "access_revoked") {
      return revoke("access_revoked", lastError?.message || "you no longer have access to this draft");
    }
    if (code === 1008 && lastError?.code === "forbidden" && admitted) return revoke("forbidden", why);
    if (code === 1008 && lastError?.code !== "rate_limited") return stop(lastError?.code ?? "policy", why);
    if (code === 4404) return stop("not_found", why);
    if (code === 4400) return stop("invalid_since", why);
    if (code === 4401) {
      if (!options.getToken) return stop("token_expired", "the token expired: sign in again");
      Promise.resolve(options.getToken()).then(
        (fresh) => { token = fresh; rest.credentials = { token: fresh }; writerRest.credentials = { token: fresh }; openSocket(); },
        (e) => stop("token_expired", String(e)),
      );
      return;
    }
    // 1001 server going away, 1013 too slow, 1006 never opened or dropped: resume from lastSeq
    if (status === LIVE || status === CONNECTING) setStatus(SYNCING); // else polling already knows
    void poll();
    const cap = isVisible() ? BACKOFF_CAP_VISIBLE_MS : BACKOFF_CAP_HIDDEN_MS;
    // never sooner than the server's Retry-After (up to the hidden-page cap)
    const delay = Math.max(backoffDelay(attempt++, { base: BACKOFF_BASE_MS, cap }), Math.min(serverRetryAfter, BACKOFF_CAP_HIDDEN_MS));
    serverRetryAfter = 0;
    reconnectTimer = setTimeout(openSocket, delay);
  }

  async function poll(): Promise<void> {
    if (polling) return;
    polling = true;
    // the last round reached no server (or the page starts offline): the next one asks without
    // waiting, and once answered opens the socket at once, so a returning server shows within ~3 s
    let offline = status === OFFLINE;
    try {
      for (let round = 0; !closed && !isLive() && round < 1e6; round++) {
        const abort = new AbortController();
        pollAbort = abort;
        try {
          const wait = offline ? 0 : LONG_POLL_WAIT_S;
          const body = await api<{ data: DraftEvent[] }>(`${draftPath}/events?since=${orderer!.lastSeq}&wait=${wait}&limit=1000`, abort.signal);
          if (closed || isLive()) break;
          setStatus(SYNCING);
          applyEvents(body.data);
          if (offline) serverBack();
          offline = false;
          continue;
        } catch (e) {
          if (abort.signal.aborted) break;
          if (isFatal(e)) return refused(e);
        }
        try {
          const body = await api<{ data: DraftState }>(draftPath, abort.signal);
          if (closed || isLive()) break;
          setStatus(SYNCING);
          adoptState(body.data);
          if (offline) serverBack();
          offline = false;
        } catch (e) {
          if (abort.signal.aborted) break;
          if (isFatal(e)) return refused(e);
          setStatus(OFFLINE);
          offline = true;
        }
        await sleep(STATE_POLL_MS, abort.signal);
      }
    } finally {
      polling = false;
    }
  }

  async function cachedState(): Promise<DraftState | null> {
    if (!userId || !outbox.loadState) return null;
    try {
      const cached = await outbox.loadState(userId, draftId);
      return cached && cached.id === draftId ? cached : null;
    } catch {
      return null;
    }
  }

  async function start(): Promise<void> {
    setStatus(CONNECTING);
    if (Number.isInteger(options.since)) {
      orderer = new SeqOrderer(options.since);
    } else {
      let fromCache = false;
      for (let tries = 0; !closed; tries++) {
        try {
          state = (await api<{ data: DraftState }>(draftPath)).data;
          break;
        } catch (e) {
          if (closed) return;
          if (isFatal(e)) return refused(e);
          setStatus(OFFLINE);
          // the server is away: show the state the user last saw (with their pending writes);
          // the socket and polling then catch up from its seq, like after any drop
          const cached = tries === 0 ? await cachedState() : null;
          if (closed) return;
          if (cached) {
            state = cached;
            fromCache = true;
            break;
          }
          const cap = isVisible() ? BACKOFF_CAP_VISIBLE_MS : BACKOFF_CAP_HIDDEN_MS;
          await sleep(Math.max(backoffDelay(tries, { cap }), serverRetryAfter), lifetime.signal);
        }
      }
      // the user's earlier pending writes are part of what they see: show the draft with them
      await writer?.loaded;
      if (closed || !state) return;
      if (status === OFFLINE && !fromCache) setStatus(SYNCING); // the server answers again (the socket is next)
      orderer = new SeqOrderer(state.seq);
      writer?.setState(state);
      options.onState?.(state);
      emitView();
      if (!fromCache) scheduleSave();
    }
    openSocket();
  }

  // a page that becomes visible again retries a socket waiting out a hidden-page backoff at once
  const doc = (globalThis as { document?: Document }).document;
  const onVisible = (): void => {
    if (!isVisible()) flushSave();
    else if (reconnectTimer !== null) serverBack();
  };
  doc?.addEventListener("visibilitychange", onVisible);
  lifetime.signal.addEventListener("abort", () => doc?.removeEventListener("visibilitychange", onVisible), { once: true });

  // the browser says the network is gone: its socket may still look open (no close frame can
  // arrive), so drop it now and queue writes, rather than show "live" until a ping times out
  const network = options.network !== undefined
    ? options.network
    : typeof (globalThis as { addEventListener?: unknown }).addEventListener === "function" ? (globalThis as unknown as EventTarget) : null;
  const onOffline = (): void => {
    if (closed || !orderer) return;
    flushSave();
    setStatus(OFFLINE, { code: "offline", message: "the browser is offline" });
    const sock = ws;
    if (!sock) return;
    ws = null; // its close event, whenever it comes, is ignored
    sock.close(1000, "offline");
    if (pingTimer) clearInterval(pingTimer);
    if (presence.size) { presence = new Map(); presenceChanged(); }
    socketClosed(1006, null, "offline");
  };
  const onOnline = (): void => serverBack();
  network?.addEventListener("offline", onOffline);
  network?.addEventListener("online", onOnline);
  lifetime.signal.addEventListener("abort", () => {
    network?.removeEventListener("offline", onOffline);
    network?.removeEventListener("online", onOnline);
  }, { once: true });

  void start();
  const noWriter = (): Promise<Outcome> => Promise.reject(new Error("optimistic writes need a userId or a token with a sub"));
  return {
    close: () => { if (!closed) shutdown(); },
    get state() { return state; },
    get view() { return view(); },
    get status() { return status; },
    get lastSeq() { return orderer ? orderer.lastSeq : null; },
    get pending() { return writer ? writer.pending : []; },
    get presence() { return [...presence.values()]; },
    get userId() { return userId; },
    append: (content) => (writer ? writer.append(content) : noWriter()),
    passRing: (to) => (writer ? writer.passRing(to) : noWriter()),
    setPresence: (s) => { myPresence = s; sendPresence(); },
    rest,
  };
}
