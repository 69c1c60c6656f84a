/**
 * The node daemon: wires the pure kernel to the world.
 *
 * ```
 *   processes ──unix socket──▶ LocalServer ──calls──▶ Kernel ──toNode──▶ LinkManager ──tcp──▶ peer daemons
 *        ▲                        │  ▲                   │  ▲                │
 *        └──── results/events ◀───┘  └──── complete ─────┘  └──── frames ◀───┘
 *   CLI ──unix socket (admin RPC)──▶ LocalServer ──▶ admin handlers (this file) ──▶ Kernel, ProcessManager
 * ```
 *
 * Components start in dependency order (process manager, local socket, links, metrics) and stop in reverse.
 * The daemon owns the clock: every kernel event gets `Date.now()`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Logger, pino } from 'pino';
import type { Registry } from 'prom-client';
import { readTokenFile } from '../api/auth.js';
import { type AdminCaller as ApiAdminCaller, apiNodes } from '../api/caller.js';
import { ApiServer } from '../api/server.js';
import { validateDcConfig } from '../cluster/dc-config.js';
import { Kernel } from '../kernel/index.js';
import {
  type DcConfig,
  type DcId,
  type Endpoint,
  type KernelIO,
  MAX_ENDPOINT,
  type NodeId,
} from '../kernel/types.js';
import type {
  AdminMethod,
  AdminMethods,
  DcIsolationSpec,
  DcLimitsText,
  LanMember,
  NodeStatus,
  ProcessInfo,
} from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { LinkManager } from '../proxy/links.js';
import { ClusterWiring } from './cluster.js';
import { EventLog } from './events.js';
import { GcsWiring } from './gcs-wiring.js';
import { IsolationWiring } from './isolation-wiring.js';
import { type AdminContext, LocalServer } from './local-server.js';
import { createRegistry, IpcStats, MetricsServer, monitorSnapshot, registerIpcMetrics } from './metrics.js';
import { Migrations } from './migration.js';
import { NodeRpc, type NodeRpcHandler } from './node-rpc.js';
import type { NodeOptions } from './options.js';
import type { DaemonParts } from './parts.js';
import { ProcessManager } from './processes.js';
import { Replication } from './replication.js';
import { LoadMonitor } from './scheduler.js';
import { ServiceRegistry } from './services.js';
import { Snapshots } from './snapshots.js';
import { parseStoreSpec } from './store-spec.js';
import { DsmServices } from './svc-dsm.js';
import { FailureDetector } from './svc-fd.js';
import { SlotsServices } from './svc-slots.js';
import { StoreServices } from './svc-store.js';

/** Moved to src/cluster/dc-config.ts so the cluster services can use it without the daemon. */
export { validateDcConfig } from '../cluster/dc-config.js';

/** Version reported by `status` (kept in step with package.json by a unit test). */
export const VERSION = '0.1.0';

/** A running node daemon. */
export interface NodeDaemon {
  readonly nodeId: number;
  /** Status as the admin `status` method returns it. */
  status(): NodeStatus;
  /** Stop every component (idempotent). */
  stop(): Promise<void>;
  /** Resolves once the daemon has stopped (after stop(), or an admin `node.shutdown`). */
  readonly stopped: Promise<void>;
}

/** Start a node daemon with `opts`; resolves once it listens on its socket and its link port. */
export async function startNode(opts: NodeOptions): Promise<NodeDaemon> {
  const daemon = new Daemon(opts);
  try {
    await daemon.start();
  } catch (e) {
    await daemon.stop();
    throw e;
  }
  return daemon;
}

class Daemon implements NodeDaemon {
  readonly nodeId: number;
  readonly stopped: Promise<void>;
  private readonly opts: NodeOptions;
  private readonly name: string;
  private readonly incarnation = randomBytes(8).toString('hex');
  private readonly startedAt = Date.now();
  private readonly logger: Logger;
  private readonly kernel: Kernel;
  private readonly local: LocalServer;
  private readonly links: LinkManager;
  private readonly processes: ProcessManager;
  /** DC containers, limits and LANs (src/node/isolation-wiring.ts). */
  private readonly isolation: IsolationWiring;
  /** Calls between node daemons over the links (src/node/node-rpc.ts). */
  private readonly nodeRpc: NodeRpc;
  /** Methods other daemons may call on this one (besides `admin`, which forwards an admin call). */
  private readonly nodeMethods = new Map<string, NodeRpcHandler>();
  /** Live migration of endpoints to and from this node (src/node/migration.ts). */
  private readonly migrations: Migrations;
  /** Primary-backup replicated endpoints and their failover (src/node/replication.ts). */
  private readonly replication: Replication;
  /** Chandy–Lamport snapshots of DCs, restore and fork (src/node/snapshots.ts). */
  private readonly snapshots: Snapshots;
  /** DVK services offered to processes and the CLI beside the fixed admin methods (src/node/services.ts). */
  private readonly services = new ServiceRegistry();
  /** kv, locks, election, consensus for processes and the CLI (src/node/svc-store.ts; EUNAVAIL without a store). */
  private readonly storeServices: StoreServices;
  /** Node and endpoint failure detection for processes and the CLI (src/node/svc-fd.ts). */
  private readonly fd: FailureDetector;
  /** Distributed shared memory for processes and the CLI (src/node/svc-dsm.ts). */
  private readonly dsm: DsmServices;
  /** CPU and memory of the host and of the processes started here (`status.load`, src/node/scheduler.ts). */
  private readonly loadMonitor: LoadMonitor;
  /** Bytes and call latencies per local endpoint (`dvs top`, dvs_endpoint_* metrics). */
  private readonly ipcStats: IpcStats;
  /** Group communication: one GcsNode over the node links, `group.*` services (src/node/gcs-wiring.ts). */
  private readonly groups: GcsWiring;
  /** SLOTS per hosted DC over the GCS, `slots.*` services (src/node/svc-slots.ts). */
  private readonly slots: SlotsServices;
  private readonly metrics: MetricsServer | undefined;
  /** The metrics registry (with `--metrics`); the API adds its `dvs_api_*` metrics to it. */
  private readonly registry: Registry | undefined;
  /** What this node saw happen (`dvs events`, the API's event log and stream). */
  private readonly events: EventLog;
  /** The REST API and dashboard (`--api`); created in start() once the token is read. */
  private api: ApiServer | undefined;
  /** The cluster store and its services; undefined without `--store` (the default path). */
  private readonly cluster: ClusterWiring | undefined;
  /** Nodes whose link the link layer reports up. */
  private readonly linksUp = new Set<NodeId>();
  private stopping: Promise<void> | undefined;
  private resolveStopped!: () => void;

