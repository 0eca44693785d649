/**
 * One `/v1/ws` socket for every draft a page follows (API.md v2 "One socket, many drafts"), and
 * the caller's own feed on the same socket (v2 "The caller's own feed").
 *
 * `createSocketHub()` returns a {@link SocketHub} whose `WebSocket` is a socket factory for
 * {@link connectDraft}: each "per-draft socket" connectDraft opens (`/v1/ws/drafts/{id}?since=N`)
 * becomes a *channel*, one `subscribe` on the hub's single real socket, and speaks the per-draft
 * socket's protocol back to connectDraft:
 *
 * | on `/v1/ws` | the channel says (per-draft socket, API.md "WebSocket") |
 * |---|---|
 * | `subscribed` {draft_id, head_seq} | `connected` {draft_id, user_id, ts, head_seq} |
 * | events, `presence_sync`, `presence` of the draft | the same message |
 * | `pong` | `pong` (to every channel: the one socket is alive) |
 * | `error` {code, draft_id} | the error, then a close: `access_revoked` 4403, `not_found` 4404, `invalid_since` 4400, `forbidden` / `too_many_subscriptions` 1008, anything else 1011 (resume) |
 * | the real socket closes with code C (after an `error` without draft_id) | that error, then close C, on every channel |
 *
 * So connectDraft's whole behaviour — load, resume from its last seq, the long-poll/GET fallback,
 * the reconnect cadence, ping/silence detection, revocation, statuses — holds unchanged for each
 * draft, while the page opens one socket. A channel closed with 4000 ("silent": connectDraft
 * heard nothing, not even a pong) means the shared socket is half-open: the hub drops it and every
 * channel resumes. The hub reopens the socket when a channel asks for it (connectDraft's own
 * backoff) and, while the feed is followed, on its own backoff (full jitter, capped at 5 s while
 * the page is visible, 30 s while hidden), asking `GET /v1/me/events` once before each attempt so
 * the feed also moves while sockets cannot open. Feed items are delivered once each, in position
 * order (a position at or below the last one delivered is dropped), resuming after a reconnect
 * from the last position. A draft is followed by at most one channel per hub: a second channel
 * for the same draft is refused (`error` `already_followed`, close 1008: connectDraft stops).
 */
import { RestClient, backoffDelay } from "./api.js";
import type { SocketFactory, SocketLike } from "./connection.js";
import type { Credentials, FeedItem } from "./types.js";

export type HubStatus = "connecting" | "live" | "offline" | "closed";

export interface SocketHubOptions extends Credentials {
  /** Default: this page's origin. */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** The real WebSocket constructor (default: the global). */
  WebSocket?: SocketFactory;
  isVisible?: () => boolean;
  onStatus?: (status: HubStatus) => void;
  /**
   * Where the browser's `offline` / `online` events fire (default: the window; null: ignore
   * them). On `offline` the shared socket is dropped at once (every channel resumes, as
   * connectDraft does with its own socket); on `online` a waiting reconnect is tried at once.
   */
  network?: EventTarget | null;
}

/** The caller's feed as followed on a hub. */
export interface FeedFollow {
  unsubscribe(): void;
  /** The last position delivered (0 before any). */
  readonly lastPosition: number;
}

export interface SocketHub {
  /** A socket factory for connectDraft's `WebSocket` option: every draft rides the one socket. */
  readonly WebSocket: SocketFactory;
  readonly status: HubStatus;
  /** How many real sockets the hub has opened so far (one, unless it had to reconnect). */
  readonly socketsOpened: number;
  /** Follow the caller's own feed after `after` (each item once, in position order). */
  subscribeMe(onItem: (item: FeedItem) => void, after?: number): FeedFollow;
  /** Close the socket and every channel (channels get no close event: close their drafts first). */
  close(): void;
}

const BACKOFF_CAP_VISIBLE_MS = 5000;
const BACKOFF_CAP_HIDDEN_MS = 30000;
const FEED_PAGE_LIMIT = 500;

