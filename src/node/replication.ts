/**
 * Primary-backup replication of an endpoint with automatic failover (DESIGN.md §7, docs/replication.md).
 * Every node of the DC keeps the group ({primary, backups, epoch}); the kernels hold callers while the
 * group has no primary (KernelReplicationApi). One module per daemon, talking to its peers over NodeRpc:
 *
 * ```
 *   X (dvs run --replicas N)   every DC node            backup node B (each)
 *   repl.setup {group} ───────▶ record, kernel.setReplicated
 *   spawn the primary (DVS_REPLICA_ROLE=primary, reserved as usual)
 *   repl.spawn ───────────────────────────────────────▶ spawn the same CMD (DVS_REPLICA_ROLE=backup,
 *                                                       DVS_REPLICA_PRIMARY=X), wait for its backup bind
 *   primary process: repl.replicate {state, client, entry}
 *     primary daemon ── repl.apply {seq, ...} ────────▶ keep state + reply-cache entry, push {op:'apply'} to
 *                     ◀──────── ok once the backup process acked it (repl.applied) ──┘
 *   primary lost (its node down on our links, or repl.lost from its daemon after its process exited):
 *     every node: candidates = backups whose links are up, in node-id order; the first one promotes:
 *     directory move (store) → kernel.promote (bind broadcast: peers replay held calls) → push
 *     {op:'promoted'} → repl.update {group, epoch+1} to every DC node.
 * ```
 * A backup that cannot be promoted (its process is gone) leaves the group (repl.leave) and the next one
 * promotes. With no backup left the group ends: held callers get EDSTDIED.
 *
 * With a cluster store the group's record there (src/node/repl-record.ts) fences both changes of who may
 * serve, so that the two sides of a partition never both serve (no split brain):
 * - a promotion is a CAS {primary: dead, epoch: e, me among the backups} -> {primary: me, epoch: e + 1};
 *   a backup that cannot reach the store (the minority side) keeps its callers held and retries;
 * - the primary drops a backup that failed to apply only by a CAS {primary: me, epoch: e}; until it lands,
 *   the update is not acknowledged (the client gets no reply from a state the store does not vouch for).
 *   A primary whose CAS finds a newer epoch was deposed during a partition: its process is killed.
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { DcId, Endpoint, EndpointInfo, NodeId } from '../kernel/types.js';
import type { ProcessInfo, ReplicaGroupInfo } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { sleep } from '../services/scope.js';
import type { AdminContext } from './local-server.js';
import type { NodeRpcHandler } from './node-rpc.js';
import type { DaemonParts } from './parts.js';
import {
  dcPeers,
  type GroupBase,
  groupBaseParam,
  groupKey,
  isNodeList,
  needGroup,
  replicaRow,
} from './repl-common.js';
import { type ReplRecord, type ReplRecords, replRecordsOf } from './repl-record.js';
import type { ServiceRegistry } from './services.js';
import { Smr } from './smr.js';

/** Replication modes `dvs run --mode` accepts (state-machine: src/node/smr.ts). */
export const REPLICATION_MODES = ['primary-backup', 'state-machine'] as const;
export type ReplicationMode = (typeof REPLICATION_MODES)[number];

/** A replicated endpoint as every node of its DC records it. */
export interface ReplicaGroup extends ReplicaGroupInfo, GroupBase {}

export interface ReplicationOptions extends DaemonParts {
  /** Is the link to `node` up? */
  linkUp: (node: NodeId) => boolean;
  /** Environment a process started here gets (DVS_SOCKET, DVS_DC, ...), as `dvs run` builds it. */
  processEnv: (dc: DcId, dcName: string, ep: Endpoint) => Record<string, string>;
  /** The daemon's own `proc.run` (spawn + reserve) for the primary. */
  runLocal: (params: Record<string, unknown>) => Promise<ProcessInfo>;
  registry?: Registry;
  /** How long a backup may take to start and bind, ms (default 10 000). */
  startTimeoutMs?: number;
  /** How long the primary waits for one backup to apply a state, ms (default 5000): then it is dropped. */
  applyTimeoutMs?: number;
}

/** Per-group state on this node. */
interface Local {
  g: ReplicaGroup;
  /** Backup side: the latest state and the reply cache (client endpoint -> SDK entry), as last applied. */
  state: Uint8Array | null;
  cache: Map<Endpoint, Uint8Array>;
  seq: number;
  /** The local replica process's subscription (repl.hooks). */
  hooked: { ctx: AdminContext; sub: number } | undefined;
  /** Applies pushed to the local backup process and not acked yet, by seq. */
  acks: Map<number, () => void>;
  /** When this node first saw the primary lost (performance.now), for the failover time. */
  lostAt: number | undefined;
  promoting: boolean;
  /** Being stopped here because the store gave its role to another node ({@link Replication.deposed}). */
  deposing: boolean;
  /** A record check after a link came back is in progress ({@link Replication.nodeUp}). */
  checking: boolean;
  /**
   * Primary side: backups dropped here (their node went down) but still in the store's record. They are
   * dropped there before the next update is acknowledged: a backup that misses an acknowledged update must
   * not stay promotable.
   */
  unrecorded: Set<NodeId>;
}

/** Store errors that mean "try again later" (no quorum, no answer): everything but a refusal. */
const REFUSED = new Set(['ESTALE', 'EPROTO', 'ENOTOWNER']);
/** Pause between attempts to reach the store for a fenced change, ms. */
const FENCE_RETRY_MS = 300;

const key = groupKey;
const ROLE_ENV = 'DVS_REPLICA_ROLE';
const PRIMARY_ENV = 'DVS_REPLICA_PRIMARY';

export class Replication {
  private readonly groups = new Map<string, Local>();
  private readonly log: Logger;
  private readonly failovers: Counter | undefined;
  private readonly applyTimeoutMs: number;
  /** `--mode state-machine` groups (src/node/smr.ts). */
  private readonly smr: Smr;
  /** Aborted at stop: ends the fenced changes still waiting for the store. */
  private readonly life = new AbortController();

