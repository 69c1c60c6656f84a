/**
 * The cluster store: what the nodes of a dvs cluster agree on (nodes and their liveness, DCs, the endpoint
 * directory, and the state behind locks, elections and key/value), modelled on etcd v3 so that one set of
 * recipes runs on both backends (../shared/reference/coordination.md):
 *
 * - `embedded` (default, no dependency): one node hosts an fsync'd log + snapshot; the others reach it over
 *   their node links.
 * - `etcd`: a 3- or 5-member etcd cluster through the npm `etcd3` client, wrapped.
 *
 * Both pass one compliance suite (test/integration/cluster/compliance.ts). Semantics, as etcd's:
 * - One global revision counter; every successful write transaction increments it once, and every key it
 *   touched gets that revision as its `modRevision`. Reads are linearizable.
 * - `txn(compare, success, failure)` is atomic: all compares are evaluated against the state at one revision;
 *   the ops of the chosen branch are applied together.
 * - A lease has a TTL; `keepAlive` renews it; when it expires (or is revoked) every key put with it is deleted
 *   (one revision, DELETE events for each key).
 * - `watch(prefix, fromRevision)` delivers every event with revision >= fromRevision on keys under `prefix`,
 *   in revision order, grouped per revision, with no gap and no duplicate; if `fromRevision` is older than the
 *   retained history the watch ends with `compacted` (the caller re-lists and watches again).
 * - A write whose outcome is unknown is reported with `details.ambiguous = true` and the code of what
 *   happened: ENOTCONN (connection or leader lost mid-call), ETIMEDOUT (no answer in time) or EABORTED (the
 *   caller's signal fired while the write was out). Recipes check `details.ambiguous`, not the code, and make
 *   writes idempotent (txn guards) instead of retrying blindly.
 *
 * Keys are strings (recipes use `/dvs/...` paths); values are bytes. Revisions are numbers (safe below 2^53,
 * far beyond any real store); lease ids are decimal strings (etcd's are random int64).
 */

/** A key with its value and metadata. */
export interface KeyValue {
  key: string;
  value: Uint8Array;
  /** Revision of the transaction that created the key (since its last deletion). */
  createRevision: number;
  /** Revision of the last transaction that modified it. */
  modRevision: number;
  /** Number of modifications since creation (1 after the first put). */
  version: number;
  /** Lease the key is attached to, if any. */
  lease?: string;
}

/** One comparison of a transaction guard. A missing key has createRevision = modRevision = version = 0. */
export interface Compare {
  key: string;
  target: 'value' | 'version' | 'createRevision' | 'modRevision' | 'lease';
  op: '==' | '!=' | '<' | '>';
  /** Bytes for `value`, a number for the revision/version targets, a lease id (or '0' for none) for `lease`. */
  value: Uint8Array | number | string;
}

/** One operation of a transaction branch. */
export type TxnOp =
  | { op: 'put'; key: string; value: Uint8Array; lease?: string }
  | { op: 'delete'; key: string; prefix?: boolean }
  | { op: 'get'; key: string; prefix?: boolean; limit?: number };

/** The outcome of a transaction: which branch ran, and per op the keys it read (get) or deleted (delete). */
export interface TxnResult {
  succeeded: boolean;
  /** Store revision after the transaction (unchanged if it wrote nothing). */
  revision: number;
  results: { kvs: KeyValue[] }[];
}

/** A change seen by a watch. For DELETE, `kv.value` is empty and `kv.modRevision` is the deletion revision. */
export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

/** Why a watch ended. */
export type WatchEnd = 'compacted' | 'disconnected' | 'closed';

/** Options of every store call. */
export interface StoreCallOptions {
  signal?: AbortSignal;
  /** ms; default per backend (a few seconds). */
  timeout?: number;
}

/** A live watch. */
export interface Watch {
  /** Stop watching; `onEnd('closed')` is not called. */
  cancel(): void;
}

/** The store interface the cluster services are written against. */
export interface ClusterStore {
  /** Connect (etcd) or open (embedded); resolves when usable. */
  start(): Promise<void>;
  /** Close: stops lease keepalives and watches, releases files and sockets. */
  stop(): Promise<void>;

  /** Linearizable read of one key, or every key under a prefix (sorted by key). */
  get(
    key: string,
    opts?: StoreCallOptions & { prefix?: boolean; limit?: number },
  ): Promise<{
    kvs: KeyValue[];
    revision: number;
  }>;
  /** put = txn([], [put]). Returns the new revision. */
  put(key: string, value: Uint8Array, opts?: StoreCallOptions & { lease?: string }): Promise<number>;
  /** delete = txn([], [delete]). Returns how many keys were deleted and the revision. */
  delete(
    key: string,
    opts?: StoreCallOptions & { prefix?: boolean },
  ): Promise<{ deleted: number; revision: number }>;
  /** Atomic compare-and-swap transaction. */
  txn(compare: Compare[], success: TxnOp[], failure?: TxnOp[], opts?: StoreCallOptions): Promise<TxnResult>;

  /** Grant a lease of `ttlSeconds` (>= 1). Returns its id. */
  grantLease(ttlSeconds: number, opts?: StoreCallOptions): Promise<string>;
  /** Renew a lease; resolves with the remaining TTL in seconds, 0 if the lease is gone. */
  keepAlive(lease: string, opts?: StoreCallOptions): Promise<number>;
  /** Revoke a lease now (its keys are deleted). Revoking an unknown lease is not an error. */
  revokeLease(lease: string, opts?: StoreCallOptions): Promise<void>;

  /**
   * Watch keys under `prefix` from `fromRevision` (inclusive; use `get().revision + 1` after a list).
   * `onEvents` receives each revision's events in one call, in order; `onEnd` is called once if the watch
   * ends for a reason other than cancel().
   */
  watch(
    prefix: string,
    fromRevision: number,
    onEvents: (events: WatchEvent[], revision: number) => void,
    onEnd: (why: WatchEnd, err?: Error) => void,
  ): Watch;
}

/** put() as a one-op transaction, for backends that implement everything through txn(). */
export async function putViaTxn(
  store: ClusterStore,
  key: string,
  value: Uint8Array,
  opts: StoreCallOptions & { lease?: string } = {},
): Promise<number> {
  const op: TxnOp =
    opts.lease === undefined ? { op: 'put', key, value } : { op: 'put', key, value, lease: opts.lease };
  return (await store.txn([], [op], [], opts)).revision;
}

/** delete() as a one-op transaction, for backends that implement everything through txn(). */
export async function deleteViaTxn(
  store: ClusterStore,
  key: string,
  opts: StoreCallOptions & { prefix?: boolean } = {},
): Promise<{ deleted: number; revision: number }> {
  const r = await store.txn([], [{ op: 'delete', key, prefix: opts.prefix === true }], [], opts);
  return { deleted: r.results[0]?.kvs.length ?? 0, revision: r.revision };
}