/** Close codes of the per-draft socket for a `/v1/ws` refusal of one draft (API.md "WebSocket"). */
function closeCodeFor(code: string): number {
  switch (code) {
    case "access_revoked": return 4403;
    case "not_found": return 4404;
    case "invalid_since": return 4400;
    case "forbidden":
    case "unauthorized":
    case "too_many_subscriptions":
    case "already_followed": return 1008;
    default: return 1011; // unavailable, internal_error: the draft resumes
  }
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Open (lazily) one `/v1/ws` socket shared by every draft and the feed; see the module doc. */
export function createSocketHub(options: SocketHubOptions = {}): SocketHub {
  const origin = (globalThis as { location?: Location }).location?.origin ?? "";
  const baseUrl = (options.baseUrl ?? origin).replace(/\/+$/, "");
  const Real: SocketFactory = options.WebSocket ?? (globalThis.WebSocket as unknown as SocketFactory);
  const isVisible = options.isVisible ?? (() => (globalThis as { document?: Document }).document?.visibilityState !== "hidden");
  const rest = new RestClient({ baseUrl, token: options.token, userId: options.userId, fetch: options.fetch, retries: 0 });
  const channels = new Map<string, Channel>();
  let ws: SocketLike | null = null;
  let open = false; // `connected` heard on ws
  let lastError: Json | null = null;
  let status: HubStatus = "connecting";
  let opened = 0;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let feed: { onItem: (item: FeedItem) => void; lastPosition: number } | null = null;
  let feedFetching = false;

  function setStatus(next: HubStatus): void {
    if (status === next || status === "closed") return;
    status = next;
    options.onStatus?.(next);
  }

  function send(msg: object): void {
    if (ws && open && ws.readyState === 1) ws.send(JSON.stringify(msg));
  }

  function deliverFeed(item: FeedItem): void {
    if (!feed || item.position <= feed.lastPosition) return;
    feed.lastPosition = item.position;
    feed.onItem(item);
  }

  /** While the socket is down: the feed from `GET /v1/me/events` (one fetch loop at a time). */
  async function fetchFeed(): Promise<void> {
    if (!feed || feedFetching) return;
    feedFetching = true;
    try {
      for (let page = 0; page < 100 && feed && !open; page++) {
        const body = await rest.request<{ data: FeedItem[]; last_position: number }>(
          "GET", `/v1/me/events?after=${feed.lastPosition}&limit=${FEED_PAGE_LIMIT}`);
        for (const item of body.data) deliverFeed(item);
        if (body.data.length < FEED_PAGE_LIMIT) break;
      }
    } catch {
      // the server is away too: the next attempt asks again
    } finally {
      feedFetching = false;
    }
  }

  class Channel implements SocketLike {
    readyState = 0;
    onmessage: ((message: { data: unknown }) => void) | null = null;
    onclose: ((event: { code: number; reason: string }) => void) | null = null;
    readonly draftId: string;
    readonly since: number | null;

    constructor(url: string) {
      const parsed = new URL(url, "http://hub.invalid");
      const match = parsed.pathname.match(/\/v1\/ws\/drafts\/([^/]+)$/);
      this.draftId = match ? decodeURIComponent(match[1]!) : "";
      const since = parsed.searchParams.get("since");
      this.since = since !== null && /^\d+$/.test(since) ? Number(since) : null;
      if (status === "closed" || !match) {
        queueMicrotask(() => finish(this, 1006, status === "closed" ? "the hub is closed" : "not a draft socket"));
        return;
      }
      const other = channels.get(this.draftId);
      if (other && other.readyState !== 3) {
        queueMicrotask(() => {
          this.emit({ type: "error", code: "already_followed", message: "this page already follows the draft", draft_id: this.draftId });
          finish(this, 1008, "already_followed");
        });
        return;
      }
      channels.set(this.draftId, this);
      if (open) subscribe(this);
      else ensureOpen();
    }

    emit(msg: Json): void {
      if (this.readyState !== 3) this.onmessage?.({ data: JSON.stringify(msg) });
    }

    send(data: string): void {
      let msg: Json;
      try { msg = JSON.parse(data) as Json; } catch { return; }
      if (this.readyState !== 1) return;
      if (msg.type === "ping") send({ type: "ping" }); // the pong goes to every channel
      else if (msg.type === "presence") send({ type: "presence", draft_id: this.draftId, state: msg.state });
    }

    close(code = 1000): void {
      if (this.readyState === 3) return;
      const subscribed = this.readyState === 1 || open;
      this.readyState = 3;
      if (channels.get(this.draftId) === this) channels.delete(this.draftId);
      if (code === 4000 && ws) {
        // connectDraft heard nothing, not even a pong: the shared socket is half-open
        const sock = ws;
        dropped(sock, 1006, "silent");
        sock.close(4000, "silent");
        return;
      }
      if (subscribed) send({ type: "unsubscribe", draft_id: this.draftId });
    }
  }

  /** End a channel: no more messages; connectDraft hears the close. */
  function finish(ch: Channel, code: number, reason: string): void {
    if (ch.readyState === 3) return;
    ch.readyState = 3;
    if (channels.get(ch.draftId) === ch) channels.delete(ch.draftId);
    ch.onclose?.({ code, reason });
  }

  function subscribe(ch: Channel): void {
    send(ch.since === null ? { type: "subscribe", draft_id: ch.draftId } : { type: "subscribe", draft_id: ch.draftId, since: ch.since });
  }

  function ensureOpen(): void {
    if (ws || status === "closed") return;
    if (timer) clearTimeout(timer);
    timer = null;
    const query = new URLSearchParams();
    if (options.token) query.set("access_token", options.token);
    else query.set("user_id", options.userId ?? "");
    const sock = new Real(`${baseUrl.replace(/^http/, "ws")}/v1/ws?${query}`);
    ws = sock;
    open = false;
    opened++;
    sock.onmessage = (message) => {
      if (ws !== sock) return;
      let msg: Json;
      try { msg = JSON.parse(String(message.data)) as Json; } catch { return; }
      const ch = typeof msg.draft_id === "string" ? channels.get(msg.draft_id) : undefined;
      switch (msg.type) {
        case "connected":
          open = true;
          attempt = 0;
          setStatus("live");
          for (const c of channels.values()) subscribe(c);
          if (feed) send({ type: "subscribe_me", after: feed.lastPosition });
          return;
        case "subscribed":
          if (ch && ch.readyState === 0) {
            ch.readyState = 1;
            ch.emit({ type: "connected", draft_id: ch.draftId, user_id: msg.user_id ?? options.userId ?? null, ts: msg.ts ?? new Date().toISOString(), head_seq: msg.head_seq });
          }
          return;
        case "pong":
          for (const c of channels.values()) if (c.readyState === 1) c.emit(msg);
          return;
        case "me":
          deliverFeed({ position: msg.position, event: msg.event });
          return;
        case "error":
          if (ch) {
            ch.emit(msg);
            finish(ch, closeCodeFor(String(msg.code)), String(msg.code));
          } else if (typeof msg.draft_id !== "string") {
            lastError = msg; // a socket-level error: its close follows
          }
          return;
        default:
          if (ch && ch.readyState === 1 && typeof msg.type === "string") ch.emit(msg);
      }
    };
    sock.onclose = (event) => {
      if (ws === sock) dropped(sock, event.code, event.reason);
    };
  }

  /** The real socket is gone: every channel hears why (connectDraft resumes or stops). */
  function dropped(sock: SocketLike, code: number, reason: string): void {
    if (ws !== sock) return;
    ws = null;
    open = false;
    const error = lastError;
    lastError = null;
    for (const ch of [...channels.values()]) {
      if (error) ch.emit(error);
      finish(ch, code, reason);
    }
    if (status === "closed") return;
    setStatus("offline");
    scheduleFeedReconnect(code, error);
  }

  function scheduleFeedReconnect(code: number, error: Json | null): void {
    if (!feed || timer || status === "closed") return;
    if (code === 4401 || (code === 1008 && error?.code !== "rate_limited")) return; // new credentials needed
    const cap = isVisible() ? BACKOFF_CAP_VISIBLE_MS : BACKOFF_CAP_HIDDEN_MS;
    timer = setTimeout(() => {
      timer = null;
      void fetchFeed();
      ensureOpen();
    }, backoffDelay(attempt++, { cap }));
  }

  // a page shown again retries a socket waiting out a hidden-page backoff at once
  const doc = (globalThis as { document?: Document }).document;
  const onVisible = (): void => {
    if (isVisible() && timer !== null) {
      clearTimeout(timer);
      timer = null;
      ensureOpen();
    }
  };
  doc?.addEventListener("visibilitychange", onVisible);

  // the browser says the network is gone: the socket may still look open (no close frame can
  // arrive), so drop it now rather than wait for a ping to time out
  const network = options.network !== undefined
    ? options.network
    : typeof (globalThis as { addEventListener?: unknown }).addEventListener === "function" ? (globalThis as unknown as EventTarget) : null;
  const onOffline = (): void => {
    const sock = ws;
    if (!sock) return;
    dropped(sock, 1006, "offline");
    sock.close(1000, "offline");
  };
  network?.addEventListener("offline", onOffline);
  network?.addEventListener("online", onVisible);

  return {
    WebSocket: Channel as unknown as SocketFactory,
    get status() { return status; },
    get socketsOpened() { return opened; },
    subscribeMe(onItem, after = 0) {
      const follow = { onItem, lastPosition: after };
      feed = follow;
      if (open) send({ type: "subscribe_me", after });
      else ensureOpen();
      return {
        unsubscribe: () => { if (feed === follow) feed = null; },
        get lastPosition() { return follow.lastPosition; },
      };
    },
    close() {
      status = "closed";
      if (timer) clearTimeout(timer);
      timer = null;
      doc?.removeEventListener("visibilitychange", onVisible);
      network?.removeEventListener("offline", onOffline);
      network?.removeEventListener("online", onVisible);
      for (const ch of [...channels.values()]) ch.readyState = 3;
      channels.clear();
      const sock = ws;
      ws = null;
      open = false;
      sock?.close(1000);
    },
  };
}