  constructor(private readonly o: ReplicationOptions) {
    this.log = o.logger.child({ component: 'replication' });
    this.smr = new Smr(o);
    this.applyTimeoutMs = o.applyTimeoutMs ?? 5000;
    this.failovers = o.registry
      ? new Counter({
          name: 'dvs_replication_failovers_total',
          help: 'Backups promoted to primary on this node',
          registers: [o.registry],
        })
      : undefined;
  }

  /** SDK-facing services: `repl.hooks`, `repl.replicate`, `repl.applied`, `repl.info`. */
  registerServices(services: ServiceRegistry): void {
    services.registerAll('repl', {
      hooks: (p, ctx) => this.hooks(p, ctx),
      replicate: (p, ctx) => this.replicate(p, ctx),
      applied: (p, ctx) => this.applied(p, ctx),
      info: (_p, ctx) => this.info(ctx),
    });
    this.smr.registerServices(services);
  }

  /** Methods other daemons call on this one. */
  nodeMethods(): Record<string, NodeRpcHandler> {
    return {
      ...this.smr.nodeMethods(),
      'repl.setup': async (_m, p) => this.setup(p),
      'repl.spawn': (_m, p, _from, signal) => this.spawnBackup(p, signal),
      'repl.apply': (_m, p, from, signal) => this.apply(p, from, signal),
      'repl.lost': async (_m, p) => this.lost(p),
      'repl.update': async (_m, p) => this.update(p),
      'repl.leave': async (_m, p) => this.leave(p),
      'repl.drop': async (_m, p) => this.drop(p),
      'repl.end': (_m, p) => this.endHere(p),
    };
  }

  /** Is `ep` of `dc` replicated (either mode) as far as this node knows? */
  has(dc: DcId, ep: Endpoint): boolean {
    return this.groups.has(key(dc, ep)) || this.smr.has(dc, ep);
  }

  /** Fail what waits here (daemon stopping). */
  stop(): void {
    this.life.abort();
    for (const l of this.groups.values()) for (const done of l.acks.values()) done();
    this.smr.stop();
  }

  // ─────────────────────────── dvs run --replicas ───────────────────────────

  /** `proc.run` with `replicas` (and `mode`): the primary here, backups on the next live nodes of the DC. */
  async run(
    p: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<ProcessInfo & { replicas: ReplicaGroupInfo }> {
    const k = this.o.kernel;
    const mode = p.mode ?? 'primary-backup';
    if (mode === 'state-machine') {
      return this.smr.run(p, signal, (dc, ep) => this.groups.has(key(dc, ep)));
    }
    if (mode !== 'primary-backup') throw dvsError('EINVAL', `unknown replication mode '${String(mode)}'`);
    const n = p.replicas;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65536) {
      throw dvsError('EINVAL', `replicas must be a positive integer (got ${JSON.stringify(n)})`);
    }
    const ref = p.dc;
    const cfg = typeof ref === 'number' || typeof ref === 'string' ? k.findDc(ref) : undefined;
    if (cfg === undefined) throw dvsError('ENOENT', `no DC '${String(ref)}' on node ${this.o.nodeId}`);
    const ep = p.ep as number;
    if (n > cfg.nodes.length) {
      throw dvsError(
        'EINVAL',
        `--replicas ${n} is more than the ${cfg.nodes.length} node(s) of DC '${cfg.name}' (nodes ${cfg.nodes.join(',')}): one replica per node`,
        { dc: cfg.id, nodes: cfg.nodes },
      );
    }
    const others = cfg.nodes.filter((x) => x !== this.o.nodeId && this.o.linkUp(x)).sort((a, b) => a - b);
    if (others.length < n - 1) {
      throw dvsError(
        'EUNAVAIL',
        `--replicas ${n} needs ${n - 1} other live node(s) of DC '${cfg.name}'; reachable now: ${others.join(',') || 'none'}`,
      );
    }
    if (
      k.endpoints(cfg.id).some((e) => e.ep === ep) ||
      this.groups.has(key(cfg.id, ep)) ||
      this.smr.has(cfg.id, ep)
    ) {
      throw dvsError('EBOUND', `endpoint ${ep} of DC '${cfg.name}' is already bound`, { dc: cfg.id, ep });
    }
    const userEnv: Record<string, string> = {};
    if (typeof p.env === 'object' && p.env !== null) {
      for (const [name, v] of Object.entries(p.env)) if (!name.startsWith('DVS_')) userEnv[name] = String(v);
    }
    const g: ReplicaGroup = {
      dc: cfg.id,
      ep,
      dcName: cfg.name,
      name: typeof p.name === 'string' ? p.name : `ep${ep}`,
      cmd: p.cmd as string[],
      env: userEnv,
      ...(typeof p.cwd === 'string' ? { cwd: p.cwd } : {}),
      mode: 'primary-backup',
      primary: this.o.nodeId,
      backups: others.slice(0, n - 1),
      epoch: 1,
    };
    const members = cfg.nodes.filter((x) => x !== this.o.nodeId && this.o.linkUp(x));
    const records = this.records();
    const undo = async () => {
      await Promise.allSettled(
        members.map((x) => this.o.nodeRpc.call(x, 'repl.drop', { dc: g.dc, ep }, { timeout: 5000 })),
      );
      this.drop({ dc: g.dc, ep });
      await this.o.processes.kill(g.dc, ep, 'SIGKILL', 0).catch(() => undefined);
      await records?.remove(g.dc, ep).catch(() => undefined);
    };
    try {
      if (records !== undefined) {
        // The fence first: a group the store does not know could never be failed over safely. Its epoch
        // follows any record an earlier group of this endpoint left, so none of that group's can pass a CAS.
        const rec = await records.create(
          g.dc,
          ep,
          { mode: 'primary-backup', primary: g.primary, members: g.backups },
          signal,
        );
        g.epoch = rec.epoch;
      }
      this.setup({ group: g });
      await Promise.all(
        members.map((x) => this.o.nodeRpc.call(x, 'repl.setup', { group: g }, { signal, timeout: 5000 })),
      );
      const info = await this.o.runLocal({
        ...p,
        env: { ...userEnv, [ROLE_ENV]: 'primary', DVS_REPLICA_BACKUPS: g.backups.join(',') },
      });
      await Promise.all(
        g.backups.map((b) =>
          this.o.nodeRpc.call(
            b,
            'repl.spawn',
            { dc: g.dc, ep },
            { signal, timeout: (this.o.startTimeoutMs ?? 10_000) + 2000 },
          ),
        ),
      );
      this.o.events.emit('repl.started', `${g.dcName}/${ep}`, { ...groupInfo(g) });
      this.log.info({ dc: g.dc, ep, primary: g.primary, backups: g.backups }, 'replicated endpoint started');
      return { ...info, replicas: groupInfo(g) };
    } catch (e) {
      await undo();
      throw e;
    }
  }

