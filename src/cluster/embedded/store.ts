/**
 * The embedded ClusterStore: one process, one writer, so there is no consensus problem. Linearizability comes
 * from the event loop (every transaction is evaluated and applied synchronously, in call order) and
 * durability from a write-ahead log with group commit: transactions applied during one fdatasync are written
 * together by the next one, and nothing is acknowledged, and no watch event is delivered, before the record
 * that carries it is on disk. Reads wait for the same barrier, so no caller ever sees a state that a crash
 * could take back.
 *
 * Leases: expiry runs on a timer tick; keepAlive is not logged (it would double the log traffic of a
 * cluster's heartbeats). After a restart every lease gets its full TTL again, counted from the reopen: a
 * holder is never expired earlier than it would have been without the restart, and one that died with the
 * store goes away one TTL after it comes back.
 *
 * File format and guarantees: wal.ts and docs/cluster-store.md.
 */
import { randomInt } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DvsError, dvsError } from '../../protocol/errors.js';
import {
  type ClusterStore,
  type Compare,
  deleteViaTxn,
  type KeyValue,
  putViaTxn,
  type StoreCallOptions,
  type TxnOp,
  type TxnResult,
  type Watch,
  type WatchEnd,
  type WatchEvent,
} from '../store.js';
import {
  encodeRecord,
  listFiles,
  type Mutation,
  readSnapshot,
  SNAP_MAGIC,
  type SnapshotData,
  scanSegment,
  segmentName,
  snapshotName,
  syncDir,
  WAL_MAGIC,
  type WalRecord,
} from './wal.js';

/** Options of {@link EmbeddedStore}. */
export interface EmbeddedStoreOptions {
  /** Directory of the log and snapshots (created if missing). One store per directory (a lock file). */
  dir: string;
  logger: Logger;
  /** fdatasync every commit (default true). false is for tests and benchmarks only: a crash loses writes. */
  fsync?: boolean;
  /** Write a snapshot and drop older log segments after this many records (default 10000). */
  snapshotEvery?: number;
  /** Revisions of watch history kept for late watchers (default 10000); older ones are 'compacted'. */
  historyRevisions?: number;
  /** Clock in ms (default Date.now); lease expiry uses it. */
  now?: () => number;
  /** Lease expiry tick in ms (default 100). */
  leaseTickMs?: number;
  /** Default timeout of a call in ms (default 5000). */
  timeout?: number;
}

interface Entry {
  value: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: string | undefined;
}

interface Lease {
  ttl: number;
  expiresAt: number;
  keys: Set<string>;
}

interface Watcher {
  prefix: string;
  next: number;
  live: boolean;
  done: boolean;
  onEvents: (events: WatchEvent[], revision: number) => void;
  onEnd: (why: WatchEnd, err?: Error) => void;
}

interface Pending {
  bytes: Buffer;
  seq: number;
  rev: number;
}

const EMPTY = new Uint8Array(0);

function toKv(key: string, e: Entry): KeyValue {
  const kv: KeyValue = {
    key,
    value: e.value,
    createRevision: e.createRevision,
    modRevision: e.modRevision,
    version: e.version,
  };
  if (e.lease !== undefined) kv.lease = e.lease;
  return kv;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) throw dvsError('EINVAL', 'key must be a non-empty string');
}

/** The embedded, single-node, durable ClusterStore. */
export class EmbeddedStore implements ClusterStore {
  private readonly dir: string;
  private readonly log: Logger;
  private readonly fsync: boolean;
  private readonly snapshotEvery: number;
  private readonly historyRevisions: number;
  private readonly now: () => number;
  private readonly leaseTickMs: number;
  private readonly defaultTimeout: number;

  private readonly kvs = new Map<string, Entry>();
  private readonly leases = new Map<string, Lease>();
  private revision = 0;
  private seq = 0;
  /** Lease ids start at a random point so ids from a wiped store are not mistaken for live ones. */
  private nextLease = 1 + randomInt(2 ** 40);

