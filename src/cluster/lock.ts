/**
 * A queued distributed lock with fencing tokens over the {@link ClusterStore}: etcd's lock recipe, written
 * once for both backends (the `etcd3` client's own `lock()` is a try-lock, see the coordination reference).
 *
 * Recipe, for lock `name` and a caller's lease `L`:
 * 1. put `/dvs/locks/<name>/<L>` with lease L, guarded by `createRevision == 0`: the put is idempotent, so a
 *    write reported ambiguous (etcd leader change, lost channel) is simply tried again. The value carries a
 *    random nonce that tells our own earlier attempt apart from another acquire using the same lease.
 * 2. The holder is the key with the lowest `createRevision` under the prefix: the queue is FIFO in the
 *    store's global write order.
 * 3. A waiter watches only its predecessor's key (the next lower createRevision) for deletion, then lists
 *    again. Each release wakes exactly one waiter: no thundering herd.
 * 4. Release deletes the key. If the holder's process or node dies, its lease expires and the store deletes
 *    the key, which hands the lock on.
 *
 * Why fencing tokens: a lock over leases is not mutual exclusion in time. A holder can be paused (GC, a
 * stopped VM, a partition) past its lease TTL; the store then gives the lock to the next waiter, and the old
 * holder wakes up still believing it holds it. Jepsen's etcd 3.4.3 analysis found exactly this: etcd locks
 * alone are unsafe. The fix is to make every protected write carry the holder's token and have the resource
 * reject stale ones. The token here is the holder key's `createRevision`, which strictly increases across the
 * holders of one name (every new key is created at a later revision). For resources in the store itself,
 * {@link LockHandle.fence} (or {@link checkFence}) puts the check in the same transaction as the write.
 *
 * The caller owns the lease and keeps it alive (usually the node's registration lease, or a per-process
 * lease); a lease that expires releases every lock taken with it. One lease may hold or wait for a given lock
 * name once at a time: a second concurrent acquire with the same lease fails with EBUSY.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { DvsError, dvsError } from '../protocol/errors.js';
import type { ClusterStore, Compare, KeyValue, StoreCallOptions, TxnOp, Watch } from './store.js';

/** Prefix of every lock queue. */
export const LOCKS_PREFIX = '/dvs/locks/';

/**
 * Prefix of lock `name`'s queue (ends in '/', so `a` never matches `ab`). `root` (default {@link LOCKS_PREFIX},
 * ending in '/') lets a service keep its queues elsewhere, e.g. per DC (src/services/lock.ts).
 */
export const lockPrefix = (name: string, root: string = LOCKS_PREFIX): string => `${root}${name}/`;

/** Key of lease `lease`'s place in lock `name`'s queue. */
export const lockKey = (name: string, lease: string, root: string = LOCKS_PREFIX): string =>
  `${lockPrefix(name, root)}${lease}`;

/** Options of {@link acquireLock}. */
export interface AcquireLockOptions {
  /** The caller's lease (kept alive by the caller); the lock is released when it expires or is revoked. */
  lease: string;
  /** Give up waiting: the waiter's key is deleted and the call rejects with EABORTED. */
  signal?: AbortSignal;
  /** ms to wait for the lock; then the waiter's key is deleted and the call rejects with ETIMEDOUT. */
  timeout?: number;
  logger: Logger;
  /** Free text stored in the lock key's value, for operators (`etcdctl get --prefix /dvs/locks/`). */
  owner?: string;
  /** Where the queues live (default {@link LOCKS_PREFIX}; must end in '/'). */
  root?: string;
}

