// ringlog.js — a dependency-free ES module that keeps a draft's state current in a browser.
//
//   import { connectDraft } from "/static/ringlog.js";
//   const handle = connectDraft("draft_…", { userId: "alice",      // or token: "<JWT>"
//     onState: (state) => render(state), onStatus: (status, why) => badge(status, why) });
//   handle.close();
//
// It loads the state with GET, then streams the WebSocket from since = state.seq, so nothing
// falls between load and subscribe. Every event, from the socket or from polling, goes through
// one SeqOrderer: each seq is applied once, in order; a hole is fetched from /events first.
// When the socket cannot open or drops, it long-polls /events (GET state every ~3 s if that
// fails too) and retries the socket with exponential backoff and full jitter, capped at 5 s
// while the page is visible (30 s while hidden). The first poll that reaches the server after
// an offline round asks without waiting and, if answered, opens the socket at once: the page is
// live again within ~3 s of the server's return, not at the end of a backoff or a long-poll.
// When the server takes the caller's access away (close 4403 after an `access_revoked` error,
// API.md "Access that changes live"), or answers 403 once the draft was loaded, it stops for
// good with status "revoked": no socket, no polling, no retry.

export const CONNECTING = "connecting";
export const LIVE = "live";
export const SYNCING = "syncing";
export const OFFLINE = "offline";
export const STOPPED = "stopped";
export const REVOKED = "revoked";

/** The close code of a socket whose user lost view access (API.md "Access that changes live"). */
export const CLOSE_ACCESS_REVOKED = 4403;

const LONG_POLL_WAIT_S = 25;
const STATE_POLL_MS = 3000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000; // while the page is hidden
const VISIBLE_BACKOFF_CAP_MS = 5000; // while it is visible: a socket retry at least every 5 s
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 50000;
const MAX_PAGES = 1000;

/** Releases events strictly as lastSeq+1, lastSeq+2, …; duplicates are dropped. */
export class SeqOrderer {
  constructor(lastSeq = 0, maxPending = 10000) {
    this.lastSeq = lastSeq;
    this.maxPending = maxPending;
    this.pending = new Map();
  }

  get hasGap() {
    return this.pending.size > 0;
  }

  /** One delivery in; the events now next in order out (maybe none). */
  offer(event) {
    const seq = event.seq;
    if (!Number.isInteger(seq) || seq <= this.lastSeq || this.pending.has(seq)) return [];
    if (seq !== this.lastSeq + 1) {
      // overflow loses nothing: the events are fetched again from lastSeq
      if (this.pending.size >= this.maxPending) this.pending.clear();
      this.pending.set(seq, event);
      return [];
    }
    const ready = [event];
    this.lastSeq = seq;
    for (let next = this.pending.get(seq + 1); next; next = this.pending.get(this.lastSeq + 1)) {
      this.pending.delete(next.seq);
      ready.push(next);
      this.lastSeq = next.seq;
    }
    return ready;
  }
}

/** The state after one event: the same rules as the server's projections/fold.py. */
export function foldEvent(state, event) {
  const d = event.data || {};
  if (event.type === "collab.draft_created") {
    if (state) throw new Error(`draft ${event.draft_id} was already created`);
    return {
      id: event.draft_id,
      title: d.title,
      description: d.description ?? "",
      creator_id: d.creator_id,
      collaborators: [],
      segments: [],
      ring_state: { current_holder_id: d.creator_id, holders_history: [d.creator_id] },
      archived: false,
      seq: event.seq,
      created_at: event.ts,
      updated_at: event.ts,
    };
  }
  if (!state || event.draft_id !== state.id || event.seq !== state.seq + 1) {
    throw new Error(`event ${event.draft_id}#${event.seq} cannot follow seq ${state && state.seq}`);
  }
  const next = { ...state, seq: event.seq, updated_at: event.ts };
  switch (event.type) {
    case "collab.segment_added":
      next.segments = [...state.segments, { ...d.segment }];
      break;
    case "collab.ring_passed":
      next.ring_state = {
        current_holder_id: d.current_holder_id,
        holders_history: [...d.holders_history],
      };
      break;
    case "collab.collaborator_added":
      next.collaborators = [
        ...state.collaborators,
        { user_id: d.collaborator_id, role: d.role, joined_at: d.joined_at },
      ];
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
        c.user_id === d.collaborator_id ? { ...c, role: d.to_role } : c);
      break;
    case "collab.draft_archived":
      next.archived = true;
      break;
    case "collab.draft_unarchived":
      next.archived = false;
      break;
    default: // a type from a newer server only advances seq
  }
  return next;
}

