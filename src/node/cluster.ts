/**
 * The daemon's side of the cluster store (`--store`): opens the store (hosted here, reached over a node
 * link, or etcd), runs Membership, the DC registry and the endpoint directory on it, and turns their
 * watches into kernel events. The default path (no store) never constructs this.
 *
 * ```
 *  DcRegistry watch ──create/update/remove──▶ kernel.createDc/updateDc/removeDc (DCs that include this node)
 *  Directory watch  ──bind/move/unbind──────▶ kernel.learnRemote/forgetRemote  (entries of other nodes)
 *  kernel onLocalBind/onLocalUnbind ────────▶ directory.bind/unbind            (this node's entries)
 *  links nodeUp/nodeDown ───────────────────▶ membership.linkState (the kernel follows the links alone)
 * ```
 *
 * The store is not on the IPC hot path: the kernels still exchange bind/unbind/sync frames, so the
 * directory is a second source of the same knowledge, and a stale location is corrected by the kernel's
 * EMOVED bounce. A node that loses the store keeps serving IPC between the endpoints it knows and reports
 * itself degraded.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { StoreChannel } from '../cluster/embedded/remote.js';
import { RemoteStore, StoreServer, type StoreSession } from '../cluster/embedded/remote.js';
import { EmbeddedStore } from '../cluster/embedded/store.js';
import {
  type DcChange,
  DcRegistry,
  type DirChange,
  Directory,
  Membership,
  type MembershipHealth,
  type NodeChange,
} from '../cluster/index.js';
import type { ClusterStore } from '../cluster/store.js';
import type { Kernel } from '../kernel/index.js';
import type { BindKind, ControlFrame, DcConfig, DcId, Endpoint, NodeId } from '../kernel/types.js';
import type { ClusterStatus } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import type { StoreSpec } from './store-spec.js';

/** What the wiring needs from the daemon. */
export interface ClusterWiringOptions {
  spec: StoreSpec;
  /** The `--store` text, as status shows it. */
  text: string;
  nodeId: NodeId;
  name: string;
  incarnation: string;
  dataDir: string;
  kernel: Kernel;
  logger: Logger;
  /** Send a frame on the node link to `node`; false if it was dropped (link down). */
  sendFrame: (node: NodeId, frame: ControlFrame) => boolean;
  /** Address of the link to `node` (for error messages), if it is a configured peer. */
  peerAddress: (node: NodeId) => string | undefined;
  /** Whether the link layer currently reports `node` up. */
  linkUp: (node: NodeId) => boolean;
  /** Stop the local processes of a DC this node no longer hosts; resolves with their pids. */
  stopDcProcesses: (dc: DcId, pids: number[]) => Promise<number[]>;
  /** A DC that includes this node was created here from the store (the daemon sets up its container). */
  onDcCreated?: (cfg: DcConfig) => void;
  /** Lease TTL of this node's registration, s. */
  ttlSeconds: number;
  takeoverWaitMs: number;
  /** This node's link address (registered in the store). */
  address: () => string;
  /**
   * Is `ep` of `dc` a replicated endpoint (src/node/replication.ts)? Its directory entry follows the
   * replication record: a conflict never unbinds it here (the replication layer stops a deposed primary).
   */
  replicated?: (dc: DcId, ep: Endpoint) => boolean;
}

/** Timeout of one store call made on behalf of the kernel (bind/unbind), ms. */
const CALL_TIMEOUT_MS = 5000;
/** Store frames kept while the hosted store opens (a peer's requests; it retries after its timeout). */
const MAX_EARLY_FRAMES = 10_000;
/** Retry period of a directory write that failed for a reason other than a conflict, ms. */
const RETRY_MS = 1000;

