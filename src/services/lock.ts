/**
 * DC-scoped queued locks with fencing tokens: the recipe of src/cluster/lock.ts (FIFO queue by create
 * revision, each waiter watching its predecessor, idempotent guarded joins), with its queues under
 * `/dvs/svc/<dc>/locks/<name>/<lease>`, a table of the locks this instance holds so the daemon can serve
 * `unlock(name, token)` method by method, and the listing behind `dvs lock ls`.
 *
 * Leases: a lock is bound to a lease and released when the lease ends. The caller may name its own lease
 * (`lease`: the daemon binds it to the holder process or node and keeps it alive; when the process or node
 * dies the lease expires and the lock passes on), or let the service grant one (`ttl`, default 10 s), which
 * the service keeps alive until unlock or stop().
 *
 * Fencing tokens: the holder key's createRevision, strictly increasing across the holders of one lock. A lock
 * over leases is not mutual exclusion in time (a holder paused past its TTL still believes it holds it), so
 * protected resources must check the token: {@link LockService.checkFence}, or a fenced kv write.
 */
import { acquireLock, type LockHandle, lockPrefix } from '../cluster/lock.js';
import type { ClusterStore, Compare, KeyValue } from '../cluster/store.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import {
  type CallOptions,
  DcService,
  remaining,
  type ServiceOptions,
  storeCall,
  validateName,
  validateTimeout,
} from './scope.js';

/** Options of {@link LockService.lock}. */
export interface LockOptions {
  /** ms to wait for the lock (ETIMEDOUT after); default: wait until the signal fires. */
  timeout?: number;
  signal?: AbortSignal;
  /** The caller's lease: the lock is released when it ends. Kept alive by the caller. */
  lease?: string;
  /** Without `lease`: TTL of a lease the service grants and keeps alive, s (default 10). */
  ttl?: number;
  /** Who holds it, for `dvs lock ls` (e.g. `node 3 ep 70`). */
  owner?: string;
}

/** A held lock. */
export interface HeldLock {
  name: string;
  /** Fencing token: strictly increasing across the holders of this lock. */
  token: number;
  /** The lease the lock is bound to. */
  lease: string;
  owner: string;
  /** Release it (ENOTOWNER if it was lost meanwhile, e.g. its lease expired). */
  unlock(opts?: CallOptions): Promise<void>;
}

/** One entry of {@link LockService.list}. */
export interface LockInfo {
  name: string;
  holder: { owner: string; token: number; lease: string };
  /** Waiters in queue order. */
  waiters: { owner: string; lease: string; queuedAt: number }[];
}

interface Held {
  handle: LockHandle;
  lease: string;
  owner: string;
  /** Set when the service granted the lease (then it keeps it alive and revokes it on unlock). */
  keepAlive?: NodeJS.Timeout;
}

const DEFAULT_TTL_S = 10;
const dec = new TextDecoder();

/** The lock service of one DC. */
export class LockService extends DcService {
  /** Locks held through this instance: name -> token -> held. */
  private readonly held = new Map<string, Map<number, Held>>();
  /** Aborts every wait in progress on stop(). */
  private stopping = new AbortController();
  /** Where the queues live: the DC's locks, or (for the election service, same recipe) its elections. */
  private readonly root: string;

  /**
   * @param kind `election` is for {@link ElectionService} only: the same queue recipe under the DC's
   *   elections root (the queue head is the leader, its token the term).
   */
  constructor(
    opts: ServiceOptions,
    private readonly kind: 'lock' | 'election' = 'lock',
  ) {
    super(opts, kind);
    this.root = kind === 'lock' ? this.scope.locksRoot : this.scope.electionsRoot;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.stopping = new AbortController();
    this.running = true;
  }

  /** Stop: waits in progress fail with EUNAVAIL; locks held with service-granted leases are released. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopping.abort();
    const all = [...this.held.values()].flatMap((m) => [...m.values()]);
    this.held.clear();
    await Promise.all(all.map((h) => this.dropHeld(h, { timeout: 1_000 }).catch(() => {})));
  }

  /**
   * Take lock `name`, waiting in FIFO order. Resolves with the lock and its fencing token; rejects with
   * ETIMEDOUT / EABORTED (the waiter leaves the queue), ENOENT (the lease is gone), EBUSY (this lease already
   * holds or awaits the lock), EUNAVAIL (the store did not answer, or the service stopped), EINVAL.
   */
  lock(name: string, opts: LockOptions = {}): Promise<HeldLock> {
    return this.metrics.track(this.kind, 'lock', this.doLock(name, opts));
  }