/** A held lock. */
export interface LockHandle {
  name: string;
  /** The holder's key in the store. */
  key: string;
  /**
   * The holder key's createRevision: strictly increasing across the holders of this lock. Pass it with every
   * write to the protected resource, which must reject a token lower than one it has seen.
   */
  fencingToken: number;
  /**
   * A transaction guard that holds only while this lock is still held by this holder: put it in the compare
   * list of a txn that writes the protected state, and the write cannot land after the lock was lost.
   */
  fence: Compare;
  /**
   * Delete the key. Idempotent; retries writes reported ambiguous. Resolves also if the lock was already lost
   * (lease expired). Rejects only if the store could not be reached before the timeout (default 5 s): the
   * lease expiry then releases the lock.
   */
  release(opts?: StoreCallOptions): Promise<void>;
}

const CLEANUP_TIMEOUT_MS = 5_000;
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1_000;
const enc = new TextEncoder();

function validateName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 256 || name.includes('/')) {
    throw dvsError('EINVAL', `lock name must be 1..256 characters without '/': ${JSON.stringify(name)}`);
  }
}

function validateRoot(root: string | undefined): string {
  if (root === undefined) return LOCKS_PREFIX;
  if (typeof root !== 'string' || !root.startsWith('/') || !root.endsWith('/')) {
    throw dvsError('EINVAL', `lock root must start and end with '/': ${JSON.stringify(root)}`);
  }
  return root;
}

/** Errors worth another try: the store was unreachable or slow, not a refusal. */
function transient(e: unknown): boolean {
  return e instanceof DvsError && (e.code === 'ENOTCONN' || e.code === 'ETIMEDOUT');
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Acquire lock `name` for `opts.lease`, waiting in FIFO order behind the current holder and earlier waiters.
 *
 * Rejects with ETIMEDOUT (timeout) or EABORTED (signal), after deleting the waiter's key so the queue is not
 * blocked; with ENOENT if the waiter's key vanished while waiting (its lease expired or was revoked); EBUSY if
 * the same lease already holds or awaits this lock; EINVAL for a bad name or lease. While the store is
 * unreachable the waiter retries until its timeout (etcd leader elections take 0.4-2 s).
 */
export async function acquireLock(
  store: ClusterStore,
  name: string,
  opts: AcquireLockOptions,
): Promise<LockHandle> {
  validateName(name);
  const { lease } = opts;
  if (typeof lease !== 'string' || !/^[0-9]+$/.test(lease) || lease === '0') {
    throw dvsError('EINVAL', `lock lease must be a lease id (decimal, not 0): ${JSON.stringify(lease)}`);
  }
  const log = opts.logger.child({ lock: name, lease });
  const root = validateRoot(opts.root);
  const key = lockKey(name, lease, root);
  const prefix = lockPrefix(name, root);
  const nonce = randomBytes(12).toString('hex');
  const value = enc.encode(JSON.stringify({ owner: opts.owner ?? '', nonce }));

  // One signal for the whole wait; its reason says which error to report.
  const ac = new AbortController();
  const onUserAbort = () => ac.abort('EABORTED');
  if (opts.signal?.aborted) throw dvsError('EABORTED', `lock ${name}: aborted before acquiring`);
  opts.signal?.addEventListener('abort', onUserAbort, { once: true });
  const timer =
    opts.timeout === undefined
      ? undefined
      : setTimeout(() => ac.abort('ETIMEDOUT'), Math.max(0, opts.timeout));
  const call: StoreCallOptions = { signal: ac.signal };

  /** Whether our key may exist (a put was sent): then a failure must delete it. */
  let putSent = false;
  let retryMs = RETRY_MIN_MS;
  const backoff = async () => {
    await sleep(retryMs, ac.signal);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  };

  try {
    // 1. Join the queue.
    let myRev = 0;
    let attempt = 0;
    while (myRev === 0) {
      if (ac.signal.aborted) throw ac.signal.reason;
      attempt++;
      putSent = true;
      try {
        const r = await store.txn(
          [{ key, target: 'createRevision', op: '==', value: 0 }],
          [{ op: 'put', key, value, lease }],
          [{ op: 'get', key }],
          call,
        );
        if (r.succeeded) {
          // A put's result carries no kv: the key's createRevision is the txn's revision.
          myRev = r.revision;
        } else {
          const kv = r.results[0]?.kvs[0];
          if (kv && Buffer.from(kv.value).equals(Buffer.from(value))) {
            myRev = kv.createRevision; // our earlier, ambiguous attempt landed
          } else if (kv) {
            putSent = false; // the key is someone else's acquire: never delete it
            throw dvsError('EBUSY', `lock ${name}: lease ${lease} already holds or awaits it`, {
              name,
              lease,
            });
          }
          // else: the key vanished between compare and get (cannot happen in one txn); try again.
        }
      } catch (e) {
        if (ac.signal.aborted || !transient(e)) throw e;
        log.debug({ err: e, attempt }, 'lock put failed; retrying (guarded, idempotent)');
        await backoff();
      }
    }
    log.debug({ key, createRevision: myRev }, 'lock queued');

    // 2./3. Wait until no key of the queue is older than ours.
    for (;;) {
      if (ac.signal.aborted) throw ac.signal.reason;
      let list: { kvs: KeyValue[]; revision: number };
      try {
        list = await store.get(prefix, { ...call, prefix: true });
      } catch (e) {
        if (ac.signal.aborted || !transient(e)) throw e;
        await backoff();
        continue;
      }
      retryMs = RETRY_MIN_MS;
      const me = list.kvs.find((kv) => kv.key === key);
      if (me === undefined || me.createRevision !== myRev) {
        putSent = false;
        throw dvsError('ENOENT', `lock ${name}: our queue key vanished (lease ${lease} expired or revoked)`, {
          name,
          lease,
        });
      }
      let pred: KeyValue | undefined;
      for (const kv of list.kvs) {
        if (kv.createRevision < myRev && (pred === undefined || kv.createRevision > pred.createRevision)) {
          pred = kv;
        }
      }
      if (pred === undefined) {
        log.debug({ key, fencingToken: myRev }, 'lock acquired');
        return handle(store, name, key, myRev, log);
      }
      const ended = await waitGone(store, [pred.key, key], list.revision + 1, ac.signal);
      if (ended === 'disconnected') await backoff();
    }
  } catch (e) {
    // After an abort the store call fails with its own error; report why we aborted instead.
    const err = toError(ac.signal.aborted ? ac.signal.reason : e, name);
    if (putSent) await cleanup(store, key, value, log);
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onUserAbort);
  }
}

