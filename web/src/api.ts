/**
 * REST helpers (API.md "HTTP API"): typed calls, errors as {@link ApiError}, and mutations that
 * are safe to retry — every mutation carries an `Idempotency-Key` that is reused, unchanged,
 * for each retry of that request (network failure, 429 with Retry-After, 503), so a request the
 * server did apply is never applied twice; and an optional `If-Match: "<seq>"` (412 when the
 * draft moved on: first writer wins).
 */
import type {
  AddCollaboratorResult,
  AppendResult,
  Credentials,
  DataBody,
  DraftState,
  DraftSummary,
  ErrorBody,
  EventsPage,
  FeedPage,
  PassResult,
  PresenceMember,
  RemoveCollaboratorResult,
  Role,
} from "./types.js";

/** An error answer from the API, with its HTTP status and contract code; status 0: no answer. */
export class ApiError extends Error {
  override name = "ApiError";
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  /** Milliseconds the server asked to wait (Retry-After), 0 if none. */
  readonly retryAfterMs: number;

  constructor(status: number, code: string, message: string, details?: unknown, retryAfterMs = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterMs = retryAfterMs;
  }

  /** Whether the same request may succeed later (no answer, 429, 502–504). */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || (this.status >= 502 && this.status <= 504);
  }
}

/** A fresh Idempotency-Key (API.md: 1–255 printable ASCII characters). */
export function newIdempotencyKey(): string {
  const c = globalThis.crypto as Crypto | undefined;
  if (c?.randomUUID) return c.randomUUID();
  return `k-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

/** The headers that authenticate a request (API.md "Authentication"). */
export function authHeaders(credentials: Credentials): Record<string, string> {
  if (credentials.token) return { Authorization: `Bearer ${credentials.token}` };
  if (credentials.userId) return { "X-User-Id": credentials.userId };
  throw new Error("ringlog needs a token or a userId");
}

/** Full jitter: a random delay in [0, min(cap, base·2^attempt)] milliseconds. */
export function backoffDelay(
  attempt: number,
  { base = 500, cap = 5000, random = Math.random }: { base?: number; cap?: number; random?: () => number } = {},
): number {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

function retryAfterMs(response: Response): number {
  const raw = response.headers.get("Retry-After");
  const seconds = raw === null ? NaN : Number(raw);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 0;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

export interface RestOptions extends Credentials {
  /** Default: this page's origin. */
  baseUrl?: string;
  /** The fetch to use (tests pass a fake). Default: the global fetch. */
  fetch?: typeof fetch;
  /** Retries of a retryable failure before giving up (default 4). */
  retries?: number;
  /** Cap of the backoff between retries, ms (default 5000). */
  backoffCapMs?: number;
}

export interface MutationOptions {
  /** Reused unchanged on every retry; a fresh one when absent. */
  idempotencyKey?: string;
  /** The seq the caller saw: 412 precondition_failed when the draft's head is another. */
  ifMatch?: number;
  signal?: AbortSignal;
}

/** Typed calls of API.md's HTTP API. Every method throws {@link ApiError} on an error answer. */
export class RestClient {
  readonly baseUrl: string;
  credentials: Credentials;
  private readonly fetchImpl: typeof fetch;
  private readonly retries: number;
  private readonly backoffCapMs: number;

  constructor(options: RestOptions) {
    const origin = (globalThis as { location?: Location }).location?.origin ?? "";
    this.baseUrl = (options.baseUrl ?? origin).replace(/\/+$/, "");
    this.credentials = { token: options.token ?? null, userId: options.userId ?? null };
    authHeaders(this.credentials);
    this.fetchImpl = options.fetch ?? ((...args) => globalThis.fetch(...args));
    this.retries = options.retries ?? 4;
    this.backoffCapMs = options.backoffCapMs ?? 5000;
  }

  /** One request, no retry: the parsed body, or ApiError (status 0 when nothing answered). */
  async request<T>(method: string, path: string, init: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<T> {
    const headers: Record<string, string> = { ...authHeaders(this.credentials), ...init.headers };
    if (init.body !== undefined) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        cache: "no-store",
        signal: init.signal,
      });
    } catch (e) {
      if (init.signal?.aborted) throw e;
      throw new ApiError(0, "network", "the server cannot be reached");
    }
    let body: unknown = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const err = (body as ErrorBody | null)?.error;
      throw new ApiError(response.status, err?.code ?? "http_error", err?.message ?? `HTTP ${response.status}`, err?.details, retryAfterMs(response));
    }
    return body as T;
  }

  /**
   * A mutation with retries: the same Idempotency-Key and If-Match on every attempt; retries
   * only what may succeed later ({@link ApiError.retryable}), waiting Retry-After or a capped
   * backoff. The server answers a retry of an applied request with the first response.
   */
  async mutate<T>(method: string, path: string, body: unknown, options: MutationOptions = {}): Promise<T> {
    const key = options.idempotencyKey ?? newIdempotencyKey();
    const headers: Record<string, string> = { "Idempotency-Key": key };
    if (options.ifMatch !== undefined) headers["If-Match"] = `"${options.ifMatch}"`;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.request<T>(method, path, { body, headers, signal: options.signal });
      } catch (e) {
        if (!(e instanceof ApiError) || !e.retryable || attempt >= this.retries || options.signal?.aborted) throw e;
        await sleep(Math.max(e.retryAfterMs, backoffDelay(attempt, { cap: this.backoffCapMs })), options.signal);
      }
    }
  }

  private draftPath(draftId: string): string {
    return `/v1/collab/drafts/${encodeURIComponent(draftId)}`;
  }

  async listDrafts(archived = false): Promise<DraftSummary[]> {
    return (await this.request<DataBody<DraftSummary[]>>("GET", `/v1/collab/drafts${archived ? "?archived=true" : ""}`)).data;
  }

  /** The draft's state now, or as of `atSeq` (v2 "Time travel over HTTP"). */
  async getDraft(draftId: string, atSeq?: number, signal?: AbortSignal): Promise<DraftState> {
    const q = atSeq === undefined ? "" : `?at_seq=${atSeq}`;
    return (await this.request<DataBody<DraftState>>("GET", this.draftPath(draftId) + q, { signal })).data;
  }

  /** Events with seq > since, oldest first; `wait` (0–30 s) long-polls. */
  async events(draftId: string, since: number, { limit = 1000, wait, signal }: { limit?: number; wait?: number; signal?: AbortSignal } = {}): Promise<EventsPage> {
    const w = wait === undefined ? "" : `&wait=${wait}`;
    return this.request<EventsPage>("GET", `${this.draftPath(draftId)}/events?since=${since}&limit=${limit}${w}`, { signal });
  }

  async createDraft(title: string, description?: string, options?: MutationOptions): Promise<DraftState> {
    const body = description === undefined ? { title } : { title, description };
    return (await this.mutate<DataBody<DraftState>>("POST", "/v1/collab/drafts", body, options)).data;
  }

  async updateDraft(draftId: string, fields: { title?: string; description?: string }, options?: MutationOptions): Promise<DraftState> {
    return (await this.mutate<DataBody<DraftState>>("PATCH", this.draftPath(draftId), fields, options)).data;
  }

  async appendSegment(draftId: string, content: string, options?: MutationOptions): Promise<AppendResult> {
    return (await this.mutate<DataBody<AppendResult>>("POST", `${this.draftPath(draftId)}/segments`, { content }, options)).data;
  }

  async passRing(draftId: string, toUserId: string, options?: MutationOptions): Promise<PassResult> {
    return (await this.mutate<DataBody<PassResult>>("POST", `${this.draftPath(draftId)}/ring/pass`, { to_user_id: toUserId }, options)).data;
  }

  async addCollaborator(draftId: string, userId: string, role: Role, options?: MutationOptions): Promise<AddCollaboratorResult> {
    return (await this.mutate<DataBody<AddCollaboratorResult>>("POST", `${this.draftPath(draftId)}/collaborators`, { user_id: userId, role }, options)).data;
  }

  async removeCollaborator(draftId: string, userId: string, options?: MutationOptions): Promise<RemoveCollaboratorResult> {
    return (await this.mutate<DataBody<RemoveCollaboratorResult>>("DELETE", `${this.draftPath(draftId)}/collaborators/${encodeURIComponent(userId)}`, undefined, options)).data;
  }

  async changeRole(draftId: string, userId: string, role: Role, options?: MutationOptions): Promise<AddCollaboratorResult> {
    return (await this.mutate<DataBody<AddCollaboratorResult>>("PATCH", `${this.draftPath(draftId)}/collaborators/${encodeURIComponent(userId)}`, { role }, options)).data;
  }

  async setArchived(draftId: string, archived: boolean, options?: MutationOptions): Promise<DraftState> {
    return (await this.mutate<DataBody<DraftState>>("POST", `${this.draftPath(draftId)}/${archived ? "archive" : "unarchive"}`, {}, options)).data;
  }

  async presence(draftId: string): Promise<PresenceMember[]> {
    return (await this.request<DataBody<PresenceMember[]>>("GET", `${this.draftPath(draftId)}/presence`)).data;
  }

  /** The caller's own feed (v2 "The caller's own feed"). */
  async myEvents(after: number, { limit = 500, wait, signal }: { limit?: number; wait?: number; signal?: AbortSignal } = {}): Promise<FeedPage> {
    const w = wait === undefined ? "" : `&wait=${wait}`;
    return this.request<FeedPage>("GET", `/v1/me/events?after=${after}&limit=${limit}${w}`, { signal });
  }
}
