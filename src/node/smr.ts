/**
 * State-machine replication of an endpoint, the daemon side (DESIGN.md §7, docs/replication.md "State-machine
 * replication"). The replicas themselves order and apply the requests (src/sdk/smr.ts, over a process group
 * of the GCS); the daemons start them, keep every node's kernel routing to a live replica, and replace a
 * replica that died. Driven by {@link Replication} (src/node/replication.ts) for `--mode state-machine`.
 *
 * ```
 *   X (dvs run --replicas N --mode state-machine)     every DC node               each replica node R
 *   smr.setup {group} ──────────────────────────────▶ record, kernel.setReplicated
 *   smr.spawn {dc, ep, boot} ───────────────────────────────────────────────────▶ spawn CMD (DVS_REPLICA_ROLE=
 *                                                                                 replica), wait for its
 *                                                                                 `replica` bind
 *   replica process on R exits:  R ── smr.lost {node: R} ──▶ every DC node re-points its kernel (learnRemote
 *                                                            of the lowest live replica) if it routed to R;
 *                                R respawns CMD (boot false: it gets a state transfer from the group)
 *   node R down (links):         every node drops R, re-points; the lowest live replica's node picks a
 *                                spare DC node S (up, no replica): smr.update {group + S} ▶ all, smr.spawn ▶ S
 *
 *   with a cluster store (/dvs/repl/<dc>/<ep>, src/node/repl-record.ts): the store's record is the replica set
 *   X: create {members, epoch} ─▶ store, then smr.setup / smr.spawn as above
 *   node R down: every node re-points and polls the record (every 500 ms until it reads it unchanged)
 *     lowest live replica L, if it sees more than N/2 replicas live:
 *       CAS {members - R, epoch + 1} ─▶ store ─ok─▶ smr.update ▶ all
 *       CAS {members + S, epoch + 1} ─▶ store ─ok─▶ smr.update ▶ all, smr.spawn ▶ S
 *     store unreachable (minority side): nothing changes, retried every 500 ms
 *   a node reading a newer record (poll, failed CAS) or getting a newer smr.update adopts it; if its node is
 *   no longer a member it kills its replica (the others replaced it) and re-points to a member
 *   group end (run failed): the record is deleted
 * ```
 * The kernels hold callers whose replica is lost (KernelReplicationApi) until they learn another one, then
 * replay their calls there; request ids (sendrecOnce) make the replay harmless (src/sdk/smr.ts).
 *
 * Process services: `smr.hooks {sub}` (a replica attaches: is it a group's first replica?), `smr.answer`
 * (its answer to a status query); `smr.status {dc?, ep}` (the CLI, a test or a process: the local replica's
 * {@link SmrStatus}, asked through the hooks subscription).
 */
import type { Logger } from 'pino';
import type { DcId, Endpoint, EndpointInfo, NodeId } from '../kernel/types.js';
import type { ProcessInfo, ReplicaGroupInfo } from '../protocol/admin.js';
import { dvsError } from '../protocol/errors.js';
import type { SmrStatus } from '../sdk/smr.js';
import { sleep } from '../services/scope.js';
import type { AdminContext } from './local-server.js';
import type { NodeRpcHandler } from './node-rpc.js';
import {
  dcPeers,
  type GroupBase,
  groupBaseParam,
  groupKey,
  isNodeList,
  needGroup,
  replicaRow,
} from './repl-common.js';
import { type ReplRecords, replRecordsOf } from './repl-record.js';
import type { ReplicationOptions } from './replication.js';
import { callerDc, type ServiceRegistry } from './services.js';

/** A state-machine replicated endpoint as every node of its DC records it. */
export interface SmrGroup extends GroupBase {
  /** Nodes with a replica, ascending. */
  replicas: NodeId[];
  /**
   * The group's fixed size N (`--replicas`): a replica serves only in a view of more than N/2 replicas
   * (src/sdk/smr.ts). Records of older daemons lack it: their replica count at the time.
   */
  size: number;
  /** Bumped at every membership change (the highest wins); with a store, the record's epoch. */
  epoch: number;
}

interface Local {
  g: SmrGroup;
  /** The next replica started here is the group's first (starts empty) rather than a replacement. */
  boot: boolean;
  hooked: { ctx: AdminContext; sub: number } | undefined;
  /** Restarts of the local replica (ms timestamps), for the crash-loop limit. */
  restarts: number[];
  replacing: boolean;
  /** With a store: the record poll / membership change loop is running ({@link Smr.reconcile}). */
  reconciling: boolean;
  /** With a store: this node gave its replica up (crash loop): the loop removes it from the record. */
  gaveUp: boolean;
}

