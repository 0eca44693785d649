/**
 * The multiplexed socket `GET /v1/ws` (API.md v2 "One socket, many drafts"): one socket, many
 * draft subscriptions, presence per draft, and the caller's own feed.
 *
 * Each subscription keeps its own SeqOrderer and fold, so every draft's events are applied once,
 * in order, whatever arrives twice or early; a hole is fetched from `/events`. After any drop
 * (1001, 1013, 1006…) the socket reconnects with full-jitter backoff (capped at 5 s while
 * visible) and resubscribes each draft with its own last seq, and the feed with its last
 * position. A refusal (`forbidden`, `not_found`, `invalid_since`, `too_many_subscriptions`) or
 * `access_revoked` ends only that subscription (its `onEnd` says why).
 */
import { RestClient, backoffDelay } from "./api.js";
import { SeqOrderer, foldEvent } from "./fold.js";
import type { Credentials, DraftEvent, DraftState, FeedItem, PresenceMember } from "./types.js";
import type { SocketFactory, SocketLike } from "./connection.js";

export interface SubscriptionHandlers {
  /** Each event once, in seq order, with the folded state (null when the subscription started without one). */
  onEvent?: (event: DraftEvent, state: DraftState | null) => void;
  onPresence?: (members: PresenceMember[]) => void;
  /** The subscription ended for good (refused or revoked); the socket stays open. */
  onEnd?: (code: string, message: string) => void;
}

export interface Subscription {
  readonly draftId: string;
  readonly lastSeq: number;
  readonly state: DraftState | null;
  readonly presence: PresenceMember[];
  setPresence(state: Record<string, unknown>): void;
  unsubscribe(): void;
}

export interface MultiplexOptions extends Credentials {
  baseUrl?: string;
  fetch?: typeof fetch;
  WebSocket?: SocketFactory;
  onStatus?: (status: "connecting" | "live" | "offline") => void;
  isVisible?: () => boolean;
  /**
   * Where the browser's `offline` / `online` events fire (default: the window; null: ignore
   * them). On `offline` the socket is dropped at once (an open socket can look alive long after
   * the network went), on `online` it is retried at once, as connectDraft does.
   */
  network?: EventTarget | null;
}

export interface MultiplexConnection {
  readonly status: "connecting" | "live" | "offline" | "closed";
  /** Follow a draft from `since` (with `state` at that seq, to fold), or from its head. */
  subscribe(draftId: string, handlers: SubscriptionHandlers, from?: { since: number; state?: DraftState | null }): Subscription;
  /** Follow the caller's own feed after `after` (v2 "The caller's own feed"). */
  subscribeMe(onItem: (item: FeedItem) => void, after?: number): { unsubscribe(): void; readonly lastPosition: number };
  close(): void;
}

interface Sub {
  draftId: string;
  handlers: SubscriptionHandlers;
  orderer: SeqOrderer | null;
  state: DraftState | null;
  presence: Map<string, PresenceMember>;
  myPresence: Record<string, unknown> | null;
  filling: boolean;
  ended: boolean;
}