  /** Release the lock held with `token` (ENOTOWNER if this instance does not hold it, or it was lost). */
  unlock(name: string, token: number, opts: CallOptions = {}): Promise<void> {
    return this.metrics.track(this.kind, 'unlock', this.doUnlock(name, token, opts));
  }

  /** Resolve if `token` is the fencing token of lock `name`'s current holder; ESTALE if not. */
  checkFence(name: string, token: number, opts: CallOptions = {}): Promise<void> {
    return this.metrics.track(
      this.kind,
      'checkFence',
      (async () => {
        this.check();
        await fenceGuard(this.opts.store, this.root, name, token, opts, this.timeoutMs);
      })(),
    );
  }

  /** Every lock of the DC that has a holder, with its queue, sorted by name. */
  list(opts: CallOptions = {}): Promise<LockInfo[]> {
    return this.metrics.track(this.kind, 'list', this.doList(opts));
  }

  // ---------------------------------------------------------------------------------------------- internals

  private async doLock(name: string, opts: LockOptions): Promise<HeldLock> {
    validateName(this.kind, name);
    validateTimeout(opts.timeout);
    const ttl = opts.ttl ?? DEFAULT_TTL_S;
    if (opts.lease === undefined && (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600)) {
      throw dvsError('EINVAL', `lock ttl must be an integer of 1..3600 s: ${String(opts.ttl)}`);
    }
    const owner = opts.owner ?? '';
    if (typeof owner !== 'string' || owner.length > 256)
      throw dvsError('EINVAL', 'owner: at most 256 characters');
    this.check();
    const deadline = opts.timeout === undefined ? undefined : Date.now() + opts.timeout;
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.stopping.signal]) : this.stopping.signal;
    const { store } = this.opts;

    let lease = opts.lease;
    let granted = false;
    if (lease === undefined) {
      const t = remaining(deadline);
      lease = await storeCall(
        { what: 'lock: grant lease', write: true, idempotent: false },
        { signal, timeout: t === undefined ? this.timeoutMs : Math.min(t, this.timeoutMs) },
        this.timeoutMs,
        (c) => store.grantLease(ttl, c),
      ).catch((e: unknown) => {
        throw this.stoppedOr(e);
      });
      granted = true;
    }

    let handle: LockHandle;
    // The service-granted lease is renewed while we wait too: waiting may take longer than its TTL.
    const keepAlive = granted ? this.keepAlive(name, lease, ttl) : undefined;
    try {
      const t = remaining(deadline);
      handle = await acquireLock(store, name, {
        lease,
        logger: this.log,
        owner,
        root: this.root,
        signal,
        ...(t === undefined ? {} : { timeout: t }),
      });
    } catch (e) {
      if (keepAlive) clearInterval(keepAlive);
      if (granted) await store.revokeLease(lease, { timeout: 1_000 }).catch(() => {});
      throw this.stoppedOr(e);
    }
    const held: Held = keepAlive ? { handle, lease, owner, keepAlive } : { handle, lease, owner };
    let byToken = this.held.get(name);
    if (byToken === undefined) {
      byToken = new Map();
      this.held.set(name, byToken);
    }
    byToken.set(handle.fencingToken, held);
    const token = handle.fencingToken;
    return {
      name,
      token,
      lease,
      owner,
      unlock: (o?: CallOptions) => this.unlock(name, token, o),
    };
  }

  /** After stop(), a wait that was cut short reports EUNAVAIL rather than EABORTED. */
  private stoppedOr(e: unknown): DvsError {
    const err = DvsError.from(e);
    if (!this.running && err.code === 'EABORTED') return dvsError('EUNAVAIL', `${this.kind} service stopped`);
    return err;
  }

  private keepAlive(name: string, lease: string, ttl: number): NodeJS.Timeout {
    const t = setInterval(
      () => {
        this.opts.store.keepAlive(lease, { timeout: Math.max(500, (ttl * 1000) / 3) }).then(
          (left) => {
            if (left === 0) {
              clearInterval(t);
              this.log.warn({ lock: name, lease }, 'lock lease expired: the lock is lost');
            }
          },
          // One failed renewal is not a loss (etcd leader changes take up to ~2 s): the next tick retries.
          (e: unknown) => this.log.debug({ err: e, lock: name, lease }, 'lock lease keepalive failed'),
        );
      },
      Math.max(200, (ttl * 1000) / 3),
    );
    t.unref();
    return t;
  }

  private async doUnlock(name: string, token: number, opts: CallOptions): Promise<void> {
    validateName(this.kind, name);
    if (!Number.isInteger(token) || token < 1)
      throw dvsError('EINVAL', `bad fencing token: ${String(token)}`);
    this.check();
    const h = this.held.get(name)?.get(token);
    if (h === undefined) {
      throw dvsError('ENOTOWNER', `lock ${name}: token ${token} is not held here`, { name, token });
    }
    const still = await this.dropHeld(h, opts);
    if (!still)
      throw dvsError('ENOTOWNER', `lock ${name}: token ${token} was lost (lease ended)`, { name, token });
  }

  /** Forget `h`, delete its key if it still holds, revoke a service lease. Resolves whether it still held. */
  private async dropHeld(h: Held, opts: CallOptions): Promise<boolean> {
    const { store } = this.opts;
    const { handle } = h;
    // Guarded by the token: idempotent, so an ambiguous attempt is retried safely; never touches a later key.
    const r = await storeCall(
      { what: 'lock.unlock', write: true, idempotent: true },
      opts,
      this.timeoutMs,
      (c) => store.txn([handle.fence], [{ op: 'delete', key: handle.key }], [], c),
    );
    const byToken = this.held.get(handle.name);
    byToken?.delete(handle.fencingToken);
    if (byToken?.size === 0) this.held.delete(handle.name);
    if (h.keepAlive !== undefined) {
      clearInterval(h.keepAlive);
      await store.revokeLease(h.lease, { timeout: 1_000 }).catch((e: unknown) => {
        this.log.debug({ err: e, lease: h.lease }, 'could not revoke a lock lease; it expires by itself');
      });
    }
    return r.succeeded;
  }

  private async doList(opts: CallOptions): Promise<LockInfo[]> {
    this.check();
    const root = this.root;
    const r = await storeCall(
      { what: `${this.kind}.list`, write: false, idempotent: true },
      opts,
      this.timeoutMs,
      (c) => this.opts.store.get(root, { ...c, prefix: true }),
    );
    const queues = new Map<string, KeyValue[]>();
    for (const kv of r.kvs) {
      const rest = kv.key.slice(root.length);
      const slash = rest.indexOf('/');
      if (slash <= 0) continue;
      const name = rest.slice(0, slash);
      const q = queues.get(name);
      if (q === undefined) queues.set(name, [kv]);
      else q.push(kv);
    }
    const out: LockInfo[] = [];
    for (const [name, q] of [...queues].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      q.sort((a, b) => a.createRevision - b.createRevision);
      const [first, ...rest] = q;
      if (first === undefined) continue;
      out.push({
        name,
        holder: { owner: ownerOf(first), token: first.createRevision, lease: leaseOf(first) },
        waiters: rest.map((kv) => ({ owner: ownerOf(kv), lease: leaseOf(kv), queuedAt: kv.createRevision })),
      });
    }
    return out;
  }
}