const key = groupKey;
/** At most this many restarts of one replica within {@link RESTART_WINDOW_MS}: then it is given up. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
const RESTART_DELAY_MS = 100;
/** With a store: how often a wanted membership change (or a check of the record) is retried, ms. */
const RECONCILE_RETRY_MS = 500;

/**
 * What the record's replica set should become, decided by the node of the lowest live replica (pure):
 * `drop` the replicas whose node is down (only this node's, if it gave its replica up); else `add` a spare while the group
 * is below its size; else nothing. Undefined also when this node may not decide: it is not the lowest live
 * replica, or it sees no more than half of the group's size live (a minority side changes nothing: the
 * majority side, if any, does; and it could not serve anyway).
 */
export function smrChange(o: {
  me: NodeId;
  members: NodeId[];
  size: number;
  up: (n: NodeId) => boolean;
  gaveUp: boolean;
  /** DC nodes that may take a replica (up, not members), ascending. */
  spares: NodeId[];
}): { drop: NodeId[] } | { add: NodeId } | undefined {
  const live = o.members.filter((r) => (r === o.me ? !o.gaveUp : o.up(r)));
  const dead = o.members.filter((r) => !live.includes(r));
  // Only itself: others it cannot reach may be the majority side, serving.
  if (o.gaveUp && o.members.includes(o.me)) return { drop: [o.me] };
  if (live[0] !== o.me || live.length * 2 <= o.size) return undefined;
  if (dead.length > 0) return { drop: dead };
  if (o.members.length < o.size && o.spares[0] !== undefined) return { add: o.spares[0] };
  return undefined;
}

/** The daemon's state-machine replication (one per daemon, inside {@link Replication}). */
export class Smr {
  private readonly groups = new Map<string, Local>();
  private readonly log: Logger;
  private readonly queries = new Map<number, (s: SmrStatus) => void>();
  private nextQuery = 1;
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Aborted at stop: ends the store loops and their calls. */
  private readonly life = new AbortController();

  constructor(private readonly o: ReplicationOptions) {
    this.log = o.logger.child({ component: 'smr' });
  }

  /** Is `ep` of `dc` a state-machine group here? */
  has(dc: DcId, ep: Endpoint): boolean {
    return this.groups.has(key(dc, ep));
  }

  registerServices(services: ServiceRegistry): void {
    services.registerAll('smr', {
      hooks: (p, ctx) => this.hooks(p, ctx),
      answer: (p, ctx) => this.answer(p, ctx),
      status: (p, ctx) => this.status(p, ctx),
    });
  }

  nodeMethods(): Record<string, NodeRpcHandler> {
    return {
      'smr.setup': async (_m, p) => this.setup(p),
      'smr.spawn': (_m, p, _from, signal) => this.spawnHere(p, signal),
      'smr.update': async (_m, p) => this.setup(p),
      'smr.lost': async (_m, p) => this.lost(p),
      'smr.drop': async (_m, p) => this.drop(p),
    };
  }