  /**
   * `dvs kill --replicas`: ends replicated endpoint `ep` of `dc` (either mode) everywhere. With a store its
   * record is deleted first, so no node can promote or replace a replica after that (a store that cannot
   * be reached fails the call, nothing changed); then every DC node forgets the group (callers still held
   * for it fail with EDSTDIED) and signals its replica. Nodes that cannot be told are listed; their replicas
   * stop when their links come back and the record is found gone.
   */
  async end(
    dc: DcId,
    ep: Endpoint,
    how: { signal: string; graceMs: number },
    signal: AbortSignal,
  ): Promise<{ processes: ProcessInfo[]; unreachable: NodeId[] }> {
    const cfg = this.o.kernel.findDc(dc);
    if (!this.groups.has(key(dc, ep)) && !this.smr.has(dc, ep)) {
      throw dvsError('ENOENT', `endpoint ${ep} of DC '${cfg?.name ?? dc}' is not replicated`, { dc, ep });
    }
    await this.records()?.remove(dc, ep, signal);
    const others = (cfg?.nodes ?? []).filter((x) => x !== this.o.nodeId);
    const params = { dc, ep, signal: how.signal, graceMs: how.graceMs };
    const [mine, ...theirs] = await Promise.allSettled([
      this.endHere(params),
      ...others.map((x) =>
        this.o.linkUp(x)
          ? this.o.nodeRpc.call(x, 'repl.end', params, { signal, timeout: how.graceMs + 5000 })
          : Promise.reject(dvsError('ENOTCONN', `node ${x} is down`)),
      ),
    ]);
    const processes: ProcessInfo[] = [];
    const unreachable: NodeId[] = [];
    for (const [i, r] of [mine, ...theirs].entries()) {
      const node = i === 0 ? this.o.nodeId : others[i - 1]!;
      if (r?.status === 'fulfilled') {
        const info = (r.value as { process: ProcessInfo | null }).process;
        if (info !== null) processes.push(info);
      } else {
        this.log.warn({ dc, ep, node, err: r?.reason }, 'could not end the replica group on a node');
        unreachable.push(node);
      }
    }
    this.log.info({ dc, ep, processes: processes.length, unreachable }, 'replicated endpoint ended');
    this.o.events.emit('repl.ended', `${cfg?.name ?? dc}/${ep}`, { dc, ep, by: 'kill' });
    return { processes, unreachable };
  }

  /** This node's part of {@link end}: forget the group, signal the local replica (if any). */
  private async endHere(p: unknown): Promise<{ process: ProcessInfo | null }> {
    const o = (p ?? {}) as { dc?: unknown; ep?: unknown; signal?: unknown; graceMs?: unknown };
    if (typeof o.dc !== 'number' || typeof o.ep !== 'number') throw dvsError('EINVAL', 'repl.end: dc, ep');
    const { dc, ep } = { dc: o.dc, ep: o.ep };
    this.drop({ dc, ep });
    this.smr.end(dc, ep);
    const info = this.o.processes.get(dc, ep);
    if (info === undefined || info.exit !== null) return { process: null };
    const sig = typeof o.signal === 'string' ? o.signal : 'SIGTERM';
    const graceMs = typeof o.graceMs === 'number' ? o.graceMs : 3000;
    return { process: await this.o.processes.kill(dc, ep, sig, graceMs) };
  }

  /** Record a group (every DC node) and tell the kernel. */
  private setup(p: unknown): { ok: true } {
    const g = groupParam((p as { group?: unknown } | null)?.group);
    const k2 = key(g.dc, g.ep);
    const have = this.groups.get(k2);
    if (have !== undefined && have.g.epoch >= g.epoch) return { ok: true };
    this.o.kernel.setReplicated(Date.now(), g.dc, g.ep, true);
    this.groups.set(k2, {
      g,
      state: null,
      cache: new Map(),
      seq: 0,
      hooked: have?.hooked,
      acks: new Map(),
      lostAt: undefined,
      promoting: false,
      deposing: false,
      checking: false,
      unrecorded: new Set(),
    });
    return { ok: true };
  }

