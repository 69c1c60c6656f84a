/**
 * Distributed snapshots of a whole DC (Chandy–Lamport), restore and fork (docs/snapshots.md).
 *
 * The daemon the CLI asks (the initiator, I) drives a run; every node of the DC answers over the node links:
 * ```
 *   I ──snapshot.prepare {dc}──────────▶ each node: its endpoints of the DC, which declared hooks, how to
 *                                        start each again (cmd, env), whether one is migrating (EBUSY)
 *   I ──snapshot.begin {run, participants}──▶ each node pushes {op:'begin'} to its hooked processes; each SDK
 *                                        records its state, posts markers to the other participants, records
 *                                        its incoming channels until their markers, and reports
 *                                        (snapshot.report) ◀── the node answers with its processes' parts
 *   I: the cut = states + channels ─▶ <dataDir>/snapshots/<name>.snap, index at /dvs/snapshots/<name> in the
 *                                        cluster store (without a store, every node is asked for its list)
 *   restore: snapshot.stop on every node (the DC's processes die), then as for fork:
 *   fork:    dc.create (new name) ─▶ snapshot.start {procs} on each node: spawn the same programs; each one's
 *            onSnapshot() is held until all attached ─▶ snapshot.release: they load their state and get the
 *            messages that were in flight towards them, ahead of anything else
 * ```
 * A run that does not complete within its timeout (a process that never receives, a dead node) fails with
 * ETIMEDOUT and stores nothing; the processes are told to drop it (`{op:'abort'}`). A DC being migrated, or
 * already being snapshotted or restored, is EBUSY; a migration asked for during a snapshot is EBUSY too.
 */
import { randomInt } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { DcConfig, DcId, Endpoint, MsgKind, NodeId, Received } from '../kernel/types.js';
import { DvsError, dvsError, type WireError } from '../protocol/errors.js';
import type { AdminContext } from './local-server.js';
import type { NodeRpcHandler } from './node-rpc.js';
import type { DaemonParts } from './parts.js';
import type { ServiceRegistry } from './services.js';

/** Summary of a stored snapshot (`dvs snapshot ls`). */
export interface SnapshotInfo {
  name: string;
  dc: DcId;
  dcName: string;
  /** Node whose data dir holds the snapshot. */
  node: NodeId;
  createdAt: number;
  /** Processes (bound endpoints) of the DC at the cut. */
  processes: number;
  /** Of them, those that declared onSnapshot hooks (the others are recorded as stateless). */
  stateful: number;
  /** Messages in flight at the cut, over all channels. */
  messages: number;
  /** Bytes of recorded state plus in-flight payloads. */
  bytes: number;
  /** From the start of the run to the last report, ms. */
  durationMs: number;
}

/** How a process of the cut is started again: what `dvs run` was given. */
export interface SnapshotProcSpec {
  cmd: string[];
  env: Record<string, string>;
  cwd?: string;
  name: string;
}

/** One endpoint of the DC at the cut. */
export interface SnapshotProc {
  ep: Endpoint;
  node: NodeId;
  hooked: boolean;
  /** What save() returned (null: stateless). */
  state: Uint8Array | null;
  /** null: not started by `dvs run` (bound by itself): a restore cannot start it again and skips it. */
  proc: SnapshotProcSpec | null;
}

/** A message in flight at the cut. */
export interface SnapshotMessage {
  type: number;
  kind: MsgKind;
  payload: Uint8Array;
}

/** The messages in flight on channel src → dst at the cut, in order. */
export interface SnapshotChannel {
  src: Endpoint;
  dst: Endpoint;
  msgs: SnapshotMessage[];
}

/** A stored snapshot (MessagePack in `<dataDir>/snapshots/<name>.snap`). */
export interface SnapshotRecord {
  v: 1;
  info: SnapshotInfo;
  /** The DC's configuration at the cut (a fork copies it under a new name and id). */
  config: DcConfig;
  run: number;
  procs: SnapshotProc[];
  channels: SnapshotChannel[];
}

/** What restore and fork return. */
export interface RestoreResult {
  snapshot: string;
  dc: DcConfig;
  started: { ep: Endpoint; node: NodeId; pid: number }[];
  /** Endpoints of the cut that could not be started again (not started by `dvs run`). */
  skipped: Endpoint[];
  /** In-flight messages handed to the restarted processes. */
  messages: number;
}

export interface SnapshotsOptions extends DaemonParts {
  dataDir: string;
  /** Run an admin method on node `node` (this one, or a peer through `node.call`). */
  admin: (
    node: NodeId,
    method: string,
    params: Record<string, unknown>,
    signal: AbortSignal,
  ) => Promise<unknown>;
  /** The other nodes of the cluster (to find snapshots when there is no store). */
  peers: () => NodeId[];
  registry?: Registry;
  /** Default time a snapshot may take, ms (default 10 000). */
  timeoutMs?: number;
  /** How long restarted processes have to attach and declare their hooks, ms (default 15 000). */
  startTimeoutMs?: number;
}

