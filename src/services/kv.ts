/**
 * DC-scoped key/value: get, put, delete, compare-and-swap, list by prefix and watch from a revision, over the
 * cluster store (`/dvs/svc/<dc>/kv/<key>`).
 *
 * Guarantees are the store's: every operation is linearizable (one global order of writes, reads see the
 * latest acknowledged write), revisions are the store's global revisions (a key's `revision` is the revision
 * of the write that last changed it, so two writes of one key compare by revision), and a watch delivers
 * every change under its prefix from a revision on, in order, with no gap and no duplicate.
 *
 * Writes are not retried once an attempt may have been applied (a blind second put could land after another
 * client's write and undo it): such a write fails with EUNAVAIL and `details.ambiguous = true`, and the caller
 * decides (re-read, or use `cas`, which is safe to retry by construction). Reads are retried freely within
 * the call's timeout.
 *
 * A write may carry a fence `{lock, token}`: it is applied only if `token` is still the fencing token of the
 * holder of lock `lock` in this DC, in the same transaction (ESTALE otherwise), so a holder that lost its
 * lock (paused past its lease) cannot clobber the next holder's writes.
 */
import type { Compare, KeyValue, Watch, WatchEnd, WatchEvent } from '../cluster/store.js';
import { type DvsError, dvsError } from '../protocol/errors.js';
import { fenceGuard } from './lock.js';
import {
  type CallOptions,
  DcService,
  type ServiceOptions,
  storeCall,
  validateKey,
  validateValue,
} from './scope.js';

/** A key of the DC's kv space. */
export interface KvEntry {
  /** The key, relative to the DC's kv space (as the caller wrote it). */
  key: string;
  value: Uint8Array;
  /** Store revision of the write that last changed the key. */
  revision: number;
  /** Store revision of the write that created it (since its last deletion). */
  createRevision: number;
  /** Writes since creation (1 after the first put). */
  version: number;
  /** The lease the key is bound to, if any. */
  lease?: string;
}

/** What a {@link KvService.cas} compares: the key's revision (0 = the key must not exist) or its value. */
export type KvExpect = { revision: number } | { value: Uint8Array };

/** A fenced write: applied only while `token` is the fencing token of lock `lock`'s holder (same DC). */
export interface KvFence {
  lock: string;
  token: number;
}

/** Options of the writes. */
export interface KvWriteOptions extends CallOptions {
  fence?: KvFence;
}

/** One change seen by a watch. For a delete, `value` is empty and `revision` is the deletion's. */
export interface KvEvent {
  type: 'put' | 'delete';
  key: string;
  value: Uint8Array;
  revision: number;
}

/** A live kv watch. */
export interface KvWatch {
  cancel(): void;
}

/** Outcome of a {@link KvService.cas}. */
export interface CasResult {
  succeeded: boolean;
  /** Store revision after the call (the write's revision if it succeeded). */
  revision: number;
  /** When the compare failed: the key as it is (undefined if it does not exist). */
  current?: KvEntry;
}

/** The kv service of one DC. */
export class KvService extends DcService {
  private readonly watches = new Map<Watch, (why: WatchEnd) => void>();

  constructor(opts: ServiceOptions) {
    super(opts, 'kv');
  }

  async start(): Promise<void> {
    this.running = true;
  }

  /** Stop: every watch ends with 'closed' (its onEnd is called, so a remote watcher learns it). */
  async stop(): Promise<void> {
    this.running = false;
    const all = [...this.watches];
    this.watches.clear();
    for (const [w, end] of all) {
      w.cancel();
      end('closed');
    }
  }

  /** Read one key (ENOENT if it does not exist). */
  get(key: string, opts: CallOptions = {}): Promise<KvEntry> {
    return this.metrics.track('kv', 'get', this.doGet(key, opts));
  }

  /** Write `value` at `key` (optionally bound to `lease`: ENOENT if the lease is gone). Resolves with the revision. */
  put(
    key: string,
    value: Uint8Array,
    opts: KvWriteOptions & { lease?: string } = {},
  ): Promise<{ revision: number }> {
    return this.metrics.track('kv', 'put', this.doPut(key, value, opts));
  }

  /** Delete `key`; `deleted` says whether it existed. */
  delete(key: string, opts: KvWriteOptions = {}): Promise<{ deleted: boolean; revision: number }> {
    return this.metrics.track('kv', 'delete', this.doDelete(key, opts));
  }

