/**
 * Types of everything in the contract (/work/shared/API.md → docs/API.md): events, draft state,
 * HTTP bodies and every WebSocket message of the per-draft socket and of `/v1/ws` (v1 and the
 * v2 additions: access that changes live, presence, the caller's own feed).
 */

/** Every event type a log may hold (API.md "Events" and v2 "Access that changes live"). */
export const EventTypes = {
  DRAFT_CREATED: "collab.draft_created",
  SEGMENT_ADDED: "collab.segment_added",
  RING_PASSED: "collab.ring_passed",
  COLLABORATOR_ADDED: "collab.collaborator_added",
  DRAFT_UPDATED: "collab.draft_updated",
  COLLABORATOR_REMOVED: "collab.collaborator_removed",
  ROLE_CHANGED: "collab.role_changed",
  DRAFT_ARCHIVED: "collab.draft_archived",
  DRAFT_UNARCHIVED: "collab.draft_unarchived",
} as const;

export type KnownEventType = (typeof EventTypes)[keyof typeof EventTypes];
export type Role = "contributor" | "viewer";

export interface Segment {
  id: number;
  author_user_id: string;
  content: string;
  /** 1, 2, 3… within the draft. */
  position: number;
  created_at: string;
}

export interface Collaborator {
  user_id: string;
  role: Role;
  joined_at: string;
}

export interface RingState {
  current_holder_id: string;
  holders_history: string[];
}

/** API.md "Draft state"; `archived` is a v2 addition. */
export interface DraftState {
  id: string;
  title: string;
  description: string;
  creator_id: string;
  collaborators: Collaborator[];
  segments: Segment[];
  ring_state: RingState;
  archived: boolean;
  /** The last event folded into this state. */
  seq: number;
  created_at: string;
  updated_at: string;
}

/** A row of `GET /v1/collab/drafts`. */
export interface DraftSummary {
  id: string;
  title: string;
  seq: number;
  updated_at: string;
}

export interface DraftCreatedData { title: string; description?: string; creator_id: string }
export interface SegmentAddedData { segment: Segment }
export interface RingPassedData {
  from_user_id: string;
  to_user_id: string;
  current_holder_id: string;
  holders_history: string[];
}
export interface CollaboratorAddedData { collaborator_id: string; role: Role; joined_at: string }
export interface DraftUpdatedData { title?: string; description?: string }
export interface CollaboratorRemovedData { collaborator_id: string; role: Role }
export interface RoleChangedData { collaborator_id: string; from_role: Role; to_role: Role }
export type EmptyData = Record<string, never>;

interface Envelope<T extends string, D> {
  type: T;
  draft_id: string;
  /** 1 for collab.draft_created, then contiguous. */
  seq: number;
  /** UTC, ISO 8601 with milliseconds and Z. */
  ts: string;
  /** Who caused it. */
  user_id: string;
  data: D;
}

export type DraftCreated = Envelope<"collab.draft_created", DraftCreatedData>;
export type SegmentAdded = Envelope<"collab.segment_added", SegmentAddedData>;
export type RingPassed = Envelope<"collab.ring_passed", RingPassedData>;
export type CollaboratorAdded = Envelope<"collab.collaborator_added", CollaboratorAddedData>;
export type DraftUpdated = Envelope<"collab.draft_updated", DraftUpdatedData>;
export type CollaboratorRemoved = Envelope<"collab.collaborator_removed", CollaboratorRemovedData>;
export type RoleChanged = Envelope<"collab.role_changed", RoleChangedData>;
export type DraftArchived = Envelope<"collab.draft_archived", EmptyData>;
export type DraftUnarchived = Envelope<"collab.draft_unarchived", EmptyData>;
/** An event of a type this version does not know (a newer server): it only advances seq. */
export type UnknownEvent = Envelope<string, Record<string, unknown>>;

export type KnownEvent =
  | DraftCreated
  | SegmentAdded
  | RingPassed
  | CollaboratorAdded
  | DraftUpdated
  | CollaboratorRemoved
  | RoleChanged
  | DraftArchived
  | DraftUnarchived;

/** Any event envelope; narrow on `type` with {@link isKnownEvent}. */
export type DraftEvent = KnownEvent | UnknownEvent;

const KNOWN = new Set<string>(Object.values(EventTypes));

/** Whether `event` is of a type this version folds (narrows the union). */
export function isKnownEvent(event: DraftEvent): event is KnownEvent {
  return KNOWN.has(event.type);
}

