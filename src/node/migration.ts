/**
 * Live migration of an endpoint and its process between node daemons (DESIGN.md §7). The source daemon S
 * (where the endpoint lives) drives it; the destination D answers over the node link (src/node/node-rpc.ts):
 *
 * ```
 *   S                                              D
 *   proc.migrate ──migrate.prepare {cmd, env}────▶ kernel.migrateIn (reserved, not announced), spawn the same
 *                                                  program (DVS_MIGRATING=1), wait until it attached
 *   freeze: push {op:'freeze'} to the process (SDK onMigrate hooks); it parks its receive, lets its replies
 *   out, exports its state (migrate.state) — or, without hooks, SIGSTOP until it is outside any call
 *   kernel.migrateOut ── (commit point: queued and later messages go to D; senders replay there)
 *                    ──migrate.commit {state, ahead, carry}──▶ directory move (store), kernel.migrateActivate
 *                                                  (announced), the new process's onMigrate gets the state
 *   SIGKILL the old process (its endpoint is no longer its own: nothing is unbound)
 * ```
 * Before the commit point any failure (D unreachable, the program does not start, the freeze times out, the
 * export throws) rolls back: D gets `migrate.abort` (what queued there goes back to S), the process at S is
 * thawed and the endpoint never left. After it, D's failure is a crash of the node the endpoint lives on.
 * The freeze time (freeze to activation) is measured and returned.
 */
import type { Logger } from 'pino';
import type { DcId, Endpoint, MigrationCarry, NodeId, Received } from '../kernel/types.js';
import type { MigrationResult } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import type { AdminContext } from './local-server.js';
import type { NodeRpcHandler } from './node-rpc.js';
import type { DaemonParts } from './parts.js';
import type { SpawnRequest } from './processes.js';
import type { ServiceRegistry } from './services.js';

export interface MigrationsOptions extends DaemonParts {
  /** Environment a process started here gets (DVS_SOCKET, DVS_DC, ...), as `dvs run` builds it. */
  processEnv: (dc: DcId, dcName: string, ep: Endpoint) => Record<string, string>;
  /** How long the process may take to reach a quiescent point and export, ms (default 5000). */
  freezeTimeoutMs?: number;
  /** How long the destination waits for the new process to attach, ms (default 10 000). */
  startTimeoutMs?: number;
}

/** A process that declared hooks: where to push freeze/thaw commands. */
interface Hooked {
  ctx: AdminContext;
  sub: number;
}

/** An endpoint arriving here: the new process's import waits for the commit. */
interface Incoming {
  from: NodeId;
  pid: number;
  /** migrate.commit arrived: the endpoint is announced here; an abort no longer applies. */
  committed: boolean;
  /** The source process had hooks: its successor here will import (until then it cannot move again). */
  expectImport: boolean;
  state: Promise<{ state: Uint8Array | null; ahead: Received[] }>;
  deliver: (v: { state: Uint8Array | null; ahead: Received[] }) => void;
  fail: (e: DvsError) => void;
}

const key = (dc: DcId, ep: Endpoint) => `${dc}/${ep}`;

export class Migrations {
  private readonly hooked = new Map<string, Hooked>();
  private readonly incoming = new Map<string, Incoming>();
  /** Endpoints migrating away from here (a second request is EBUSY). */
  private readonly outgoing = new Set<string>();
  /** Export answers awaited, by freeze id. */
  private readonly exports = new Map<
    number,
    (r: { state?: Uint8Array; ahead?: Received[]; error?: DvsError }) => void
  >();
  private nextFreeze = 1;
  private readonly log: Logger;

  constructor(private readonly o: MigrationsOptions) {
    this.log = o.logger.child({ component: 'migration' });
  }

  /** Register the SDK-facing services (`migrate.hooks`, `migrate.state`, `migrate.import`). */
  registerServices(services: ServiceRegistry): void {
    services.registerAll('migrate', {
      hooks: (p, ctx) => this.hooks(p, ctx),
      state: (p, ctx) => this.exported(p, ctx),
      import: (_p, ctx) => this.importState(ctx),
    });
  }

  /** Methods other daemons call on this one. */
  nodeMethods(): Record<string, NodeRpcHandler> {
    return {
      'migrate.prepare': (_m, p, from, signal) => this.prepare(p, from, signal),
      'migrate.commit': (_m, p, from) => this.commit(p, from),
      'migrate.abort': (_m, p, from) => this.abort(p, from),
    };
  }