  stop(): void {
    this.stopped = true;
    this.life.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  // ─────────────────────────── dvs run --mode state-machine ───────────────────────────

  /** `proc.run` with `replicas` and mode state-machine: a replica here and on the next live DC nodes. */
  async run(
    p: Record<string, unknown>,
    signal: AbortSignal,
    taken: (dc: DcId, ep: Endpoint) => boolean,
  ): Promise<ProcessInfo & { replicas: ReplicaGroupInfo }> {
    const k = this.o.kernel;
    const me = this.o.nodeId;
    const n = p.replicas;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65536) {
      throw dvsError('EINVAL', `replicas must be a positive integer (got ${JSON.stringify(n)})`);
    }
    const ref = p.dc;
    const cfg = typeof ref === 'number' || typeof ref === 'string' ? k.findDc(ref) : undefined;
    if (cfg === undefined) throw dvsError('ENOENT', `no DC '${String(ref)}' on node ${me}`);
    const ep = p.ep as number;
    if (n > cfg.nodes.length) {
      throw dvsError(
        'EINVAL',
        `--replicas ${n} is more than the ${cfg.nodes.length} node(s) of DC '${cfg.name}' (nodes ${cfg.nodes.join(',')}): one replica per node`,
        { dc: cfg.id, nodes: cfg.nodes },
      );
    }
    const others = cfg.nodes.filter((x) => x !== me && this.o.linkUp(x)).sort((a, b) => a - b);
    if (others.length < n - 1) {
      throw dvsError(
        'EUNAVAIL',
        `--replicas ${n} needs ${n - 1} other live node(s) of DC '${cfg.name}'; reachable now: ${others.join(',') || 'none'}`,
      );
    }
    if (k.endpoints(cfg.id).some((e) => e.ep === ep) || taken(cfg.id, ep)) {
      throw dvsError('EBOUND', `endpoint ${ep} of DC '${cfg.name}' is already bound`, { dc: cfg.id, ep });
    }
    if (!Array.isArray(p.cmd) || !p.cmd.every((a) => typeof a === 'string') || p.cmd.length === 0) {
      throw dvsError('EINVAL', 'cmd must be a non-empty list of strings');
    }
    const env: Record<string, string> = {};
    if (typeof p.env === 'object' && p.env !== null) {
      for (const [name, v] of Object.entries(p.env)) if (!name.startsWith('DVS_')) env[name] = String(v);
    }
    const replicas = [me, ...others.slice(0, n - 1)].sort((a, b) => a - b);
    const records = this.records();
    // With a store, the record is the replica set: written first (a store we cannot reach starts nothing).
    const rec = await records?.create(cfg.id, ep, { mode: 'state-machine', members: replicas }, signal);
    const g: SmrGroup = {
      dc: cfg.id,
      ep,
      dcName: cfg.name,
      name: typeof p.name === 'string' ? p.name : `ep${ep}`,
      cmd: p.cmd as string[],
      env,
      ...(typeof p.cwd === 'string' ? { cwd: p.cwd } : {}),
      replicas,
      size: n,
      epoch: rec?.epoch ?? 1,
    };
    const peers = others;
    const undo = async () => {
      await Promise.allSettled(
        peers.map((x) => this.o.nodeRpc.call(x, 'smr.drop', { dc: g.dc, ep }, { timeout: 5000 })),
      );
      this.drop({ dc: g.dc, ep });
      await records?.remove(g.dc, ep).catch((e: unknown) => {
        this.log.warn({ dc: g.dc, ep, err: e }, 'the group record could not be deleted');
      });
    };
    try {
      this.setup({ group: g });
      await Promise.all(
        peers.map((x) => this.o.nodeRpc.call(x, 'smr.setup', { group: g }, { signal, timeout: 5000 })),
      );
      const timeout = (this.o.startTimeoutMs ?? 10_000) + 2000;
      const started = await Promise.all(
        g.replicas.map((r) =>
          r === me
            ? this.spawnHere({ dc: g.dc, ep, boot: true }, signal)
            : this.o.nodeRpc.call(r, 'smr.spawn', { dc: g.dc, ep, boot: true }, { signal, timeout }),
        ),
      );
      const info = started[g.replicas.indexOf(me)] as { info: ProcessInfo };
      this.o.events.emit('repl.started', `${g.dcName}/${ep}`, { ...groupInfo(g) });
      this.log.info({ dc: g.dc, ep, replicas: g.replicas }, 'state-machine replicated endpoint started');
      return { ...info.info, replicas: groupInfo(g) };
    } catch (e) {
      await undo();
      throw e;
    }
  }

  /** Record a group (or a newer version of it) and tell the kernel. */
  private setup(p: unknown): { ok: true } {
    const g = groupParam((p as { group?: unknown } | null)?.group);
    const have = this.groups.get(key(g.dc, g.ep));
    if (have !== undefined) {
      if (g.epoch > have.g.epoch) this.adopt(have, g.replicas, g.epoch, false);
      return { ok: true };
    }
    this.o.kernel.setReplicated(Date.now(), g.dc, g.ep, true);
    this.groups.set(key(g.dc, g.ep), {
      g,
      boot: false,
      hooked: undefined,
      restarts: [],
      replacing: false,
      reconciling: false,
      gaveUp: false,
    });
    return { ok: true };
  }

  /**
   * A newer replica set (from `smr.update` or, with a store, read from the record): recorded; with a store,
   * a node no longer in it kills its replica (the others went on without it, maybe replaced it) and every
   * node whose kernel routes to a non-member re-points. `tell`: pass it on to the DC (learnt from the store).
   */
  private adopt(l: Local, replicas: NodeId[], epoch: number, tell: boolean): void {
    const me = this.o.nodeId;
    const was = l.g.replicas;
    l.g = { ...l.g, replicas: [...new Set(replicas)].sort((a, b) => a - b), epoch };
    if (tell) this.broadcast(l);
    if (this.records() === undefined) return;
    if (was.includes(me) && !l.g.replicas.includes(me)) {
      this.log.warn(
        { dc: l.g.dc, ep: l.g.ep, replicas: l.g.replicas, epoch, via: tell ? 'store' : 'smr.update' },
        'this node no longer holds a replica (the store record moved on): killing the local one',
      );
      this.o.events.emit('repl.ended', `${l.g.dcName}/${l.g.ep}`, { dc: l.g.dc, ep: l.g.ep, node: me });
      void this.o.processes.kill(l.g.dc, l.g.ep, 'SIGKILL', 0).catch(() => undefined);
    }
    this.routeToMember(l);
    // Below its size, and maybe this node's turn to place a spare.
    if (l.g.replicas.length < l.g.size) this.reconcile(l);
  }