  /** Start the backup process of a group here and wait until it is bound as a backup. */
  private async spawnBackup(p: unknown, signal: AbortSignal): Promise<{ pid: number }> {
    const l = this.need(p);
    const g = l.g;
    if (!g.backups.includes(this.o.nodeId)) throw dvsError('EINVAL', `node ${this.o.nodeId} is no backup`);
    const env = {
      ...g.env,
      ...this.o.processEnv(g.dc, g.dcName, g.ep),
      [ROLE_ENV]: 'backup',
      [PRIMARY_ENV]: String(g.primary),
    };
    const info = await this.o.processes.spawn({
      dc: g.dc,
      dcName: g.dcName,
      ep: g.ep,
      name: g.name,
      cmd: g.cmd,
      env,
      ...(g.cwd !== undefined ? { cwd: g.cwd } : {}),
    });
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 10_000);
    for (;;) {
      const row = this.o.kernel.endpoints(g.dc).find((e) => e.ep === g.ep && e.kind === 'backup');
      if (row !== undefined && (row.pid === info.pid || row.pid === info.containerPid)) break;
      const now = this.o.processes.get(g.dc, g.ep);
      if (now?.exit) {
        throw dvsError(
          'ESRCDIED',
          `the backup on node ${this.o.nodeId} exited at start (${JSON.stringify(now.exit)})`,
        );
      }
      if (Date.now() > deadline || signal.aborted) {
        await this.o.processes.kill(g.dc, g.ep, 'SIGKILL', 0).catch(() => undefined);
        throw dvsError('ETIMEDOUT', `the backup on node ${this.o.nodeId} did not bind as a backup in time`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return { pid: info.pid };
  }

  // ─────────────────────────── state shipping ───────────────────────────

  /** `repl.replicate` from the primary process: every live backup applies it before this resolves. */
  private async replicate(
    p: Record<string, unknown>,
    ctx: AdminContext,
  ): Promise<{ seq: number; backups: number }> {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EINVAL', 'repl.replicate is for processes');
    const l = this.groups.get(key(c.dc, c.ep));
    if (l === undefined) throw dvsError('ENOENT', `endpoint ${c.ep} is not replicated`);
    if (l.g.primary !== this.o.nodeId)
      throw dvsError('ENOTOWNER', `the primary of ${c.ep} is node ${l.g.primary}`);
    const state = p.state instanceof Uint8Array ? p.state : undefined;
    const client = typeof p.client === 'number' ? p.client : undefined;
    const entry = p.entry instanceof Uint8Array ? p.entry : undefined;
    const seq = ++l.seq;
    const epoch = l.g.epoch;
    const targets = l.g.backups.filter((b) => this.o.linkUp(b));
    // A backup whose link is down does not get this update either: it is dropped below like a failed one.
    const down = l.g.backups.filter((b) => !targets.includes(b));
    const msg = { dc: c.dc, ep: c.ep, epoch, seq, state, client, entry };
    const results = await Promise.allSettled(
      targets.map((b) =>
        this.o.nodeRpc.call(b, 'repl.apply', msg, { signal: ctx.signal, timeout: this.applyTimeoutMs }),
      ),
    );
    // The primary process went away while its update was on the way (its session's signal aborted the
    // calls): that says nothing about the backups, which must stay promotable. Whether a backup applied this
    // update or not, the client got no reply yet and its replay is answered consistently (reply cache).
    if (ctx.signal.aborted) throw dvsError('EABORTED', 'the primary process went away');
    const failed = targets.filter((_, i) => results[i]?.status === 'rejected');
    const drop = [...new Set([...failed, ...down, ...l.unrecorded])];
    if (drop.length > 0) {
      // A backup that cannot keep up is no longer one: it must never be promoted with a stale state. With a
      // store that is recorded there first; until it is, this update is not acknowledged.
      await this.dropFenced(l, epoch, drop, ctx.signal);
      for (const b of failed) {
        const r = results[targets.indexOf(b)];
        const err = r?.status === 'rejected' ? r.reason : undefined;
        this.log.warn({ dc: c.dc, ep: c.ep, backup: b, err }, 'backup dropped: apply failed');
        this.removeBackup(l, b, true);
      }
      for (const b of down) {
        this.log.warn({ dc: c.dc, ep: c.ep, backup: b }, 'backup dropped: its node is unreachable');
        this.removeBackup(l, b, true);
      }
      for (const b of drop) l.unrecorded.delete(b);
    }
    return { seq, backups: targets.length - failed.length };
  }

  /** The store's record keeper, when the node runs with a cluster store. */
  private records(): ReplRecords | undefined {
    return replRecordsOf(this.o.cluster);
  }

  /**
   * Retries `op` while the store cannot be reached (the minority side of a partition, a store election),
   * until it lands, is refused (ESTALE and the like: thrown), or `signal` or the daemon stops (EABORTED).
   */
  private async fenced<T>(what: string, signal: AbortSignal, op: () => Promise<T>): Promise<T> {
    const stop = AbortSignal.any([signal, this.life.signal]);
    for (let attempt = 0; ; attempt++) {
      if (stop.aborted) throw dvsError('EABORTED', `${what}: given up`);
      try {
        return await op();
      } catch (e) {
        if (e instanceof DvsError && REFUSED.has(e.code)) throw e;
        if (attempt === 0 || attempt % 20 === 0) {
          this.log.warn({ err: e, attempt }, `${what}: the cluster store cannot be reached; retrying`);
        }
      }
      await sleep(FENCE_RETRY_MS, stop);
    }
  }

  /**
   * The primary drops `failed` backups in the store (no-op without one). A record with a newer epoch or
   * another primary means this primary was deposed (a backup was promoted while we were cut off): its
   * process is killed and the error (ESTALE) goes back to it.
   */
  private async dropFenced(l: Local, epoch: number, failed: NodeId[], signal: AbortSignal): Promise<void> {
    const records = this.records();
    if (records === undefined) return;
    const me = this.o.nodeId;
    const { dc, ep } = l.g;
    try {
      await this.fenced('dropping a backup', signal, () =>
        records.update(dc, ep, (cur) => {
          if (cur === undefined || cur.primary !== me || cur.epoch !== epoch) throw deposedError(dc, ep, cur);
          return { ...cur, members: cur.members.filter((b) => !failed.includes(b)) };
        }),
      );
    } catch (e) {
      if (e instanceof DvsError && e.code === 'ESTALE') await this.deposed(l, records);
      throw e;
    }
  }

  /**
   * This node's replica of `l` lost its role while the node was cut off (the record says so): take the
   * record's group and stop the local process, which must not serve (nor be promoted) with what it has.
   */
  private async deposed(l: Local, records: ReplRecords): Promise<void> {
    if (l.deposing) return;
    l.deposing = true;
    try {
      await this.depose(l, records);
    } finally {
      l.deposing = false;
    }
  }

  private async depose(l: Local, records: ReplRecords): Promise<void> {
    const { dc, ep } = l.g;
    const me = this.o.nodeId;
    let at: Awaited<ReturnType<ReplRecords['get']>>;
    try {
      at = await this.fenced('reading the record of a deposed replica', this.life.signal, () =>
        records.get(dc, ep),
      );
    } catch {
      return; // the daemon stops
    }
    if (at?.rec.primary === undefined) {
      // No record: the group was ended (dvs kill --replicas) meanwhile.
      this.log.warn({ dc, ep }, 'the replica group has no record any more: ending it here');
      this.drop({ dc, ep });
      await this.o.processes.kill(dc, ep, 'SIGKILL', 0).catch(() => undefined);
      return;
    }
    l.g = {
      ...l.g,
      primary: at.rec.primary,
      backups: at.rec.members,
      epoch: Math.max(at.rec.epoch, l.g.epoch),
    };
    l.lostAt = undefined;
    l.state = null;
    l.cache.clear();
    this.log.warn({ dc, ep, group: groupInfo(l.g) }, 'replica deposed: the store says another node serves');
    this.o.events.emit('repl.deposed', `${l.g.dcName}/${ep}`, { dc, ep, node: me, ...groupInfo(l.g) });
    await this.o.processes.kill(dc, ep, 'SIGKILL', 0).catch(() => undefined);
    if (l.g.primary === me || this.groups.get(key(dc, ep)) !== l) return;
    // Our old primary was announced to the nodes we met again after the heal (a link-up sync lists what is
    // bound here), and its unbind leaves their callers held: point every kernel at the real primary.
    this.pointKernel(l);
    const msg = { group: l.g, repoint: true };
    for (const x of this.dcPeers(dc)) {
      this.o.nodeRpc
        .call(x, 'repl.update', msg, { timeout: 5000 })
        .catch((e: unknown) => this.log.debug({ peer: x, err: e }, 'repl.update not delivered'));
    }
  }

  /** This node's kernel routes `l`'s endpoint to its primary (a node that is not this one). */
  private pointKernel(l: Local): void {
    const g = l.g;
    if (g.primary === this.o.nodeId || this.o.kernel.findDc(g.dc) === undefined) return;
    const row = this.o.kernel.endpoints(g.dc).find((e) => e.ep === g.ep);
    if (row !== undefined && row.node === g.primary && row.kind !== 'backup') return;
    this.log.info({ dc: g.dc, ep: g.ep, primary: g.primary }, 'routing the endpoint to its primary');
    this.o.kernel.learnRemote(Date.now(), g.dc, g.ep, g.primary, { kind: 'local', name: g.name, pid: -1 });
  }

  /** `repl.apply` at a backup node. */
  private async apply(p: unknown, from: NodeId, signal: AbortSignal): Promise<{ ok: true }> {
    const l = this.need(p);
    const me = this.o.nodeId;
    const o = p as ApplyMsg;
    // With a store, epochs grow only by a promotion's CAS, so a newer epoch names the primary for sure; without
    // one, both sides of a partition may have promoted: only a fellow backup is believed.
    const fenced = this.records() !== undefined;
    if (
      typeof o.epoch === 'number' &&
      o.epoch > l.g.epoch &&
      from !== l.g.primary &&
      (fenced || l.g.backups.includes(from))
    ) {
      // A backup promoted at a newer epoch while we did not hear of it (its repl.update was lost in a
      // partition): `from` is the primary now, and sends to its backups only.
      this.log.info({ dc: l.g.dc, ep: l.g.ep, primary: from, epoch: o.epoch }, 'learnt a newer primary');
      const backups = l.g.backups.filter((b) => b !== from);
      l.g = {
        ...l.g,
        primary: from,
        backups: fenced ? [...new Set([...backups, me])] : backups,
        epoch: o.epoch,
      };
      l.lostAt = undefined;
    }
    if (from !== l.g.primary)
      throw dvsError('ESTALE', `node ${from} is not the primary (node ${l.g.primary})`);
    if (!l.g.backups.includes(me)) throw dvsError('ENOTOWNER', `node ${me} is no backup`);
    const seq = typeof o.seq === 'number' ? o.seq : l.seq + 1;
    const sync = o.reset === true;
    if (sync) {
      // A new primary's first word: its state and reply cache replace ours (we may have applied updates of
      // the old primary that were never acknowledged), and its sequence continues from here.
      l.state = o.state instanceof Uint8Array ? o.state : null;
      l.cache = new Map(cacheEntries(o.cache));
    } else {
      if (o.state instanceof Uint8Array) l.state = o.state;
      if (typeof o.client === 'number' && o.entry instanceof Uint8Array) l.cache.set(o.client, o.entry);
    }
    l.seq = seq;
    const h = l.hooked;
    if (h === undefined) return { ok: true };
    // Kept by this daemon already; the process applies it before the primary goes on.
    let timer: NodeJS.Timeout | undefined;
    const acked = new Promise<void>((resolve) => {
      l.acks.set(seq, resolve);
      timer = setTimeout(resolve, this.applyTimeoutMs);
      signal.addEventListener('abort', () => resolve(), { once: true });
      const pushed = h.ctx.push(
        h.sub,
        sync
          ? { op: 'sync', seq, state: l.state, cache: [...l.cache] }
          : {
              op: 'apply',
              seq,
              ...(o.state instanceof Uint8Array ? { state: o.state } : {}),
              ...(typeof o.client === 'number' && o.entry instanceof Uint8Array
                ? { client: o.client, entry: o.entry }
                : {}),
            },
      );
      if (!pushed) resolve();
    });
    await acked;
    clearTimeout(timer);
    l.acks.delete(seq);
    return { ok: true };
  }

  private applied(p: Record<string, unknown>, ctx: AdminContext): null {
    const c = ctx.caller;
    if (c === undefined || typeof p.seq !== 'number') throw dvsError('EINVAL', 'repl.applied: seq');
    const l = this.groups.get(key(c.dc, c.ep));
    const done = l?.acks.get(p.seq);
    if (done !== undefined) {
      l!.acks.delete(p.seq);
      done();
    }
    return null;
  }

  /** `repl.hooks` from a replica process: its role, and for a backup what it must apply first. */
  private hooks(p: Record<string, unknown>, ctx: AdminContext) {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EINVAL', 'repl.hooks is for processes');
    if (typeof p.sub !== 'number') throw dvsError('EINVAL', 'repl.hooks: sub');
    const l = this.groups.get(key(c.dc, c.ep));
    if (l === undefined) throw dvsError('ENOENT', `endpoint ${c.ep} of DC ${c.dc} is not replicated`);
    const h = { ctx, sub: p.sub };
    l.hooked = h;
    ctx.onClose(() => {
      if (l.hooked === h) l.hooked = undefined;
      for (const done of l.acks.values()) done();
    });
    const primary = l.g.primary === this.o.nodeId;
    return {
      ...groupInfo(l.g),
      role: primary ? 'primary' : 'backup',
      seq: l.seq,
      state: primary ? null : l.state,
      cache: primary ? [] : [...l.cache],
    };
  }

  private info(ctx: AdminContext): ReplicaGroupInfo & { role: 'primary' | 'backup' } {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EINVAL', 'repl.info is for processes');
    const l = this.groups.get(key(c.dc, c.ep));
    if (l === undefined) throw dvsError('ENOENT', `endpoint ${c.ep} is not replicated`);
    return { ...groupInfo(l.g), role: l.g.primary === this.o.nodeId ? 'primary' : 'backup' };
  }

  // ─────────────────────────── failure and failover ───────────────────────────

  /**
   * The link to `node` is up again (after a crash or a partition): with a store, every group here is checked
   * against its record. A change made while this node was cut off (a promotion, a dropped backup) is taken
   * in, and a replica that lost its role stops its process before serving or being promoted with what it has.
   */
  nodeUp(node: NodeId): void {
    this.smr.nodeUp(node);
    const records = this.records();
    if (records === undefined) return;
    for (const l of this.groups.values()) {
      if (l.checking) continue;
      l.checking = true;
      // The store may answer only some time after the links are back (its own members catching up):
      // retried until it does, or an idle deposed primary would never learn it.
      void this.fenced(
        'checking a replica group record after a link came back',
        this.life.signal,
        async () => {
          const epoch = l.g.epoch;
          const at = await records.get(l.g.dc, l.g.ep, AbortSignal.timeout(5000));
          if (l.g.epoch !== epoch) throw dvsError('EBUSY', 'the group changed meanwhile: read again');
          return at;
        },
      )
        .then(async (at) => {
          if (this.groups.get(key(l.g.dc, l.g.ep)) === l) await this.reconcile(l, at?.rec, records);
        })
        .catch((e: unknown) => this.log.debug({ err: e, dc: l.g.dc, ep: l.g.ep }, 'record check ended'))
        .finally(() => {
          l.checking = false;
        });
    }
  }

  /** Takes the store's record of `l` in (see {@link nodeUp}). */
  private async reconcile(l: Local, rec: ReplRecord | undefined, records: ReplRecords): Promise<void> {
    const me = this.o.nodeId;
    const mine = l.g.primary === me || l.g.backups.includes(me);
    if (rec === undefined || rec.primary === undefined) {
      // No record: the group was ended (`dvs kill --replicas`) while this node was cut off.
      this.log.warn({ dc: l.g.dc, ep: l.g.ep }, 'the replica group has no record any more: ending it here');
      this.drop({ dc: l.g.dc, ep: l.g.ep });
      if (mine) await this.o.processes.kill(l.g.dc, l.g.ep, 'SIGKILL', 0).catch(() => undefined);
      return;
    }
    const sameBackups =
      rec.members.length === l.g.backups.length && rec.members.every((b) => l.g.backups.includes(b));
    if (rec.epoch === l.g.epoch && rec.primary === l.g.primary && sameBackups) return;
    if (rec.epoch < l.g.epoch) return;
    const keeps = rec.primary === me || rec.members.includes(me);
    if (mine && !keeps) {
      await this.deposed(l, records);
      return;
    }
    this.log.info(
      { dc: l.g.dc, ep: l.g.ep, primary: rec.primary, epoch: rec.epoch },
      'group taken from the store',
    );
    l.g = { ...l.g, primary: rec.primary, backups: rec.members, epoch: rec.epoch };
    l.lostAt = undefined;
  }

  /** The link to `node` is down: groups it was the primary of fail over, its backups leave. */
  nodeDown(node: NodeId): void {
    this.smr.nodeDown(node);
    for (const l of [...this.groups.values()]) {
      if (l.g.primary === node) this.primaryLost(l, node);
      else if (l.g.backups.includes(node)) {
        this.removeBackup(l, node, false);
        // The primary is lost and this backup was next in line (both nodes cut off together): we may be now.
        if (l.lostAt !== undefined) this.primaryLost(l, l.g.primary);
      }
    }
  }

  /** A process started here exited: a primary fails over, a backup leaves its group. */
  onProcessExit(info: ProcessInfo): void {
    this.smr.onProcessExit(info);
    const l = this.groups.get(key(info.dc, info.ep));
    if (l === undefined) return;
    const me = this.o.nodeId;
    // A replica being deposed (the store gave its role away while we were cut off) is stopped on purpose:
    // its exit is no failure of the group (its refused update may also have made it exit on its own).
    if (l.deposing) return;
    if (l.g.primary === me) {
      this.log.warn({ dc: info.dc, ep: info.ep, pid: info.pid }, 'primary process exited: failing over');
      this.primaryExited(l);
    } else if (l.g.backups.includes(me)) {
      this.removeBackup(l, me, true);
    }
  }

  private lost(p: unknown): { ok: true } {
    const o = p as { primary?: unknown; group?: unknown };
    // The group as the lost primary had it: newer than ours if it was promoted after a failed promotion.
    if (o.group !== undefined) this.update({ group: o.group });
    const l = this.need(p);
    if (typeof o.primary === 'number') this.primaryLost(l, o.primary);
    return { ok: true };
  }

  /** This node's primary process of `l` is gone: every DC node learns it (with the group), and fails over. */
  private primaryExited(l: Local): void {
    const g = l.g;
    const me = this.o.nodeId;
    for (const x of this.dcPeers(g.dc)) {
      this.o.nodeRpc
        .call(
          x,
          'repl.lost',
          { dc: g.dc, ep: g.ep, primary: me, epoch: g.epoch, group: g },
          { timeout: 5000 },
        )
        .catch((e: unknown) => this.log.debug({ peer: x, err: e }, 'repl.lost not delivered'));
    }
    this.primaryLost(l, me);
  }

  /** The primary `dead` of group `l` is gone: the first live backup promotes itself; the others wait. */
  private primaryLost(l: Local, dead: NodeId): void {
    const g = l.g;
    if (g.primary !== dead) return;
    l.lostAt ??= performance.now();
    const live = g.backups.filter((b) => b === this.o.nodeId || this.o.linkUp(b)).sort((a, b) => a - b);
    if (live.length === 0) {
      this.log.error({ dc: g.dc, ep: g.ep }, 'primary lost and no backup left: the endpoint is gone');
      this.o.events.emit('repl.ended', `${g.dcName}/${g.ep}`, { dc: g.dc, ep: g.ep, primary: dead });
      this.drop({ dc: g.dc, ep: g.ep });
      return;
    }
    if (live[0] !== this.o.nodeId || l.promoting) return;
    l.promoting = true;
    void this.promote(l, dead).finally(() => {
      l.promoting = false;
    });
  }

  private async promote(l: Local, dead: NodeId): Promise<void> {
    const g = l.g;
    const me = this.o.nodeId;
    const row = this.o.kernel.endpoints(g.dc).find((e) => e.ep === g.ep && e.kind === 'backup');
    if (row === undefined) {
      // No backup process here after all: leave, so the next backup promotes.
      this.log.warn({ dc: g.dc, ep: g.ep }, 'cannot promote here (no backup process): leaving the group');
      this.removeBackup(l, me, true);
      this.primaryLost(l, dead);
      return;
    }
    let epoch = g.epoch + 1;
    let backups = g.backups.filter((b) => b !== me);
    const records = this.records();
    if (records !== undefined) {
      // The fence: only the side of a partition that reaches the store promotes; its callers wait meanwhile.
      try {
        const rec = await this.fenced('promoting a backup', this.life.signal, () =>
          records.update(g.dc, g.ep, (cur) => {
            if (
              cur === undefined ||
              cur.primary !== dead ||
              cur.epoch !== g.epoch ||
              !cur.members.includes(me)
            )
              throw deposedError(g.dc, g.ep, cur);
            return {
              ...cur,
              primary: me,
              // Backups we cannot reach now would miss what we acknowledge next: no backups of ours.
              members: cur.members.filter((b) => b !== me && this.o.linkUp(b)),
              epoch: cur.epoch + 1,
            };
          }),
        );
        epoch = rec.epoch;
        backups = rec.members;
      } catch (e) {
        if (!(e instanceof DvsError && e.code === 'ESTALE')) return; // the daemon stops
        this.log.warn({ dc: g.dc, ep: g.ep, err: e }, 'not promoted: the store says otherwise');
        await this.deposed(l, records);
        return;
      }
    }
    const cluster = this.o.cluster();
    if (cluster !== undefined) {
      // Before the announcement, as a migration does: the bind hook then finds the entry here. The old
      // entry may be gone already (its lease expired, or its node unbound it): then the bind creates it.
      await cluster.moveEndpoint(g.dc, g.ep, dead, me, row.pid, g.name).catch((e: unknown) => {
        if (!(e instanceof DvsError && (e.code === 'ENOTBOUND' || e.code === 'EMOVED'))) {
          this.log.warn({ dc: g.dc, ep: g.ep, err: e }, 'directory move at failover failed');
        }
      });
    }
    // Without a store, someone else's promotion may have arrived meanwhile; with one, the CAS decided.
    if (records === undefined && l.g.primary !== dead) return;
    try {
      this.o.kernel.promote(Date.now(), g.dc, g.ep);
    } catch (e) {
      this.log.warn({ dc: g.dc, ep: g.ep, err: e }, 'cannot promote here: the backup process went away');
      if (records === undefined) {
        // Leave, so the next backup promotes.
        this.removeBackup(l, me, true);
        this.primaryLost(l, dead);
        return;
      }
      // The store has us as primary now: fail over from us, as when a primary's process exits.
      l.g = { ...g, primary: me, backups, epoch };
      this.primaryExited(l);
      return;
    }
    const ms = l.lostAt === undefined ? 0 : Math.round((performance.now() - l.lostAt) * 100) / 100;
    l.g = { ...g, primary: me, backups, epoch };
    l.lostAt = undefined;
    // The other backups may have applied updates the old primary never acknowledged (cut off with it): our
    // state and reply cache replace theirs before anything else of ours. One that cannot take it is dropped.
    const sync = {
      dc: g.dc,
      ep: g.ep,
      epoch,
      seq: l.seq,
      reset: true,
      ...(l.state !== null ? { state: l.state } : {}),
      cache: [...l.cache],
    };
    for (const b of backups.filter((x) => this.o.linkUp(x))) {
      this.o.nodeRpc.call(b, 'repl.apply', sync, { timeout: this.applyTimeoutMs }).catch((e: unknown) => {
        this.log.warn(
          { dc: g.dc, ep: g.ep, backup: b, err: e },
          'backup dropped: the new primary could not sync it',
        );
        this.removeBackup(l, b, true);
      });
    }
    // The reply cache and state are the process's now; this daemon no longer holds a backup's copy.
    l.state = null;
    l.cache = new Map();
    this.failovers?.inc();
    this.log.info({ dc: g.dc, ep: g.ep, from: dead, backups: l.g.backups, ms }, 'promoted to primary');
    this.o.events.emit('failover', `${g.dcName}/${g.ep}`, { dc: g.dc, ep: g.ep, from: dead, to: me, ms });
    if (l.hooked !== undefined) l.hooked.ctx.push(l.hooked.sub, { op: 'promoted', ...groupInfo(l.g) });
    const next = { group: l.g };
    for (const x of this.dcPeers(g.dc)) {
      this.o.nodeRpc
        .call(x, 'repl.update', next, { timeout: 5000 })
        .catch((e: unknown) => this.log.debug({ peer: x, err: e }, 'repl.update not delivered'));
    }
  }

  /** A newer version of a group (a promotion elsewhere). */
  private update(p: unknown): { ok: true } {
    const g = groupParam((p as { group?: unknown } | null)?.group);
    const repoint = (p as { repoint?: unknown }).repoint === true;
    const l = this.groups.get(key(g.dc, g.ep));
    if (l === undefined) return this.setup(p);
    if (g.epoch > l.g.epoch) {
      l.g = g;
      l.lostAt = undefined;
    }
    // A deposed primary's node says where the group really is (its stale announcement reached us).
    if (repoint && l.g.epoch === g.epoch) this.pointKernel(l);
    return { ok: true };
  }

  /** `node` is no longer a backup of group `l` (tell the DC when `tell`: its process or apply failed). */
  private removeBackup(l: Local, node: NodeId, tell: boolean): void {
    if (!l.g.backups.includes(node)) return;
    l.g = { ...l.g, backups: l.g.backups.filter((b) => b !== node) };
    if (l.g.primary === this.o.nodeId) l.unrecorded.add(node);
    if (!tell) return;
    for (const x of this.dcPeers(l.g.dc)) {
      this.o.nodeRpc
        .call(x, 'repl.leave', { dc: l.g.dc, ep: l.g.ep, node }, { timeout: 5000 })
        .catch((e: unknown) => this.log.debug({ peer: x, err: e }, 'repl.leave not delivered'));
    }
  }

  private leave(p: unknown): { ok: true } {
    const l = this.need(p);
    const node = (p as { node?: unknown }).node;
    if (typeof node !== 'number') throw dvsError('EINVAL', 'repl.leave: node');
    const wasNext = l.g.backups.includes(node);
    this.removeBackup(l, node, false);
    // A backup that could not take over left while the primary is lost: the next one may be us.
    if (wasNext && l.lostAt !== undefined) this.primaryLost(l, l.g.primary);
    return { ok: true };
  }

  /** Forget a group here; callers still held for it fail (EDSTDIED). */
  private drop(p: unknown): { ok: true } {
    const o = (p ?? {}) as { dc?: unknown; ep?: unknown };
    if (typeof o.dc !== 'number' || typeof o.ep !== 'number') throw dvsError('EINVAL', 'repl: dc, ep');
    const l = this.groups.get(key(o.dc, o.ep));
    if (l === undefined) return { ok: true };
    this.groups.delete(key(o.dc, o.ep));
    for (const done of l.acks.values()) done();
    if (this.o.kernel.findDc(o.dc) !== undefined) this.o.kernel.setReplicated(Date.now(), o.dc, o.ep, false);
    return { ok: true };
  }

  // ─────────────────────────── introspection ───────────────────────────

  /**
   * `ep.list` rows with the replication roles: the primary's row gets `role: 'primary'` and the group, the
   * local backup's row shows this node (the kernel's row names the primary it routes to), and every other
   * backup gets a row of its own.
   */
  decorate(
    dc: DcId,
    rows: EndpointInfo[],
  ): (EndpointInfo & { role?: 'primary' | 'backup' | 'replica'; replicas?: ReplicaGroupInfo })[] {
    return this.smr.decorate(dc, this.decoratePb(dc, rows));
  }

  private decoratePb(
    dc: DcId,
    rows: EndpointInfo[],
  ): (EndpointInfo & { role?: 'primary' | 'backup'; replicas?: ReplicaGroupInfo })[] {
    type Row = EndpointInfo & { role?: 'primary' | 'backup'; replicas?: ReplicaGroupInfo };
    const groups = [...this.groups.values()].filter((l) => l.g.dc === dc);
    if (groups.length === 0) return rows;
    const out: Row[] = rows.filter((r) => !groups.some((l) => l.g.ep === r.ep));
    const blank = (l: Local, node: NodeId, kind: 'remote' | 'backup'): Row =>
      replicaRow(l.g, node, kind, kind === 'backup' ? ['REMOTE', 'BACKUP'] : ['REMOTE']);
    for (const l of groups) {
      const replicas = groupInfo(l.g);
      const mine = rows.find((r) => r.ep === l.g.ep && r.kind !== 'backup');
      const backup = rows.find((r) => r.ep === l.g.ep && r.kind === 'backup');
      // The kernel's own row when it knows the primary; else (a backup's node knows only its backup entry).
      const primary = mine ?? blank(l, l.g.primary, 'remote');
      out.push({ ...primary, role: 'primary', replicas });
      for (const b of l.g.backups) {
        const row =
          b === this.o.nodeId && backup !== undefined ? { ...backup, node: b } : blank(l, b, 'backup');
        out.push({ ...row, role: 'backup', replicas });
      }
    }
    return out.sort(
      (x, y) => x.ep - y.ep || Number(x.role === 'backup') - Number(y.role === 'backup') || x.node - y.node,
    );
  }

  /** The group named by params `{dc, ep}` (ENOENT if not recorded here). */
  private need(p: unknown): Local {
    return needGroup(this.groups, p, 'repl');
  }

  private dcPeers(dc: DcId): NodeId[] {
    return dcPeers(this.o, dc);
  }
}

/** A group's public part (ep.list rows, proc.run's result). */
function groupInfo(g: ReplicaGroup): ReplicaGroupInfo {
  return { mode: g.mode, primary: g.primary, backups: [...g.backups], epoch: g.epoch };
}

function groupParam(v: unknown): ReplicaGroup {
  let pb: Pick<ReplicaGroup, 'primary' | 'backups' | 'epoch'> | undefined;
  const base = groupBaseParam(v, 'replica group', (g) => {
    if (typeof g.primary !== 'number' || !isNodeList(g.backups) || typeof g.epoch !== 'number') return false;
    if (g.mode !== 'primary-backup') return false;
    pb = { primary: g.primary, backups: g.backups, epoch: g.epoch };
    return true;
  });
  return { ...base, mode: 'primary-backup', ...pb! };
}

/** `repl.apply` between daemons: one update of the primary, or (`reset`) a new primary's whole state. */
interface ApplyMsg {
  dc?: unknown;
  ep?: unknown;
  epoch?: unknown;
  seq?: unknown;
  state?: unknown;
  client?: unknown;
  entry?: unknown;
  /** A new primary's sync: `state` and `cache` replace the backup's. */
  reset?: unknown;
  /** With `reset`: the whole reply cache, [client endpoint, SDK entry bytes]. */
  cache?: unknown;
}

/** The well-formed [client, entry] pairs of a sync's reply cache. */
function cacheEntries(v: unknown): [Endpoint, Uint8Array][] {
  if (!Array.isArray(v)) return [];
  return v.filter(
    (x): x is [Endpoint, Uint8Array] =>
      Array.isArray(x) && typeof x[0] === 'number' && x[1] instanceof Uint8Array,
  );
}

/** A fenced change refused: the store's record says this node no longer has the role it acted in. */
function deposedError(dc: DcId, ep: Endpoint, cur: ReplRecord | undefined): DvsError {
  return dvsError(
    'ESTALE',
    cur === undefined
      ? `endpoint ${ep} of DC ${dc} is no longer replicated (no record in the cluster store)`
      : `the cluster store has the group of endpoint ${ep} of DC ${dc} at epoch ${cur.epoch} with primary ${cur.primary ?? 'none'} and backups [${cur.members.join(',')}]`,
    { dc, ep },
  );
}
