/**
 * Distributed shared memory: named byte segments of a DC, readable and writable from processes on any of its
 * nodes, sequentially consistent (in fact linearizable: every access takes effect at one instant inside its
 * call, in one order all nodes agree on). docs/dsm.md has the reasoning; this is the protocol.
 *
 * Pages, homes and copies (Li & Hudak's IVY, "fixed distributed manager" variant). A segment is cut into pages
 * (4 KiB). Each segment has a home node, chosen from its name among the DC's nodes, that manages its pages:
 * for each page it knows the single writer (a node holding the only, writable, copy) or the set of readers
 * (nodes holding read-only copies of the home's master copy). Every node keeps copies of the pages its
 * processes touched, and serves an access from its copy when the copy allows it; otherwise it faults to the
 * home, which serialises the faults of one page:
 *
 * ```
 *   holder N                                home H of the segment                     other holders
 *   read miss ── dsm.fault {page, read, req} ─▶ lock page
 *                                              writer W≠N? ── dsm.inval {downgrade} ─▶ W: write→read, returns data
 *                                              readers += N; seq++; grant[N] = {seq, req}
 *             ◀── {seq, data} ───────────────  unlock page
 *   install copy (read), run the access
 *
 *   write miss ─ dsm.fault {page, write, req} ▶ lock page
 *                                              writer W≠N? ── dsm.inval {drop} ──────▶ W: drops, returns data
 *                                              every reader R≠N ── dsm.inval {drop} ─▶ R: drops (acked)
 *                                              writer = N; readers = {}; seq++
 *             ◀── {seq, data} ───────────────  unlock page
 *   install copy (write), run the access
 * ```
 *
 * Why it is linearizable: a page is writable at exactly one node and only while nobody else holds a copy
 * (the home grants write access only after every other copy acknowledged its invalidation), and a read copy
 * always equals the latest write (a writer is downgraded, handing its data to the home, before any read copy
 * is granted). So every access, run against a valid copy at one instant, reads the latest value written.
 *
 * The race that needs care: a grant's reply and a later invalidation travel on the same ordered link, but the
 * reply is installed in a promise continuation, after the link may already have dispatched the invalidation.
 * The home therefore sends, with each invalidation, the `seq` and `req` of the last grant it made to that
 * node; a holder that has not installed that grant yet and still awaits that request's reply waits for it
 * first. The holder also runs the access that faulted in the same continuation that installs the copy, so
 * a page that bounces between writers still lets every faulting access through (no livelock).
 *
 * Node-to-node methods (over src/node/node-rpc.ts; MessagePack; `gen` names one incarnation of a segment so
 * a holder never mixes pages of a removed segment with a new one of the same name):
 * ```
 *   dsm.create  {dc, name, size?}                       → SegmentInfo              (home; size omitted: open)
 *   dsm.fault   {dc, name, gen, page, mode, req}        → {seq, data}              (home)
 *   dsm.inval   {dc, name, gen, page, upTo, req, mode}  → {data | null}            (holder; mode drop|downgrade)
 *   dsm.forget  {dc, name, gen}                         → {ok}                     (holder: segment removed)
 *   dsm.unlink  {dc, name}                              → {ok}                     (home)
 *   dsm.lock    {dc, name, gen, lock, owner, ref, timeout} → {token}               (home; FIFO)
 *   dsm.unlock  {dc, name, gen, lock, owner, token}     → {ok}                     (home; ENOTOWNER)
 *   dsm.abandon {dc, name, ref}                         → {ok}                     (home: a waiter gave up)
 *   dsm.release {owner}                                 → {ok}                     (home: an owner's session closed)
 *   dsm.list    {dc}                                    → SegmentStat[]            (home: its segments)
 * ```
 *
 * Failures. A holder whose link to a home is declared dead drops its copies of that home's pages; a home
 * that loses a node forgets its copies and locks; if that node was a page's writer, the writes it made since
 * it got the page are lost and the page reverts to the home's master copy (counted in
 * dvs_dsm_pages_lost_total). A segment whose home is down answers ENOTCONN until it returns; segments live in
 * the home's memory and die with it.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { DcId, NodeId } from '../../kernel/types.js';
import { DvsError, dvsError } from '../../protocol/errors.js';
import { abortError, Mutex } from './mutex.js';

/** Bytes of one page. */
export const DSM_PAGE_SIZE = 4096;
/** Largest segment, bytes. */
export const DSM_MAX_SEGMENT_BYTES = 64 * 1024 * 1024;
/** Largest single read or write, bytes. */
export const DSM_MAX_ACCESS_BYTES = 1024 * 1024;
/** Most segments one home keeps per DC. */
export const DSM_MAX_SEGMENTS = 1024;
/** Longest lock wait a caller may ask for, ms. */
export const DSM_MAX_LOCK_WAIT_MS = 600_000;

