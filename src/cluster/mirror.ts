/**
 * A local, validated copy of every key under one prefix of the cluster store, kept current by list + watch:
 * the building block of the membership view, the DC registry and the directory cache.
 *
 * - start() lists the prefix and watches from the list's revision + 1, so nothing between the two is missed.
 * - Each revision's changes reach `onEvents` in one call, in revision order, after the cache is updated.
 * - A watch that ends (`disconnected`: the store is unreachable; `compacted`: history we needed is gone) is
 *   repaired by listing again and diffing against the cache; the differences are delivered as one batch, so a
 *   subscriber sees the same transitions it would have seen live (minus intermediate values). While the store
 *   cannot be reached, the cache keeps its last state and `healthy` is false: a node keeps serving what it knows.
 * - Values are decoded by the caller's `decode`; a value that fails to decode is logged and treated as absent
 *   (a bad value never crashes the node, and never stands for a valid record).
 */
import type { Logger } from 'pino';
import { DvsError } from '../protocol/errors.js';
import type { ClusterStore, KeyValue, Watch, WatchEnd, WatchEvent } from './store.js';

/** One valid entry of the mirror. */
export interface MirrorEntry<T> {
  key: string;
  value: T;
  kv: KeyValue;
}

/** A change of the mirror. `prev` is the entry's previous valid value, if it had one. */
export type MirrorEvent<T> =
  | { type: 'put'; key: string; value: T; prev: T | undefined; kv: KeyValue }
  | { type: 'delete'; key: string; prev: T };

/** Options of {@link PrefixMirror}. */
export interface PrefixMirrorOptions<T> {
  store: ClusterStore;
  /** Prefix to mirror; should end in '/'. */
  prefix: string;
  /** Decode and validate one value; throw (any error) if malformed. */
  decode: (kv: KeyValue) => T;
  logger: Logger;
  /** The changes of one revision (or of one resync), applied to the cache before the call. */
  onEvents: (events: MirrorEvent<T>[], revision: number) => void;
  /** Called when the mirror loses or regains the store. */
  onHealth?: (healthy: boolean, why?: string) => void;
  /** Timeout of the list calls, ms (default 5000). */
  callTimeoutMs?: number;
  /** Backoff between resync attempts, ms (default 100, doubling up to 2000). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

/** A list + watch mirror of one prefix. */
export class PrefixMirror<T> {
  private readonly o: PrefixMirrorOptions<T>;
  private readonly cache = new Map<string, MirrorEntry<T>>();
  private watch: Watch | undefined;
  /** Bumped on every (re)watch and on stop: callbacks of an older watch are ignored. */
  private gen = 0;
  private rev = 0;
  private ok = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private readonly life = new AbortController();

  constructor(opts: PrefixMirrorOptions<T>) {
    this.o = opts;
    this.retryMs = opts.retryMinMs ?? 100;
  }

  /** Store revision the cache reflects. */
  get revision(): number {
    return this.rev;
  }

  /** False while the store is unreachable (the cache then holds the last known state). */
  get healthy(): boolean {
    return this.ok;
  }