  /**
   * Compare-and-swap: if `key` matches `expect` (its revision, 0 meaning absent, or its value), write `value`
   * (or delete the key when `value` is null), atomically. A failed compare is not an error: `succeeded` is
   * false and `current` is the key as it is.
   */
  cas(
    key: string,
    expect: KvExpect,
    value: Uint8Array | null,
    opts: KvWriteOptions = {},
  ): Promise<CasResult> {
    return this.metrics.track('kv', 'cas', this.doCas(key, expect, value, opts));
  }

  /** Every key under `prefix` ('' = all), sorted by key, with the store revision of the read. */
  list(
    prefix: string,
    opts: CallOptions & { limit?: number } = {},
  ): Promise<{ entries: KvEntry[]; revision: number }> {
    return this.metrics.track('kv', 'list', this.doList(prefix, opts));
  }

  /**
   * Watch keys under `prefix` ('' = all) from store revision `fromRevision` (inclusive; after a list, pass
   * `revision + 1`). `onEvents` gets each revision's changes in order; `onEnd` is called once if the watch ends
   * for another reason than cancel(): 'compacted' (re-list and watch again), 'disconnected', 'closed' (stop()).
   */
  watch(
    prefix: string,
    fromRevision: number,
    onEvents: (events: KvEvent[], revision: number) => void,
    onEnd: (why: WatchEnd, err?: Error) => void,
  ): KvWatch {
    validateKey(prefix, true);
    if (!Number.isInteger(fromRevision) || fromRevision < 1) {
      throw dvsError('EINVAL', `fromRevision must be an integer >= 1: ${String(fromRevision)}`);
    }
    if (!this.running) throw dvsError('EUNAVAIL', 'kv service is not running');
    const root = this.scope.kvRoot;
    let ended = false;
    const end = (why: WatchEnd, err?: Error) => {
      if (ended) return;
      ended = true;
      this.watches.delete(w);
      onEnd(why, err);
    };
    const w = this.opts.store.watch(
      `${root}${prefix}`,
      fromRevision,
      (events: WatchEvent[], revision: number) => {
        if (ended) return;
        onEvents(
          events.map((ev) => ({
            type: ev.type,
            key: ev.kv.key.slice(root.length),
            value: ev.kv.value,
            revision: ev.kv.modRevision,
          })),
          revision,
        );
      },
      (why, err) => {
        this.log.debug({ prefix, why, err }, 'kv watch ended');
        end(why, err);
      },
    );
    if (!ended) this.watches.set(w, end);
    return {
      cancel: () => {
        if (ended) return;
        ended = true;
        this.watches.delete(w);
        w.cancel();
      },
    };
  }

  // ---------------------------------------------------------------------------------------------- internals

  private entry(kv: KeyValue): KvEntry {
    const e: KvEntry = {
      key: kv.key.slice(this.scope.kvRoot.length),
      value: kv.value,
      revision: kv.modRevision,
      createRevision: kv.createRevision,
      version: kv.version,
    };
    if (kv.lease !== undefined && kv.lease !== '0') e.lease = kv.lease;
    return e;
  }

  private async fence(f: KvFence | undefined, opts: CallOptions): Promise<Compare[]> {
    if (f === undefined) return [];
    return [await fenceGuard(this.opts.store, this.scope.locksRoot, f.lock, f.token, opts, this.timeoutMs)];
  }

  private async doGet(key: string, opts: CallOptions): Promise<KvEntry> {
    validateKey(key);
    this.check();
    const r = await storeCall({ what: 'kv.get', write: false, idempotent: true }, opts, this.timeoutMs, (c) =>
      this.opts.store.get(`${this.scope.kvRoot}${key}`, c),
    );
    const kv = r.kvs[0];
    if (kv === undefined) throw dvsError('ENOENT', `kv: no key ${JSON.stringify(key)}`, { key });
    return this.entry(kv);
  }