/** Full jitter: a random delay in [0, min(cap, base·2^attempt)] milliseconds. */
export function backoffDelay(attempt, { base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS, random = Math.random } = {}) {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/** An error answer from the API, with its HTTP status and contract code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(token, userId) {
  if (token) return { Authorization: `Bearer ${token}` };
  if (userId) return { "X-User-Id": userId };
  throw new Error("connectDraft needs a token or a userId");
}

function retryAfterMs(response) {
  const raw = response.headers.get("Retry-After");
  const seconds = raw === null ? NaN : Number(raw);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 0;
}

// The socket's backoff cap now: short while someone is looking at the page.
function backoffCap() {
  const hidden = typeof document !== "undefined" && document.visibilityState === "hidden";
  return hidden ? BACKOFF_CAP_MS : VISIBLE_BACKOFF_CAP_MS;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Follow a draft. Options: baseUrl (default: this page's origin), token or userId, since
 * (skip the initial GET and start after this seq; pass state too to keep folding), getToken
 * (async, called on close 4401 for a fresh token), onEvent(event, state), onState(state),
 * onStatus(status, detail) with status one of connecting/live/syncing/offline/stopped/revoked;
 * detail is null or { code, message }. "stopped" and "revoked" are final: nothing reconnects.
 * "revoked" (detail.code "access_revoked", or "forbidden" when a 403 comes after the draft was
 * loaded) means the caller lost view access while following it (API.md "Access that changes live").
 * Returns { close(), state, status, lastSeq }.
 */
export function connectDraft(draftId, options = {}) {
  const baseUrl = (options.baseUrl ?? window.location.origin).replace(/\/+$/, "");
  const wsBase = baseUrl.replace(/^http/, "ws");
  const draftPath = `/v1/collab/drafts/${encodeURIComponent(draftId)}`;
  let token = options.token ?? null;
  const userId = options.userId ?? null;
  authHeaders(token, userId);

  let state = options.state ?? null;
  let orderer = null;
  let status = null;
  let closed = false;
  let ws = null;
  let attempt = 0;
  let serverRetryAfter = 0;
  let reconnectTimer = null;
  let pingTimer = null;
  let pollAbort = null;
  let polling = false;
  let fillingGap = false;
  let admitted = false; // the server let us read this draft at least once
  const lifetime = new AbortController();

  function setStatus(next, detail = null) {
    if (next === status && detail === null) return;
    status = next;
    options.onStatus?.(next, detail);
  }

  async function api(path, signal) {
    const response = await fetch(baseUrl + path, {
      headers: authHeaders(token, userId),
      cache: "no-store",
      signal: signal ?? lifetime.signal,
    });
    serverRetryAfter = Math.max(serverRetryAfter, retryAfterMs(response));
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(response.status, err.code ?? "http_error", err.message ?? `HTTP ${response.status}`);
    }
    admitted = true;
    return body;
  }

  const isFatal = (e) => e instanceof ApiError && [400, 401, 403, 404].includes(e.status);

  function stop(code, message) {
    if (closed) return;
    shutdown();
    setStatus(STOPPED, { code, message });
  }

  function revoke(code, message) {
    if (closed) return;
    shutdown();
    setStatus(REVOKED, { code, message });
  }

  // a 403 once the draft was loaded: access was taken away while no socket was listening
  function refused(e) {
    if (e.status === 403 && admitted) return revoke(e.code, e.message);
    return stop(e.code, e.message);
  }

  function shutdown() {
    closed = true;
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", onVisible);
    lifetime.abort();
    clearTimeout(reconnectTimer);
    clearInterval(pingTimer);
    pollAbort?.abort();
    if (ws) {
      const sock = ws;
      ws = null;
      sock.close(1000);
    }
  }

  function applyEvents(events) {
    let changed = false;
    for (const raw of events) {
      for (const event of orderer.offer(raw)) {
        if (state !== null || event.type === "collab.draft_created") state = foldEvent(state, event);
        changed = true;
        options.onEvent?.(event, state);
      }
    }
    if (changed && state !== null) options.onState?.(state);
    if (orderer.hasGap) fillGap();
  }

  async function fillGap() {
    if (fillingGap) return;
    fillingGap = true;
    try {
      for (let page = 0; page < MAX_PAGES && orderer.hasGap && !closed; page++) {
        const body = await api(`${draftPath}/events?since=${orderer.lastSeq}&limit=1000`);
        if (body.data.length === 0) break;
        applyEvents(body.data);
      }
    } catch {
      // polling or the next socket fills it from lastSeq
    } finally {
      fillingGap = false;
    }
  }

  function adoptState(fresh) {
    // the fallback of the fallback: a whole state newer than ours replaces it (nothing is re-applied)
    if (fresh.seq <= orderer.lastSeq) return;
    state = fresh;
    orderer = new SeqOrderer(fresh.seq);
    options.onState?.(state);
  }

  const isLive = () => status === LIVE && ws !== null;

  // The server answers again (a poll got through after an offline round): try the socket now
  // instead of at the end of its backoff.
  function serverBack() {
    if (closed || ws || !orderer) return;
    attempt = 0;
    openSocket();
  }

  // A page that becomes visible again retries a waiting socket at once.
  function onVisible() {
    if (document.visibilityState === "visible" && reconnectTimer !== null) serverBack();
  }
  if (typeof document !== "undefined") document.addEventListener("visibilitychange", onVisible);

  function openSocket() {
    if (closed || ws) return;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const query = new URLSearchParams({ since: String(orderer.lastSeq) });
    if (token) query.set("access_token", token);
    else query.set("user_id", userId);
    const sock = new WebSocket(`${wsBase}/v1/ws/drafts/${encodeURIComponent(draftId)}?${query}`);
    ws = sock;
    let lastError = null;
    let heardAt = Date.now();
    sock.onmessage = (message) => {
      if (ws !== sock) return;
      heardAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(message.data);
      } catch {
        return;
      }
      if (msg.type === "connected") {
        admitted = true;
        attempt = 0;
        serverRetryAfter = 0;
        pollAbort?.abort();
        setStatus(LIVE);
      } else if (msg.type === "error") {
        lastError = msg;
      } else if (typeof msg.type === "string" && msg.type.startsWith("collab.")) {
        applyEvents([msg]);
      }
    };
    sock.onclose = (event) => {
      if (ws !== sock) return;
      ws = null;
      clearInterval(pingTimer);
      if (!closed) socketClosed(event.code, lastError, event.reason);
    };
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (ws !== sock || sock.readyState !== WebSocket.OPEN) return;
      if (Date.now() - heardAt > SILENCE_LIMIT_MS) sock.close(4000, "silent"); // half-open: resume
      else sock.send(JSON.stringify({ type: "ping" }));
    }, PING_EVERY_MS);
  }

  function socketClosed(code, lastError, reason) {
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
        (fresh) => { token = fresh; openSocket(); },
        (e) => stop("token_expired", String(e)),
      );
      return undefined;
    }
    // 1001 server going away, 1013 too slow, 1006 never opened or dropped: resume from lastSeq
    if (status === LIVE || status === CONNECTING) setStatus(SYNCING); // else polling already knows
    poll();
    const delay = Math.max(backoffDelay(attempt++, { cap: backoffCap() }), Math.min(serverRetryAfter, BACKOFF_CAP_MS));
    serverRetryAfter = 0;
    reconnectTimer = setTimeout(openSocket, delay);
    return undefined;
  }

  async function poll() {
    if (polling) return;
    polling = true;
    let offline = false; // the last round reached no server: the next one asks without waiting
    try {
      for (let round = 0; !closed && !isLive() && round < 1e6; round++) {
        const abort = new AbortController();
        pollAbort = abort;
        try {
          const wait = offline ? 0 : LONG_POLL_WAIT_S;
          const body = await api(`${draftPath}/events?since=${orderer.lastSeq}&wait=${wait}&limit=1000`, abort.signal);
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
          const body = await api(draftPath, abort.signal);
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
    return undefined;
  }

  async function start() {
    setStatus(CONNECTING);
    if (Number.isInteger(options.since)) {
      orderer = new SeqOrderer(options.since);
    } else {
      for (let tries = 0; !closed; tries++) {
        try {
          state = (await api(draftPath)).data;
          break;
        } catch (e) {
          if (closed) return;
          if (isFatal(e)) return refused(e);
          setStatus(OFFLINE);
          await sleep(Math.max(backoffDelay(tries, { cap: backoffCap() }), serverRetryAfter), lifetime.signal);
        }
      }
      if (closed) return;
      orderer = new SeqOrderer(state.seq);
      options.onState?.(state);
    }
    openSocket();
  }

  start();
  return {
    close: () => { if (!closed) shutdown(); },
    get state() { return state; },
    get status() { return status; },
    get lastSeq() { return orderer ? orderer.lastSeq : null; },
  };
}