  /** List and watch. Rejects (ENOTCONN, ETIMEDOUT, ...) if the store cannot be listed. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.stopped) throw new DvsError('EINVAL', 'mirror was stopped');
    await this.resync(signal);
  }

  /** Stop watching. The cache stays readable. */
  stop(): void {
    this.stopped = true;
    this.gen++;
    this.life.abort();
    this.watch?.cancel();
    this.watch = undefined;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** The entry of `key`, if valid and present. */
  get(key: string): MirrorEntry<T> | undefined {
    return this.cache.get(key);
  }

  /** Every valid entry, in key order. */
  entries(): MirrorEntry<T>[] {
    return [...this.cache.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private decode(kv: KeyValue): T | undefined {
    try {
      return this.o.decode(kv);
    } catch (e) {
      this.o.logger.warn(
        { key: kv.key, revision: kv.modRevision, err: e instanceof Error ? e.message : String(e) },
        'ignoring a malformed value in the cluster store',
      );
      return undefined;
    }
  }

  private async resync(signal?: AbortSignal): Promise<void> {
    const signals = [this.life.signal, ...(signal ? [signal] : [])];
    const res = await this.o.store.get(this.o.prefix, {
      prefix: true,
      timeout: this.o.callTimeoutMs ?? 5000,
      signal: AbortSignal.any(signals),
    });
    if (this.stopped) return;
    const events: MirrorEvent<T>[] = [];
    const seen = new Set<string>();
    for (const kv of res.kvs) {
      const value = this.decode(kv);
      if (value === undefined) continue;
      seen.add(kv.key);
      const prev = this.cache.get(kv.key);
      if (prev && prev.kv.modRevision === kv.modRevision) continue;
      this.cache.set(kv.key, { key: kv.key, value, kv });
      events.push({ type: 'put', key: kv.key, value, prev: prev?.value, kv });
    }
    for (const [key, prev] of this.cache) {
      if (seen.has(key)) continue;
      this.cache.delete(key);
      events.push({ type: 'delete', key, prev: prev.value });
    }
    this.rev = res.revision;
    this.startWatch(res.revision + 1);
    this.retryMs = this.o.retryMinMs ?? 100;
    const wasOk = this.ok;
    this.ok = true;
    if (events.length > 0) this.deliver(events, res.revision);
    if (!wasOk) this.o.onHealth?.(true);
  }

  private startWatch(from: number): void {
    this.watch?.cancel();
    const gen = ++this.gen;
    this.watch = this.o.store.watch(
      this.o.prefix,
      from,
      (evs, revision) => {
        if (gen === this.gen) this.apply(evs, revision);
      },
      (why, err) => {
        if (gen === this.gen) this.ended(why, err);
      },
    );
  }

  private apply(evs: WatchEvent[], revision: number): void {
    const out: MirrorEvent<T>[] = [];
    for (const ev of evs) {
      const key = ev.kv.key;
      const prev = this.cache.get(key);
      const value = ev.type === 'put' ? this.decode(ev.kv) : undefined;
      if (value === undefined) {
        // A delete, or a put of a malformed value: the key no longer holds a valid record.
        if (prev) {
          this.cache.delete(key);
          out.push({ type: 'delete', key, prev: prev.value });
        }
        continue;
      }
      this.cache.set(key, { key, value, kv: ev.kv });
      out.push({ type: 'put', key, value, prev: prev?.value, kv: ev.kv });
    }
    this.rev = revision;
    if (out.length > 0) this.deliver(out, revision);
  }

  private deliver(events: MirrorEvent<T>[], revision: number): void {
    try {
      this.o.onEvents(events, revision);
    } catch (e) {
      // A subscriber's bug must not stop the mirror: the next revision still has to be applied.
      this.o.logger.error({ err: e, prefix: this.o.prefix }, 'cluster mirror subscriber threw');
    }
  }

  private ended(why: WatchEnd, err?: Error): void {
    this.watch = undefined;
    if (this.stopped || why === 'closed') return;
    this.o.logger.warn(
      { prefix: this.o.prefix, why, err: err?.message },
      'cluster store watch ended; resyncing',
    );
    if (why === 'disconnected' && this.ok) {
      this.ok = false;
      this.o.onHealth?.(false, `store watch ${why}${err ? `: ${err.message}` : ''}`);
    }
    this.scheduleResync(why === 'compacted' ? 0 : this.retryMs);
  }

  private scheduleResync(delay: number): void {
    if (this.stopped || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.resync().catch((e: unknown) => {
        if (this.stopped) return;
        if (this.ok) {
          this.ok = false;
          this.o.onHealth?.(false, `store unreachable: ${e instanceof Error ? e.message : String(e)}`);
        }
        this.retryMs = Math.min(this.retryMs * 2, this.o.retryMaxMs ?? 2000);
        this.scheduleResync(this.retryMs);
      });
    }, delay);
    this.retryTimer.unref?.();
  }
}
