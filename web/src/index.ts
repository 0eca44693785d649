/** @ringlog/web: the typed browser client of ringlog (the React hook is in "@ringlog/web/react"). */
export * from "./types.js";
export { FoldError, SeqOrderer, foldAll, foldEvent } from "./fold.js";
export { ApiError, RestClient, authHeaders, backoffDelay, newIdempotencyKey, sleep } from "./api.js";
export type { MutationOptions, RestOptions } from "./api.js";
export { IndexedDbOutbox, MemoryOutbox, defaultOutbox } from "./outbox.js";
export type { Outbox, PendingBase, PendingOp } from "./outbox.js";
export { OptimisticWriter, isOwnEvent } from "./writer.js";
export type { Conflict, Outcome, ViewSegment, ViewState, WriterOptions } from "./writer.js";
export {
  CLOSE_ACCESS_REVOKED,
  CONNECTING,
  LIVE,
  OFFLINE,
  REVOKED,
  STOPPED,
  SYNCING,
  connectDraft,
  realtimeStatus,
  tokenSubject,
} from "./connection.js";
export type { ConnectOptions, ConnectionStatus, DraftConnection, RealtimeStatus, SocketFactory, SocketLike, StatusDetail } from "./connection.js";
export { connectMultiplex } from "./multiplex.js";
export type { MultiplexConnection, MultiplexOptions, Subscription, SubscriptionHandlers } from "./multiplex.js";
export { createSocketHub } from "./hub.js";
export type { FeedFollow, HubStatus, SocketHub, SocketHubOptions } from "./hub.js";