/** A segment as its home describes it. */
export interface SegmentInfo {
  dc: DcId;
  name: string;
  size: number;
  pageSize: number;
  home: NodeId;
  /** Incarnation of the segment (a new one after unlink and create). */
  gen: string;
}

/** A segment with its home's bookkeeping (`dvs dsm ls`, tests). */
export interface SegmentStat extends SegmentInfo {
  /** Pages ever touched. */
  pages: number;
  /** Pages held writable by a node now. */
  writers: Record<string, number>;
  /** Locks held, with their holders. */
  locks: { name: string; owner: string; token: number; waiters: number }[];
}

/** How a DsmNode reaches other nodes' DsmNodes. */
export interface DsmTransport {
  /** Call `method` on node `node`'s DSM (never this node: the DsmNode dispatches those itself). */
  call(
    node: NodeId,
    method: string,
    params: Record<string, unknown>,
    opts: { timeout: number; signal?: AbortSignal },
  ): Promise<unknown>;
}

export interface DsmNodeOptions {
  nodeId: NodeId;
  transport: DsmTransport;
  /** Nodes of a DC as this node knows them; undefined if the DC is not known here. */
  dcNodes: (dc: DcId) => readonly NodeId[] | undefined;
  logger: Logger;
  /** Timeout of one node-to-node step (fault, invalidation), ms (default 10 000). */
  rpcTimeoutMs?: number;
  registry?: Registry;
}

/** Options of an access. */
export interface AccessOptions {
  timeout?: number;
  signal?: AbortSignal;
}

type Mode = 'read' | 'write';
type Access = 'none' | Mode;

interface HomePage {
  /** Master copy: current unless `writer` is set. */
  data: Uint8Array;
  writer: NodeId | undefined;
  readers: Set<NodeId>;
  /** Last grant made to each node. */
  grants: Map<NodeId, { seq: number; req: number }>;
  seq: number;
  mutex: Mutex;
}

interface LockWaiter {
  owner: string;
  ref: string;
  grant: (token: number) => void;
  fail: (e: DvsError) => void;
}

interface HomeLock {
  holder: { owner: string; ref: string; token: number } | undefined;
  queue: LockWaiter[];
}

interface HomeSegment {
  info: SegmentInfo;
  pages: Map<number, HomePage>;
  locks: Map<string, HomeLock>;
  nextToken: number;
}

interface CopyPage {
  access: Access;
  data: Uint8Array | undefined;
  installedSeq: number;
  /** Faults in flight by request id: settled once the reply is installed (or the fault failed). */
  inflight: Map<number, Promise<void>>;
  mutex: Mutex;
}

interface CopySegment {
  info: SegmentInfo;
  pages: Map<number, CopyPage>;
}

const key = (dc: DcId, name: string) => `${dc}/${name}`;
const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** The home of segment `name` among `nodes`: FNV-1a of the name over the sorted node ids. */
export function homeOf(name: string, nodes: readonly NodeId[]): NodeId {
  if (nodes.length === 0) throw dvsError('ENOENT', 'the DC has no nodes');
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  const sorted = [...nodes].sort((a, b) => a - b);
  return sorted[h % sorted.length]!;
}

/** EINVAL unless `name` is a segment (or lock) name: 1..128 of [A-Za-z0-9._-]. */
export function validateSegmentName(name: unknown, what = 'segment name'): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw dvsError(
      'EINVAL',
      `${what} must be 1..128 characters of A-Z a-z 0-9 . _ -: ${JSON.stringify(name)}`,
    );
  }
}

/** EFAULT unless [offset, offset+length) lies inside a segment of `size` bytes. */
export function checkRange(info: { name: string; size: number }, offset: number, length: number): void {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || length < 0) {
    throw dvsError('EINVAL', `bad range: offset ${String(offset)}, length ${String(length)}`);
  }
  if (length > DSM_MAX_ACCESS_BYTES) {
    throw dvsError('EINVAL', `one access moves at most ${DSM_MAX_ACCESS_BYTES} bytes (asked ${length})`);
  }
  if (offset < 0 || offset + length > info.size) {
    throw dvsError(
      'EFAULT',
      `segment '${info.name}' has ${info.size} bytes: [${offset}, ${offset + length}) is out of bounds`,
      { offset, length, size: info.size },
    );
  }
}

class DsmMetrics {
  readonly faults: Counter<'mode'> | undefined;
  readonly faultSeconds: Histogram<'mode'> | undefined;
  readonly invalidations: Counter | undefined;
  readonly lost: Counter | undefined;