  /** Fail what waits here (daemon stopping). */
  stop(): void {
    for (const inc of this.incoming.values()) inc.fail(new DvsError('ENOTCONN', 'daemon stopping'));
    this.incoming.clear();
    for (const done of this.exports.values()) done({ error: new DvsError('ENOTCONN', 'daemon stopping') });
    this.exports.clear();
  }

  // ─────────────────────────── source side ───────────────────────────

  /** `proc.migrate` at the node where the endpoint lives. */
  async migrate(dc: DcId, ep: Endpoint, to: NodeId, signal: AbortSignal): Promise<MigrationResult> {
    const t0 = performance.now();
    const k = this.o.kernel;
    const cfg = k.findDc(dc);
    if (cfg === undefined) throw dvsError('ENOENT', `no DC ${dc} on node ${this.o.nodeId}`);
    if (to === this.o.nodeId) throw dvsError('EINVAL', `endpoint ${ep} already lives on node ${to}`);
    if (!cfg.nodes.includes(to)) {
      throw dvsError('EINVAL', `node ${to} is not a node of DC '${cfg.name}' (nodes ${cfg.nodes.join(',')})`);
    }
    const row = k.endpoints(dc).find((e) => e.ep === ep);
    if (row === undefined) throw dvsError('ENOTBOUND', `endpoint ${ep} of DC '${cfg.name}' is not bound`);
    if (row.node !== this.o.nodeId) throw dvsError('EMOVED', `endpoint ${ep} lives on node ${row.node}`);
    if (row.kind === 'replica' || row.kind === 'backup') {
      throw dvsError('EINVAL', `endpoint ${ep} is a ${row.kind}: replicated endpoints do not migrate`);
    }
    const req = this.o.processes.request(dc, ep);
    const info = this.o.processes.get(dc, ep);
    // (The pid the process reports in its HELLO may be its pid inside its container: not comparable.)
    if (req === undefined || info === undefined || info.exit !== null) {
      throw dvsError(
        'EINVAL',
        `endpoint ${ep} is not held by a process started with dvs run on node ${this.o.nodeId}: only those can be restarted elsewhere`,
      );
    }
    const k2 = key(dc, ep);
    if (this.outgoing.has(k2)) throw dvsError('EBUSY', `endpoint ${ep} is already migrating`);
    // Just arrived with state: its process must have imported it (and declared its hooks again) before it
    // can move on, or the next move would treat it as stateless and lose the state.
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 10_000);
    for (let inc = this.incoming.get(k2); inc?.committed && inc.expectImport; inc = this.incoming.get(k2)) {
      if (Date.now() > deadline || signal.aborted) {
        throw dvsError('EBUSY', `endpoint ${ep} has not finished importing the state of its last migration`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    this.outgoing.add(k2);
    try {
      return await this.run(dc, cfg.name, ep, to, req, info.pid, t0, signal);
    } finally {
      this.outgoing.delete(k2);
    }
  }

  private async run(
    dc: DcId,
    dcName: string,
    ep: Endpoint,
    to: NodeId,
    req: SpawnRequest,
    oldPid: number,
    t0: number,
    signal: AbortSignal,
  ): Promise<MigrationResult> {
    const rpc = this.o.nodeRpc;
    const hooked = this.hooked.get(key(dc, ep));
    const { env } = req;
    const userEnv: Record<string, string> = {};
    for (const [n, v] of Object.entries(env ?? {})) if (!n.startsWith('DVS_')) userEnv[n] = v;
    // 1. The destination reserves the endpoint and starts the program (before anything is frozen here).
    const prepared = (await rpc.call(
      to,
      'migrate.prepare',
      {
        dc,
        ep,
        name: req.name ?? `ep${ep}`,
        cmd: req.cmd,
        env: userEnv,
        ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
      },
      { signal, timeout: (this.o.startTimeoutMs ?? 10_000) + 2000 },
    )) as { pid: number };
    const abortThere = async (why: unknown) => {
      await rpc.call(to, 'migrate.abort', { dc, ep }, { timeout: 5000 }).catch((e: unknown) => {
        this.log.warn({ dc, ep, to, err: e }, 'migration abort at the destination failed');
      });
      throw why;
    };
    // 2. Freeze here.
    const tFreeze = performance.now();
    let state: Uint8Array | null = null;
    let ahead: Received[] = [];
    let stopped = false;
    try {
      if (hooked !== undefined) {
        const r = await this.freeze(hooked, signal);
        state = r.state;
        ahead = r.ahead;
      }
    } catch (e) {
      return abortThere(e);
    }
    // 3. Commit point: the kernel sends what is queued to D.
    let carry: MigrationCarry;
    try {
      carry = await this.commitOut(dc, ep, to, oldPid, hooked === undefined, signal);
      stopped = hooked === undefined;
    } catch (e) {
      if (hooked !== undefined) hooked.ctx.push(hooked.sub, { op: 'thaw' });
      return abortThere(e);
    }
    // 4. D announces it and hands the state to the new process.
    try {
      await rpc.call(to, 'migrate.commit', { dc, ep, carry, state, ahead }, { timeout: 10_000 });
    } catch (e) {
      this.log.error({ dc, ep, to, err: e }, 'migration committed here but the destination did not confirm');
      this.o.events.emit('migrate.failed', `${dcName}/${ep}`, { dc, ep, from: this.o.nodeId, to });
      await this.o.processes.kill(dc, ep, 'SIGKILL', 0).catch(() => undefined);
      throw dvsError(
        'ENOTCONN',
        `endpoint ${ep} was handed to node ${to}, which did not confirm: ${DvsError.from(e).message}`,
      );
    }
    const freezeMs = performance.now() - tFreeze;
    // 5. The old process goes (its endpoint is no longer its own: nothing is unbound by its exit).
    if (stopped) this.signal(oldPid, 'SIGCONT');
    await this.o.processes.kill(dc, ep, 'SIGKILL', 0).catch(() => undefined);
    const result: MigrationResult = {
      dc,
      ep,
      from: this.o.nodeId,
      to,
      pid: { from: oldPid, to: prepared.pid },
      stateful: hooked !== undefined,
      stateBytes: state?.length ?? 0,
      freezeMs: Math.round(freezeMs * 100) / 100,
      totalMs: Math.round((performance.now() - t0) * 100) / 100,
    };
    this.log.info(result, 'endpoint migrated');
    this.o.events.emit('migrate.done', `${dcName}/${ep}`, { ...result });
    return result;
  }

  /** Push a freeze to the process and wait for its export. */
  private async freeze(h: Hooked, signal: AbortSignal): Promise<{ state: Uint8Array; ahead: Received[] }> {
    const id = this.nextFreeze++;
    const timeoutMs = this.o.freezeTimeoutMs ?? 5000;
    type Answer = { state?: Uint8Array; ahead?: Received[]; error?: DvsError };
    let settle!: (a: Answer) => void;
    const answer = new Promise<Answer>((resolve) => {
      settle = resolve;
    });
    this.exports.set(id, settle);
    const timer = setTimeout(
      () =>
        settle({
          error: dvsError(
            'ETIMEDOUT',
            `the process did not reach a quiescent point and export its state within ${timeoutMs} ms`,
          ),
        }),
      timeoutMs,
    );
    const onAbort = () => settle({ error: dvsError('EABORTED', 'migration aborted') });
    const onGone = () => settle({ error: dvsError('ESRCDIED', 'the process exited while freezing') });
    signal.addEventListener('abort', onAbort, { once: true });
    h.ctx.signal.addEventListener('abort', onGone, { once: true });
    void answer.finally(() => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      h.ctx.signal.removeEventListener('abort', onGone);
      this.exports.delete(id);
    });
    if (!h.ctx.push(h.sub, { op: 'freeze', id })) throw dvsError('ESRCDIED', 'the process is gone');
    const r = await answer;
    if (r.error !== undefined || !(r.state instanceof Uint8Array)) {
      h.ctx.push(h.sub, { op: 'thaw' });
      throw r.error ?? dvsError('EPROTO', 'export without state');
    }
    return { state: r.state, ahead: r.ahead ?? [] };
  }

  /**
   * kernel.migrateOut, retried while the endpoint is inside a call. A process without hooks is stopped
   * (SIGSTOP) for each attempt so it cannot take another message meanwhile; on success it stays stopped
   * until it is killed.
   */
  private async commitOut(
    dc: DcId,
    ep: Endpoint,
    to: NodeId,
    pid: number,
    stop: boolean,
    signal: AbortSignal,
  ): Promise<MigrationCarry> {
    const deadline = Date.now() + (this.o.freezeTimeoutMs ?? 5000);
    for (;;) {
      if (stop) this.signal(pid, 'SIGSTOP');
      try {
        return this.o.kernel.migrateOut(Date.now(), dc, ep, to);
      } catch (e) {
        if (stop) this.signal(pid, 'SIGCONT');
        if (!(e instanceof DvsError && e.code === 'EBUSY') || Date.now() > deadline || signal.aborted)
          throw e;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private signal(pid: number, sig: NodeJS.Signals): void {
    try {
      process.kill(pid, sig);
    } catch {
      // gone
    }
  }

  // ─────────────────────────── destination side ───────────────────────────

  private async prepare(p: unknown, from: NodeId, signal: AbortSignal): Promise<{ pid: number }> {
    const o = (p ?? {}) as {
      dc?: unknown;
      ep?: unknown;
      name?: unknown;
      cmd?: unknown;
      env?: unknown;
      cwd?: unknown;
    };
    const k = this.o.kernel;
    if (typeof o.dc !== 'number' || typeof o.ep !== 'number')
      throw dvsError('EINVAL', 'migrate.prepare: dc, ep');
    if (!Array.isArray(o.cmd) || !o.cmd.every((a) => typeof a === 'string') || o.cmd.length === 0) {
      throw dvsError('EINVAL', 'migrate.prepare: cmd');
    }
    const dc = o.dc;
    const ep = o.ep;
    const cfg = k.findDc(dc);
    if (cfg === undefined) throw dvsError('ENOENT', `no DC ${dc} on node ${this.o.nodeId}`);
    const k2 = key(dc, ep);
    if (this.incoming.get(k2)?.committed === false) {
      throw dvsError('EBUSY', `endpoint ${ep} is already arriving here`);
    }
    const name = typeof o.name === 'string' ? o.name : `ep${ep}`;
    const env: Record<string, string> = {};
    if (typeof o.env === 'object' && o.env !== null) {
      for (const [n, v] of Object.entries(o.env)) env[n] = String(v);
    }
    Object.assign(env, this.o.processEnv(dc, cfg.name, ep), { DVS_MIGRATING: '1' });
    k.migrateIn(Date.now(), dc, ep, -1, { notes: [], wokenUp: false }, name);
    let deliver!: Incoming['deliver'];
    let fail!: Incoming['fail'];
    const state = new Promise<{ state: Uint8Array | null; ahead: Received[] }>((res, rej) => {
      deliver = res;
      fail = rej;
    });
    state.catch(() => undefined);
    const inc: Incoming = { from, pid: -1, committed: false, expectImport: false, state, deliver, fail };
    this.incoming.set(k2, inc);
    try {
      const info = await this.o.processes.spawn({
        dc,
        dcName: cfg.name,
        ep,
        name,
        cmd: o.cmd as string[],
        env,
        ...(typeof o.cwd === 'string' ? { cwd: o.cwd } : {}),
      });
      inc.pid = info.pid;
      k.migrateIn(Date.now(), dc, ep, info.pid, { notes: [], wokenUp: false }, name);
      // Wait until the program attached (its HELLO cleared WAITBIND).
      const deadline = Date.now() + (this.o.startTimeoutMs ?? 10_000);
      for (;;) {
        const row = k.endpoints(dc).find((e) => e.ep === ep);
        if (row !== undefined && row.node === this.o.nodeId && !row.flags.includes('WAITBIND')) break;
        const now = this.o.processes.get(dc, ep);
        if (now?.exit)
          throw dvsError('ESRCDIED', `the program exited at start (${JSON.stringify(now.exit)})`);
        if (Date.now() > deadline || signal.aborted) {
          throw dvsError('ETIMEDOUT', `the program did not connect to node ${this.o.nodeId} in time`);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      return { pid: info.pid };
    } catch (e) {
      await this.abort({ dc, ep }, from);
      throw e;
    }
  }

  private async commit(p: unknown, from: NodeId): Promise<{ ok: true }> {
    const o = (p ?? {}) as {
      dc?: number;
      ep?: number;
      carry?: MigrationCarry;
      state?: Uint8Array | null;
      ahead?: Received[];
    };
    if (typeof o.dc !== 'number' || typeof o.ep !== 'number')
      throw dvsError('EINVAL', 'migrate.commit: dc, ep');
    const inc = this.incoming.get(key(o.dc, o.ep));
    if (inc === undefined || inc.from !== from) throw dvsError('EINVAL', 'migrate.commit: nothing prepared');
    if (inc.committed) return { ok: true };
    inc.committed = true;
    inc.expectImport = o.state instanceof Uint8Array;
    const carry: MigrationCarry = {
      notes: Array.isArray(o.carry?.notes) ? o.carry.notes : [],
      wokenUp: o.carry?.wokenUp === true,
    };
    this.o.kernel.migrateActivate(Date.now(), o.dc, o.ep, carry);
    // The store's directory follows after the announcement (the kernels already know from the bind frame;
    // the store is not on the IPC path), so the freeze does not wait for a consensus write.
    const cluster = this.o.cluster();
    if (cluster !== undefined) {
      const row = this.o.kernel.endpoints(o.dc).find((e) => e.ep === o.ep);
      void cluster
        .moveEndpoint(o.dc, o.ep, from, this.o.nodeId, inc.pid, row?.name ?? `ep${o.ep}`)
        .catch((e: unknown) => this.log.error({ dc: o.dc, ep: o.ep, err: e }, 'directory move failed'));
    }
    // Kept until the new process imports (it may not have asked yet); a process without hooks never asks.
    const k2 = key(o.dc, o.ep);
    setTimeout(() => {
      if (this.incoming.get(k2) === inc) this.incoming.delete(k2);
    }, 60_000).unref();
    inc.deliver({
      state: o.state instanceof Uint8Array ? o.state : null,
      ahead: Array.isArray(o.ahead) ? o.ahead : [],
    });
    return { ok: true };
  }

  private async abort(p: unknown, from: NodeId): Promise<{ ok: true }> {
    const o = (p ?? {}) as { dc?: number; ep?: number };
    if (typeof o.dc !== 'number' || typeof o.ep !== 'number')
      throw dvsError('EINVAL', 'migrate.abort: dc, ep');
    const k2 = key(o.dc, o.ep);
    const inc = this.incoming.get(k2);
    if (inc === undefined || inc.committed) return { ok: true };
    this.incoming.delete(k2);
    this.o.kernel.migrateAbort(Date.now(), o.dc, o.ep, from);
    inc.fail(dvsError('EABORTED', 'the migration was rolled back'));
    await this.o.processes.kill(o.dc, o.ep, 'SIGKILL', 0).catch(() => undefined);
    return { ok: true };
  }

  // ─────────────────────────── process side (services) ───────────────────────────

  private hooks(p: Record<string, unknown>, ctx: AdminContext): { incoming: boolean } {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EINVAL', 'migrate.hooks is for processes');
    if (typeof p.sub !== 'number') throw dvsError('EINVAL', 'migrate.hooks: sub');
    const k2 = key(c.dc, c.ep);
    const h: Hooked = { ctx, sub: p.sub };
    this.hooked.set(k2, h);
    ctx.onClose(() => {
      if (this.hooked.get(k2) === h) this.hooked.delete(k2);
    });
    return { incoming: this.incoming.has(k2) };
  }

  private exported(p: Record<string, unknown>, ctx: AdminContext): null {
    if (ctx.caller === undefined || typeof p.id !== 'number') throw dvsError('EINVAL', 'migrate.state: id');
    const done = this.exports.get(p.id);
    if (done === undefined) return null;
    if (p.error !== undefined && p.error !== null) {
      done({ error: DvsError.fromWire(p.error) });
    } else if (p.state instanceof Uint8Array) {
      done({ state: p.state, ahead: Array.isArray(p.ahead) ? (p.ahead as Received[]) : [] });
    } else {
      done({ error: dvsError('EINVAL', 'migrate.state: state must be bytes') });
    }
    return null;
  }

  private async importState(ctx: AdminContext): Promise<{ state: Uint8Array | null; ahead: Received[] }> {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EINVAL', 'migrate.import is for processes');
    const k2 = key(c.dc, c.ep);
    const inc = this.incoming.get(k2);
    if (inc === undefined) return { state: null, ahead: [] };
    const got = await inc.state;
    if (this.incoming.get(k2) === inc) this.incoming.delete(k2);
    return got;
  }
}
