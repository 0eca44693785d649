/**
 * The offline outbox: the optimistic writes not yet confirmed, persisted per user and draft so
 * a page reload keeps them (IndexedDB), each with the Idempotency-Key it was made with.
 *
 * An operation is written here before its first request and deleted only once it is settled
 * (its own event folded, or rolled back); a reload therefore resends it with the same key and
 * the same If-Match, and the server answers a request it already applied with the first
 * response instead of appending again (API.md "HTTP API": Idempotency-Key).
 */

import type { DraftState } from "./types.js";

/** One optimistic write. */
export type PendingOp =
  | (PendingBase & { kind: "append"; content: string })
  | (PendingBase & { kind: "pass"; toUserId: string });

export interface PendingBase {
  /** The Idempotency-Key of every request of this operation (and its identity here). */
  key: string;
  userId: string;
  draftId: string;
  /** Order within (userId, draftId): sent strictly in this order. */
  order: number;
  /** The seq this operation expects the draft to be at (sent as If-Match); its event is baseSeq+1. */
  baseSeq: number;
  /** When the user made it (ISO 8601). */
  createdAt: string;
}

/** Where pending operations live between reloads. */
export interface Outbox {
  /** The user's pending operations on the draft, in order. */
  load(userId: string, draftId: string): Promise<PendingOp[]>;
  put(op: PendingOp): Promise<void>;
  delete(op: PendingOp): Promise<void>;
  /** Keep the last confirmed state the user saw (optional): a reload while the server is away shows it. */
  saveState?(userId: string, draftId: string, state: DraftState): Promise<void>;
  /** The state kept by saveState, or null. */
  loadState?(userId: string, draftId: string): Promise<DraftState | null>;
}

/** An outbox in memory (lost on reload): for tests and where IndexedDB is missing. */
export class MemoryOutbox implements Outbox {
  private readonly ops = new Map<string, PendingOp>();

  async load(userId: string, draftId: string): Promise<PendingOp[]> {
    return [...this.ops.values()]
      .filter((op) => op.userId === userId && op.draftId === draftId)
      .sort((a, b) => a.order - b.order)
      .map((op) => ({ ...op }));
  }

  async put(op: PendingOp): Promise<void> {
    this.ops.set(op.key, { ...op });
  }

  async delete(op: PendingOp): Promise<void> {
    this.ops.delete(op.key);
  }

  private readonly states = new Map<string, DraftState>();

  async saveState(userId: string, draftId: string, state: DraftState): Promise<void> {
    this.states.set(JSON.stringify([userId, draftId]), structuredClone(state));
  }

  async loadState(userId: string, draftId: string): Promise<DraftState | null> {
    const found = this.states.get(JSON.stringify([userId, draftId]));
    return found ? structuredClone(found) : null;
  }
}

const STORE = "ops";
const STATES = "states";

function promised<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/**
 * The outbox in IndexedDB: database `name` (default "ringlog-outbox"), object store `ops` keyed
 * by the Idempotency-Key with an index on [userId, draftId, order], and `states` (the last
 * confirmed state per user and draft) keyed by [userId, draftId].
 */
export class IndexedDbOutbox implements Outbox {
  private db: Promise<IDBDatabase> | null = null;

  constructor(
    readonly name = "ringlog-outbox",
    private readonly factory: IDBFactory = globalThis.indexedDB,
  ) {
    if (!factory) throw new Error("IndexedDB is not available: use MemoryOutbox");
  }

  private open(): Promise<IDBDatabase> {
    if (!this.db) {
      const request = this.factory.open(this.name, 2);
      request.onupgradeneeded = () => {
        const db = request.result;
        if (!db.objectStoreNames.contains(STORE)) {
          db.createObjectStore(STORE, { keyPath: "key" }).createIndex("by_draft", ["userId", "draftId", "order"]);
        }
        if (!db.objectStoreNames.contains(STATES)) db.createObjectStore(STATES);
      };
      this.db = promised(request);
    }
    return this.db;
  }

  async load(userId: string, draftId: string): Promise<PendingOp[]> {
    const db = await this.open();
    const tx = db.transaction(STORE, "readonly");
    const range = IDBKeyRange.bound([userId, draftId, -Infinity], [userId, draftId, Infinity]);
    const ops = await promised(tx.objectStore(STORE).index("by_draft").getAll(range));
    return ops as PendingOp[];
  }

  async put(op: PendingOp): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(op);
    await done(tx);
  }

  async delete(op: PendingOp): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(op.key);
    await done(tx);
  }

  async saveState(userId: string, draftId: string, state: DraftState): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(STATES, "readwrite");
    tx.objectStore(STATES).put(state, [userId, draftId]);
    await done(tx);
  }

  async loadState(userId: string, draftId: string): Promise<DraftState | null> {
    const db = await this.open();
    const tx = db.transaction(STATES, "readonly");
    const found = await promised(tx.objectStore(STATES).get([userId, draftId]));
    return (found as DraftState | undefined) ?? null;
  }

  /** Close the database (tests; a page never needs to). */
  async close(): Promise<void> {
    if (this.db) (await this.db).close();
    this.db = null;
  }
}

/** IndexedDB when the environment has it, else memory. */
export function defaultOutbox(): Outbox {
  return globalThis.indexedDB ? new IndexedDbOutbox() : new MemoryOutbox();
}