/** Where a hooked process gets its commands. */
interface Hooked {
  ctx: AdminContext;
  sub: number;
}

/** A process's part of a run, as its SDK reports it. */
interface Part {
  state: Uint8Array;
  channels: { src: Endpoint; msgs: Received[] }[];
}

/** A run's collection on this node. */
interface LocalRun {
  dc: DcId;
  expect: Set<Endpoint>;
  got: Map<Endpoint, Part>;
  done: () => void;
  fail: (e: DvsError) => void;
}

/** A process started again from a cut, whose onSnapshot waits for the release. */
interface Restoring {
  run: number;
  data: { state: Uint8Array | null; channels: Received[] };
  attached: boolean;
  onAttach: () => void;
  release: (ok: boolean) => void;
  released: Promise<boolean>;
}

/** Reports that came before their run's begin reached this node (a fast process on a quick marker). */
interface Early {
  parts: Map<Endpoint, Part | DvsError>;
  timer: NodeJS.Timeout;
}

/** `prepare` answer of one node. */
interface Prepared {
  node: NodeId;
  migrating: boolean;
  eps: { ep: Endpoint; hooked: boolean; proc: SnapshotProcSpec | null }[];
}

const SNAPSHOT_PREFIX = '/dvs/snapshots/';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const key = (dc: DcId, ep: Endpoint) => `${dc}/${ep}`;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Snapshots service of one daemon: SDK hooks, CLI methods, and the node methods peers call. */
export class Snapshots {
  private readonly log: Logger;
  private readonly hooked = new Map<string, Hooked>();
  private readonly runs = new Map<number, LocalRun>();
  private readonly early = new Map<number, Early>();
  private readonly restoring = new Map<string, Restoring>();
  /** DCs with a snapshot or restore driven here, or a migration leaving here. */
  private readonly busy = new Map<DcId, string>();
  private readonly duration: Histogram | undefined;
  private readonly failures: Counter | undefined;