  constructor(opts: NodeOptions) {
    this.opts = opts;
    this.nodeId = opts.nodeId;
    this.name = opts.name ?? `node${opts.nodeId}`;
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve;
    });
    this.logger = pino(
      { level: opts.logLevel ?? 'info', base: { node: opts.nodeId, pid: process.pid } },
      opts.logFile ? pino.destination({ dest: opts.logFile, mkdir: true, sync: false }) : pino.destination(2),
    );

    this.events = new EventLog({ node: opts.nodeId });
    // The kernel's sink: each effect goes to the component that owns that side of the world.
    const io: KernelIO = {
      complete: (proc, callId, result) => {
        this.ipcStats.complete(proc, callId, result);
        this.local.complete(proc, callId, result);
      },
      toProc: (proc, ev) => this.local.toProc(proc, ev),
      toNode: (node, frame) => this.links.send(node, frame),
      log: (level, msg, fields) => this.logger[level]({ component: 'kernel', ...fields }, msg),
    };
    if (opts.store !== undefined) {
      // The directory hooks exist only with a store: the default path is unchanged.
      io.onLocalBind = (dc, ep, info) => this.cluster?.localBind(dc, ep, info);
      io.onLocalUnbind = (dc, ep) => this.cluster?.localUnbind(dc, ep);
    }
    this.kernel = new Kernel({ nodeId: opts.nodeId, io });
    this.ipcStats = new IpcStats(this.kernel);

    this.isolation = new IsolationWiring({
      nodeId: opts.nodeId,
      nodeName: this.name,
      dataDir: opts.dataDir,
      socket: opts.socket,
      listen: opts.listen,
      logger: this.logger,
      mode: opts.isolation ?? (process.env.DVS_ISOLATION === 'off' ? 'off' : 'auto'),
      ...(opts.isolationPrefix !== undefined ? { prefix: opts.isolationPrefix } : {}),
      ...(opts.lanUnderlay !== undefined ? { lan: opts.lanUnderlay } : {}),
      store: () => this.cluster?.clusterStore,
      dcSocket: (dc, path) =>
        path === undefined ? this.local.closeForDc(dc) : this.local.listenForDc(dc, path),
    });
    this.processes = new ProcessManager({
      nodeId: opts.nodeId,
      dataDir: opts.dataDir,
      logger: this.logger,
      onExit: (info) => this.onProcessExit(info),
      spawner: this.isolation.spawner,
    });
    this.local = new LocalServer({
      path: opts.socket,
      // A process in a container reports the pid it sees there; the kernel keeps host pids.
      kernel: this.ipcStats.wrap(
        this.isolation.kernelView(this.kernel, (dc, ep, pid) => {
          const info = this.processes.get(dc, ep);
          return info?.exit === null && info.containerPid === pid ? info.pid : pid;
        }),
      ),
      logger: this.logger,
      admin: (method, params, ctx) => this.admin(method, params, ctx),
    });
    this.nodeRpc = new NodeRpc({
      send: (node, frame) => this.links.send(node, frame),
      handler: (method, params, from, signal) => this.nodeCall(method, params, from, signal),
      logger: this.logger,
    });
    const parts: DaemonParts = {
      nodeId: opts.nodeId,
      kernel: this.kernel,
      nodeRpc: this.nodeRpc,
      processes: this.processes,
      cluster: () => this.cluster,
      events: this.events,
      logger: this.logger,
    };
    this.migrations = new Migrations({
      ...parts,
      processEnv: (_dc, dcName, ep) => this.processEnv(dcName, ep),
    });
    this.migrations.registerServices(this.services);
    for (const [m, h] of Object.entries(this.migrations.nodeMethods())) this.nodeMethods.set(m, h);
    this.replication = new Replication({
      ...parts,
      linkUp: (node) => this.linksUp.has(node),
      processEnv: (_dc, dcName, ep) => this.processEnv(dcName, ep),
      runLocal: (params) => this.run(params),
    });
    this.replication.registerServices(this.services);
    for (const [m, h] of Object.entries(this.replication.nodeMethods())) this.nodeMethods.set(m, h);
    this.links = new LinkManager({
      nodeId: opts.nodeId,
      name: this.name,
      incarnation: this.incarnation,
      listen: opts.listen,
      peers: opts.peers.filter((p) => p.id !== opts.nodeId),
      heartbeatMs: opts.heartbeatMs ?? 500,
      deadAfterMs: opts.deadAfterMs ?? 3000,
      ...(opts.tls ? { tls: opts.tls } : {}),
      logger: this.logger,
      handlers: {
        frame: (node, frame) => {
          // Cluster store and daemon-to-daemon traffic ride the link but are not the kernel's business.
          if (frame.t === 'store') this.cluster?.onStoreFrame(node, frame);
          else if (frame.t === 'rpc') this.nodeRpc.onFrame(node, frame);
          else if (frame.t === 'gcs') this.groups.onFrame(node, frame);
          else this.kernel.fromNode(Date.now(), node, frame);
        },
        nodeUp: (node) => {
          this.logger.info({ peer: node }, 'node up');
          this.events.emit('node.up', `node${node}`, { node });
          this.linksUp.add(node);
          this.kernel.nodeUp(Date.now(), node);
          this.cluster?.linkUp(node);
          this.fd.nodeUp(node);
          this.groups.nodeUp(node);
          this.replication.nodeUp(node);
        },
        nodeDown: (node) => {
          this.logger.warn({ peer: node }, 'node down');
          this.events.emit('node.down', `node${node}`, { node });
          this.linksUp.delete(node);
          this.kernel.nodeDown(Date.now(), node);
          this.nodeRpc.nodeDown(node);
          this.replication.nodeDown(node);
          this.cluster?.linkDown(node);
          this.fd.nodeDown(node);
          this.dsm.nodeDown(node);
          this.groups.nodeDown(node);
        },
      },
    });
    if (opts.store !== undefined) {
      const deadAfterMs = opts.deadAfterMs ?? 3000;
      // The lease TTL follows the link's dead time, so the store and the links agree on detection time.
      const ttlSeconds = Math.max(1, Math.ceil(deadAfterMs / 1000));
      this.cluster = new ClusterWiring({
        spec: parseStoreSpec(opts.store),
        text: opts.store,
        nodeId: opts.nodeId,
        name: this.name,
        incarnation: this.incarnation,
        dataDir: opts.dataDir,
        kernel: this.kernel,
        logger: this.logger,
        sendFrame: (node, frame) => this.links.send(node, frame),
        peerAddress: (node) => opts.peers.find((p) => p.id === node)?.address,
        linkUp: (node) => this.linksUp.has(node),
        stopDcProcesses: (dc) => this.stopDcProcesses(dc),
        replicated: (dc, ep) => this.replication?.has(dc, ep) ?? false,
        // The container comes with the DC, with the limits and LAN kept in the store; a container a
        // crashed predecessor left is adopted here.
        onDcCreated: (cfg) => {
          // Logged where the DC is applied (the writer logs the store write); `applied` tells them apart.
          this.events.emit('dc.created', `dc ${cfg.name}`, { dc: cfg.id, nodes: cfg.nodes, applied: true });
          void this.isolation
            .ensureFromStore(cfg)
            .catch((e: unknown) =>
              this.logger.error({ err: e, dc: cfg.id }, 'cannot set up the DC container'),
            );
        },
        ttlSeconds,
        takeoverWaitMs: opts.storeTakeoverWaitMs ?? ttlSeconds * 1000 + 1000,
        address: () => this.links.address,
      });
    }
    this.registry = opts.metrics
      ? createRegistry({
          nodeId: opts.nodeId,
          links: () => this.links.info(),
          dcs: () => this.kernel.listDcs().length,
          endpoints: () => this.countEndpoints(),
          messages: () => this.sumCounters(),
          processes: () => this.processes.list().filter((p) => p.exit === null).length,
          sessions: () => this.local.sessionCount,
          kernelStats: () => this.kernel.stats,
        })
      : undefined;
    this.metrics = opts.metrics && this.registry ? new MetricsServer(opts.metrics, this.registry) : undefined;
    if (this.registry) {
      registerIpcMetrics(this.registry, {
        endpoints: () =>
          this.kernel
            .listDcs()
            .flatMap((dc) =>
              this.kernel.endpoints(dc.id).filter((e) => e.node === this.nodeId && e.kind !== 'remote'),
            ),
        ipc: this.ipcStats,
      });
    }
    const resolveDc = (ref: DcId | string) => this.resolveServiceDc(ref);
    this.storeServices = new StoreServices({
      store: () => this.cluster?.clusterStore,
      resolveDc,
      nodeId: opts.nodeId,
      // Locks and leaderships of a dead node pass on within the same detection time as its links.
      leaseTtlSeconds: Math.max(1, Math.ceil((opts.deadAfterMs ?? 3000) / 1000)),
      logger: this.logger,
      ...(this.registry ? { registry: this.registry } : {}),
    });
    this.storeServices.register(this.services);
    this.fd = new FailureDetector({
      nodeId: opts.nodeId,
      peers: () => opts.peers.filter((p) => p.id !== opts.nodeId).map((p) => p.id),
      linkUp: (node) => this.linksUp.has(node),
      endpoints: (dc) => this.kernel.endpoints(this.dc(dc).id),
      resolveDc,
      peerIncarnation: async (node, signal) => {
        const st = await this.nodeRpc.call(node, 'admin', { method: 'status', params: {} }, { signal });
        return (st as NodeStatus).incarnation;
      },
      deadAfterMs: opts.deadAfterMs ?? 3000,
      pollMs: Math.min(250, Math.max(20, opts.heartbeatMs ?? 500)),
      logger: this.logger,
      ...(this.registry ? { registry: this.registry } : {}),
    });
    this.fd.register(this.services);
    this.dsm = new DsmServices({
      nodeId: opts.nodeId,
      call: (node, method, params, o) => this.nodeRpc.call(node, method, params, o),
      dcNodes: (dc) => this.kernel.findDc(dc)?.nodes,
      resolveDc,
      logger: this.logger,
      ...(this.registry ? { registry: this.registry } : {}),
    });
    this.dsm.register(this.services);
    this.loadMonitor = new LoadMonitor({
      processes: () =>
        this.processes
          .list()
          .filter((p) => p.exit === null)
          .map((p) => ({ dc: p.dc, ep: p.ep, pid: p.pid })),
      logger: this.logger,
      ...(this.registry ? { registry: this.registry } : {}),
    });
    // `dvs top`: this node's endpoints with their counters, bytes, latencies and process usage.
    this.services.register('monitor.snapshot', () =>
      monitorSnapshot({
        nodeId: this.nodeId,
        kernel: this.kernel,
        ipc: this.ipcStats,
        procs: this.loadMonitor.load().procs,
      }),
    );
    for (const [m, h] of Object.entries(this.dsm.nodeMethods())) this.nodeMethods.set(m, h);
    const adminCtx = (signal: AbortSignal): AdminContext => ({
      signal,
      caller: undefined,
      push: () => false,
      onClose: () => undefined,
    });
    this.snapshots = new Snapshots({
      ...parts,
      dataDir: opts.dataDir,
      admin: (node, method, params, signal) =>
        node === this.nodeId
          ? this.admin(method, params, adminCtx(signal))
          : this.nodeRpc.call(node, 'admin', { method, params }, { signal, timeout: 30_000 }),
      peers: () => opts.peers.filter((p) => p.id !== opts.nodeId).map((p) => p.id),
      ...(this.registry ? { registry: this.registry } : {}),
    });
    this.snapshots.registerServices(this.services);
    for (const [m, h] of Object.entries(this.snapshots.nodeMethods())) this.nodeMethods.set(m, h);
    this.groups = new GcsWiring({
      nodeId: opts.nodeId,
      // The core needs an incarnation that grows across restarts: the start time in ms.
      incarnation: this.startedAt,
      send: (node, frame) => this.links.send(node, frame),
      resolveDc,
      logger: this.logger,
      ...(this.registry ? { registry: this.registry } : {}),
      onConfig: (cfg, nodes) => this.events.emit('gcs.config', `gcs ${cfg.join('.')}`, { cfg, nodes }),
    });
    this.groups.register(this.services);
    this.slots = new SlotsServices({
      nodeId: opts.nodeId,
      dataDir: opts.dataDir,
      gcs: this.groups,
      dcs: () => this.kernel.listDcs(),
      resolveDc,
      logger: this.logger,
      ...(this.registry ? { registry: this.registry } : {}),
    });
    this.slots.register(this.services);
  }

  /** A DC named by a service call: hosted here, or (with a store) known to the cluster's DC registry. */
  private resolveServiceDc(ref: DcId | string): DcId {
    const here = this.kernel.findDc(ref);
    if (here) return here.id;
    if (this.cluster) {
      try {
        const dc = this.cluster.registry.get(ref);
        if (dc) return dc.id;
      } catch {
        // registry not started yet: unknown
      }
    }
    throw dvsError('ENOENT', `no DC '${ref}' in this cluster`, { dc: ref });
  }

  async start(): Promise<void> {
    await mkdir(this.opts.dataDir, { recursive: true });
    await mkdir(dirname(this.opts.socket), { recursive: true });
    await this.processes.start();
    await this.local.start();
    // After the socket (containers get a link to it); before the store, whose DCs adopt containers.
    await this.isolation.start();
    await this.links.start();
    await this.groups.start();
    await this.slots.start();
    // After the links: a store hosted by another node is reached over them, and the registration carries
    // the bound link address.
    await this.cluster?.start();
    // Containers a crashed predecessor left for DCs no longer here go now.
    await this.isolation.finishStart((dc) => this.kernel.findDc(dc) !== undefined);
    await this.storeServices.start();
    await this.fd.start();
    await this.dsm.start();
    await this.loadMonitor.start();
    await this.metrics?.start();
    await this.startApi();
    this.logger.info(
      {
        socket: this.opts.socket,
        address: this.links.address,
        metrics: this.metrics?.address ?? null,
        incarnation: this.incarnation,
        peers: this.opts.peers.length,
        store: this.opts.store ?? null,
      },
      'node started',
    );
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.logger.info('node stopping');
    // Reverse of start; every step runs even if an earlier one failed.
    const steps: [string, () => Promise<void>][] = [
      ['api', async () => this.api?.stop()],
      ['metrics', async () => this.metrics?.stop()],
      ['load monitor', () => this.loadMonitor.stop()],
      ['dsm', () => this.dsm.stop()],
      ['failure detector', () => this.fd.stop()],
      // Before the store: held locks and leaderships are released while it is still reachable.
      ['store services', () => this.storeServices.stop()],
      ['cluster store', async () => this.cluster?.stop()],
      ['processes', () => this.processes.stop()],
      // A clean stop leaves no container behind (a crash leaves them for the next daemon to adopt).
      ['isolation', () => this.isolation.stop({ remove: true })],
      ['migrations', async () => this.migrations.stop()],
      ['replication', async () => this.replication.stop()],
      ['snapshots', async () => this.snapshots.stop()],
      ['node rpc', async () => this.nodeRpc.stop()],
      ['slots', () => this.slots.stop()],
      ['groups', () => this.groups.stop()],
      ['links', () => this.links.stop()],
      ['local socket', () => this.local.stop()],
    ];
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (e) {
        this.logger.error({ err: e, component: what }, 'stop failed');
      }
    }
    await rm(this.opts.socket, { force: true }).catch(() => {});
    this.logger.info('node stopped');
    await new Promise<void>((resolve) => this.logger.flush(() => resolve()));
    this.resolveStopped();
  }

  /**
   * Start the REST API (`--api`): over this daemon's own admin dispatcher, and the peers' APIs for cluster
   * views. The token comes from the options, the token file, or DVS_API_TOKEN, in that order.
   */
  private async startApi(): Promise<void> {
    const o = this.opts;
    if (o.api === undefined) {
      // The network join is served by the API: a CA directory alone serves nothing.
      if (o.caDir !== undefined) throw dvsError('EINVAL', '--ca-dir (the network join) needs --api');
      if (o.apiTls === 'on') throw dvsError('EINVAL', '--api-tls on needs --api');
      return;
    }
    // HTTPS with the node's own link credentials: `auto` exactly when it has them (docs/api.md).
    if (o.apiTls === 'on' && o.tls === undefined) {
      throw dvsError('EINVAL', '--api-tls on needs TLS credentials (--tls-dir, from dvs node join)');
    }
    const apiTls =
      o.tls !== undefined && o.apiTls !== 'off'
        ? await (await import('../security/credentials.js')).loadTlsCredentials(o.tls)
        : undefined;
    const token =
      o.apiToken ??
      (o.apiTokenFile !== undefined ? await readTokenFile(o.apiTokenFile) : process.env.DVS_API_TOKEN);
    if (token === undefined && o.apiInsecureLoopback !== true) {
      throw dvsError(
        'EINVAL',
        '--api needs a token (--api-token-file or DVS_API_TOKEN) or --api-insecure-loopback',
      );
    }
    const ctx = (signal: AbortSignal) => ({
      signal,
      caller: undefined,
      push: () => false,
      onClose: (fn: () => void) => signal.addEventListener('abort', fn, { once: true }),
    });
    const local: ApiAdminCaller = {
      call: (method, params, signal) => this.admin(method, params, ctx(signal)) as never,
    };
    // Every peer's admin is reached through `node.call`, relayed over the node link (no extra address).
    const peers = new Map<NodeId, ApiAdminCaller>();
    for (const peer of o.peers) {
      if (peer.id === this.nodeId) continue;
      peers.set(peer.id, {
        call: (method, params, signal) =>
          this.admin('node.call', { node: peer.id, method, params }, ctx(signal)) as never,
      });
    }
    this.api = new ApiServer(o.api, {
      nodes: apiNodes(this.nodeId, local, peers),
      events: this.events,
      ...(this.registry ? { registry: this.registry } : {}),
      ...(token !== undefined ? { token } : {}),
      ...(o.apiInsecureLoopback ? { insecureLoopback: true } : {}),
      ...(o.caDir !== undefined ? { join: { caDir: o.caDir } } : {}),
      ...(apiTls ? { tls: { ca: apiTls.ca, cert: apiTls.cert, key: apiTls.key } } : {}),
      logger: this.logger,
    });
    await this.api.start();
    this.logger.info(
      {
        api: this.api.url,
        peers: peers.size,
        insecureLoopback: o.apiInsecureLoopback === true,
        tls: apiTls !== undefined,
      },
      'api started',
    );
  }

  /** `http(s)://host:port` of the REST API, or undefined without `--api`. */
  get apiUrl(): string | undefined {
    return this.api?.url;
  }

  status(): NodeStatus {
    const now = Date.now();
    const eps = this.countEndpoints();
    return {
      id: this.nodeId,
      name: this.name,
      address: this.links.address,
      socket: this.opts.socket,
      metrics: this.metrics ? `http://${this.metrics.address}/metrics` : null,
      pid: process.pid,
      incarnation: this.incarnation,
      startedAt: this.startedAt,
      uptimeMs: now - this.startedAt,
      version: VERSION,
      links: this.links.info(),
      dcs: this.kernel.listDcs().length,
      endpoints: eps.local,
      ...(this.cluster ? { cluster: this.cluster.status() } : {}),
      isolation: this.isolation.status(),
      load: this.loadMonitor.load(),
    };
  }

  private countEndpoints(): { local: number; remote: number } {
    let local = 0;
    let remote = 0;
    for (const dc of this.kernel.listDcs()) {
      for (const e of this.kernel.endpoints(dc.id)) {
        if (e.node === this.nodeId && e.kind !== 'remote') local++;
        else remote++;
      }
    }
    return { local, remote };
  }

  private sumCounters() {
    const sum = { lclSent: 0, rmtSent: 0, received: 0, notifies: 0, copyBytes: 0 };
    for (const dc of this.kernel.listDcs()) {
      for (const e of this.kernel.endpoints(dc.id)) {
        if (e.node !== this.nodeId || e.kind === 'remote') continue;
        sum.lclSent += e.counters.lclSent;
        sum.rmtSent += e.counters.rmtSent;
        sum.received += e.counters.received;
        sum.notifies += e.counters.notifies;
        sum.copyBytes += e.counters.copyBytes;
      }
    }
    return sum;
  }

  private dc(idOrName: DcId | string): DcConfig {
    const dc = this.kernel.findDc(idOrName);
    if (!dc) throw dvsError('ENOENT', `no DC '${idOrName}' on node ${this.nodeId}`, { dc: idOrName });
    return dc;
  }

  /** A spawned process exited: unbind its endpoint (if the kernel still has it bound to that pid). */
  private onProcessExit(info: ProcessInfo): void {
    this.logger.info({ dc: info.dc, ep: info.ep, pid: info.pid, exit: info.exit }, 'process exited');
    this.events.emit('proc.exited', `${info.dcName}/${info.ep}`, {
      dc: info.dc,
      ep: info.ep,
      pid: info.pid,
      code: info.exit?.code ?? null,
      signal: info.exit?.signal ?? null,
      ...(info.exit?.oomKilled ? { oomKilled: true, reason: info.exit.reason } : {}),
    });
    // Its own kind too, so the event log and the dashboard can single OOM kills out.
    if (info.exit?.oomKilled) {
      this.events.emit('oom', `${info.dcName}/${info.ep}`, {
        dc: info.dc,
        ep: info.ep,
        pid: info.pid,
        ...(info.exit.reason !== undefined ? { reason: info.exit.reason } : {}),
      });
    }
    const row = this.kernel.findDc(info.dc)
      ? this.kernel.endpoints(info.dc).find((e) => e.ep === info.ep && e.node === this.nodeId)
      : undefined;
    // In a container the kernel knows the process by the pid it sees itself.
    if (row && (row.pid === info.pid || row.pid === info.containerPid))
      this.kernel.unbind(Date.now(), info.dc, info.ep);
    // A replicated primary fails over (its callers are held by the kernel); a backup leaves its group.
    this.replication.onProcessExit(info);
  }

  /** The admin RPC (src/protocol/admin.ts). Each method validates its params: they come from a socket. */
  private async admin(name: string, params: unknown, ctx: AdminContext): Promise<unknown> {
    if (ctx.restricted) {
      // A session on a DC's own socket (inside its container): DVK services of its own DC, after HELLO.
      if (ctx.caller === undefined)
        throw dvsError('EPERM', 'bind an endpoint (HELLO) before calling services');
      if (!this.services.has(name))
        throw dvsError('EPERM', `'${name}' is not available inside a DC container`);
    }
    if (this.services.has(name)) return this.services.call(name, params, ctx);
    const method = name as AdminMethod;
    const signal = ctx.signal;
    const p = (params ?? {}) as Record<string, unknown>;
    switch (method) {
      case 'status':
        return this.status();
      case 'dc.create': {
        if (this.cluster) return this.storeDcCreate(p.config, isolationParam(p.isolation));
        const cfg = validateDcConfig(p.config);
        if (!cfg.nodes.includes(this.nodeId)) {
          throw dvsError('EINVAL', `DC '${cfg.name}' does not include node ${this.nodeId}`);
        }
        const iso = isolationParam(p.isolation);
        // Validated before anything exists: a refused limit or LAN leaves nothing half-created.
        await this.isolation.validate(cfg, iso);
        this.kernel.createDc(cfg);
        try {
          await this.isolation.ensureDc(cfg, iso);
        } catch (e) {
          this.kernel.removeDc(Date.now(), cfg.id);
          throw e;
        }
        this.logger.info({ dc: cfg.id, name: cfg.name, nodes: cfg.nodes }, 'dc created');
        this.events.emit('dc.created', `dc ${cfg.name}`, { dc: cfg.id, nodes: cfg.nodes });
        return cfg;
      }
      case 'dc.remove': {
        if (this.cluster) {
          const removed = await this.cluster.registry.remove(dcRef(p.dc), { signal });
          this.logger.info({ dc: removed.id, name: removed.name }, 'dc removed from the store');
          this.events.emit('dc.removed', `dc ${removed.name}`, { dc: removed.id, store: true });
          await this.isolation
            .dropSpec(removed.name, removed.id)
            .catch((e: unknown) =>
              this.logger.warn({ err: e, dc: removed.id }, 'cannot drop the DC isolation spec'),
            );
          const killed = removed.nodes.includes(this.nodeId)
            ? await this.cluster.localRemoval(removed.id, 5000)
            : [];
          return { killed } satisfies AdminMethods['dc.remove']['result'];
        }
        const dc = this.dc(dcRef(p.dc));
        const pids = this.kernel.removeDc(Date.now(), dc.id);
        const killed: number[] = [];
        for (const info of this.processes.list(dc.id)) {
          if (info.exit === null) {
            await this.processes.kill(dc.id, info.ep, 'SIGTERM', 2000);
            killed.push(info.pid);
          }
        }
        // Then the container: whatever the DC's processes started and left behind dies with its cgroup.
        await this.isolation.removeDc(dc.id);
        this.logger.info({ dc: dc.id, name: dc.name, pids, killed }, 'dc removed');
        this.events.emit('dc.removed', `dc ${dc.name}`, { dc: dc.id, killed });
        return { killed } satisfies AdminMethods['dc.remove']['result'];
      }
      case 'dc.addNode':
      case 'dc.rmNode': {
        if (!this.cluster) {
          throw dvsError('EINVAL', `${method} needs a cluster store (start the nodes with --store)`);
        }
        const node = numberParam(p.node, 'node', 0, 65535);
        const ref = dcRef(p.dc);
        const cfg =
          method === 'dc.addNode'
            ? await this.cluster.registry.addNode(ref, node, { signal })
            : await this.cluster.registry.rmNode(ref, node, { signal });
        this.logger.info({ dc: cfg.id, name: cfg.name, nodes: cfg.nodes }, `${method} written to the store`);
        return cfg;
      }
      case 'dc.list':
        return this.kernel.listDcs();
      case 'proc.run':
        if (p.replicas !== undefined || p.mode !== undefined) {
          return this.replication.run({ ...p, ep: endpointParam(p.ep), replicas: p.replicas ?? 1 }, signal);
        }
        return this.run(p);
      case 'proc.killGroup': {
        const dc = this.dc(dcRef(p.dc));
        const signalName = p.signal === undefined ? 'SIGTERM' : String(p.signal);
        const graceMs = p.graceMs === undefined ? 3000 : numberParam(p.graceMs, 'graceMs', 0, 600_000);
        return this.replication.end(dc.id, endpointParam(p.ep), { signal: signalName, graceMs }, signal);
      }
      case 'proc.kill': {
        const dc = this.dc(dcRef(p.dc));
        const ep = endpointParam(p.ep);
        const signalName = p.signal === undefined ? 'SIGTERM' : String(p.signal);
        const graceMs = p.graceMs === undefined ? 3000 : numberParam(p.graceMs, 'graceMs', 0, 600_000);
        if (!this.processes.get(dc.id, ep) || this.processes.get(dc.id, ep)?.exit !== null) {
          // Not started by dvs run here (or gone): an operator may still unbind a self-bound endpoint.
          const row = this.kernel.endpoints(dc.id).find((e) => e.ep === ep && e.node === this.nodeId);
          if (row && row.kind !== 'remote') {
            this.kernel.unbind(Date.now(), dc.id, ep);
            // With containers, a self-bound process reports its pid inside one: not a host pid to signal.
            if (row.pid > 0 && !this.isolation.enabled) {
              try {
                process.kill(row.pid, signalName as NodeJS.Signals);
              } catch {
                // already gone
              }
            }
          }
          const info = this.processes.get(dc.id, ep);
          if (info) return info;
          throw dvsError('ENOENT', `no process at endpoint ${ep} of DC '${dc.name}' on node ${this.nodeId}`);
        }
        const killed = await this.processes.kill(dc.id, ep, signalName, graceMs);
        this.events.emit('proc.killed', `${dc.name}/${ep}`, {
          dc: dc.id,
          ep,
          pid: killed.pid,
          signal: signalName,
        });
        return killed;
      }
      case 'proc.list':
        return this.processes.list(p.dc === undefined ? undefined : this.dc(dcRef(p.dc)).id);
      case 'proc.wait': {
        const dc = this.dc(dcRef(p.dc));
        const timeoutMs =
          p.timeoutMs === undefined ? undefined : numberParam(p.timeoutMs, 'timeoutMs', 0, 2 ** 31);
        return this.processes.wait(dc.id, endpointParam(p.ep), { timeoutMs, signal });
      }
      case 'logs.read': {
        const dc = this.dc(dcRef(p.dc));
        const offset = numberParam(p.offset ?? 0, 'offset', 0, Number.MAX_SAFE_INTEGER);
        const max = p.max === undefined ? undefined : numberParam(p.max, 'max', 1, 1 << 20);
        return this.processes.readLog(dc.id, endpointParam(p.ep), offset, max);
      }
      case 'ep.list': {
        const dc = this.dc(dcRef(p.dc)).id;
        return this.replication.decorate(dc, this.kernel.endpoints(dc));
      }
      case 'events.list': {
        const since =
          p.since === undefined ? undefined : numberParam(p.since, 'since', 0, Number.MAX_SAFE_INTEGER);
        const limit = p.limit === undefined ? undefined : numberParam(p.limit, 'limit', 1, 1000);
        return {
          events: this.events.list({
            ...(since !== undefined ? { since } : {}),
            ...(limit !== undefined ? { limit } : {}),
          }),
          last: this.events.last,
        } satisfies AdminMethods['events.list']['result'];
      }
      case 'proc.migrate': {
        const dc = this.dc(dcRef(p.dc));
        const ep = endpointParam(p.ep);
        const to = p.to;
        if (typeof to !== 'number' || !Number.isInteger(to) || to < 0) {
          throw dvsError('EINVAL', `proc.migrate: bad destination node ${String(to)}`);
        }
        const row = this.kernel.endpoints(dc.id).find((e) => e.ep === ep);
        if (row === undefined) throw dvsError('ENOTBOUND', `endpoint ${ep} of DC '${dc.name}' is not bound`);
        if (row.node !== this.nodeId) {
          // The node where it lives drives the migration.
          return this.nodeRpc.call(
            row.node,
            'admin',
            { method: 'proc.migrate', params: { dc: dc.id, ep, to } },
            { signal, timeout: 30_000 },
          );
        }
        // Not while a snapshot or restore of the DC runs here (and a snapshot waits for none to be moving).
        return this.snapshots.duringMigration(dc.id, () => this.migrations.migrate(dc.id, ep, to, signal));
      }
      case 'node.call': {
        // An admin call run by another node (the CLI or the API asking about, or acting on, that node).
        const node = p.node;
        if (typeof node !== 'number' || !Number.isInteger(node) || node < 0) {
          throw dvsError('EINVAL', `node.call: bad node ${String(node)}`);
        }
        if (typeof p.method !== 'string' || p.method === 'node.call') {
          throw dvsError('EINVAL', 'node.call: missing or bad method');
        }
        if (node === this.nodeId) return this.admin(p.method, p.params ?? {}, ctx);
        const timeout = typeof p.timeoutMs === 'number' ? p.timeoutMs : undefined;
        return this.nodeRpc.call(
          node,
          'admin',
          { method: p.method, params: p.params ?? {} },
          { signal, timeout },
        );
      }
      case 'dc.isolation':
        return this.isolation.info(this.dc(dcRef(p.dc)).id);
      case 'dc.set': {
        if (typeof p.limits !== 'object' || p.limits === null)
          throw dvsError('EINVAL', 'limits must be an object');
        const dc = this.dc(dcRef(p.dc));
        // With a store the limits are kept there (every node applies them from its watch); applied here now.
        if (this.cluster) await this.isolation.storeSetLimits(dc.name, p.limits as DcLimitsText);
        const info = await this.isolation.setLimits(dc.id, p.limits as DcLimitsText);
        this.events.emit('dc.limits', `dc ${dc.name}`, { dc: dc.id, limits: info.limits });
        return info;
      }
      case 'dc.stats':
        return this.isolation.stats(this.dc(dcRef(p.dc)).id);
      case 'dc.pause':
      case 'dc.resume': {
        const dc = this.dc(dcRef(p.dc));
        if (method === 'dc.pause') await this.isolation.pause(dc.id, signal);
        else await this.isolation.resume(dc.id, signal);
        this.events.emit(method === 'dc.pause' ? 'dc.paused' : 'dc.resumed', `dc ${dc.name}`, { dc: dc.id });
        return { ok: true };
      }
      case 'dc.lanPeers': {
        if (!Array.isArray(p.members)) throw dvsError('EINVAL', 'members must be a list');
        await this.isolation.setLanPeers(this.dc(dcRef(p.dc)).id, p.members.map(lanMemberParam));
        return { ok: true };
      }
      case 'proc.exec': {
        const dc = this.dc(dcRef(p.dc));
        if (!Array.isArray(p.cmd) || p.cmd.length === 0 || !p.cmd.every((a) => typeof a === 'string')) {
          throw dvsError('EINVAL', 'cmd must be a non-empty list of strings');
        }
        const env: Record<string, string> = {};
        if (typeof p.env === 'object' && p.env !== null)
          for (const [k, v] of Object.entries(p.env)) env[k] = String(v);
        return this.isolation.exec(dc.id, p.cmd as string[], {
          env: { ...env, DVS_DC: dc.name, DVS_NODE: String(this.nodeId) },
          ...(typeof p.cwd === 'string' ? { cwd: p.cwd } : {}),
          ...(typeof p.input === 'string' ? { input: p.input } : {}),
          timeoutMs: p.timeoutMs === undefined ? 30_000 : numberParam(p.timeoutMs, 'timeoutMs', 1, 3_600_000),
          signal,
        });
      }
      case 'node.shutdown':
        // Answer first, then stop: the CLI waits for the pid to exit.
        setImmediate(() => void this.stop());
        return { ok: true };
      default:
        throw dvsError('EINVAL', `unknown admin method '${String(method)}'`);
    }
  }

  /** A call from another node's daemon (src/node/node-rpc.ts). */
  private async nodeCall(
    method: string,
    params: unknown,
    from: NodeId,
    signal: AbortSignal,
  ): Promise<unknown> {
    if (method === 'admin') {
      const o = (params ?? {}) as { method?: unknown; params?: unknown };
      if (typeof o.method !== 'string') throw dvsError('EINVAL', 'forwarded admin call without a method');
      if (o.method === 'node.call' || o.method === 'node.shutdown') {
        throw dvsError('EPERM', `${o.method} cannot be forwarded from another node`);
      }
      this.logger.debug({ peer: from, method: o.method }, 'admin call forwarded by a peer');
      return this.admin(o.method, o.params ?? {}, {
        signal,
        caller: undefined,
        push: () => false,
        onClose: () => undefined,
      });
    }
    const h = this.nodeMethods.get(method);
    if (h === undefined) throw dvsError('EINVAL', `unknown node method '${method}'`);
    return h(method, params, from, signal);
  }

  /** dc.create with a store: write the registry (any node answers), then wait briefly for our own watch. */
  private async storeDcCreate(config: unknown, iso?: DcIsolationSpec): Promise<DcConfig> {
    const o = { ...((config ?? {}) as Record<string, unknown>) };
    const allocate = o.id === undefined || o.id === 0;
    // Validated with a stand-in id when the store is to allocate one.
    const cfg = validateDcConfig({ ...o, id: allocate ? 1 : o.id });
    const { id: _id, ...rest } = cfg;
    // Limits and LAN go into the store before the DC, so no node ever applies the DC without them.
    const spec =
      iso && (iso.limits || iso.lan)
        ? { ...(iso.limits ? { limits: iso.limits } : {}), ...(iso.lan ? { lan: iso.lan.prefix } : {}) }
        : undefined;
    if (spec) await this.isolation.storeSpec(cfg.name, spec);
    let created: DcConfig;
    try {
      created = await this.cluster!.registry.create(allocate ? rest : cfg);
    } catch (e) {
      if (spec) await this.isolation.dropSpec(cfg.name, 0).catch(() => {});
      throw e;
    }
    this.logger.info({ dc: created.id, name: created.name, nodes: created.nodes }, 'dc created in the store');
    this.events.emit('dc.created', `dc ${created.name}`, {
      dc: created.id,
      nodes: created.nodes,
      store: true,
    });
    if (created.nodes.includes(this.nodeId)) await this.cluster!.awaitLocalDc(created.id, true, 2000);
    return created;
  }

  /** Stop what dvs run started in a DC that this node no longer hosts (the kernel already unbound it). */
  private async stopDcProcesses(dc: DcId): Promise<number[]> {
    const killed: number[] = [];
    for (const info of this.processes.list(dc)) {
      if (info.exit === null) {
        await this.processes.kill(dc, info.ep, 'SIGTERM', 2000);
        killed.push(info.pid);
      }
    }
    if (this.isolation.has(dc)) await this.isolation.removeDc(dc);
    return killed;
  }

  /** What a process started on this node finds in its environment (the SDK's `connect()` reads it). */
  private processEnv(dcName: string, ep: Endpoint): Record<string, string> {
    return {
      DVS_SOCKET: this.opts.socket,
      DVS_DC: dcName,
      DVS_ENDPOINT: String(ep),
      DVS_NODE: String(this.nodeId),
    };
  }

  private async run(p: Record<string, unknown>): Promise<ProcessInfo> {
    const dc = this.dc(dcRef(p.dc));
    const ep = endpointParam(p.ep);
    if (!Array.isArray(p.cmd) || p.cmd.length === 0 || !p.cmd.every((a) => typeof a === 'string')) {
      throw dvsError('EINVAL', 'cmd must be a non-empty list of strings');
    }
    const name = p.name === undefined ? `ep${ep}` : stringParam(p.name, 'name', 64);
    const existing = this.kernel.endpoints(dc.id).find((e) => e.ep === ep);
    if (existing) {
      throw dvsError('EBOUND', `endpoint ${ep} of DC '${dc.name}' is already bound (node ${existing.node})`, {
        dc: dc.id,
        ep,
        node: existing.node,
      });
    }
    const env: Record<string, string> = {};
    if (p.env !== undefined) {
      if (typeof p.env !== 'object' || p.env === null) throw dvsError('EINVAL', 'env must be an object');
      for (const [k, v] of Object.entries(p.env)) env[k] = String(v);
    }
    Object.assign(env, this.processEnv(dc.name, ep));
    const info = await this.processes.spawn({
      dc: dc.id,
      dcName: dc.name,
      ep,
      name,
      cmd: p.cmd as string[],
      env,
      ...(typeof p.cwd === 'string' ? { cwd: p.cwd } : {}),
    });
    // The child may bind before the reservation; from a container, with the pid it sees there.
    const ours = (pid: number | undefined) => pid === info.pid || pid === info.containerPid;
    try {
      this.kernel.reserve(Date.now(), dc.id, ep, info.pid, name);
    } catch (e) {
      // The child may have connected and self-bound before we got here: that is the same binding.
      const row = this.kernel.endpoints(dc.id).find((r) => r.ep === ep && r.node === this.nodeId);
      if (!(e instanceof DvsError && e.code === 'EBOUND' && ours(row?.pid))) {
        await this.processes.kill(dc.id, ep, 'SIGKILL', 0).catch(() => {});
        throw e;
      }
    }
    // Exited before the reservation (its exit found nothing to unbind): do not leave the endpoint bound.
    if (this.processes.get(dc.id, ep)?.exit != null) {
      const row = this.kernel.endpoints(dc.id).find((r) => r.ep === ep && r.node === this.nodeId);
      if (ours(row?.pid)) this.kernel.unbind(Date.now(), dc.id, ep);
    }
    this.logger.info({ dc: dc.id, ep, pid: info.pid, cmd: info.cmd }, 'process started');
    this.events.emit('proc.started', `${dc.name}/${ep}`, {
      dc: dc.id,
      ep,
      pid: info.pid,
      name,
      cmd: info.cmd,
    });
    return info;
  }
}