  constructor(registry: Registry | undefined, node: DsmNode) {
    if (registry === undefined) return;
    const registers = [registry];
    this.faults = new Counter({
      name: 'dvs_dsm_faults_total',
      help: 'Page faults sent to a home (accesses the local copy could not serve)',
      labelNames: ['mode'],
      registers,
    });
    this.faultSeconds = new Histogram({
      name: 'dvs_dsm_fault_duration_seconds',
      help: 'Time from a page fault to the copy installed',
      labelNames: ['mode'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.invalidations = new Counter({
      name: 'dvs_dsm_invalidations_total',
      help: 'Invalidations and downgrades of local page copies asked by homes',
      registers,
    });
    this.lost = new Counter({
      name: 'dvs_dsm_pages_lost_total',
      help: 'Pages whose writer node died: they reverted to the home copy',
      registers,
    });
    new Gauge({
      name: 'dvs_dsm_segments',
      help: 'DSM segments homed on this node',
      registers,
      collect() {
        this.set(node.homedCount());
      },
    });
    new Gauge({
      name: 'dvs_dsm_pages_cached',
      help: 'Page copies held on this node, by access',
      labelNames: ['access'],
      registers,
      collect() {
        const c = node.copyCounts();
        this.set({ access: 'read' }, c.read);
        this.set({ access: 'write' }, c.write);
      },
    });
  }
}

/**
 * One node's part of the DSM: home of the segments whose name hashes to it, holder of page copies for the
 * local processes. Drive it with the local API (open, read, write, lock, ...) and feed it the node-to-node
 * calls (`handle`) and link events (`nodeDown`).
 */
export class DsmNode {
  private readonly o: DsmNodeOptions;
  private readonly log: Logger;
  private readonly rpcTimeoutMs: number;
  private readonly homed = new Map<string, HomeSegment>();
  private readonly copies = new Map<string, CopySegment>();
  private readonly metrics: DsmMetrics;
  private nextReq = 1;
  private running = false;
  /** Aborts every node-to-node wait on stop(). */
  private stopping = new AbortController();

  constructor(o: DsmNodeOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'dsm' });
    this.rpcTimeoutMs = o.rpcTimeoutMs ?? 10_000;
    this.metrics = new DsmMetrics(o.registry, this);
  }

  async start(): Promise<void> {
    this.stopping = new AbortController();
    // Every node call in flight listens on it: many concurrent faults are normal, not a leak.
    setMaxListeners(0, this.stopping.signal);
    this.running = true;
  }

  /** Forget every segment and copy (they live in memory only); lock waiters fail with EUNAVAIL. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopping.abort(dvsError('EUNAVAIL', 'DSM stopping'));
    for (const seg of this.homed.values()) {
      for (const l of seg.locks.values()) {
        for (const w of l.queue.splice(0)) w.fail(dvsError('EUNAVAIL', 'DSM stopping'));
      }
    }
    this.homed.clear();
    this.copies.clear();
  }

  // ------------------------------------------------------------------------------------------ local API

  /**
   * Open segment `name` of `dc`, creating it with `size` bytes (zeroed) if it does not exist. Without `size`,
   * open an existing one (ENOENT if none); with a size that differs from the existing segment's, EINVAL.
   */
  async open(
    dc: DcId,
    name: string,
    size: number | undefined,
    opts: AccessOptions = {},
  ): Promise<SegmentInfo> {
    validateSegmentName(name);
    if (size !== undefined && (!Number.isInteger(size) || size < 1 || size > DSM_MAX_SEGMENT_BYTES)) {
      throw dvsError('EINVAL', `segment size must be an integer of 1..${DSM_MAX_SEGMENT_BYTES} bytes`);
    }
    const home = this.homeFor(dc, name);
    const info = (await this.call(
      home,
      'dsm.create',
      { dc, name, ...(size !== undefined ? { size } : {}) },
      opts,
    )) as SegmentInfo;
    const k = key(dc, name);
    const had = this.copies.get(k);
    if (had === undefined || had.info.gen !== info.gen) this.copies.set(k, { info, pages: new Map() });
    return info;
  }

  /** Read `length` bytes at `offset`. EFAULT out of bounds (nothing is read). */
  async read(
    dc: DcId,
    name: string,
    offset: number,
    length: number,
    opts: AccessOptions = {},
  ): Promise<Uint8Array> {
    const seg = await this.segment(dc, name, opts);
    checkRange(seg.info, offset, length);
    const out = new Uint8Array(length);
    await this.eachPage(seg, offset, length, 'read', opts, (data, at, from, n) => {
      out.set(data.subarray(at, at + n), from);
    });
    return out;
  }

  /** Write `data` at `offset`. EFAULT out of bounds (nothing is written). */
  async write(
    dc: DcId,
    name: string,
    offset: number,
    data: Uint8Array,
    opts: AccessOptions = {},
  ): Promise<void> {
    const seg = await this.segment(dc, name, opts);
    checkRange(seg.info, offset, data.length);
    await this.eachPage(seg, offset, data.length, 'write', opts, (page, at, from, n) => {
      page.set(data.subarray(from, from + n), at);
    });
  }

  /**
   * Take lock `lock` of segment `name` for `owner` (FIFO). `ref` names this request so that a caller who
   * gives up can {@link abandon} it. Resolves with a token, strictly increasing per segment.
   */
  async lock(
    dc: DcId,
    name: string,
    lock: string,
    owner: string,
    ref: string,
    opts: { timeout?: number; signal?: AbortSignal } = {},
  ): Promise<number> {
    validateSegmentName(lock, 'lock name');
    const timeout = opts.timeout ?? 30_000;
    if (!Number.isInteger(timeout) || timeout < 0 || timeout > DSM_MAX_LOCK_WAIT_MS) {
      throw dvsError('EINVAL', `lock timeout must be 0..${DSM_MAX_LOCK_WAIT_MS} ms`);
    }
    const seg = await this.segment(dc, name, opts);
    const params = { dc, name, gen: seg.info.gen, lock, owner, ref, timeout };
    try {
      // raceAbort: a home on this node is called directly, without the signal.
      const r = (await raceAbort(
        this.call(seg.info.home, 'dsm.lock', params, {
          timeout: timeout + this.rpcTimeoutMs,
          ...(opts.signal ? { signal: opts.signal } : {}),
        }),
        opts.signal,
      )) as { token: number };
      return r.token;
    } catch (e) {
      const err = DvsError.from(e);
      // The home may have granted it as we gave up: tell it, so the lock is not left held by nobody.
      if (err.code === 'EABORTED' || err.code === 'ETIMEDOUT') {
        void this.call(seg.info.home, 'dsm.abandon', { dc, name, ref }, {}).catch(() => {});
      }
      throw err;
    }
  }

  /** Release lock `lock` held by `owner` with `token` (ENOTOWNER otherwise). */
  async unlock(
    dc: DcId,
    name: string,
    lock: string,
    owner: string,
    token: number,
    opts: AccessOptions = {},
  ): Promise<void> {
    const seg = await this.segment(dc, name, opts);
    await this.call(seg.info.home, 'dsm.unlock', { dc, name, gen: seg.info.gen, lock, owner, token }, opts);
  }

  /** Release every lock `owner` holds or awaits at `homes` (its session closed). Errors are only logged. */
  async release(owner: string, homes: Iterable<NodeId>): Promise<void> {
    await Promise.all(
      [...new Set(homes)].map((h) =>
        this.call(h, 'dsm.release', { owner }, {}).catch((e: unknown) =>
          this.log.debug({ err: e, owner, home: h }, 'releasing DSM locks failed'),
        ),
      ),
    );
  }

  /** Remove segment `name` of `dc` everywhere (its data is gone; holders drop their copies). */
  async unlink(dc: DcId, name: string, opts: AccessOptions = {}): Promise<void> {
    validateSegmentName(name);
    await this.call(this.homeFor(dc, name), 'dsm.unlink', { dc, name }, opts);
  }

  /** Segments of `dc` homed on every node of the DC that answers, sorted by name. */
  async list(dc: DcId, opts: AccessOptions = {}): Promise<SegmentStat[]> {
    const nodes = this.o.dcNodes(dc);
    if (nodes === undefined) throw dvsError('ENOENT', `no DC ${dc} on node ${this.o.nodeId}`);
    const all = await Promise.all(
      nodes.map((n) => this.call(n, 'dsm.list', { dc }, opts).catch(() => [] as SegmentStat[])),
    );
    return (all as SegmentStat[][]).flat().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The link to `node` was declared dead: drop what depended on it (see the header: Failures). */
  nodeDown(node: NodeId): void {
    for (const [k, seg] of this.copies) {
      if (seg.info.home === node) this.copies.delete(k);
    }
    const prefix = `${node}/`;
    for (const seg of this.homed.values()) {
      for (const [n, pg] of seg.pages) {
        pg.readers.delete(node);
        pg.grants.delete(node);
        if (pg.writer === node) {
          pg.writer = undefined;
          this.metrics.lost?.inc();
          this.log.warn(
            { dc: seg.info.dc, segment: seg.info.name, page: n, node },
            'the writer of a DSM page died: the page reverts to its last copy at the home',
          );
        }
      }
      this.releaseOwners(seg, (o) => o.startsWith(prefix));
    }
  }

  /** Segments homed here (metrics). */
  homedCount(): number {
    return this.homed.size;
  }

  /** Page copies held here, by access (metrics). */
  copyCounts(): { read: number; write: number } {
    const c = { read: 0, write: 0 };
    for (const seg of this.copies.values()) {
      for (const p of seg.pages.values()) if (p.access !== 'none') c[p.access]++;
    }
    return c;
  }

  // --------------------------------------------------------------------------------- node-to-node side

  /** Serve a node-to-node call from `from` (the same node for this node's own calls). */
  async handle(method: string, p: Record<string, unknown>, from: NodeId): Promise<unknown> {
    if (!this.running) throw dvsError('EUNAVAIL', 'DSM is not running');
    switch (method) {
      case 'dsm.create':
        return this.onCreate(p);
      case 'dsm.fault':
        return this.onFault(p, from);
      case 'dsm.inval':
        return this.onInval(p);
      case 'dsm.forget': {
        const k = key(int(p.dc, 'dc'), str(p.name));
        if (this.copies.get(k)?.info.gen === p.gen) this.copies.delete(k);
        return { ok: true };
      }
      case 'dsm.unlink':
        return this.onUnlink(p);
      case 'dsm.lock':
        return this.onLock(p);
      case 'dsm.unlock':
        return this.onUnlock(p);
      case 'dsm.abandon': {
        const seg = this.homed.get(key(int(p.dc, 'dc'), str(p.name)));
        const ref = str(p.ref);
        if (seg) this.releaseOwners(seg, (_o, r) => r === ref);
        return { ok: true };
      }
      case 'dsm.release': {
        const owner = str(p.owner);
        for (const seg of this.homed.values()) this.releaseOwners(seg, (o) => o === owner);
        return { ok: true };
      }
      case 'dsm.list': {
        const dc = int(p.dc, 'dc');
        return [...this.homed.values()].filter((s) => s.info.dc === dc).map((s) => this.stat(s));
      }
      default:
        throw dvsError('EINVAL', `unknown DSM method '${method}'`);
    }
  }

  // ---------------------------------------------------------------------------------------- internals

  private homeFor(dc: DcId, name: string): NodeId {
    const nodes = this.o.dcNodes(dc);
    if (nodes === undefined) throw dvsError('ENOENT', `no DC ${dc} on node ${this.o.nodeId}`);
    return homeOf(name, nodes);
  }

  /** This node's copy table of a segment, opening it (no size: must exist) on first use. */
  private async segment(dc: DcId, name: string, opts: AccessOptions): Promise<CopySegment> {
    validateSegmentName(name);
    const seg = this.copies.get(key(dc, name));
    if (seg !== undefined) return seg;
    await this.open(dc, name, undefined, opts);
    const s = this.copies.get(key(dc, name));
    if (s === undefined) throw dvsError('ENOENT', `segment '${name}' was removed`);
    return s;
  }

  /** Calls a node's DSM: this node's own handler directly, others through the transport. */
  private call(
    node: NodeId,
    method: string,
    params: Record<string, unknown>,
    opts: AccessOptions,
  ): Promise<unknown> {
    if (node === this.o.nodeId) return this.handle(method, params, node);
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.stopping.signal]) : this.stopping.signal;
    return this.o.transport.call(node, method, params, {
      timeout: opts.timeout ?? this.rpcTimeoutMs,
      signal,
    });
  }