  private async doPut(
    key: string,
    value: Uint8Array,
    opts: KvWriteOptions & { lease?: string },
  ): Promise<{ revision: number }> {
    validateKey(key);
    validateValue(value);
    if (opts.lease !== undefined && (typeof opts.lease !== 'string' || !/^[1-9][0-9]*$/.test(opts.lease))) {
      throw dvsError('EINVAL', `lease must be a lease id: ${JSON.stringify(opts.lease)}`);
    }
    this.check();
    const guard = await this.fence(opts.fence, opts);
    const k = `${this.scope.kvRoot}${key}`;
    const r = await storeCall({ what: 'kv.put', write: true, idempotent: false }, opts, this.timeoutMs, (c) =>
      this.opts.store.txn(
        guard,
        [
          opts.lease === undefined
            ? { op: 'put', key: k, value }
            : { op: 'put', key: k, value, lease: opts.lease },
        ],
        [],
        c,
      ),
    );
    if (!r.succeeded) throw stale(opts.fence);
    return { revision: r.revision };
  }

  private async doDelete(key: string, opts: KvWriteOptions): Promise<{ deleted: boolean; revision: number }> {
    validateKey(key);
    this.check();
    const guard = await this.fence(opts.fence, opts);
    const k = `${this.scope.kvRoot}${key}`;
    const r = await storeCall(
      { what: 'kv.delete', write: true, idempotent: false },
      opts,
      this.timeoutMs,
      (c) => this.opts.store.txn(guard, [{ op: 'delete', key: k }], [], c),
    );
    if (!r.succeeded) throw stale(opts.fence);
    return { deleted: (r.results[0]?.kvs.length ?? 0) > 0, revision: r.revision };
  }

  private async doCas(
    key: string,
    expect: KvExpect,
    value: Uint8Array | null,
    opts: KvWriteOptions,
  ): Promise<CasResult> {
    validateKey(key);
    if (value !== null) validateValue(value);
    const k = `${this.scope.kvRoot}${key}`;
    let cmp: Compare;
    if (typeof expect === 'object' && expect !== null && 'revision' in expect) {
      if (!Number.isInteger(expect.revision) || expect.revision < 0) {
        throw dvsError(
          'EINVAL',
          `cas: expected revision must be an integer >= 0: ${String(expect.revision)}`,
        );
      }
      cmp = { key: k, target: 'modRevision', op: '==', value: expect.revision };
    } else if (typeof expect === 'object' && expect !== null && 'value' in expect) {
      validateValue(expect.value);
      cmp = { key: k, target: 'value', op: '==', value: expect.value };
    } else {
      throw dvsError('EINVAL', 'cas: expect must be {revision} or {value}');
    }
    this.check();
    const guard = await this.fence(opts.fence, opts);
    // The fence and the compare are told apart by a second get in the failure branch: the lock's holder key.
    const r = await storeCall({ what: 'kv.cas', write: true, idempotent: false }, opts, this.timeoutMs, (c) =>
      this.opts.store.txn(
        [...guard, cmp],
        [value === null ? { op: 'delete', key: k } : { op: 'put', key: k, value }],
        [{ op: 'get', key: k }, ...guard.map((g) => ({ op: 'get' as const, key: g.key }))],
        c,
      ),
    );
    if (r.succeeded) return { succeeded: true, revision: r.revision };
    const g = guard[0];
    if (g !== undefined) {
      const holder = r.results[1]?.kvs[0];
      if (holder === undefined || holder.createRevision !== g.value) throw stale(opts.fence);
    }
    const cur = r.results[0]?.kvs[0];
    return cur === undefined
      ? { succeeded: false, revision: r.revision }
      : { succeeded: false, revision: r.revision, current: this.entry(cur) };
  }

  private async doList(
    prefix: string,
    opts: CallOptions & { limit?: number },
  ): Promise<{ entries: KvEntry[]; revision: number }> {
    validateKey(prefix, true);
    if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 1)) {
      throw dvsError('EINVAL', `limit must be an integer >= 1: ${String(opts.limit)}`);
    }
    this.check();
    const r = await storeCall(
      { what: 'kv.list', write: false, idempotent: true },
      opts,
      this.timeoutMs,
      (c) =>
        this.opts.store.get(`${this.scope.kvRoot}${prefix}`, {
          ...c,
          prefix: true,
          ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
        }),
    );
    return { entries: r.kvs.map((kv) => this.entry(kv)), revision: r.revision };
  }
}

function stale(f: KvFence | undefined): DvsError {
  return dvsError('ESTALE', `fencing token ${f?.token} of lock ${f?.lock} is no longer the holder's`, {
    lock: f?.lock,
    token: f?.token,
  });
}