function dcRef(v: unknown): DcId | string {
  if (typeof v === 'string' && v.length > 0) return /^\d+$/.test(v) ? Number(v) : v;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  throw dvsError('EINVAL', 'dc must be a DC name or id');
}

function endpointParam(v: unknown): number {
  return numberParam(v, 'ep', 0, MAX_ENDPOINT);
}

function numberParam(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw dvsError('EINVAL', `${what} must be an integer in ${min}..${max} (got ${JSON.stringify(v)})`);
  }
  return v;
}

/** `dc.create`'s optional isolation spec (limits as text, LAN prefix + this node's address). */
function isolationParam(v: unknown): DcIsolationSpec | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object') throw dvsError('EINVAL', 'isolation must be an object');
  const o = v as Record<string, unknown>;
  const out: DcIsolationSpec = {};
  if (o.limits !== undefined) {
    if (typeof o.limits !== 'object' || o.limits === null)
      throw dvsError('EINVAL', 'limits must be an object');
    out.limits = o.limits as DcLimitsText;
  }
  if (o.lan !== undefined) {
    const l = o.lan as Record<string, unknown>;
    if (typeof l?.prefix !== 'string' || (l.address !== undefined && typeof l.address !== 'string')) {
      throw dvsError('EINVAL', 'lan must be {prefix, address?}');
    }
    out.lan = { prefix: l.prefix, ...(typeof l.address === 'string' ? { address: l.address } : {}) };
  }
  return out;
}

function lanMemberParam(v: unknown): LanMember {
  const o = (v ?? {}) as Record<string, unknown>;
  if (typeof o.underlay !== 'string' || typeof o.mac !== 'string' || typeof o.address !== 'string') {
    throw dvsError('EINVAL', 'a LAN member is {node, underlay, mac, address}');
  }
  return {
    node: numberParam(o.node, 'node', 0, 65535),
    underlay: o.underlay,
    mac: o.mac,
    address: o.address,
  };
}

function stringParam(v: unknown, what: string, maxLen: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLen) {
    throw dvsError('EINVAL', `${what} must be a string of 1..${maxLen} characters`);
  }
  return v;
}