  /** Run `fn` on each page the range covers, in address order, each with the access `mode` needs. */
  private async eachPage(
    seg: CopySegment,
    offset: number,
    length: number,
    mode: Mode,
    opts: AccessOptions,
    fn: (page: Uint8Array, at: number, from: number, n: number) => void,
  ): Promise<void> {
    const ps = seg.info.pageSize;
    const signal =
      opts.timeout === undefined
        ? opts.signal
        : AbortSignal.any([AbortSignal.timeout(opts.timeout), ...(opts.signal ? [opts.signal] : [])]);
    let pos = 0;
    while (pos < length) {
      const addr = offset + pos;
      const page = Math.floor(addr / ps);
      const at = addr - page * ps;
      const n = Math.min(ps - at, length - pos);
      const from = pos;
      await this.pageOp(seg, page, mode, signal, (data) => fn(data, at, from, n));
      pos += n;
    }
  }

  /**
   * One access to one page: from the local copy if it allows `mode`, else after a fault to the home. The
   * access runs in the same continuation that installs the copy (see the header: the race).
   */
  private async pageOp(
    seg: CopySegment,
    page: number,
    mode: Mode,
    signal: AbortSignal | undefined,
    fn: (data: Uint8Array) => void,
  ): Promise<void> {
    let pg = seg.pages.get(page);
    if (pg === undefined) {
      pg = { access: 'none', data: undefined, installedSeq: 0, inflight: new Map(), mutex: new Mutex() };
      seg.pages.set(page, pg);
    }
    const copy = pg;
    const release = await copy.mutex.lock(signal).catch((e: unknown) => {
      throw timeoutOr(e, signal);
    });
    try {
      for (;;) {
        if (allows(copy.access, mode) && copy.data !== undefined) {
          fn(copy.data);
          return;
        }
        if (this.copies.get(key(seg.info.dc, seg.info.name)) !== seg) {
          throw dvsError('ENOENT', `segment '${seg.info.name}' was removed or its home went down`);
        }
        const req = this.nextReq++;
        let ran = false;
        let settle!: () => void;
        copy.inflight.set(req, new Promise<void>((r) => (settle = r)));
        const started = performance.now();
        this.metrics.faults?.inc({ mode });
        // No caller signal here: a grant must be installed even if the caller gave up (the home counts on it).
        const fault = this.call(
          seg.info.home,
          'dsm.fault',
          { dc: seg.info.dc, name: seg.info.name, gen: seg.info.gen, page, mode, req },
          {},
        )
          .then((r) => {
            const g = r as { seq: number; data: Uint8Array };
            if (g.seq > copy.installedSeq) {
              copy.installedSeq = g.seq;
              copy.data = new Uint8Array(g.data);
              copy.access = mode;
            }
            this.metrics.faultSeconds?.observe({ mode }, (performance.now() - started) / 1000);
            if (!signal?.aborted && copy.data !== undefined && allows(copy.access, mode)) {
              fn(copy.data);
              ran = true;
            }
          })
          .catch((e: unknown) => {
            const err = DvsError.from(e);
            if (err.code === 'ESTALE' || err.code === 'ENOENT') {
              this.copies.delete(key(seg.info.dc, seg.info.name));
              throw dvsError('ENOENT', `segment '${seg.info.name}' was removed`);
            }
            throw err;
          })
          .finally(() => {
            copy.inflight.delete(req);
            settle();
          });
        await raceAbort(fault, signal);
        if (ran) return;
      }
    } finally {
      release();
    }
  }