/** The `owner` of a queue key's value ({owner, nonce} JSON, written by src/cluster/lock.ts). */
export function ownerOf(kv: KeyValue): string {
  try {
    const v = JSON.parse(dec.decode(kv.value)) as { owner?: unknown };
    return typeof v.owner === 'string' ? v.owner : '';
  } catch {
    return '';
  }
}

function leaseOf(kv: KeyValue): string {
  return kv.lease ?? kv.key.slice(kv.key.lastIndexOf('/') + 1);
}

/**
 * A transaction guard that holds exactly while `token` is the fencing token of lock `name`'s holder in
 * `scope`: the holder key with `createRevision == token`. Rejects with ESTALE if the token is not the
 * current holder's (a later holder exists, the lock is free, or it was a waiter's revision). Once a key is
 * the holder it stays the holder until deleted, so the guard fails exactly when the holder changed.
 */
export async function fenceGuard(
  store: ClusterStore,
  root: string,
  name: string,
  token: number,
  opts: CallOptions,
  timeoutMs: number,
): Promise<Compare> {
  validateName('lock', name);
  if (!Number.isInteger(token) || token < 1) throw dvsError('EINVAL', `bad fencing token: ${String(token)}`);
  const prefix = lockPrefix(name, root);
  const { kvs } = await storeCall(
    { what: 'lock.fence', write: false, idempotent: true },
    opts,
    timeoutMs,
    (c) => store.get(prefix, { ...c, prefix: true }),
  );
  let holder: KeyValue | undefined;
  for (const kv of kvs) if (holder === undefined || kv.createRevision < holder.createRevision) holder = kv;
  if (holder === undefined || holder.createRevision !== token) {
    throw dvsError('ESTALE', `lock ${name}: token ${token} is not the holder's`, {
      name,
      token,
      current: holder?.createRevision ?? null,
    });
  }
  return { key: holder.key, target: 'createRevision', op: '==', value: token };
}