/** Open `/v1/ws` and keep it open until `close()`. */
export function connectMultiplex(options: MultiplexOptions = {}): MultiplexConnection {
  const origin = (globalThis as { location?: Location }).location?.origin ?? "";
  const baseUrl = (options.baseUrl ?? origin).replace(/\/+$/, "");
  const rest = new RestClient({ baseUrl, token: options.token, userId: options.userId, fetch: options.fetch, retries: 0 });
  const Socket: SocketFactory = options.WebSocket ?? (globalThis.WebSocket as unknown as SocketFactory);
  const isVisible = options.isVisible ?? (() => (globalThis as { document?: Document }).document?.visibilityState !== "hidden");
  const subs = new Map<string, Sub>();
  let me: { onItem: (item: FeedItem) => void; lastPosition: number } | null = null;
  let ws: SocketLike | null = null;
  let status: MultiplexConnection["status"] = "connecting";
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;

  function setStatus(next: "connecting" | "live" | "offline"): void {
    if (status === next || status === "closed") return;
    status = next;
    options.onStatus?.(next);
  }

  function send(msg: object): void {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg));
  }

  function sendSubscribe(sub: Sub): void {
    send(sub.orderer ? { type: "subscribe", draft_id: sub.draftId, since: sub.orderer.lastSeq } : { type: "subscribe", draft_id: sub.draftId });
  }

  /** Offer deliveries to the draft's orderer; fold and hand on what is next in order. */
  function release(sub: Sub, events: DraftEvent[]): void {
    if (!sub.orderer || sub.ended) return;
    for (const raw of events) {
      for (const e of sub.orderer.offer(raw)) {
        if (sub.state !== null || e.type === "collab.draft_created") sub.state = foldEvent(sub.state, e);
        sub.handlers.onEvent?.(e, sub.state);
      }
    }
  }

  function apply(sub: Sub, events: DraftEvent[]): void {
    release(sub, events);
    if (sub.orderer?.hasGap && !sub.filling && !sub.ended) void fillGap(sub);
  }

  /** Fetch a hole from /events (one fetch loop per draft at a time). */
  async function fillGap(sub: Sub): Promise<void> {
    sub.filling = true;
    try {
      for (let page = 0; page < 1000 && sub.orderer?.hasGap && !sub.ended; page++) {
        const body = await rest.events(sub.draftId, sub.orderer.lastSeq);
        if (!body.data.length) break;
        release(sub, body.data);
      }
    } catch {
      // the next resubscribe (or delivery) fills it from lastSeq
    } finally {
      sub.filling = false;
    }
  }

  function end(sub: Sub, code: string, message: string): void {
    if (sub.ended) return;
    sub.ended = true;
    subs.delete(sub.draftId);
    sub.handlers.onEnd?.(code, message);
  }

  function open(): void {
    if (status === "closed") return;
    const query = new URLSearchParams();
    if (options.token) query.set("access_token", options.token);
    else query.set("user_id", options.userId ?? "");
    const sock = new Socket(`${baseUrl.replace(/^http/, "ws")}/v1/ws?${query}`);
    ws = sock;
    sock.onmessage = (message) => {
      if (ws !== sock) return;
      let msg: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      try { msg = JSON.parse(String(message.data)); } catch { return; }
      const sub = typeof msg.draft_id === "string" ? subs.get(msg.draft_id) : undefined;
      switch (msg.type) {
        case "connected":
          attempt = 0;
          setStatus("live");
          for (const s of subs.values()) sendSubscribe(s);
          if (me) send({ type: "subscribe_me", after: me.lastPosition });
          return;
        case "subscribed":
          if (sub && !sub.orderer) sub.orderer = new SeqOrderer(msg.head_seq);
          if (sub?.myPresence) send({ type: "presence", draft_id: sub.draftId, state: sub.myPresence });
          return;
        case "presence_sync":
          if (sub) { sub.presence = new Map((msg.members as PresenceMember[]).map((m) => [m.user_id, m])); sub.handlers.onPresence?.([...sub.presence.values()]); }
          return;
        case "presence":
          if (!sub) return;
          if (msg.event === "leave") sub.presence.delete(msg.user_id);
          else sub.presence.set(msg.user_id, { user_id: msg.user_id, state: msg.state, since: sub.presence.get(msg.user_id)?.since ?? msg.ts });
          sub.handlers.onPresence?.([...sub.presence.values()]);
          return;
        case "me":
          if (me && msg.position > me.lastPosition) { me.lastPosition = msg.position; me.onItem({ position: msg.position, event: msg.event }); }
          return;
        case "error":
          if (sub) end(sub, msg.code, msg.message ?? msg.code);
          return;
        default:
          if (sub && typeof msg.type === "string" && msg.type.startsWith("collab.")) apply(sub, [msg as DraftEvent]);
      }
    };
    sock.onclose = (event) => dropped(sock, event.code);
  }

  /** The socket is gone (closed, or dropped because the browser went offline): retry with backoff. */
  function dropped(sock: SocketLike, code: number): void {
    if (ws !== sock) return;
    ws = null;
    for (const s of subs.values()) if (s.presence.size) { s.presence = new Map(); s.handlers.onPresence?.([]); }
    if (status === "closed") return;
    if (code === 1008 || code === 4401) {
      setStatus("offline"); // credentials or policy: the caller must reconnect with new ones
      return;
    }
    setStatus("offline");
    const cap = isVisible() ? 5000 : 30000;
    timer = setTimeout(() => { timer = null; open(); }, backoffDelay(attempt++, { cap }));
  }

  // the browser's own word on its network (see MultiplexOptions.network)
  const network = options.network !== undefined
    ? options.network
    : typeof (globalThis as { addEventListener?: unknown }).addEventListener === "function" ? (globalThis as unknown as EventTarget) : null;
  const onOffline = (): void => {
    const sock = ws;
    if (!sock || status === "closed") return;
    dropped(sock, 1006); // ws is null from here: the socket's own close event is ignored
    sock.close(1000, "offline");
  };
  const onOnline = (): void => {
    if (status === "closed" || ws || timer === null) return;
    clearTimeout(timer);
    timer = null;
    attempt = 0;
    open();
  };
  network?.addEventListener("offline", onOffline);
  network?.addEventListener("online", onOnline);

  open();
  return {
    get status() { return status; },
    subscribe(draftId, handlers, from) {
      const sub: Sub = {
        draftId, handlers, presence: new Map(), myPresence: null, filling: false, ended: false,
        orderer: from ? new SeqOrderer(from.since) : null,
        state: from?.state ?? null,
      };
      const old = subs.get(draftId);
      if (old) old.ended = true; // subscribing again restarts it (API.md)
      subs.set(draftId, sub);
      sendSubscribe(sub);
      return {
        draftId,
        get lastSeq() { return sub.orderer?.lastSeq ?? 0; },
        get state() { return sub.state; },
        get presence() { return [...sub.presence.values()]; },
        setPresence(s) { sub.myPresence = s; send({ type: "presence", draft_id: draftId, state: s }); },
        unsubscribe() {
          if (sub.ended) return;
          sub.ended = true;
          subs.delete(draftId);
          send({ type: "unsubscribe", draft_id: draftId });
        },
      };
    },
    subscribeMe(onItem, after = 0) {
      const feed = { onItem, lastPosition: after };
      me = feed;
      send({ type: "subscribe_me", after });
      return { unsubscribe: () => { if (me === feed) me = null; }, get lastPosition() { return feed.lastPosition; } };
    },
    close() {
      status = "closed";
      network?.removeEventListener("offline", onOffline);
      network?.removeEventListener("online", onOnline);
      if (timer) clearTimeout(timer);
      const sock = ws;
      ws = null;
      sock?.close(1000);
    },
  };
}