  constructor(private readonly o: SnapshotsOptions) {
    this.log = o.logger.child({ component: 'snapshots' });
    if (o.registry) {
      const hname = 'dvs_snapshot_create_duration_seconds';
      this.duration =
        (o.registry.getSingleMetric(hname) as Histogram | undefined) ??
        new Histogram({
          name: hname,
          help: 'Time to take a snapshot of a DC (begin to last report)',
          buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30],
          registers: [o.registry],
        });
      const cname = 'dvs_snapshot_failures_total';
      this.failures =
        (o.registry.getSingleMetric(cname) as Counter | undefined) ??
        new Counter({
          name: cname,
          help: 'Snapshot, restore and fork operations that failed, by error code',
          labelNames: ['op', 'code'],
          registers: [o.registry],
        });
    }
  }

  /** Register the `snapshot.*` services (SDK: hooks, report; CLI: create, ls, show, rm, restore, fork). */
  registerServices(services: ServiceRegistry): void {
    services.registerAll('snapshot', {
      hooks: (p, ctx) => this.hooks(p, ctx),
      report: (p, ctx) => this.report(p, ctx),
      create: (p, ctx) => this.cli(ctx, 'create', () => this.create(p, ctx.signal)),
      ls: (p, ctx) => this.cli(ctx, 'ls', () => this.list(p.dc)),
      show: (p, ctx) => this.cli(ctx, 'show', () => this.find(nameParam(p.name), ctx.signal)),
      rm: (p, ctx) => this.cli(ctx, 'rm', () => this.remove(nameParam(p.name), ctx.signal)),
      restore: (p, ctx) => this.cli(ctx, 'restore', () => this.restore(p, ctx.signal)),
      fork: (p, ctx) => this.cli(ctx, 'fork', () => this.fork(p, ctx.signal)),
    });
  }

  /** Methods other daemons call on this one. */
  nodeMethods(): Record<string, NodeRpcHandler> {
    return {
      'snapshot.prepare': async (_m, p) => this.prepare(dcParam(obj(p).dc)),
      'snapshot.begin': async (_m, p, _from, signal) => this.begin(obj(p), signal),
      'snapshot.abort': async (_m, p) => this.abortRun(numParam(obj(p).run, 'run')),
      'snapshot.stop': async (_m, p) => this.stopDc(dcParam(obj(p).dc)),
      'snapshot.start': async (_m, p, _from, signal) => this.startHere(obj(p), signal),
      'snapshot.release': async (_m, p) => this.release(numParam(obj(p).run, 'run'), obj(p).ok !== false),
      'snapshot.list': async () => this.listLocal(),
      'snapshot.fetch': async (_m, p) => this.readLocal(nameParam(obj(p).name)),
      'snapshot.delete': async (_m, p) => this.deleteLocal(nameParam(obj(p).name)),
    };
  }

  /**
   * Run a migration of an endpoint of `dc` leaving this node: EBUSY while a snapshot or restore of the DC
   * is driven here, and a snapshot asked for meanwhile is EBUSY.
   */
  async duringMigration<T>(dc: DcId, fn: () => Promise<T>): Promise<T> {
    const what = this.busy.get(dc);
    if (what !== undefined) throw dvsError('EBUSY', `DC ${dc}: a ${what} is in progress`, { dc });
    this.busy.set(dc, 'migration');
    try {
      return await fn();
    } finally {
      this.busy.delete(dc);
    }
  }

  /** Fail what waits here (daemon stopping). */
  stop(): void {
    const err = new DvsError('ENOTCONN', 'daemon stopping');
    for (const r of this.runs.values()) r.fail(err);
    this.runs.clear();
    for (const e of this.early.values()) clearTimeout(e.timer);
    this.early.clear();
    for (const r of this.restoring.values()) r.release(false);
    this.restoring.clear();
  }

  // ─────────────────────────── process side (SDK) ───────────────────────────

  private async hooks(p: Record<string, unknown>, ctx: AdminContext): Promise<unknown> {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EPERM', 'snapshot.hooks is for processes');
    const sub = numParam(p.sub, 'sub');
    const k = key(c.dc, c.ep);
    this.hooked.set(k, { ctx, sub });
    ctx.onClose(() => {
      if (this.hooked.get(k)?.ctx === ctx) this.hooked.delete(k);
    });
    const r = this.restoring.get(k);
    if (r === undefined || r.attached) return { restore: null };
    r.attached = true;
    r.onAttach();
    const ok = await Promise.race([
      r.released,
      new Promise<boolean>((resolve) =>
        ctx.signal.addEventListener('abort', () => resolve(false), { once: true }),
      ),
    ]);
    if (!ok) throw dvsError('EABORTED', 'the restore was abandoned');
    return { restore: r.data };
  }

  private report(p: Record<string, unknown>, ctx: AdminContext): { ok: true } {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EPERM', 'snapshot.report is for processes');
    const run = numParam(p.run, 'run');
    const part = p.error !== undefined ? DvsError.fromWire(p.error as WireError) : partParam(p);
    const lr = this.runs.get(run);
    if (lr !== undefined) {
      if (lr.dc !== c.dc || !lr.expect.has(c.ep)) throw dvsError('EPERM', `not a participant of run ${run}`);
      this.accept(lr, c.ep, part);
      return { ok: true };
    }
    // The begin for this run has not reached this node yet: keep the part a while.
    let e = this.early.get(run);
    if (e === undefined) {
      e = { parts: new Map(), timer: setTimeout(() => this.early.delete(run), 60_000) };
      e.timer.unref();
      this.early.set(run, e);
    }
    e.parts.set(c.ep, part);
    return { ok: true };
  }

  private accept(lr: LocalRun, ep: Endpoint, part: Part | DvsError): void {
    if (part instanceof DvsError) {
      lr.fail(dvsError(part.code, `endpoint ${ep}: ${part.message}`, { ep }));
      return;
    }
    lr.got.set(ep, part);
    if (lr.got.size === lr.expect.size) lr.done();
  }

  // ─────────────────────────── node side ───────────────────────────

  private prepare(dc: DcId): Prepared {
    const cfg = this.o.kernel.findDc(dc);
    if (cfg === undefined) throw dvsError('ENOENT', `no DC ${dc} on node ${this.o.nodeId}`, { dc });
    const rows = this.o.kernel.endpoints(dc).filter((e) => e.node === this.o.nodeId && e.kind !== 'remote');
    const what = this.busy.get(dc);
    return {
      node: this.o.nodeId,
      migrating: what === 'migration' || rows.some((e) => e.flags.includes('MIGRATING')),
      eps: rows.map((e) => ({
        ep: e.ep,
        hooked: this.hooked.has(key(dc, e.ep)),
        proc: this.procSpec(dc, e.ep, e.pid),
      })),
    };
  }

  /** How `dvs run` started the process bound at `ep` (null if it bound by itself). */
  private procSpec(dc: DcId, ep: Endpoint, pid: number): SnapshotProcSpec | null {
    const info = this.o.processes.get(dc, ep);
    const req = this.o.processes.request(dc, ep);
    if (info === undefined || req === undefined || info.exit !== null) return null;
    if (info.pid !== pid && info.containerPid !== pid) return null;
    const env: Record<string, string> = {};
    // The DVS_ variables are set again by proc.run for the new DC and node.
    for (const [n, v] of Object.entries(req.env ?? {})) if (!n.startsWith('DVS_')) env[n] = v;
    return {
      cmd: req.cmd,
      env,
      ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
      name: req.name ?? info.name,
    };
  }

  private async begin(
    p: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<{ ep: Endpoint; part: Part }[]> {
    const run = numParam(p.run, 'run');
    const dc = dcParam(p.dc);
    const timeoutMs = numParam(p.timeoutMs, 'timeoutMs');
    if (!Array.isArray(p.participants)) throw dvsError('EINVAL', 'participants must be a list');
    const participants = p.participants.map((e) => numParam(e, 'participant'));
    const local = participants.filter((ep) => this.hooked.has(key(dc, ep)));
    if (local.length === 0) return [];
    // While the run collects here, a migration leaving this node is EBUSY (the initiator holds its own node).
    const claimed = !this.busy.has(dc);
    if (claimed) this.busy.set(dc, 'snapshot');
    const got = new Map<Endpoint, Part>();
    const result = new Promise<void>((resolve, reject) => {
      const lr: LocalRun = { dc, expect: new Set(local), got, done: resolve, fail: reject };
      this.runs.set(run, lr);
      for (const ep of local) {
        const h = this.hooked.get(key(dc, ep));
        if (h === undefined || !h.ctx.push(h.sub, { op: 'begin', run, participants })) {
          reject(dvsError('ENOTBOUND', `endpoint ${ep} left before the snapshot began`, { ep }));
          return;
        }
      }
      const e = this.early.get(run);
      if (e !== undefined) {
        clearTimeout(e.timer);
        this.early.delete(run);
        for (const [ep, part] of e.parts) if (lr.expect.has(ep)) this.accept(lr, ep, part);
      }
    });
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => this.runs.get(run)?.fail(dvsError('EABORTED', 'snapshot aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.race([
        result,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            const missing = local.filter((ep) => !got.has(ep));
            reject(
              dvsError(
                'ETIMEDOUT',
                `snapshot: no report from endpoint(s) ${missing.join(',')} on node ${this.o.nodeId} in ${timeoutMs} ms (a participant must keep receiving)`,
                { missing, node: this.o.nodeId },
              ),
            );
          }, timeoutMs);
        }),
      ]);
    } catch (e) {
      this.abortRun(run);
      throw e;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      this.runs.delete(run);
      if (claimed) this.busy.delete(dc);
    }
    return [...got].map(([ep, part]) => ({ ep, part }));
  }

  /** Tell this node's hooked processes to drop run `run`. */
  private abortRun(run: number): { ok: true } {
    const lr = this.runs.get(run);
    this.runs.delete(run);
    lr?.fail(dvsError('EABORTED', 'snapshot aborted'));
    for (const h of this.hooked.values()) h.ctx.push(h.sub, { op: 'abort', run });
    return { ok: true };
  }

  /** Kill every process `dvs run` started in `dc` here (a restore starts them again). */
  private async stopDc(dc: DcId): Promise<{ killed: number[] }> {
    const killed: number[] = [];
    for (const info of this.o.processes.list(dc)) {
      if (info.exit !== null) continue;
      await this.o.processes.kill(dc, info.ep, 'SIGKILL', 0);
      killed.push(info.pid);
    }
    return { killed };
  }

  /** Start the given processes of a cut here; resolves once every hooked one has declared its hooks. */
  private async startHere(
    p: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<{ started: { ep: Endpoint; node: NodeId; pid: number }[] }> {
    const run = numParam(p.run, 'run');
    const dc = dcParam(p.dc);
    const timeoutMs = numParam(p.timeoutMs, 'timeoutMs');
    if (!Array.isArray(p.procs)) throw dvsError('EINVAL', 'procs must be a list');
    const deadline = Date.now() + timeoutMs;
    // A DC just created through the store reaches this node by its watch.
    const cfg = await poll(
      () => this.o.kernel.findDc(dc),
      deadline,
      signal,
      `DC ${dc} on node ${this.o.nodeId}`,
    );
    const started: { ep: Endpoint; node: NodeId; pid: number }[] = [];
    const attached: Promise<void>[] = [];
    for (const raw of p.procs) {
      const sp = obj(raw);
      const ep = numParam(sp.ep, 'ep');
      const spec = obj(sp.proc) as unknown as SnapshotProcSpec;
      // The old process's unbind may still be on its way from another node.
      await poll(
        () => !this.o.kernel.endpoints(cfg.id).some((e) => e.ep === ep),
        deadline,
        signal,
        `endpoint ${ep} unbound`,
      );
      if (sp.hooked === true) {
        const k = key(cfg.id, ep);
        this.restoring.get(k)?.release(false);
        let onAttach!: () => void;
        attached.push(new Promise<void>((resolve) => (onAttach = resolve)));
        let release!: (ok: boolean) => void;
        const released = new Promise<boolean>((resolve) => (release = resolve));
        this.restoring.set(k, {
          run,
          data: {
            state: sp.state instanceof Uint8Array ? sp.state : null,
            channels: Array.isArray(sp.channels) ? (sp.channels as Received[]) : [],
          },
          attached: false,
          onAttach,
          release: (ok) => {
            if (this.restoring.get(k)?.run === run) this.restoring.delete(k);
            release(ok);
          },
          released,
        });
      }
      const info = (await this.o.admin(
        this.o.nodeId,
        'proc.run',
        {
          dc: cfg.id,
          ep,
          cmd: spec.cmd,
          env: spec.env ?? {},
          name: spec.name,
          ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
        },
        signal,
      )) as { pid: number };
      started.push({ ep, node: this.o.nodeId, pid: info.pid });
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        Promise.all(attached),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                dvsError(
                  'ETIMEDOUT',
                  `restarted processes on node ${this.o.nodeId} did not declare onSnapshot hooks in time`,
                ),
              ),
            Math.max(1, deadline - Date.now()),
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return { started };
  }

  private release(run: number, ok: boolean): { released: number } {
    let n = 0;
    for (const r of [...this.restoring.values()]) {
      if (r.run !== run) continue;
      r.release(ok);
      n++;
    }
    return { released: n };
  }

  // ─────────────────────────── initiator ───────────────────────────

  /** CLI-only methods: a process of a DC may not snapshot or restore it. */
  private async cli<T>(ctx: AdminContext, op: string, fn: () => Promise<T>): Promise<T> {
    if (ctx.caller !== undefined) throw dvsError('EPERM', `snapshot.${op} is an operator command`);
    try {
      return await fn();
    } catch (e) {
      const err = DvsError.from(e);
      this.failures?.inc({ op, code: err.code });
      throw err;
    }
  }

  /** Call node method `method` on `node` (this one directly). */
  private onNode(
    node: NodeId,
    method: string,
    params: Record<string, unknown>,
    signal: AbortSignal,
    timeout?: number,
  ) {
    if (node === this.o.nodeId) {
      const h = this.nodeMethods()[method];
      if (h === undefined) throw dvsError('EINTERNAL', `no node method ${method}`);
      return Promise.resolve(h(method, params, node, signal));
    }
    return this.o.nodeRpc.call(node, method, params, {
      signal,
      ...(timeout !== undefined ? { timeout } : {}),
    });
  }

  private localDc(ref: unknown): DcConfig {
    const r = dcRef(ref);
    const cfg = this.o.kernel.findDc(r);
    if (cfg === undefined) throw dvsError('ENOENT', `no DC '${r}' on node ${this.o.nodeId}`, { dc: r });
    return cfg;
  }

  private claim(dc: DcConfig, what: string): void {
    const now = this.busy.get(dc.id);
    if (now !== undefined) throw dvsError('EBUSY', `DC '${dc.name}': a ${now} is in progress`, { dc: dc.id });
    this.busy.set(dc.id, what);
  }

  private async prepareAll(dc: DcConfig, signal: AbortSignal): Promise<Prepared[]> {
    const preps = (await Promise.all(
      dc.nodes.map((n) => this.onNode(n, 'snapshot.prepare', { dc: dc.id }, signal)),
    )) as Prepared[];
    const moving = preps.filter((p) => p.migrating).map((p) => p.node);
    if (moving.length > 0) {
      throw dvsError('EBUSY', `DC '${dc.name}' is being migrated (node ${moving.join(',')})`, { dc: dc.id });
    }
    return preps;
  }

  private async create(p: Record<string, unknown>, signal: AbortSignal): Promise<SnapshotInfo> {
    const dc = this.localDc(p.dc);
    const timeoutMs =
      p.timeoutMs === undefined ? (this.o.timeoutMs ?? 10_000) : numParam(p.timeoutMs, 'timeoutMs');
    const run = randomInt(1, 0xffffffff);
    const name = p.name === undefined ? defaultName(dc.name, run) : nameParam(p.name);
    if (await this.exists(name, signal))
      throw dvsError('EEXIST', `snapshot '${name}' already exists`, { name });
    this.claim(dc, 'snapshot');
    const t0 = performance.now();
    try {
      const preps = await this.prepareAll(dc, signal);
      const participants = preps
        .flatMap((pr) => pr.eps.filter((e) => e.hooked).map((e) => e.ep))
        .sort((a, b) => a - b);
      if (8 + 4 * participants.length > dc.maxPayload) {
        throw dvsError(
          'EMSGSIZE',
          `${participants.length} participants do not fit in a marker of DC '${dc.name}'`,
        );
      }
      const nodes = preps.filter((pr) => pr.eps.some((e) => e.hooked)).map((pr) => pr.node);
      let parts: { ep: Endpoint; part: Part }[][];
      try {
        parts = (await Promise.all(
          nodes.map((n) =>
            this.onNode(
              n,
              'snapshot.begin',
              { run, dc: dc.id, participants, timeoutMs },
              signal,
              timeoutMs + 5000,
            ),
          ),
        )) as { ep: Endpoint; part: Part }[][];
      } catch (e) {
        await Promise.allSettled(dc.nodes.map((n) => this.onNode(n, 'snapshot.abort', { run }, signal)));
        throw e;
      }
      const durationMs = Math.round(performance.now() - t0);
      const byEp = new Map(parts.flat().map((x) => [x.ep, x.part]));
      const procs: SnapshotProc[] = preps.flatMap((pr) =>
        pr.eps.map((e) => ({
          ep: e.ep,
          node: pr.node,
          hooked: e.hooked,
          state: byEp.get(e.ep)?.state ?? null,
          proc: e.proc,
        })),
      );
      const channels: SnapshotChannel[] = [];
      for (const [dst, part] of byEp) {
        for (const ch of part.channels) {
          if (ch.msgs.length === 0) continue;
          channels.push({
            src: ch.src,
            dst,
            msgs: ch.msgs.map((m) => ({ type: m.type, kind: m.kind, payload: m.payload })),
          });
        }
      }
      channels.sort((a, b) => a.src - b.src || a.dst - b.dst);
      let bytes = 0;
      for (const pr of procs) bytes += pr.state?.length ?? 0;
      for (const ch of channels) for (const m of ch.msgs) bytes += m.payload.length;
      const info: SnapshotInfo = {
        name,
        dc: dc.id,
        dcName: dc.name,
        node: this.o.nodeId,
        createdAt: Date.now(),
        processes: procs.length,
        stateful: procs.filter((x) => x.hooked).length,
        messages: channels.reduce((n, ch) => n + ch.msgs.length, 0),
        bytes,
        durationMs,
      };
      await this.writeLocal({ v: 1, info, config: dc, run, procs, channels });
      this.duration?.observe(durationMs / 1000);
      this.log.info(
        { name, dc: dc.id, processes: info.processes, messages: info.messages, durationMs },
        'snapshot taken',
      );
      this.o.events.emit('snapshot.created', `dc ${dc.name}`, { ...info });
      return info;
    } finally {
      this.busy.delete(dc.id);
    }
  }

  private async restore(p: Record<string, unknown>, signal: AbortSignal): Promise<RestoreResult> {
    const rec = await this.find(nameParam(p.snapshot), signal);
    const dc = this.localDc(p.dc);
    if (dc.name !== rec.config.name) {
      throw dvsError(
        'EINVAL',
        `snapshot '${rec.info.name}' is of DC '${rec.config.name}', not '${dc.name}' (use fork)`,
      );
    }
    for (const pr of rec.procs) {
      if (!dc.nodes.includes(pr.node))
        throw dvsError('EINVAL', `node ${pr.node} of the cut is no longer a node of DC '${dc.name}'`);
    }
    this.claim(dc, 'restore');
    try {
      await this.prepareAll(dc, signal);
      await Promise.all(dc.nodes.map((n) => this.onNode(n, 'snapshot.stop', { dc: dc.id }, signal)));
      const r = await this.startAll(rec, dc, signal);
      this.o.events.emit('snapshot.restored', `dc ${dc.name}`, {
        snapshot: rec.info.name,
        started: r.started.length,
      });
      return r;
    } finally {
      this.busy.delete(dc.id);
    }
  }

  private async fork(p: Record<string, unknown>, signal: AbortSignal): Promise<RestoreResult> {
    const rec = await this.find(nameParam(p.snapshot), signal);
    const as = nameParam(p.as);
    if (this.o.kernel.findDc(as) !== undefined || this.storeHasDc(as)) {
      throw dvsError('EEXIST', `a DC named '${as}' already exists`, { dc: as });
    }
    const { id: _id, ...base } = rec.config;
    let created: DcConfig;
    if (this.o.cluster() !== undefined) {
      created = (await this.o.admin(
        this.o.nodeId,
        'dc.create',
        { config: { ...base, id: 0, name: as } },
        signal,
      )) as DcConfig;
    } else {
      // Without a store every node of the DC creates it; the id is one no node uses.
      const lists = (await Promise.all(
        [this.o.nodeId, ...this.o.peers()].map((n) => this.o.admin(n, 'dc.list', {}, signal).catch(() => [])),
      )) as DcConfig[][];
      const id = 1 + Math.max(0, ...lists.flat().map((d) => d.id));
      created = { ...base, id, name: as };
      for (const n of created.nodes) await this.o.admin(n, 'dc.create', { config: created }, signal);
    }
    const r = await this.startAll(rec, created, signal);
    this.o.events.emit('snapshot.forked', `dc ${as}`, { snapshot: rec.info.name, from: rec.config.name });
    return r;
  }

  private storeHasDc(name: string): boolean {
    try {
      return this.o.cluster()?.registry.get(name) !== undefined;
    } catch {
      return false;
    }
  }

  /** Start every restartable process of the cut in `dc`, hand out states and channels, release them together. */
  private async startAll(rec: SnapshotRecord, dc: DcConfig, signal: AbortSignal): Promise<RestoreResult> {
    const run = randomInt(1, 0xffffffff);
    const timeoutMs = this.o.startTimeoutMs ?? 15_000;
    const inflight = new Map<Endpoint, Received[]>();
    for (const ch of rec.channels) {
      let q = inflight.get(ch.dst);
      if (q === undefined) {
        q = [];
        inflight.set(ch.dst, q);
      }
      // Re-delivered as posts: the sender's rendezvous (or request) ended at the cut.
      for (const m of ch.msgs) q.push({ source: ch.src, type: m.type, kind: 'post', payload: m.payload });
    }
    const skipped = rec.procs.filter((pr) => pr.proc === null).map((pr) => pr.ep);
    const byNode = new Map<NodeId, SnapshotProc[]>();
    for (const pr of rec.procs) {
      if (pr.proc === null) continue;
      let l = byNode.get(pr.node);
      if (l === undefined) {
        l = [];
        byNode.set(pr.node, l);
      }
      l.push(pr);
    }
    let messages = 0;
    const nodes = [...byNode.keys()];
    let started: { ep: Endpoint; node: NodeId; pid: number }[];
    try {
      const answers = (await Promise.all(
        nodes.map((n) =>
          this.onNode(
            n,
            'snapshot.start',
            {
              run,
              dc: dc.id,
              timeoutMs,
              procs: byNode.get(n)!.map((pr) => {
                const channels = pr.hooked ? (inflight.get(pr.ep) ?? []) : [];
                messages += channels.length;
                return { ep: pr.ep, hooked: pr.hooked, proc: pr.proc, state: pr.state, channels };
              }),
            },
            signal,
            timeoutMs + 5000,
          ),
        ),
      )) as { started: { ep: Endpoint; node: NodeId; pid: number }[] }[];
      started = answers.flatMap((a) => a.started);
      await Promise.all(nodes.map((n) => this.onNode(n, 'snapshot.release', { run }, signal)));
    } catch (e) {
      await Promise.allSettled(
        nodes.map((n) => this.onNode(n, 'snapshot.release', { run, ok: false }, signal)),
      );
      throw e;
    }
    this.log.info(
      { snapshot: rec.info.name, dc: dc.id, started: started.length, messages },
      'started from a snapshot',
    );
    return { snapshot: rec.info.name, dc, started, skipped, messages };
  }

  // ─────────────────────────── storage ───────────────────────────

  private dir(): string {
    return join(this.o.dataDir, 'snapshots');
  }

  private async writeLocal(rec: SnapshotRecord): Promise<void> {
    await mkdir(this.dir(), { recursive: true });
    const file = join(this.dir(), `${rec.info.name}.snap`);
    await writeFile(`${file}.tmp`, packr.pack(rec));
    await rename(`${file}.tmp`, file);
    const store = this.o.cluster()?.clusterStore;
    if (store !== undefined) {
      try {
        await store.put(SNAPSHOT_PREFIX + rec.info.name, enc.encode(JSON.stringify(rec.info)));
      } catch (e) {
        await rm(file, { force: true });
        throw e;
      }
    }
  }

  private async readLocal(name: string): Promise<SnapshotRecord> {
    let buf: Buffer;
    try {
      buf = await readFile(join(this.dir(), `${name}.snap`));
    } catch {
      throw dvsError('ENOENT', `no snapshot '${name}'`, { name });
    }
    const rec = packr.unpack(buf) as SnapshotRecord;
    if (rec?.v !== 1) throw dvsError('EPROTO', `snapshot '${name}' is not readable`);
    return rec;
  }

  private async listLocal(): Promise<SnapshotInfo[]> {
    let files: string[];
    try {
      files = await readdir(this.dir());
    } catch {
      return [];
    }
    const out: SnapshotInfo[] = [];
    for (const f of files) {
      if (!f.endsWith('.snap')) continue;
      try {
        out.push((await this.readLocal(f.slice(0, -5))).info);
      } catch (e) {
        this.log.warn({ err: e, file: f }, 'unreadable snapshot file');
      }
    }
    return out;
  }

  private async deleteLocal(name: string): Promise<{ ok: true }> {
    await rm(join(this.dir(), `${name}.snap`), { force: true });
    return { ok: true };
  }

  /** Every snapshot: the store's index, or without a store the lists of every node that answers. */
  private async list(dcFilter?: unknown): Promise<SnapshotInfo[]> {
    const store = this.o.cluster()?.clusterStore;
    let all: SnapshotInfo[];
    if (store !== undefined) {
      const { kvs } = await store.get(SNAPSHOT_PREFIX, { prefix: true });
      all = [];
      for (const kv of kvs) {
        try {
          all.push(JSON.parse(dec.decode(kv.value)) as SnapshotInfo);
        } catch {
          this.log.warn({ key: kv.key }, 'bad snapshot index entry');
        }
      }
    } else {
      const lists = await Promise.all(
        [this.o.nodeId, ...this.o.peers()].map(
          (n) =>
            (n === this.o.nodeId
              ? this.listLocal()
              : this.o.nodeRpc.call(n, 'snapshot.list', {}, { timeout: 5000 })
            ).catch(() => []) as Promise<SnapshotInfo[]>,
        ),
      );
      all = lists.flat();
    }
    if (dcFilter !== undefined && dcFilter !== null) {
      const r = dcRef(dcFilter);
      all = all.filter((i) => i.dc === r || i.dcName === r);
    }
    return all.sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name));
  }

  private async locate(name: string): Promise<SnapshotInfo | undefined> {
    return (await this.list()).find((i) => i.name === name);
  }

  private async exists(name: string, _signal: AbortSignal): Promise<boolean> {
    return (await this.locate(name)) !== undefined;
  }

  /** The full record of snapshot `name`, from whichever node holds it. ENOENT if there is none. */
  private async find(name: string, signal: AbortSignal): Promise<SnapshotRecord> {
    const info = await this.locate(name);
    if (info === undefined) throw dvsError('ENOENT', `no snapshot '${name}'`, { name });
    return (await this.onNode(info.node, 'snapshot.fetch', { name }, signal)) as SnapshotRecord;
  }

  private async remove(name: string, signal: AbortSignal): Promise<{ removed: string }> {
    const info = await this.locate(name);
    if (info === undefined) throw dvsError('ENOENT', `no snapshot '${name}'`, { name });
    await this.onNode(info.node, 'snapshot.delete', { name }, signal);
    await this.o.cluster()?.clusterStore?.delete(SNAPSHOT_PREFIX + name);
    this.o.events.emit('snapshot.removed', `snapshot ${name}`, { name });
    return { removed: name };
  }
}