  /** Watch history: one entry per revision, contiguous, oldest at `histHead`. */
  private hist: { rev: number; events: WatchEvent[] }[] = [];
  private histHead = 0;
  private readonly watchers = new Set<Watcher>();

  private segment: FileHandle | null = null;
  private segmentFirstSeq = 0;
  private recordsSinceSnapshot = 0;
  private queue: Pending[] = [];
  private flushing = false;
  private durableSeq = 0;
  private durableRev = 0;
  /** Resolvers waiting for durableSeq >= seq, in seq order. */
  private waiters: { seq: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private gate: Promise<void> | null = null;
  private broken: Error | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  private idle: Promise<void> = Promise.resolve();

  constructor(opts: EmbeddedStoreOptions) {
    this.dir = opts.dir;
    this.log = opts.logger;
    this.fsync = opts.fsync ?? true;
    this.snapshotEvery = opts.snapshotEvery ?? 10_000;
    this.historyRevisions = opts.historyRevisions ?? 10_000;
    this.now = opts.now ?? Date.now;
    this.leaseTickMs = opts.leaseTickMs ?? 100;
    this.defaultTimeout = opts.timeout ?? 5000;
    if (!(this.snapshotEvery >= 1) || !(this.historyRevisions >= 1)) {
      throw dvsError('EINVAL', 'snapshotEvery and historyRevisions must be >= 1');
    }
  }

  /** Current revision (including writes not yet durable). */
  get currentRevision(): number {
    return this.revision;
  }

  // ---------------------------------------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    if (this.state !== 'new') throw dvsError('EINVAL', `store already ${this.state}`);
    this.state = 'starting';
    await mkdir(this.dir, { recursive: true });
    await this.lock();
    await this.recover();
    this.ticker = setInterval(() => this.expireLeases(), this.leaseTickMs);
    this.ticker.unref();
    this.state = 'running';
    this.log.info({ dir: this.dir, revision: this.revision, keys: this.kvs.size }, 'cluster store open');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'new') {
      this.state = 'stopped';
      return;
    }
    this.state = 'stopped';
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    // Let queued commits finish, so acknowledged-to-be writes are not left hanging.
    if (!this.broken) await this.waitDurable(this.seq).catch(() => {});
    await this.idle;
    for (const w of this.watchers) this.endWatch(w, 'closed');
    await this.segment?.close();
    this.segment = null;
    await rm(join(this.dir, 'LOCK'), { force: true });
  }

  /** Refuse a second live process on the same directory; a lock left by a dead process is taken over. */
  private async lock(): Promise<void> {
    const file = join(this.dir, 'LOCK');
    try {
      const pid = Number((await readFile(file, 'utf8')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw dvsError('EBUSY', `cluster store ${this.dir} is open in process ${pid}`, { pid });
      }
    } catch (e) {
      if (e instanceof DvsError) throw e;
    }
    await writeFile(file, `${process.pid}\n`);
  }

  private async recover(): Promise<void> {
    const { segments, snapshots } = await listFiles(this.dir);
    const snap = snapshots.at(-1);
    let histStart = 1;
    if (snap) {
      const data = await readSnapshot(this.dir, snap.name);
      this.loadSnapshot(data);
      histStart = data.rev + 1;
    }
    let replayed = 0;
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]!;
      const file = join(this.dir, seg.name);
      const buf = await readFile(file);
      const scan = scanSegment(file, buf, i === segments.length - 1);
      for (const rec of scan.records) {
        if (rec.seq <= this.seq) continue;
        if (rec.seq !== this.seq + 1) {
          throw dvsError('EINTERNAL', `cluster store: record ${rec.seq} in ${file} follows ${this.seq}`, {
            file,
          });
        }
        this.replay(rec);
        replayed++;
      }
      if (scan.tornBytes > 0) {
        this.log.warn({ file, offset: scan.goodLength, bytes: scan.tornBytes }, 'dropping torn log tail');
        const fh = await open(file, 'r+');
        try {
          await fh.truncate(scan.goodLength);
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
    }
    // History before the snapshot is gone; replayed records rebuilt the rest.
    if (this.hist.length === 0) this.histStartRev = histStart;
    this.durableSeq = this.seq;
    this.durableRev = this.revision;
    this.recordsSinceSnapshot = replayed;
    const now = this.now();
    for (const l of this.leases.values()) l.expiresAt = now + l.ttl * 1000;
    await this.openSegment(this.seq + 1);
    if (replayed > 0) this.log.info({ records: replayed, revision: this.revision }, 'log replayed');
  }

  /** First retained revision when the history is empty (after a snapshot load). */
  private histStartRev = 1;

  private loadSnapshot(d: SnapshotData): void {
    this.seq = d.seq;
    this.revision = d.rev;
    this.nextLease = d.nextLease;
    for (const [id, ttl] of d.leases) this.leases.set(id, { ttl, expiresAt: 0, keys: new Set() });
    for (const [key, value, createRevision, modRevision, version, lease] of d.kvs) {
      this.kvs.set(key, { value, createRevision, modRevision, version, lease: lease ?? undefined });
      if (lease !== undefined && lease !== null) this.leases.get(lease)?.keys.add(key);
    }
  }

  private replay(rec: WalRecord): void {
    this.seq = rec.seq;
    if (rec.grant) {
      const [id, ttl] = rec.grant;
      this.leases.set(id, { ttl, expiresAt: 0, keys: new Set() });
      this.nextLease = Math.max(this.nextLease, Number(id) + 1);
    }
    if (rec.rev > 0) {
      this.revision = rec.rev;
      const events: WatchEvent[] = [];
      for (const m of rec.muts) {
        const ev = this.mutate(m, rec.rev);
        if (ev) events.push(ev);
      }
      this.pushHistory(rec.rev, events);
    }
    if (rec.revoke !== undefined) this.leases.delete(rec.revoke);
  }

  private async openSegment(firstSeq: number): Promise<void> {
    const name = segmentName(firstSeq);
    // 'w': a file of that name can only be an empty segment left by a crash right after its creation
    // (anything in it with seq >= firstSeq would have been replayed, moving firstSeq on).
    const fh = await open(join(this.dir, name), 'w');
    await fh.write(WAL_MAGIC);
    await fh.sync();
    await syncDir(this.dir);
    this.segment = fh;
    this.segmentFirstSeq = firstSeq;
  }

  // ---------------------------------------------------------------------------------------------- the API

  async get(
    key: string,
    opts: StoreCallOptions & { prefix?: boolean; limit?: number } = {},
  ): Promise<{ kvs: KeyValue[]; revision: number }> {
    this.check(opts);
    checkKey(key);
    const kvs = this.range(key, opts.prefix === true, opts.limit ?? 0);
    const revision = this.revision;
    await this.settle(this.waitDurable(this.seq), opts, false);
    return { kvs, revision };
  }

  put(key: string, value: Uint8Array, opts: StoreCallOptions & { lease?: string } = {}): Promise<number> {
    return putViaTxn(this, key, value, opts);
  }

  delete(
    key: string,
    opts: StoreCallOptions & { prefix?: boolean } = {},
  ): Promise<{ deleted: number; revision: number }> {
    return deleteViaTxn(this, key, opts);
  }

  async txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
    opts: StoreCallOptions = {},
  ): Promise<TxnResult> {
    this.check(opts);
    for (const c of compare) this.checkCompare(c);
    const succeeded = compare.every((c) => this.evaluate(c));
    const ops = succeeded ? success : failure;
    this.checkOps(ops);
    const rev = this.revision + 1;
    const muts: Mutation[] = [];
    const events: WatchEvent[] = [];
    const results: { kvs: KeyValue[] }[] = [];
    for (const op of ops) {
      if (op.op === 'get') {
        results.push({ kvs: this.range(op.key, op.prefix === true, op.limit ?? 0) });
      } else if (op.op === 'put') {
        const m: Mutation = [op.key, Uint8Array.from(op.value), op.lease];
        muts.push(m);
        events.push(this.mutate(m, rev)!);
        results.push({ kvs: [] });
      } else {
        const gone = this.range(op.key, op.prefix === true, 0);
        for (const kv of gone) {
          const m: Mutation = [kv.key, null, undefined];
          muts.push(m);
          events.push(this.mutate(m, rev)!);
        }
        results.push({ kvs: gone });
      }
    }
    let seq = this.durableSeqFloor();
    if (muts.length > 0) {
      this.revision = rev;
      this.pushHistory(rev, events);
      seq = this.append({ seq: 0, rev, muts });
    }
    await this.settle(this.waitDurable(seq), opts, muts.length > 0);
    return { succeeded, revision: muts.length > 0 ? rev : this.revision, results };
  }

  async grantLease(ttlSeconds: number, opts: StoreCallOptions = {}): Promise<string> {
    this.check(opts);
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 1e9) {
      throw dvsError('EINVAL', `lease TTL must be an integer number of seconds >= 1, got ${ttlSeconds}`);
    }
    const id = String(this.nextLease++);
    this.leases.set(id, { ttl: ttlSeconds, expiresAt: this.now() + ttlSeconds * 1000, keys: new Set() });
    const seq = this.append({ seq: 0, rev: 0, muts: [], grant: [id, ttlSeconds] });
    await this.settle(this.waitDurable(seq), opts, true);
    return id;
  }

  async keepAlive(lease: string, opts: StoreCallOptions = {}): Promise<number> {
    this.check(opts);
    const l = this.leases.get(lease);
    // The barrier: a grant not yet durable is not acknowledged, a revoke not yet durable may come back.
    await this.settle(this.waitDurable(this.seq), opts, false);
    if (!l || !this.leases.has(lease)) return 0;
    l.expiresAt = this.now() + l.ttl * 1000;
    return l.ttl;
  }

  async revokeLease(lease: string, opts: StoreCallOptions = {}): Promise<void> {
    this.check(opts);
    const seq = this.endLease(lease) ?? this.seq;
    await this.settle(this.waitDurable(seq), opts, true);
  }

  watch(
    prefix: string,
    fromRevision: number,
    onEvents: (events: WatchEvent[], revision: number) => void,
    onEnd: (why: WatchEnd, err?: Error) => void,
  ): Watch {
    const w: Watcher = {
      prefix,
      next: fromRevision > 0 ? fromRevision : this.durableRev + 1,
      live: false,
      done: false,
      onEvents,
      onEnd,
    };
    this.watchers.add(w);
    // Never call back from inside watch(): the caller has not even got its handle yet.
    setImmediate(() => this.catchUp(w));
    return {
      cancel: () => {
        w.done = true;
        this.watchers.delete(w);
      },
    };
  }

  /**
   * Drop watch history below `revision` (as etcd's Compact): later watches from an older revision end with
   * 'compacted'. The bounded history (historyRevisions) does this automatically.
   */
  compact(revision: number): void {
    while (this.histHead < this.hist.length && this.hist[this.histHead]!.rev < revision) this.histHead++;
    if (this.histHead === this.hist.length) this.histStartRev = Math.max(this.histStartRev, revision);
    this.trimHistoryArray();
  }

  /**
   * Hold commits (nothing becomes durable, so nothing is acknowledged) until the returned function is called.
   * For tests of timeouts and for maintenance (a consistent copy of the directory while held).
   */
  holdCommits(): () => void {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    this.gate = gate;
    return () => {
      if (this.gate === gate) this.gate = null;
      release();
    };
  }

  // ---------------------------------------------------------------------------------------------- internals

  private check(opts: StoreCallOptions): void {
    if (opts.signal?.aborted) throw dvsError('EABORTED');
    if (this.broken) throw new DvsError('EINTERNAL', `cluster store failed: ${this.broken.message}`);
    if (this.state !== 'running') throw dvsError('ENOTCONN', `cluster store is ${this.state}`);
  }

  private checkCompare(c: Compare): void {
    checkKey(c.key);
    const bytes = c.value instanceof Uint8Array;
    const ok =
      c.target === 'value'
        ? bytes
        : c.target === 'lease'
          ? typeof c.value === 'string'
          : typeof c.value === 'number' && Number.isFinite(c.value);
    if (!ok || !['==', '!=', '<', '>'].includes(c.op)) {
      throw dvsError('EINVAL', `bad compare on ${c.key}: ${c.target} ${c.op}`);
    }
  }

  /** Validate a whole branch before applying any of it: a branch is applied entirely or not at all. */
  private checkOps(ops: TxnOp[]): void {
    for (const op of ops) {
      checkKey(op.key);
      if (op.op === 'put') {
        if (!(op.value instanceof Uint8Array)) throw dvsError('EINVAL', `value of ${op.key} must be bytes`);
        if (op.lease !== undefined && !this.leases.has(op.lease)) {
          throw dvsError('ENOENT', `lease ${op.lease} not found`, { lease: op.lease });
        }
      } else if (op.op === 'get') {
        if (op.limit !== undefined && (!Number.isInteger(op.limit) || op.limit < 0)) {
          throw dvsError('EINVAL', `bad limit ${op.limit}`);
        }
      } else if (op.op !== 'delete') {
        throw dvsError('EINVAL', `unknown op ${(op as { op: unknown }).op}`);
      }
    }
  }

  private evaluate(c: Compare): boolean {
    const e = this.kvs.get(c.key);
    let d: number;
    switch (c.target) {
      case 'value':
        // etcd: comparing the value of a missing key always fails.
        if (!e) return false;
        d = compareBytes(e.value, c.value as Uint8Array);
        break;
      case 'lease': {
        const have = e?.lease ?? '0';
        const want = c.value as string;
        d = have === want ? 0 : Number(have) - Number(want) || (have < want ? -1 : 1);
        break;
      }
      default:
        d = (e ? e[c.target] : 0) - (c.value as number);
    }
    switch (c.op) {
      case '==':
        return d === 0;
      case '!=':
        return d !== 0;
      case '<':
        return d < 0;
      default:
        return d > 0;
    }
  }

  /** Keys equal to `key`, or under it if `prefix`, sorted, at most `limit` (0 = all). */
  private range(key: string, prefix: boolean, limit: number): KeyValue[] {
    if (!prefix) {
      const e = this.kvs.get(key);
      return e ? [toKv(key, e)] : [];
    }
    const keys: string[] = [];
    for (const k of this.kvs.keys()) if (k.startsWith(key)) keys.push(k);
    // Byte order of UTF-8 equals code point order; JS string order is UTF-16 unit order, equal for BMP keys.
    keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const n = limit > 0 ? Math.min(limit, keys.length) : keys.length;
    const out: KeyValue[] = [];
    for (let i = 0; i < n; i++) out.push(toKv(keys[i]!, this.kvs.get(keys[i]!)!));
    return out;
  }

  /** Apply one mutation at `rev`; returns its watch event (undefined for a delete of a missing key). */
  private mutate([key, value, lease]: Mutation, rev: number): WatchEvent | undefined {
    const old = this.kvs.get(key);
    if (old?.lease !== undefined) this.leases.get(old.lease)?.keys.delete(key);
    if (value === null) {
      if (!old) return undefined;
      this.kvs.delete(key);
      return { type: 'delete', kv: { key, value: EMPTY, createRevision: 0, modRevision: rev, version: 0 } };
    }
    const e: Entry = {
      value,
      createRevision: old ? old.createRevision : rev,
      modRevision: rev,
      version: old ? old.version + 1 : 1,
      lease: lease ?? undefined,
    };
    this.kvs.set(key, e);
    if (e.lease !== undefined) this.leases.get(e.lease)?.keys.add(key);
    return { type: 'put', kv: toKv(key, e) };
  }

  /** Revoke or expire a lease: delete its keys in one revision. Returns the record's seq, or undefined. */
  private endLease(id: string): number | undefined {
    const l = this.leases.get(id);
    if (!l) return undefined;
    const keys = [...l.keys].sort();
    this.leases.delete(id);
    if (keys.length === 0) return this.append({ seq: 0, rev: 0, muts: [], revoke: id });
    const rev = ++this.revision;
    const muts: Mutation[] = keys.map((k) => [k, null, undefined]);
    const events = muts.map((m) => this.mutate(m, rev)!);
    this.pushHistory(rev, events);
    return this.append({ seq: 0, rev, muts, revoke: id });
  }

  private expireLeases(): void {
    if (this.state !== 'running' || this.broken) return;
    const now = this.now();
    for (const [id, l] of this.leases) {
      if (l.expiresAt <= now) {
        this.log.debug({ lease: id, keys: l.keys.size }, 'lease expired');
        this.endLease(id);
      }
    }
  }

  private pushHistory(rev: number, events: WatchEvent[]): void {
    this.hist.push({ rev, events });
    if (this.hist.length - this.histHead > this.historyRevisions) this.histHead++;
    this.trimHistoryArray();
  }

  private trimHistoryArray(): void {
    if (this.histHead > 1024 && this.histHead * 2 > this.hist.length) {
      this.hist = this.hist.slice(this.histHead);
      this.histHead = 0;
    }
  }

  /** Oldest revision a watch can start from. */
  private get historyStart(): number {
    return this.histHead < this.hist.length
      ? this.hist[this.histHead]!.rev
      : Math.max(this.histStartRev, this.revision + 1);
  }

  private durableSeqFloor(): number {
    // A read-only or failed txn still waits for what it read to be durable.
    return this.seq;
  }

  // ---------------------------------------------------------------------------------------------- the log

  /** Queue a record for the next group commit; returns its seq. */
  private append(rec: WalRecord): number {
    rec.seq = ++this.seq;
    const bytes = encodeRecord(rec);
    this.queue.push({ bytes, seq: rec.seq, rev: rec.rev });
    if (!this.flushing) {
      this.flushing = true;
      this.idle = this.flushLoop();
    }
    return rec.seq;
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.broken) {
        if (this.gate !== null) await this.gate;
        const batch = this.queue;
        this.queue = [];
        const seg = this.segment!;
        await seg.writev(batch.map((p) => p.bytes));
        if (this.fsync) await seg.datasync();
        const last = batch.at(-1)!;
        let rev = this.durableRev;
        for (const p of batch) if (p.rev > rev) rev = p.rev;
        this.recordsSinceSnapshot += batch.length;
        this.durableSeq = last.seq;
        this.publish(rev);
        this.release();
        if (this.recordsSinceSnapshot >= this.snapshotEvery) await this.snapshot();
      }
    } catch (e) {
      this.fail(e as Error);
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Snapshot the state at the last applied record (records queued meanwhile go to the new segment and are
   * skipped on replay by their seq), then drop older segments and snapshots.
   */
  private async snapshot(): Promise<void> {
    const data: SnapshotData = {
      seq: this.seq,
      rev: this.revision,
      nextLease: this.nextLease,
      kvs: [...this.kvs].map(([k, e]) => [k, e.value, e.createRevision, e.modRevision, e.version, e.lease]),
      leases: [...this.leases].map(([id, l]) => [id, l.ttl]),
    };
    const started = Date.now();
    const old = this.segment!;
    if (this.segmentFirstSeq === this.seq + 1) return; // nothing in the current segment yet
    await this.openSegment(this.seq + 1);
    await old.close();
    const body = encodeRecord(data);
    const tmp = join(this.dir, 'snap.tmp');
    const fh = await open(tmp, 'w');
    try {
      await fh.writev([SNAP_MAGIC, body]);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(this.dir, snapshotName(data.seq)));
    await syncDir(this.dir);
    const { segments, snapshots } = await listFiles(this.dir);
    for (const s of segments) if (s.seq < this.segmentFirstSeq) await rm(join(this.dir, s.name));
    for (const s of snapshots) if (s.seq < data.seq) await rm(join(this.dir, s.name));
    await syncDir(this.dir);
    this.recordsSinceSnapshot = this.seq - data.seq;
    this.log.debug(
      { seq: data.seq, revision: data.rev, keys: data.kvs.length, ms: Date.now() - started },
      'snapshot',
    );
  }

  private waitDurable(seq: number): Promise<void> {
    if (this.broken)
      return Promise.reject(new DvsError('EINTERNAL', `cluster store failed: ${this.broken.message}`));
    if (seq <= this.durableSeq) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  private release(): void {
    let i = 0;
    while (i < this.waiters.length && this.waiters[i]!.seq <= this.durableSeq) this.waiters[i++]!.resolve();
    if (i > 0) this.waiters.splice(0, i);
  }

  /**
   * The log cannot be written: the in-memory state is ahead of the disk and nothing can be trusted (after a
   * failed fsync the kernel may have dropped the dirty pages). Fail everything; a restart replays the log.
   */
  private fail(e: Error): void {
    if (this.broken) return;
    this.broken = e;
    this.log.error({ err: e }, 'cluster store log write failed; store stopped');
    const err = new DvsError('EINTERNAL', `cluster store failed: ${e.message}`, undefined, { cause: e });
    for (const w of this.waiters) w.reject(err);
    this.waiters = [];
    for (const w of this.watchers) this.endWatch(w, 'disconnected', err);
  }

  /** Await a durability barrier within the call's timeout and signal. */
  private settle(p: Promise<void>, opts: StoreCallOptions, write: boolean): Promise<void> {
    const timeout = opts.timeout ?? this.defaultTimeout;
    return new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (e) reject(e);
        else resolve();
      };
      const details = write ? { ambiguous: true } : undefined;
      const timer = setTimeout(
        () => done(dvsError('ETIMEDOUT', `cluster store call timed out after ${timeout} ms`, details)),
        timeout,
      );
      const onAbort = () => done(dvsError('EABORTED', undefined, details));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      p.then(() => done(), done);
    });
  }

  // ---------------------------------------------------------------------------------------------- watches

  private catchUp(w: Watcher): void {
    if (w.done) return;
    if (this.state === 'stopped') {
      this.endWatch(w, 'closed');
      return;
    }
    if (w.next < this.historyStart && w.next <= this.durableRev) {
      this.endWatch(w, 'compacted');
      return;
    }
    for (let rev = w.next; rev <= this.durableRev && !w.done; rev++) {
      this.deliver(w, this.hist[this.histHead + (rev - this.hist[this.histHead]!.rev)]!);
    }
    w.live = true;
  }

  private publish(upTo: number): void {
    const from = this.durableRev + 1;
    this.durableRev = upTo;
    if (this.watchers.size === 0 || upTo < from) return;
    const start = this.historyStart;
    if (from < start) {
      // One commit carried more revisions than the history keeps: live watchers missed some.
      for (const w of this.watchers) if (w.live && w.next < start) this.endWatch(w, 'compacted');
    }
    if (this.histHead >= this.hist.length) return;
    const base = this.hist[this.histHead]!.rev - this.histHead;
    for (let rev = Math.max(from, start); rev <= upTo; rev++) {
      const h = this.hist[rev - base]!;
      for (const w of this.watchers) if (w.live && !w.done) this.deliver(w, h);
    }
  }

  private deliver(w: Watcher, h: { rev: number; events: WatchEvent[] }): void {
    if (h.rev < w.next) return;
    w.next = h.rev + 1;
    const events = w.prefix === '' ? h.events : h.events.filter((e) => e.kv.key.startsWith(w.prefix));
    if (events.length === 0) return;
    try {
      w.onEvents(events, h.rev);
    } catch (e) {
      this.log.warn({ err: e }, 'watch callback threw');
    }
  }

  private endWatch(w: Watcher, why: WatchEnd, err?: Error): void {
    if (w.done) return;
    w.done = true;
    this.watchers.delete(w);
    try {
      w.onEnd(why, err);
    } catch (e) {
      this.log.warn({ err: e }, 'watch onEnd threw');
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