  private onCreate(p: Record<string, unknown>): SegmentInfo {
    const dc = int(p.dc, 'dc');
    const name = str(p.name);
    validateSegmentName(name);
    const k = key(dc, name);
    const size = p.size === undefined ? undefined : int(p.size, 'size');
    const had = this.homed.get(k);
    if (had !== undefined) {
      if (size !== undefined && size !== had.info.size) {
        throw dvsError('EINVAL', `segment '${name}' exists with ${had.info.size} bytes, not ${size}`, {
          size: had.info.size,
        });
      }
      return had.info;
    }
    if (size === undefined) throw dvsError('ENOENT', `no segment '${name}' in DC ${dc}`);
    if (size < 1 || size > DSM_MAX_SEGMENT_BYTES) throw dvsError('EINVAL', `bad segment size ${size}`);
    let count = 0;
    for (const s of this.homed.values()) if (s.info.dc === dc) count++;
    if (count >= DSM_MAX_SEGMENTS)
      throw dvsError('ENOSPC', `node ${this.o.nodeId} homes ${count} segments of DC ${dc}`);
    const info: SegmentInfo = {
      dc,
      name,
      size,
      pageSize: DSM_PAGE_SIZE,
      home: this.o.nodeId,
      gen: `${this.o.nodeId}.${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 8)}`,
    };
    this.homed.set(k, { info, pages: new Map(), locks: new Map(), nextToken: 1 });
    this.log.info({ dc, segment: name, size }, 'DSM segment created');
    return info;
  }