function defaultName(dc: string, run: number): string {
  const t = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${dc}-${t}-${(run & 0xffff).toString(16).padStart(4, '0')}`.slice(0, 64);
}

async function poll<T>(
  fn: () => T | undefined | false,
  deadline: number,
  signal: AbortSignal,
  what: string,
): Promise<T> {
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (signal.aborted) throw dvsError('EABORTED', `aborted waiting for ${what}`);
    if (Date.now() > deadline) throw dvsError('ETIMEDOUT', `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function obj(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw dvsError('EINVAL', 'expected an object');
  return v as Record<string, unknown>;
}

function numParam(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw dvsError('EINVAL', `bad ${what}`);
  return v;
}

function dcRef(v: unknown): DcId | string {
  if (typeof v === 'string' && v.length > 0) return /^\d+$/.test(v) ? Number(v) : v;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  throw dvsError('EINVAL', 'dc must be a DC name or id');
}

function dcParam(v: unknown): DcId {
  return numParam(v, 'dc');
}

function nameParam(v: unknown): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw dvsError(
      'EINVAL',
      `bad name ${JSON.stringify(v)}: 1-64 of [A-Za-z0-9_.-], starting with a letter or digit`,
    );
  }
  return v;
}

function partParam(p: Record<string, unknown>): Part {
  if (!(p.state instanceof Uint8Array)) throw dvsError('EINVAL', 'report without a state');
  if (!Array.isArray(p.channels)) throw dvsError('EINVAL', 'report without channels');
  const channels = p.channels.map((c) => {
    const o = obj(c);
    if (!Array.isArray(o.msgs)) throw dvsError('EINVAL', 'bad channel');
    return { src: numParam(o.src, 'src'), msgs: o.msgs as Received[] };
  });
  return { state: p.state, channels };
}