/** The abort reasons we set become their DvsError; anything else passes through as a DvsError. */
function toError(e: unknown, name: string): DvsError {
  if (e === 'ETIMEDOUT')
    return dvsError('ETIMEDOUT', `lock ${name}: not acquired before the timeout`, { name });
  if (e === 'EABORTED') return dvsError('EABORTED', `lock ${name}: waiting aborted`, { name });
  return DvsError.from(e);
}

/**
 * Wait until one of `keys` is deleted (exact match: the watch is by prefix, and lease ids are decimal
 * strings, so `/x/12` is a prefix of `/x/123`), the watch ends, or `signal` fires. Resolves with what happened.
 */
function waitGone(
  store: ClusterStore,
  keys: string[],
  fromRevision: number,
  signal: AbortSignal,
): Promise<'deleted' | 'disconnected' | 'ended' | 'aborted'> {
  return new Promise((resolve) => {
    const watches: Watch[] = [];
    let done = false;
    const finish = (why: 'deleted' | 'disconnected' | 'ended' | 'aborted') => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      for (const w of watches) w.cancel();
      resolve(why);
    };
    const onAbort = () => finish('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) return finish('aborted');
    for (const k of keys) {
      watches.push(
        store.watch(
          k,
          fromRevision,
          (events) => {
            if (events.some((ev) => ev.type === 'delete' && ev.kv.key === k)) finish('deleted');
          },
          // compacted: re-listing is what we would do anyway; disconnected: re-list after a backoff.
          (why) => finish(why === 'disconnected' ? 'disconnected' : 'ended'),
        ),
      );
      if (done) break; // a watch may end synchronously; the others are cancelled by finish()
    }
    if (done) for (const w of watches) w.cancel();
  });
}