  private homeSegment(p: Record<string, unknown>): HomeSegment {
    const seg = this.homed.get(key(int(p.dc, 'dc'), str(p.name)));
    if (seg === undefined) throw dvsError('ENOENT', `no segment '${String(p.name)}'`);
    if (p.gen !== undefined && p.gen !== seg.info.gen)
      throw dvsError('ESTALE', `segment '${seg.info.name}' was recreated`);
    return seg;
  }

  private async onFault(
    p: Record<string, unknown>,
    from: NodeId,
  ): Promise<{ seq: number; data: Uint8Array }> {
    const seg = this.homeSegment(p);
    const page = int(p.page, 'page');
    const mode = p.mode === 'write' ? 'write' : p.mode === 'read' ? 'read' : undefined;
    if (mode === undefined) throw dvsError('EINVAL', 'mode must be read or write');
    const req = int(p.req, 'req');
    const ps = seg.info.pageSize;
    if (page * ps >= seg.info.size)
      throw dvsError('EFAULT', `page ${page} is outside segment '${seg.info.name}'`);
    let pg = seg.pages.get(page);
    if (pg === undefined) {
      const bytes = Math.min(ps, seg.info.size - page * ps);
      pg = {
        data: new Uint8Array(bytes),
        writer: undefined,
        readers: new Set(),
        grants: new Map(),
        seq: 0,
        mutex: new Mutex(),
      };
      seg.pages.set(page, pg);
    }
    const hp = pg;
    return hp.mutex.run(async () => {
      const base = { dc: seg.info.dc, name: seg.info.name, gen: seg.info.gen, page };
      const w = hp.writer;
      if (w !== undefined && w !== from) {
        const g = hp.grants.get(w) ?? { seq: 0, req: 0 };
        const r = await this.invalidate(w, {
          ...base,
          upTo: g.seq,
          req: g.req,
          mode: mode === 'read' ? 'downgrade' : 'drop',
        });
        if (r instanceof Uint8Array) hp.data.set(r);
        // Downgraded writers keep a read copy; dropped (or dead) ones nothing.
        if (mode === 'read' && r !== 'gone') hp.readers.add(w);
        hp.writer = undefined;
      } else if (w === from) {
        // It faults, so it lost the copy it was granted (a reply it gave up on): nothing was written with it.
        hp.writer = undefined;
      }
      if (mode === 'write') {
        const others = [...hp.readers].filter((n) => n !== from);
        const results = await Promise.allSettled(
          others.map((n) => {
            const g = hp.grants.get(n) ?? { seq: 0, req: 0 };
            return this.invalidate(n, { ...base, upTo: g.seq, req: g.req, mode: 'drop' });
          }),
        );
        others.forEach((n, i) => {
          if (results[i]?.status === 'fulfilled') hp.readers.delete(n);
        });
        const failed = results.find((r) => r.status === 'rejected');
        if (failed !== undefined) throw DvsError.from((failed as PromiseRejectedResult).reason);
        hp.readers.clear();
        hp.writer = from;
      } else {
        hp.readers.add(from);
      }
      hp.seq++;
      hp.grants.set(from, { seq: hp.seq, req });
      return { seq: hp.seq, data: hp.data.slice() };
    });
  }