/** The store, its services and their wiring to the kernel, for one daemon. */
export class ClusterWiring {
  private readonly o: ClusterWiringOptions;
  private readonly log: Logger;
  private store: ClusterStore | undefined;
  private server: StoreServer | undefined;
  /** Host side: store sessions of remote nodes, by `${node}/${channel}`. */
  private readonly sessions = new Map<string, StoreSession>();
  /** Client side: the open channel to the hosting node. */
  private channel: { id: number; onMessage?: (b: Uint8Array) => void; onClose?: (e?: Error) => void } | null =
    null;
  private nextChannel = Math.floor(Math.random() * 0x3fffffff) + 1;
  private linkWaiters: (() => void)[] = [];
  private membership: Membership | undefined;
  private dcs: DcRegistry | undefined;
  private directory: Directory | undefined;
  private health: MembershipHealth = { degraded: false, since: Date.now() };
  private servicesHealthy = { dcs: true, directory: true };
  /** Directory writes per endpoint, chained so a bind and the unbind after it reach the store in order. */
  private readonly writes = new Map<string, Promise<void>>();
  /** Local removals of DCs being applied (admin dc.remove awaits them to report what it stopped). */
  private readonly removals = new Map<DcId, Promise<number[]>>();
  private readonly life = new AbortController();
  private stopped = false;
  /** What the link layer reported per node (replayed into Membership, which starts after the links). */
  private readonly linkStates = new Map<NodeId, 'up' | 'down'>();
  /** Host side: store frames that arrived before the store was open. */
  private early: { node: NodeId; f: ControlFrame }[] = [];