// -- HTTP bodies ----------------------------------------------------------------------------

export type ErrorCode =
  | "invalid_json"
  | "invalid_parameter"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "not_ring_holder"
  | "invalid_ring_target"
  | "already_collaborator"
  | "precondition_failed"
  | "payload_too_large"
  | "unsupported_media_type"
  | "validation_error"
  | "idempotency_key_reused"
  | "rate_limited"
  | "unavailable"
  | "conflict"
  | "cannot_remove_creator"
  | "not_collaborator"
  | "draft_archived"
  | (string & {});

/** Codes the client itself gives (never sent by the server): `not_loaded` (a write before the
 * draft's first state), `earlier_undone` (undone because an earlier queued write was), `network`
 * (the server could not be reached). */
export type ClientErrorCode = "not_loaded" | "earlier_undone" | "network";

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

export interface DataBody<T> {
  data: T;
}

export interface AppendResult { segment: Segment; seq: number }
export interface PassResult { ring_state: RingState; seq: number }
export interface AddCollaboratorResult { collaborator: Collaborator; seq: number }
export interface RemoveCollaboratorResult { seq: number; ring_state: RingState }
export interface EventsPage { data: DraftEvent[]; head_seq: number }
export interface PresenceMember { user_id: string; state: Record<string, unknown>; since: string }
export interface FeedItem { position: number; event: DraftEvent }
export interface FeedPage { data: FeedItem[]; last_position: number }

// -- WebSocket messages -----------------------------------------------------------------------

/** Per-draft socket: the first message. */
export interface ConnectedDraftMessage { type: "connected"; draft_id: string; user_id: string; ts: string; head_seq: number }
/** `/v1/ws`: the first message. */
export interface ConnectedMessage { type: "connected"; user_id: string; ts: string }
export interface PongMessage { type: "pong"; ts: string }
export type SocketErrorCode =
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "invalid_since"
  | "bad_message"
  | "token_expired"
  | "too_many_sockets"
  | "too_many_subscriptions"
  | "access_revoked"
  | "rate_limited"
  | (string & {});
export interface ErrorMessage { type: "error"; code: SocketErrorCode; message?: string; draft_id?: string }
export interface SubscribedMessage { type: "subscribed"; draft_id: string; head_seq: number }
export interface UnsubscribedMessage { type: "unsubscribed"; draft_id: string }
export interface SubscribedMeMessage { type: "subscribed_me"; last_position: number }
export interface MeMessage { type: "me"; position: number; event: DraftEvent }
export interface PresenceMessage {
  type: "presence";
  draft_id: string;
  event: "join" | "update" | "leave";
  user_id: string;
  state: Record<string, unknown>;
  ts: string;
}
export interface PresenceSyncMessage { type: "presence_sync"; draft_id: string; members: PresenceMember[] }

/** What the server sends on `/v1/ws/drafts/{id}`. */
export type DraftSocketMessage =
  | ConnectedDraftMessage
  | PongMessage
  | ErrorMessage
  | PresenceMessage
  | PresenceSyncMessage
  | DraftEvent;

/** What the server sends on `/v1/ws`. */
export type MultiplexMessage =
  | ConnectedMessage
  | PongMessage
  | ErrorMessage
  | SubscribedMessage
  | UnsubscribedMessage
  | SubscribedMeMessage
  | MeMessage
  | PresenceMessage
  | PresenceSyncMessage
  | DraftEvent;

/** What a client may send (JSON text frames, at most 4 KiB on `/v1/ws`). */
export type ClientMessage =
  | { type: "ping" }
  | { type: "subscribe"; draft_id: string; since?: number }
  | { type: "unsubscribe"; draft_id: string }
  | { type: "subscribe_me"; after?: number }
  | { type: "presence"; draft_id?: string; state: Record<string, unknown> };

/** Close codes with a meaning in the contract. */
export const CloseCodes = {
  GOING_AWAY: 1001,
  POLICY: 1008,
  TRY_AGAIN_LATER: 1013,
  INVALID_SINCE: 4400,
  TOKEN_EXPIRED: 4401,
  ACCESS_REVOKED: 4403,
  NOT_FOUND: 4404,
} as const;

/** Credentials: a JWT, or a user id when the server runs with dev auth. */
export interface Credentials {
  token?: string | null;
  userId?: string | null;
}