  /**
   * Ask `node` to drop or downgrade its copy. Resolves with the data it held writable (null if it held none),
   * or 'gone' when the node is unreachable for good (its link declared dead: its copy went with it).
   */
  private async invalidate(
    node: NodeId,
    params: Record<string, unknown>,
  ): Promise<Uint8Array | null | 'gone'> {
    try {
      const r = (await this.call(node, 'dsm.inval', params, {})) as { data: Uint8Array | null };
      return r.data === null ? null : new Uint8Array(r.data);
    } catch (e) {
      const err = DvsError.from(e);
      if (err.code === 'ENOTCONN') return 'gone';
      throw dvsError('EUNAVAIL', `node ${node} did not release a DSM page: ${err.message}`, { node });
    }
  }

  private async onInval(p: Record<string, unknown>): Promise<{ data: Uint8Array | null }> {
    this.metrics.invalidations?.inc();
    const seg = this.copies.get(key(int(p.dc, 'dc'), str(p.name)));
    if (seg === undefined || seg.info.gen !== p.gen) return { data: null };
    const pg = seg.pages.get(int(p.page, 'page'));
    if (pg === undefined) return { data: null };
    const upTo = int(p.upTo, 'upTo');
    // The grant the home last made us may still be on its way into the copy: wait for it (see the header).
    const pending = pg.inflight.get(int(p.req, 'req'));
    if (pg.installedSeq < upTo && pending !== undefined) await pending;
    const data = pg.access === 'write' && pg.data !== undefined ? pg.data.slice() : null;
    if (p.mode === 'downgrade') {
      if (pg.access === 'write') pg.access = 'read';
    } else {
      pg.access = 'none';
      pg.data = undefined;
    }
    return { data };
  }

  private async onUnlink(p: Record<string, unknown>): Promise<{ ok: true }> {
    const seg = this.homeSegment(p);
    this.homed.delete(key(seg.info.dc, seg.info.name));
    for (const l of seg.locks.values()) {
      for (const w of l.queue.splice(0)) w.fail(dvsError('ENOENT', `segment '${seg.info.name}' was removed`));
    }
    const nodes = new Set<NodeId>(this.o.dcNodes(seg.info.dc) ?? []);
    nodes.add(this.o.nodeId);
    const { dc, name, gen } = seg.info;
    await Promise.allSettled([...nodes].map((n) => this.call(n, 'dsm.forget', { dc, name, gen }, {})));
    this.log.info({ dc, segment: name }, 'DSM segment removed');
    return { ok: true };
  }