  constructor(o: ClusterWiringOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'cluster' });
  }

  /** The open cluster store, for the DVK services (src/node/svc-store.ts); undefined before start(). */
  get clusterStore(): ClusterStore | undefined {
    return this.store;
  }

  /** The registry (for admin dc.* methods). */
  get registry(): DcRegistry {
    if (!this.dcs) throw dvsError('ENOTCONN', 'cluster store not started');
    return this.dcs;
  }

  /** Open the store and start the services; rejects with a one-line error naming the problem. */
  async start(): Promise<void> {
    const { spec, nodeId, logger } = this.o;
    const store = await this.openStore();
    this.store = store;
    try {
      await store.start();
    } catch (e) {
      throw this.unreachable(e);
    }
    if (spec.kind === 'embedded') {
      this.server = new StoreServer({ store, logger: this.log });
      this.server.start();
      const early = this.early;
      this.early = [];
      for (const { node, f } of early) this.onStoreFrame(node, f);
    }
    const kernel = this.o.kernel;
    this.dcs = new DcRegistry({
      store,
      logger,
      onChange: (ev) => this.onDc(ev),
      onHealth: (ok, why) => this.serviceHealth('dcs', ok, why),
    });
    this.directory = new Directory({
      store,
      nodeId,
      logger,
      onChange: (ev) => this.onDir(ev),
      onHealth: (ok, why) => this.serviceHealth('directory', ok, why),
    });
    this.membership = new Membership({
      store,
      nodeId,
      name: this.o.name,
      address: this.o.address(),
      incarnation: this.o.incarnation,
      ttlSeconds: this.o.ttlSeconds,
      takeoverWaitMs: this.o.takeoverWaitMs,
      logger,
      onChange: (ev) => this.onMember(ev),
      onRegistered: (_lease, again) => {
        if (again) void this.reassert();
      },
      onHealth: (h) => {
        this.health = h;
        if (h.degraded)
          this.log.warn({ reason: h.reason }, `cluster store degraded: ${h.reason ?? 'unknown'}`);
        else this.log.info('cluster store healthy again');
      },
    });
    for (const [node, state] of this.linkStates) this.membership.linkState(node, state);
    const signal = this.life.signal;
    await this.membership.start(signal);
    // Registry before directory: a directory entry is applied only to a DC the kernel has.
    await this.dcs.start(signal);
    await this.directory.start(signal);
    // This node's endpoints bound before the directory was up (none normally: links and processes come
    // later) still get recorded.
    for (const dc of kernel.listDcs()) {
      for (const e of kernel.endpoints(dc.id)) {
        if (e.node === nodeId && e.kind !== 'remote') {
          this.localBind(dc.id, e.ep, { kind: e.kind, name: e.name, pid: e.pid });
        }
      }
    }
    this.log.info({ store: this.o.text }, 'cluster store connected');
  }

  /** Stop the services (revoking this node's lease: the others see it leave at once) and the store. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.life.abort();
    const steps: [string, () => Promise<void> | void][] = [
      ['directory', () => this.directory?.stop()],
      ['dcs', () => this.dcs?.stop()],
      ['membership', () => this.membership?.stop()],
      ['store server', () => this.server?.stop()],
      ['store', () => this.store?.stop()],
    ];
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (e) {
        this.log.error({ err: e, component: what }, 'stop failed');
      }
    }
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
    this.early = [];
    this.dropChannel(new Error('stopped'));
  }

  // ───────────────────────────── link events (from the daemon) ─────────────────────────────

  /** A `store` frame from `node`: a request to our server, or a response/push for our client. */
  onStoreFrame(node: NodeId, f: ControlFrame): void {
    const c = f.c;
    if (typeof c !== 'number') return;
    if (this.o.spec.kind === 'embedded') {
      const key = `${node}/${c}`;
      if (f.end === true) {
        this.sessions.get(key)?.close();
        this.sessions.delete(key);
        return;
      }
      if (!(f.b instanceof Uint8Array)) return;
      if (!this.server) {
        // A peer's link came up before our store opened: keep its requests until the server runs.
        if (this.early.length < MAX_EARLY_FRAMES) this.early.push({ node, f });
        return;
      }
      let s = this.sessions.get(key);
      if (s === undefined) {
        s = this.server.session((b) => {
          this.send(node, { t: 'store', dc: 0, c, b });
        });
        this.sessions.set(key, s);
      }
      const session = s;
      session.handle(f.b).then(
        (res) => {
          if (res && this.sessions.get(key) === session) this.send(node, { t: 'store', dc: 0, c, b: res });
        },
        (e: unknown) => this.log.error({ err: e, node }, 'store session failed'),
      );
      return;
    }
    if (this.o.spec.kind === 'remote' && node === this.o.spec.host && this.channel?.id === c) {
      if (f.b instanceof Uint8Array) this.channel.onMessage?.(f.b);
    }
  }

  linkUp(node: NodeId): void {
    this.linkStates.set(node, 'up');
    this.membership?.linkState(node, 'up');
    if (this.o.spec.kind === 'remote' && node === this.o.spec.host) {
      const ws = this.linkWaiters;
      this.linkWaiters = [];
      for (const w of ws) w();
    }
  }

  linkDown(node: NodeId): void {
    this.linkStates.set(node, 'down');
    this.membership?.linkState(node, 'down');
    if (this.o.spec.kind === 'embedded') {
      this.early = this.early.filter((x) => x.node !== node);
      // Its sessions (and their watches) die with the link; a restarted client opens new ones.
      for (const [key, s] of this.sessions) {
        if (key.startsWith(`${node}/`)) {
          s.close();
          this.sessions.delete(key);
        }
      }
    } else if (this.o.spec.kind === 'remote' && node === this.o.spec.host) {
      this.dropChannel(dvsError('ENOTCONN', `node link to ${node} (cluster store host) is down`));
    }
  }

  // ───────────────────────────── kernel hooks ─────────────────────────────

  /** The kernel bound a local endpoint: record it in the directory (EBOUND from the store wins). */
  localBind(dc: DcId, ep: Endpoint, info: { kind: BindKind; name: string; pid: number }): void {
    // Replicas of a state-machine group are bound on several nodes at once: the directory holds one location
    // per endpoint, so the group (src/node/smr.ts) is located through the kernels, not the store.
    if (info.kind === 'remote' || info.kind === 'replica') return;
    const kind = info.kind;
    this.serialize(dc, ep, async () => {
      let conflictLogged = false;
      for (;;) {
        if (this.stopped || !this.boundHere(dc, ep, info.pid)) return;
        try {
          await this.directory!.bind(
            dc,
            ep,
            { node: this.o.nodeId, kind, name: info.name, pid: info.pid },
            { timeout: CALL_TIMEOUT_MS },
          );
          return;
        } catch (e) {
          if (e instanceof DvsError && e.code === 'EBOUND' && this.o.replicated?.(dc, ep)) {
            // After a partition the old primary's node may re-assert its entry before it learns it was
            // deposed; when it stops its process, its entry goes and ours can be written.
            if (!conflictLogged)
              this.log.info({ dc, ep, owner: e.details?.node }, `replicated: ${e.message}; waiting`);
            conflictLogged = true;
            await sleep(RETRY_MS, this.life.signal).catch(() => {});
            continue;
          }
          if (e instanceof DvsError && e.code === 'EBOUND') {
            this.log.warn({ dc, ep, owner: e.details?.node }, `unbinding locally: ${e.message}`);
            if (this.boundHere(dc, ep, info.pid)) this.o.kernel.unbind(Date.now(), dc, ep);
            return;
          }
          if (e instanceof DvsError && e.code === 'ENOENT') {
            this.log.warn({ dc, ep }, `endpoint not recorded in the directory: ${e.message}`);
            return;
          }
          this.log.warn({ dc, ep, err: e }, 'directory bind failed; retrying');
          await sleep(RETRY_MS, this.life.signal).catch(() => {});
        }
      }
    });
  }

  /**
   * Commit a migration in the directory: `ep` of `dc` now lives at `to` (this node), held by process `pid`.
   * Serialized with this endpoint's other directory writes.
   */
  moveEndpoint(dc: DcId, ep: Endpoint, from: NodeId, to: NodeId, pid: number, name: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.serialize(dc, ep, async () => {
        try {
          await this.directory!.move(dc, ep, from, to, { timeout: CALL_TIMEOUT_MS }, { pid, name });
          resolve();
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  /** The kernel unbound a local endpoint: remove its directory entry. */
  localUnbind(dc: DcId, ep: Endpoint): void {
    this.serialize(dc, ep, async () => {
      if (this.stopped) return;
      try {
        await this.directory!.unbind(dc, ep, this.o.nodeId, { timeout: CALL_TIMEOUT_MS });
      } catch (e) {
        // The lease carries the entry: if the store is unreachable it goes when the lease does, and
        // reassert() only restores what is still bound here.
        this.log.warn({ dc, ep, err: e }, 'directory unbind failed');
      }
    });
  }

  // ───────────────────────────── admin ─────────────────────────────

  /** Wait (bounded) until the local kernel has DC `id` (after a create this node takes part in). */
  async awaitLocalDc(id: DcId, present: boolean, timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    while ((this.o.kernel.findDc(id) !== undefined) !== present && Date.now() < end) await sleep(10);
  }

  /** What the local removal of DC `id` stopped (if this node hosted it), bounded by `timeoutMs`. */
  async localRemoval(id: DcId, timeoutMs: number): Promise<number[]> {
    await this.awaitLocalDc(id, false, timeoutMs);
    const p = this.removals.get(id);
    return p === undefined ? [] : await p;
  }

  status(): ClusterStatus {
    const now = Date.now();
    const h = this.healthNow();
    return {
      store: this.o.text,
      degraded: h.degraded,
      ...(h.reason !== undefined ? { reason: h.reason } : {}),
      members: (this.membership?.nodes() ?? []).map((n) => ({
        id: n.id,
        name: n.name,
        address: n.address,
        state: n.state,
        link: n.link,
        uptimeMs: n.state === 'down' ? null : Math.max(0, now - n.startedAt),
        sinceMs: Math.max(0, now - n.since),
        self: n.self,
      })),
    };
  }

  // ───────────────────────────── internals ─────────────────────────────

  /** The etcd client (and its gRPC stack) is loaded only when the store is etcd: daemons start faster without it. */
  private async openStore(): Promise<ClusterStore> {
    const { spec, logger } = this.o;
    switch (spec.kind) {
      case 'embedded':
        return new EmbeddedStore({ dir: join(this.o.dataDir, 'store'), logger });
      case 'etcd': {
        const { EtcdStore } = await import('../cluster/etcd/store.js');
        return new EtcdStore({ endpoints: spec.endpoints, logger });
      }
      case 'remote':
        if (spec.host === this.o.nodeId) {
          throw dvsError('EINVAL', `--store embedded:${spec.host} names this node: use --store embedded`);
        }
        if (this.o.peerAddress(spec.host) === undefined) {
          throw dvsError(
            'EINVAL',
            `--store embedded:${spec.host}: node ${spec.host} is not a configured peer`,
          );
        }
        return new RemoteStore({ connect: (signal) => this.connect(signal), logger: this.log });
    }
  }

  private unreachable(e: unknown): DvsError {
    const why = e instanceof Error ? e.message : String(e);
    const { spec } = this.o;
    if (spec.kind === 'remote') {
      return dvsError(
        'ENOTCONN',
        `cluster store unreachable: node ${spec.host} (${this.o.peerAddress(spec.host)}) hosts it and did not answer over the node link: ${why}`,
      );
    }
    if (spec.kind === 'etcd') {
      return dvsError('ENOTCONN', `cluster store unreachable: etcd at ${spec.endpoints.join(',')}: ${why}`);
    }
    const code = e instanceof DvsError ? e.code : 'EINTERNAL';
    return dvsError(
      code,
      `cannot open the embedded cluster store in ${join(this.o.dataDir, 'store')}: ${why}`,
    );
  }

  /** RemoteStore's connect: a channel over the node link to the host, once the link is up. */
  private async connect(signal: AbortSignal): Promise<StoreChannel> {
    const spec = this.o.spec;
    if (spec.kind !== 'remote') throw dvsError('EINVAL', 'not a remote store');
    const host = spec.host;
    while (!this.o.linkUp(host)) {
      if (signal.aborted) throw dvsError('ENOTCONN', `node link to ${host} is not up`);
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.linkWaiters.push(done);
        signal.addEventListener('abort', done, { once: true });
      });
    }
    this.dropChannel(new Error('replaced'));
    const id = this.nextChannel++;
    const ch: { id: number; onMessage?: (b: Uint8Array) => void; onClose?: (e?: Error) => void } = { id };
    this.channel = ch;
    return {
      send: (b) => {
        if (this.channel !== ch) return;
        if (!this.send(host, { t: 'store', dc: 0, c: id, b })) {
          this.dropChannel(dvsError('ENOTCONN', `node link to ${host} is down`));
        }
      },
      onMessage: (cb) => {
        ch.onMessage = cb;
      },
      onClose: (cb) => {
        ch.onClose = cb;
      },
      close: () => {
        if (this.channel !== ch) return;
        this.channel = null;
        this.send(host, { t: 'store', dc: 0, c: id, end: true });
      },
    };
  }

  /**
   * One store frame on a node link. A message too big for a link frame (a huge list) cannot go: the
   * caller's call then times out, which is logged here rather than thrown into a store callback.
   */
  private send(node: NodeId, frame: ControlFrame): boolean {
    try {
      return this.o.sendFrame(node, frame);
    } catch (e) {
      this.log.error({ err: e, node }, 'cannot send a cluster store frame');
      return false;
    }
  }

  private dropChannel(err: Error): void {
    const ch = this.channel;
    if (!ch) return;
    this.channel = null;
    // Deferred: RemoteStore may be in the middle of a send() when the link reports the drop.
    queueMicrotask(() => ch.onClose?.(err));
  }

  private serialize(dc: DcId, ep: Endpoint, op: () => Promise<void>): void {
    const key = `${dc}/${ep}`;
    const prev = this.writes.get(key) ?? Promise.resolve();
    const next = prev
      .then(op)
      .catch((e: unknown) => this.log.error({ err: e, dc, ep }, 'directory write failed'));
    this.writes.set(key, next);
    void next.then(() => {
      if (this.writes.get(key) === next) this.writes.delete(key);
    });
  }

  private boundHere(dc: DcId, ep: Endpoint, pid: number): boolean {
    if (this.o.kernel.findDc(dc) === undefined) return false;
    const row = this.o.kernel.endpoints(dc).find((r) => r.ep === ep);
    return row !== undefined && row.node === this.o.nodeId && row.kind !== 'remote' && row.pid === pid;
  }

  private async reassert(): Promise<void> {
    try {
      const { restored, conflicts } = await this.directory!.reassert({ timeout: CALL_TIMEOUT_MS });
      if (restored.length > 0) this.log.info({ n: restored.length }, 'directory entries restored');
      for (const c of conflicts) {
        if (this.o.replicated?.(c.dc, c.ep)) {
          // Which side serves a replicated endpoint is the replication record's call, not the directory's.
          const row = this.o.kernel
            .endpoints(c.dc)
            .find((e) => e.ep === c.ep && e.node === this.o.nodeId && e.kind !== 'remote');
          if (row !== undefined) this.localBind(c.dc, c.ep, { kind: row.kind, name: row.name, pid: row.pid });
          continue;
        }
        this.log.warn(
          { dc: c.dc, ep: c.ep, node: c.node },
          'endpoint bound elsewhere meanwhile: unbinding it here',
        );
        try {
          this.o.kernel.unbind(Date.now(), c.dc, c.ep);
        } catch {
          // already gone
        }
      }
    } catch (e) {
      this.log.warn({ err: e }, 'directory reassert failed');
    }
  }

  private serviceHealth(which: 'dcs' | 'directory', ok: boolean, why?: string): void {
    this.servicesHealthy[which] = ok;
    if (!ok)
      this.log.warn({ service: which, reason: why }, `cluster store degraded (${which}): ${why ?? ''}`);
  }

  private healthNow(): { degraded: boolean; reason?: string } {
    if (this.health.degraded) return { degraded: true, reason: this.health.reason ?? 'registration lost' };
    if (!this.servicesHealthy.dcs || !this.servicesHealthy.directory) {
      return { degraded: true, reason: 'watch on the cluster store lost' };
    }
    return { degraded: false };
  }

  /**
   * Membership changes are logged and shown by `status`, but they do not move the kernel: whether IPC can
   * reach a node is the link layer's call (its heartbeats detect a dead or restarted node within the same
   * detection time as the lease). A registration that expired while the link stayed up (the node lost the
   * store, e.g. on the minority side of a partition, and re-registers once it is back) must not fail calls
   * to a node that answers them; and after a heal the store's view arrives later than the links', so a
   * late "down" from the store would otherwise cut a working link's traffic.
   */
  private onMember(ev: NodeChange): void {
    if (ev.node === this.o.nodeId) return;
    if (ev.state === 'down' && ev.prev !== 'down') {
      this.log.warn({ peer: ev.node, restarted: ev.restarted === true }, 'member down');
    } else if (ev.state === 'up' && ev.prev !== 'up') {
      this.log.info({ peer: ev.node }, 'member up');
    }
  }

  private onDc(ev: DcChange): void {
    const k = this.o.kernel;
    const self = this.o.nodeId;
    const now = Date.now();
    try {
      if (ev.type === 'remove') {
        if (k.findDc(ev.prev.id)) this.removeLocal(ev.prev.id);
        return;
      }
      const cfg = ev.dc;
      const here = k.findDc(cfg.id);
      if (!cfg.nodes.includes(self)) {
        if (here) this.removeLocal(cfg.id);
        return;
      }
      if (here) {
        k.updateDc(now, cfg);
        this.log.info({ dc: cfg.id, name: cfg.name, nodes: cfg.nodes }, 'dc updated from the store');
        // Entries of nodes that just joined were ignored while they were outside the DC.
        this.replayDirectory(cfg);
      } else {
        k.createDc(cfg);
        this.log.info({ dc: cfg.id, name: cfg.name, nodes: cfg.nodes }, 'dc created from the store');
        this.replayDirectory(cfg);
        this.o.onDcCreated?.(cfg);
      }
    } catch (e) {
      this.log.error({ err: e, ev: ev.type }, 'cannot apply a DC change from the store');
    }
  }

  private removeLocal(id: DcId): void {
    const pids = this.o.kernel.removeDc(Date.now(), id);
    this.log.info({ dc: id, pids }, 'dc removed from the store');
    const p = this.o.stopDcProcesses(id, pids).catch((e: unknown) => {
      this.log.error({ err: e, dc: id }, 'stopping the processes of a removed DC failed');
      return [] as number[];
    });
    this.removals.set(id, p);
    void p.then(() => setTimeout(() => this.removals.delete(id), 10_000).unref());
  }

  /** A DC arrived (or changed nodes) after the directory listed its entries: apply them now (idempotent). */
  private replayDirectory(cfg: DcConfig): void {
    if (!this.directory) return;
    const now = Date.now();
    for (const e of this.directory.entries(cfg.id)) {
      if (e.node !== this.o.nodeId) {
        this.o.kernel.learnRemote(now, cfg.id, e.ep, e.node, { kind: e.kind, name: e.name, pid: e.pid });
      }
    }
  }

  private onDir(ev: DirChange): void {
    const k = this.o.kernel;
    const now = Date.now();
    try {
      if (ev.type === 'unbind') {
        if (ev.prev.node !== this.o.nodeId) k.forgetRemote(now, ev.dc, ev.ep, ev.prev.node);
        return;
      }
      const e = ev.entry;
      if (e.node !== this.o.nodeId)
        k.learnRemote(now, ev.dc, ev.ep, e.node, { kind: e.kind, name: e.name, pid: e.pid });
    } catch (err) {
      this.log.error({ err, ev: ev.type, dc: ev.dc, ep: ev.ep }, 'cannot apply a directory change');
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