  /** Start a replica of a group here and wait until it is bound as a `replica`. */
  private async spawnHere(p: unknown, signal: AbortSignal): Promise<{ info: ProcessInfo }> {
    const l = this.need(p);
    const g = l.g;
    const me = this.o.nodeId;
    if (!g.replicas.includes(me)) throw dvsError('EINVAL', `node ${me} holds no replica of ${g.ep}`);
    l.boot = (p as { boot?: unknown }).boot === true;
    const info = await this.o.processes.spawn({
      dc: g.dc,
      dcName: g.dcName,
      ep: g.ep,
      name: g.name,
      cmd: g.cmd,
      env: { ...g.env, ...this.o.processEnv(g.dc, g.dcName, g.ep), DVS_REPLICA_ROLE: 'replica' },
      ...(g.cwd !== undefined ? { cwd: g.cwd } : {}),
    });
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 10_000);
    for (;;) {
      const row = this.o.kernel
        .endpoints(g.dc)
        .find((e) => e.ep === g.ep && e.kind === 'replica' && e.node === me);
      if (row !== undefined && (row.pid === info.pid || row.pid === info.containerPid)) break;
      const now = this.o.processes.get(g.dc, g.ep);
      if (now?.exit) {
        throw dvsError('ESRCDIED', `the replica on node ${me} exited at start (${JSON.stringify(now.exit)})`);
      }
      if (Date.now() > deadline || signal.aborted) {
        await this.o.processes.kill(g.dc, g.ep, 'SIGKILL', 0).catch(() => undefined);
        throw dvsError('ETIMEDOUT', `the replica on node ${me} did not bind as a replica in time`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return { info };
  }

  // ─────────────────────────── failures ───────────────────────────

  /**
   * A node link came back (after a partition): a group this node routes nowhere, or to a node the record
   * retired, is re-pointed now that a member may be reachable again (a re-point finds none while links are down).
   */
  nodeUp(_node: NodeId): void {
    for (const l of this.groups.values()) this.routeToMember(l);
  }

  /** If this node's kernel routes `l`'s endpoint to no replica, or to a node that holds none, re-point it. */
  private routeToMember(l: Local): void {
    const me = this.o.nodeId;
    if (this.o.kernel.findDc(l.g.dc) === undefined) return;
    const row = this.o.kernel.endpoints(l.g.dc).find((e) => e.ep === l.g.ep);
    if (row === undefined) this.repoint(l, -1);
    else if (row.node !== me && !l.g.replicas.includes(row.node)) this.repoint(l, row.node);
  }

  /** A process started here exited: peers re-point, and the replica is replaced here. */
  onProcessExit(info: ProcessInfo): void {
    const l = this.groups.get(key(info.dc, info.ep));
    const me = this.o.nodeId;
    if (l === undefined) return;
    if (!l.g.replicas.includes(me)) {
      // A replica retired here (the record dropped this node): local callers go to a member.
      this.repoint(l, me);
      return;
    }
    const g = l.g;
    this.log.warn({ dc: g.dc, ep: g.ep, pid: info.pid, exit: info.exit }, 'replica exited: replacing it');
    for (const x of this.dcPeers(g.dc)) {
      this.o.nodeRpc
        .call(x, 'smr.lost', { dc: g.dc, ep: g.ep, node: me }, { timeout: 5000 })
        .catch((e: unknown) => this.log.debug({ peer: x, err: e }, 'smr.lost not delivered'));
    }
    this.repoint(l, me);
    const now = Date.now();
    l.restarts = l.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    if (this.stopped) return;
    if (l.restarts.length >= MAX_RESTARTS) {
      this.log.error({ dc: g.dc, ep: g.ep }, 'replica keeps crashing: not replaced here any more');
      this.o.events.emit('repl.ended', `${g.dcName}/${g.ep}`, { dc: g.dc, ep: g.ep, node: me });
      if (this.records() !== undefined) {
        l.gaveUp = true;
        this.reconcile(l);
        return;
      }
      this.changeMembers(
        l,
        g.replicas.filter((r) => r !== me),
      );
      return;
    }
    l.restarts.push(now);
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.stopped || this.groups.get(key(g.dc, g.ep)) !== l) return;
      void this.spawnHere({ dc: g.dc, ep: g.ep, boot: false }, AbortSignal.timeout(30_000)).then(
        ({ info: started }) => {
          this.log.info({ dc: g.dc, ep: g.ep, pid: started.pid }, 'replica replaced');
          this.o.events.emit('repl.replaced', `${g.dcName}/${g.ep}`, { dc: g.dc, ep: g.ep, node: me });
        },
        (e: unknown) => this.log.error({ dc: g.dc, ep: g.ep, err: e }, 'replica replacement failed'),
      );
    }, RESTART_DELAY_MS);
    this.timers.add(t);
  }

  /** The link to `node` is down: its replicas are gone; the lowest live replica's node places new ones. */
  nodeDown(node: NodeId): void {
    const fenced = this.records() !== undefined;
    for (const l of [...this.groups.values()]) {
      if (!l.g.replicas.includes(node)) continue;
      if (fenced) {
        // The record says who holds a replica: only a CAS of it changes the set (reconcile).
        this.repoint(l, node);
        this.o.events.emit('repl.lost', `${l.g.dcName}/${l.g.ep}`, { dc: l.g.dc, ep: l.g.ep, node });
        this.reconcile(l);
        continue;
      }
      l.g = { ...l.g, replicas: l.g.replicas.filter((r) => r !== node), epoch: l.g.epoch + 1 };
      this.repoint(l, node);
      this.o.events.emit('repl.lost', `${l.g.dcName}/${l.g.ep}`, { dc: l.g.dc, ep: l.g.ep, node });
      void this.replace(l);
    }
  }

  /** `smr.lost` from the node whose replica process exited (it replaces it itself). */
  private lost(p: unknown): { ok: true } {
    const l = this.need(p);
    const node = (p as { node?: unknown }).node;
    if (typeof node !== 'number') throw dvsError('EINVAL', 'smr.lost: node');
    this.repoint(l, node);
    return { ok: true };
  }

  /**
   * If this node's kernel routes `ep` to `lost` (or nowhere), point it at the lowest other live replica: the
   * kernel then replays the calls it held (or had in flight there).
   */
  private repoint(l: Local, lost: NodeId): void {
    const g = l.g;
    const me = this.o.nodeId;
    if (this.o.kernel.findDc(g.dc) === undefined) return;
    const row = this.o.kernel.endpoints(g.dc).find((e) => e.ep === g.ep);
    if (row !== undefined && row.node !== lost && (row.kind === 'replica' || this.o.linkUp(row.node))) return;
    const to = g.replicas.filter((r) => r !== lost && r !== me && this.o.linkUp(r)).sort((a, b) => a - b)[0];
    if (to === undefined) return; // our own replacement (or none) will bind here
    this.log.info({ dc: g.dc, ep: g.ep, from: lost, to }, 're-pointing the endpoint to another replica');
    this.o.kernel.learnRemote(Date.now(), g.dc, g.ep, to, { kind: 'replica', name: g.name, pid: -1 });
  }

  /** Lowest live replica's node: place a replica on a spare DC node (up, without one) for each one lost. */
  private async replace(l: Local): Promise<void> {
    const me = this.o.nodeId;
    const live = l.g.replicas.filter((r) => r === me || this.o.linkUp(r));
    if (live[0] !== me || l.replacing || this.stopped) return;
    const cfg = this.o.kernel.findDc(l.g.dc);
    const spare = (cfg?.nodes ?? [])
      .filter((x) => x !== me && this.o.linkUp(x) && !l.g.replicas.includes(x))
      .sort((a, b) => a - b)[0];
    if (spare === undefined) {
      this.log.warn({ dc: l.g.dc, ep: l.g.ep, replicas: l.g.replicas }, 'no spare node: running with fewer');
      return;
    }
    l.replacing = true;
    try {
      this.changeMembers(l, [...l.g.replicas, spare]);
      await this.o.nodeRpc.call(
        spare,
        'smr.spawn',
        { dc: l.g.dc, ep: l.g.ep, boot: false },
        { timeout: (this.o.startTimeoutMs ?? 10_000) + 2000 },
      );
      this.log.info({ dc: l.g.dc, ep: l.g.ep, node: spare }, 'replica placed on a spare node');
      this.o.events.emit('repl.replaced', `${l.g.dcName}/${l.g.ep}`, { dc: l.g.dc, ep: l.g.ep, node: spare });
    } catch (e) {
      this.log.error({ dc: l.g.dc, ep: l.g.ep, node: spare, err: e }, 'placing a replica failed');
      this.changeMembers(
        l,
        l.g.replicas.filter((r) => r !== spare),
      );
    } finally {
      l.replacing = false;
    }
  }

  /** A new replica set: recorded here and sent to every DC node (epoch + 1). */
  private changeMembers(l: Local, replicas: NodeId[]): void {
    l.g = { ...l.g, replicas: [...new Set(replicas)].sort((a, b) => a - b), epoch: l.g.epoch + 1 };
    this.broadcast(l);
  }

  /** `smr.update` of this node's copy of the group to every reachable DC node. */
  private broadcast(l: Local): void {
    const msg = { group: l.g };
    for (const x of this.dcPeers(l.g.dc)) {
      this.o.nodeRpc
        .call(x, 'smr.update', msg, { timeout: 5000 })
        .catch((e: unknown) => this.log.debug({ peer: x, err: e }, 'smr.update not delivered'));
    }
  }

  // ─────────────────────────── the store fence ───────────────────────────

  /** The store's record keeper, when the node runs with a cluster store. */
  private records(): ReplRecords | undefined {
    return replRecordsOf(this.o.cluster);
  }

  /**
   * With a store: read the group's record until it agrees with this node's copy and nothing is to change,
   * every {@link RECONCILE_RETRY_MS}. A newer record is adopted (maybe retiring the local replica); a change
   * ({@link smrChange}) is a CAS of the record first, then `smr.update` (and `smr.spawn` of a spare). A side
   * that cannot reach the store keeps its members and retries: it never places a spare. Ends at stop.
   */
  private reconcile(l: Local): void {
    if (l.reconciling || this.stopped) return;
    l.reconciling = true;
    void (async () => {
      const k = key(l.g.dc, l.g.ep);
      for (let attempt = 0; !this.stopped && this.groups.get(k) === l; attempt++) {
        try {
          if (await this.reconcileOnce(l)) return;
          continue; // changed (or adopted): look again at once
        } catch (e) {
          if (attempt % 20 === 0) {
            this.log.warn({ dc: l.g.dc, ep: l.g.ep, err: e, attempt }, 'replica group record: retrying');
          }
        }
        await sleep(RECONCILE_RETRY_MS, this.life.signal);
      }
    })().finally(() => {
      l.reconciling = false;
    });
  }

  /** One round of {@link reconcile}: true when the record and this node agree and nothing is to change. */
  private async reconcileOnce(l: Local): Promise<boolean> {
    const records = this.records();
    if (records === undefined) return true;
    const { dc, ep } = l.g;
    const signal = this.life.signal;
    const at = await records.get(dc, ep, signal);
    if (this.groups.get(key(dc, ep)) !== l) return true;
    if (at === undefined) {
      this.log.warn({ dc, ep }, 'the replica group has no record any more: dropping it here');
      this.drop({ dc, ep });
      return true;
    }
    if (at.rec.epoch !== l.g.epoch) {
      if (at.rec.epoch < l.g.epoch) return true; // a record older than ours: written by nobody we know
      this.adopt(l, at.rec.members, at.rec.epoch, true);
      return false;
    }
    const me = this.o.nodeId;
    this.ensureRoute(l);
    const cfg = this.o.kernel.findDc(dc);
    const change = smrChange({
      me,
      members: l.g.replicas,
      size: l.g.size,
      up: (n) => this.o.linkUp(n),
      gaveUp: l.gaveUp,
      spares: (cfg?.nodes ?? [])
        .filter((x) => x !== me && this.o.linkUp(x) && !l.g.replicas.includes(x))
        .sort((a, b) => a - b),
    });
    if (change === undefined) {
      if (l.g.replicas.some((r) => r !== me && !this.o.linkUp(r))) {
        throw dvsError('EUNAVAIL', 'replicas unreachable: waiting (for them, or for the record to move on)');
      }
      if (l.g.replicas.length < l.g.size && l.g.replicas[0] === me) {
        this.log.warn({ dc, ep, replicas: l.g.replicas }, 'no spare node: running with fewer');
      }
      return true;
    }
    const next =
      'drop' in change
        ? l.g.replicas.filter((r) => !change.drop.includes(r))
        : [...l.g.replicas, change.add].sort((a, b) => a - b);
    const epoch = l.g.epoch;
    if (next.length === 0) {
      await records.remove(dc, ep, signal);
      this.drop({ dc, ep });
      return true;
    }
    const rec = await records.update(
      dc,
      ep,
      (cur) => {
        if (cur === undefined || cur.epoch !== epoch) throw dvsError('ESTALE', 'the record moved on');
        return { mode: 'state-machine', members: next, epoch: epoch + 1 };
      },
      signal,
    );
    this.log.info({ dc, ep, replicas: rec.members, epoch: rec.epoch }, 'replica set changed in the store');
    this.adopt(l, rec.members, rec.epoch, true);
    if ('add' in change) await this.placeSpare(l, change.add);
    return false;
  }

  /**
   * Without a local replica, route the endpoint to a reachable member: a re-point that found none reachable
   * (a retired replica's node before its links came back) is made here, on a later round.
   */
  private ensureRoute(l: Local): void {
    const { dc, ep } = l.g;
    if (this.o.kernel.findDc(dc) === undefined) return;
    const row = this.o.kernel.endpoints(dc).find((e) => e.ep === ep);
    if (row !== undefined && row.node === this.o.nodeId && row.kind === 'replica') return;
    if (row !== undefined && l.g.replicas.includes(row.node) && this.o.linkUp(row.node)) return;
    this.repoint(l, row?.node ?? this.o.nodeId);
  }

  /** Start a replica on `spare` (already a member in the record); a failed start gives the place up again. */
  private async placeSpare(l: Local, spare: NodeId): Promise<void> {
    const { dc, ep } = l.g;
    try {
      await this.o.nodeRpc.call(
        spare,
        'smr.spawn',
        { dc, ep, boot: false },
        { timeout: (this.o.startTimeoutMs ?? 10_000) + 2000, signal: this.life.signal },
      );
      this.log.info({ dc, ep, node: spare }, 'replica placed on a spare node');
      this.o.events.emit('repl.replaced', `${l.g.dcName}/${ep}`, { dc, ep, node: spare });
    } catch (e) {
      this.log.error({ dc, ep, node: spare, err: e }, 'placing a replica failed');
      const records = this.records();
      if (records === undefined || this.stopped) return;
      const epoch = l.g.epoch;
      const rec = await records
        .update(
          dc,
          ep,
          (cur) => {
            if (cur === undefined || cur.epoch !== epoch) throw dvsError('ESTALE', 'the record moved on');
            return {
              mode: 'state-machine',
              members: cur.members.filter((r) => r !== spare),
              epoch: epoch + 1,
            };
          },
          this.life.signal,
        )
        .catch(() => undefined);
      // Not removed (the store went away, or the record moved on): the next round reads what it says.
      if (rec !== undefined) this.adopt(l, rec.members, rec.epoch, true);
      await sleep(RECONCILE_RETRY_MS, this.life.signal);
    }
  }

  /**
   * The group ends (`dvs kill --replicas`): forgotten here without killing the local replica, which the
   * caller signals as asked. False if no such group here.
   */
  end(dc: DcId, ep: Endpoint): boolean {
    return this.drop({ dc, ep }, false).ok;
  }

  /** Forget a group here; callers still held for it fail (EDSTDIED); the local replica is killed. */
  private drop(p: unknown, kill = true): { ok: boolean } {
    const o = (p ?? {}) as { dc?: unknown; ep?: unknown };
    if (typeof o.dc !== 'number' || typeof o.ep !== 'number') throw dvsError('EINVAL', 'smr: dc, ep');
    const l = this.groups.get(key(o.dc, o.ep));
    if (l === undefined) return { ok: false };
    this.groups.delete(key(o.dc, o.ep));
    if (this.o.kernel.findDc(o.dc) !== undefined) this.o.kernel.setReplicated(Date.now(), o.dc, o.ep, false);
    if (kill && l.g.replicas.includes(this.o.nodeId)) {
      void this.o.processes.kill(o.dc, o.ep, 'SIGKILL', 0).catch(() => undefined);
    }
    return { ok: true };
  }

  // ─────────────────────────── process services ───────────────────────────

  private hooks(
    p: Record<string, unknown>,
    ctx: AdminContext,
  ): ReplicaGroupInfo & { boot: boolean; size: number } {
    const c = ctx.caller;
    if (c === undefined) throw dvsError('EINVAL', 'smr.hooks is for processes');
    if (typeof p.sub !== 'number') throw dvsError('EINVAL', 'smr.hooks: sub');
    const l = this.groups.get(key(c.dc, c.ep));
    if (l === undefined) {
      throw dvsError('ENOENT', `endpoint ${c.ep} of DC ${c.dc} is not replicated as a state machine`);
    }
    const h = { ctx, sub: p.sub };
    l.hooked = h;
    ctx.onClose(() => {
      if (l.hooked === h) l.hooked = undefined;
    });
    const boot = l.boot;
    l.boot = false;
    return { ...groupInfo(l.g), boot, size: l.g.size };
  }

  private answer(p: Record<string, unknown>, ctx: AdminContext): null {
    if (ctx.caller === undefined || typeof p.id !== 'number') throw dvsError('EINVAL', 'smr.answer: id');
    const done = this.queries.get(p.id);
    if (done !== undefined && typeof p.status === 'object' && p.status !== null) {
      this.queries.delete(p.id);
      done(p.status as SmrStatus);
    }
    return null;
  }

  /** `smr.status {dc, ep}`: ask the local replica of `ep` for its progress (ENOENT: none here). */
  private async status(p: Record<string, unknown>, ctx: AdminContext): Promise<SmrStatus> {
    const dc = callerDc(p, ctx, (r) => {
      const cfg = this.o.kernel.findDc(r);
      if (cfg === undefined) throw dvsError('ENOENT', `no DC '${String(r)}' on node ${this.o.nodeId}`);
      return cfg.id;
    });
    if (typeof p.ep !== 'number') throw dvsError('EINVAL', 'smr.status: ep');
    const l = this.groups.get(key(dc, p.ep));
    if (l === undefined) throw dvsError('ENOENT', `endpoint ${p.ep} is not replicated as a state machine`);
    const h = l.hooked;
    if (h === undefined) throw dvsError('ENOENT', `no replica of ${p.ep} attached on node ${this.o.nodeId}`);
    const id = this.nextQuery++;
    return new Promise<SmrStatus>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.queries.delete(id);
        reject(dvsError('ETIMEDOUT', `the replica of ${p.ep} did not answer`));
      }, 5000);
      this.queries.set(id, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
      if (!h.ctx.push(h.sub, { op: 'query', id })) {
        clearTimeout(timer);
        this.queries.delete(id);
        reject(dvsError('ENOENT', `the replica of ${p.ep} is gone`));
      }
    });
  }

  // ─────────────────────────── introspection ───────────────────────────

  /** `ep.list` rows: one `replica` row per replica node (the local one is the kernel's own row). */
  decorate<R extends EndpointInfo & { role?: string; replicas?: ReplicaGroupInfo }>(
    dc: DcId,
    rows: R[],
  ): (R | (EndpointInfo & { role: 'replica'; replicas: ReplicaGroupInfo }))[] {
    const groups = [...this.groups.values()].filter((l) => l.g.dc === dc);
    if (groups.length === 0) return rows;
    type Row = R | (EndpointInfo & { role: 'replica'; replicas: ReplicaGroupInfo });
    const out: Row[] = rows.filter((r) => !groups.some((l) => l.g.ep === r.ep));
    for (const l of groups) {
      const replicas = groupInfo(l.g);
      const mine = rows.find((r) => r.ep === l.g.ep && r.kind === 'replica' && r.node === this.o.nodeId);
      for (const n of l.g.replicas) {
        const row: EndpointInfo =
          n === this.o.nodeId && mine !== undefined ? mine : replicaRow(l.g, n, 'replica', ['REMOTE']);
        out.push({ ...row, role: 'replica', replicas });
      }
    }
    return out.sort((x, y) => x.ep - y.ep || x.node - y.node);
  }

  private need(p: unknown): Local {
    return needGroup(this.groups, p, 'smr');
  }

  private dcPeers(dc: DcId): NodeId[] {
    return dcPeers(this.o, dc);
  }
}

/** A group's public part: the lowest replica as `primary` (default route), the others as `backups`. */
function groupInfo(g: SmrGroup): ReplicaGroupInfo {
  return {
    mode: 'state-machine',
    primary: g.replicas[0] ?? -1,
    backups: g.replicas.slice(1),
    epoch: g.epoch,
  };
}

function groupParam(v: unknown): SmrGroup {
  let sm: Pick<SmrGroup, 'replicas' | 'size' | 'epoch'> | undefined;
  const base = groupBaseParam(v, 'state-machine group', (g) => {
    if (!isNodeList(g.replicas) || typeof g.epoch !== 'number') return false;
    const size =
      typeof g.size === 'number' && Number.isInteger(g.size) && g.size > 0 ? g.size : g.replicas.length;
    sm = { replicas: g.replicas, size, epoch: g.epoch };
    return true;
  });
  return { ...base, ...sm! };
}