/**
 * Delete our queue key after a failed or abandoned acquire, guarded by our nonce so another acquire's key is
 * never touched. Retried while the store is unreachable, up to {@link CLEANUP_TIMEOUT_MS}: a waiter key left
 * behind would become the holder and block the queue until its lease expires.
 */
async function cleanup(store: ClusterStore, key: string, value: Uint8Array, log: Logger): Promise<void> {
  const deadline = Date.now() + CLEANUP_TIMEOUT_MS;
  let retryMs = RETRY_MIN_MS;
  for (;;) {
    try {
      await store.txn([{ key, target: 'value', op: '==', value }], [{ op: 'delete', key }], [], {
        timeout: Math.max(1, deadline - Date.now()),
      });
      return;
    } catch (e) {
      if (!transient(e) || Date.now() + retryMs > deadline) {
        log.warn(
          { err: e, key },
          'could not delete an abandoned lock queue key; it goes when its lease expires',
        );
        return;
      }
      await sleep(retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }
}

function handle(store: ClusterStore, name: string, key: string, token: number, log: Logger): LockHandle {
  const fence: Compare = { key, target: 'createRevision', op: '==', value: token };
  let released: Promise<void> | undefined;
  const release = async (opts: StoreCallOptions = {}): Promise<void> => {
    const deadline = Date.now() + (opts.timeout ?? CLEANUP_TIMEOUT_MS);
    let retryMs = RETRY_MIN_MS;
    for (;;) {
      try {
        // Guarded by the token: deleting is idempotent, and never touches a later key of the same lease.
        await store.txn([fence], [{ op: 'delete', key }], [], {
          timeout: Math.max(1, deadline - Date.now()),
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        log.debug({ key, fencingToken: token }, 'lock released');
        return;
      } catch (e) {
        if (opts.signal?.aborted || !transient(e) || Date.now() + retryMs > deadline) throw DvsError.from(e);
        await sleep(retryMs, opts.signal);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    }
  };
  return {
    name,
    key,
    fencingToken: token,
    fence,
    release(opts) {
      // Concurrent or repeated calls share one deletion; a failed one may be tried again.
      released ??= release(opts).catch((e: unknown) => {
        released = undefined;
        throw e;
      });
      return released;
    },
  };
}

/**
 * Whether `token` is still the fencing token of lock `name`'s current holder, checked by a transaction: the
 * holder key (the lowest createRevision under the prefix) must have `createRevision == token`. With `ops`,
 * those ops are applied in the same transaction, only if the token is current: a fenced write.
 *
 * Resolves false for a stale token (a later holder exists, or the lock is free) and for a token that is not a
 * holder's (a waiter's key). Safe against races: once a key is the holder it stays the holder until deleted
 * (later keys have higher createRevisions), so the compare fails exactly when the holder changed.
 */
export async function checkFence(
  store: ClusterStore,
  name: string,
  token: number,
  opts: StoreCallOptions & { ops?: TxnOp[]; root?: string } = {},
): Promise<boolean> {
  validateName(name);
  const root = validateRoot(opts.root);
  const call: StoreCallOptions = {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
  };
  const { kvs } = await store.get(lockPrefix(name, root), { ...call, prefix: true });
  let holder: KeyValue | undefined;
  for (const kv of kvs) if (holder === undefined || kv.createRevision < holder.createRevision) holder = kv;
  if (holder === undefined || holder.createRevision !== token) return false;
  const r = await store.txn(
    [{ key: holder.key, target: 'createRevision', op: '==', value: token }],
    opts.ops ?? [],
    [],
    call,
  );
  return r.succeeded;
}