  private onLock(p: Record<string, unknown>): Promise<{ token: number }> {
    const seg = this.homeSegment(p);
    const name = str(p.lock);
    validateSegmentName(name, 'lock name');
    const owner = str(p.owner);
    const ref = str(p.ref);
    const timeout = int(p.timeout, 'timeout');
    let l = seg.locks.get(name);
    if (l === undefined) {
      l = { holder: undefined, queue: [] };
      seg.locks.set(name, l);
    }
    const lk = l;
    if (lk.holder === undefined && lk.queue.length === 0) {
      const token = seg.nextToken++;
      lk.holder = { owner, ref, token };
      return Promise.resolve({ token });
    }
    if (lk.holder?.ref === ref || lk.queue.some((w) => w.ref === ref)) {
      return Promise.reject(dvsError('EEXIST', `lock request ${ref} already made`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = lk.queue.indexOf(w);
        if (i >= 0) lk.queue.splice(i, 1);
        reject(
          dvsError('ETIMEDOUT', `lock '${name}' of segment '${seg.info.name}' not free within ${timeout} ms`),
        );
      }, timeout);
      const w: LockWaiter = {
        owner,
        ref,
        grant: (token) => {
          clearTimeout(timer);
          resolve({ token });
        },
        fail: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      lk.queue.push(w);
    });
  }

  private onUnlock(p: Record<string, unknown>): { ok: true } {
    const seg = this.homeSegment(p);
    const name = str(p.lock);
    const owner = str(p.owner);
    const token = int(p.token, 'token');
    const l = seg.locks.get(name);
    if (l?.holder === undefined || l.holder.owner !== owner || l.holder.token !== token) {
      throw dvsError(
        'ENOTOWNER',
        `lock '${name}' of segment '${seg.info.name}' is not held with token ${token}`,
        {
          lock: name,
          token,
        },
      );
    }
    this.passOn(seg, name, l);
    return { ok: true };
  }

  /** Give lock `name` to its next waiter (or free it). */
  private passOn(seg: HomeSegment, name: string, l: HomeLock): void {
    const next = l.queue.shift();
    if (next === undefined) {
      l.holder = undefined;
      seg.locks.delete(name);
      return;
    }
    const token = seg.nextToken++;
    l.holder = { owner: next.owner, ref: next.ref, token };
    next.grant(token);
  }

  /** Drop the waits and holds for which `match(owner, ref)` is true. */
  private releaseOwners(seg: HomeSegment, match: (owner: string, ref: string) => boolean): void {
    for (const [name, l] of [...seg.locks]) {
      for (const w of [...l.queue]) {
        if (match(w.owner, w.ref)) {
          l.queue.splice(l.queue.indexOf(w), 1);
          w.fail(dvsError('EABORTED', 'lock request abandoned'));
        }
      }
      if (l.holder !== undefined && match(l.holder.owner, l.holder.ref)) this.passOn(seg, name, l);
      else if (l.holder === undefined && l.queue.length === 0) seg.locks.delete(name);
    }
  }

  private stat(s: HomeSegment): SegmentStat {
    const writers: Record<string, number> = {};
    for (const pg of s.pages.values()) {
      if (pg.writer !== undefined) writers[String(pg.writer)] = (writers[String(pg.writer)] ?? 0) + 1;
    }
    return {
      ...s.info,
      pages: s.pages.size,
      writers,
      locks: [...s.locks].flatMap(([name, l]) =>
        l.holder ? [{ name, owner: l.holder.owner, token: l.holder.token, waiters: l.queue.length }] : [],
      ),
    };
  }
}

function allows(access: Access, mode: Mode): boolean {
  return access === 'write' || (access === 'read' && mode === 'read');
}

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw dvsError('EINVAL', `${what} must be an integer`);
  return v;
}

function str(v: unknown): string {
  if (typeof v !== 'string') throw dvsError('EINVAL', 'expected a string');
  return v;
}

/** `p`, or EABORTED / ETIMEDOUT as soon as `signal` fires (`p` keeps running). */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(timeoutOr(undefined, signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      p.catch(() => {});
      reject(timeoutOr(undefined, signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** A wait cut short by an AbortSignal.timeout is ETIMEDOUT; by the caller's signal, EABORTED. */
function timeoutOr(e: unknown, signal: AbortSignal | undefined): DvsError {
  const r: unknown = signal?.reason;
  if (r instanceof DOMException && r.name === 'TimeoutError')
    return dvsError('ETIMEDOUT', 'DSM access timed out');
  if (e instanceof DvsError && e.code !== 'EABORTED') return e;
  return abortError(signal);
}
