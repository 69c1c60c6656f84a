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
import { validateDcConfig } from '../cluster/dc-config.js';
import { Kernel } from '../kernel/index.js';
import { type DcConfig, type DcId, type KernelIO, MAX_ENDPOINT, type NodeId } from '../kernel/types.js';
import type { AdminMethod, AdminMethods, NodeStatus, ProcessInfo } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { LinkManager } from '../proxy/links.js';
import { ClusterWiring } from './cluster.js';
import { type AdminContext, LocalServer } from './local-server.js';
import { createRegistry, MetricsServer } from './metrics.js';
import type { NodeOptions } from './options.js';
import { ProcessManager } from './processes.js';
import { ServiceRegistry } from './services.js';
import { parseStoreSpec } from './store-spec.js';

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
  /** DVK services offered to processes and the CLI beside the fixed admin methods (src/node/services.ts). */
  private readonly services = new ServiceRegistry();
  private readonly metrics: MetricsServer | undefined;
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

    // The kernel's sink: each effect goes to the component that owns that side of the world.
    const io: KernelIO = {
      complete: (proc, callId, result) => this.local.complete(proc, callId, result),
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

    this.processes = new ProcessManager({
      nodeId: opts.nodeId,
      dataDir: opts.dataDir,
      logger: this.logger,
      onExit: (info) => this.onProcessExit(info),
    });
    this.local = new LocalServer({
      path: opts.socket,
      kernel: this.kernel,
      logger: this.logger,
      admin: (method, params, ctx) => this.admin(method, params, ctx),
    });
    this.links = new LinkManager({
      nodeId: opts.nodeId,
      name: this.name,
      incarnation: this.incarnation,
      listen: opts.listen,
      peers: opts.peers.filter((p) => p.id !== opts.nodeId),
      heartbeatMs: opts.heartbeatMs ?? 500,
      deadAfterMs: opts.deadAfterMs ?? 3000,
      logger: this.logger,
      handlers: {
        frame: (node, frame) => {
          // Cluster store traffic rides the link but is not the kernel's business.
          if (frame.t === 'store') this.cluster?.onStoreFrame(node, frame);
          else this.kernel.fromNode(Date.now(), node, frame);
        },
        nodeUp: (node) => {
          this.logger.info({ peer: node }, 'node up');
          this.linksUp.add(node);
          this.kernel.nodeUp(Date.now(), node);
          this.cluster?.linkUp(node);
        },
        nodeDown: (node) => {
          this.logger.warn({ peer: node }, 'node down');
          this.linksUp.delete(node);
          this.kernel.nodeDown(Date.now(), node);
          this.cluster?.linkDown(node);
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
        ttlSeconds,
        takeoverWaitMs: opts.storeTakeoverWaitMs ?? ttlSeconds * 1000 + 1000,
        address: () => this.links.address,
      });
    }
    this.metrics = opts.metrics
      ? new MetricsServer(
          opts.metrics,
          createRegistry({
            nodeId: opts.nodeId,
            links: () => this.links.info(),
            dcs: () => this.kernel.listDcs().length,
            endpoints: () => this.countEndpoints(),
            messages: () => this.sumCounters(),
            processes: () => this.processes.list().filter((p) => p.exit === null).length,
            sessions: () => this.local.sessionCount,
          }),
        )
      : undefined;
  }

  async start(): Promise<void> {
    await mkdir(this.opts.dataDir, { recursive: true });
    await mkdir(dirname(this.opts.socket), { recursive: true });
    await this.processes.start();
    await this.local.start();
    await this.links.start();
    // After the links: a store hosted by another node is reached over them, and the registration carries
    // the bound link address.
    await this.cluster?.start();
    await this.metrics?.start();
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
      ['metrics', async () => this.metrics?.stop()],
      ['cluster store', async () => this.cluster?.stop()],
      ['processes', () => this.processes.stop()],
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
    const row = this.kernel.findDc(info.dc)
      ? this.kernel.endpoints(info.dc).find((e) => e.ep === info.ep && e.node === this.nodeId)
      : undefined;
    if (row && row.pid === info.pid) this.kernel.unbind(Date.now(), info.dc, info.ep);
  }

  /** The admin RPC (src/protocol/admin.ts). Each method validates its params: they come from a socket. */
  private async admin(name: string, params: unknown, ctx: AdminContext): Promise<unknown> {
    if (this.services.has(name)) return this.services.call(name, params, ctx);
    const method = name as AdminMethod;
    const signal = ctx.signal;
    const p = (params ?? {}) as Record<string, unknown>;
    switch (method) {
      case 'status':
        return this.status();
      case 'dc.create': {
        if (this.cluster) return this.storeDcCreate(p.config);
        const cfg = validateDcConfig(p.config);
        if (!cfg.nodes.includes(this.nodeId)) {
          throw dvsError('EINVAL', `DC '${cfg.name}' does not include node ${this.nodeId}`);
        }
        this.kernel.createDc(cfg);
        this.logger.info({ dc: cfg.id, name: cfg.name, nodes: cfg.nodes }, 'dc created');
        return cfg;
      }
      case 'dc.remove': {
        if (this.cluster) {
          const removed = await this.cluster.registry.remove(dcRef(p.dc), { signal });
          this.logger.info({ dc: removed.id, name: removed.name }, 'dc removed from the store');
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
        this.logger.info({ dc: dc.id, name: dc.name, pids, killed }, 'dc removed');
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
        return this.run(p);
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
            if (row.pid > 0) {
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
        return this.processes.kill(dc.id, ep, signalName, graceMs);
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
      case 'ep.list':
        return this.kernel.endpoints(this.dc(dcRef(p.dc)).id);
      case 'node.shutdown':
        // Answer first, then stop: the CLI waits for the pid to exit.
        setImmediate(() => void this.stop());
        return { ok: true };
      default:
        throw dvsError('EINVAL', `unknown admin method '${String(method)}'`);
    }
  }

  /** dc.create with a store: write the registry (any node answers), then wait briefly for our own watch. */
  private async storeDcCreate(config: unknown): Promise<DcConfig> {
    const o = { ...((config ?? {}) as Record<string, unknown>) };
    const allocate = o.id === undefined || o.id === 0;
    // Validated with a stand-in id when the store is to allocate one.
    const cfg = validateDcConfig({ ...o, id: allocate ? 1 : o.id });
    const { id: _id, ...rest } = cfg;
    const created = await this.cluster!.registry.create(allocate ? rest : cfg);
    this.logger.info({ dc: created.id, name: created.name, nodes: created.nodes }, 'dc created in the store');
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
    return killed;
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
    Object.assign(env, {
      DVS_SOCKET: this.opts.socket,
      DVS_DC: dc.name,
      DVS_ENDPOINT: String(ep),
      DVS_NODE: String(this.nodeId),
    });
    const info = await this.processes.spawn({
      dc: dc.id,
      dcName: dc.name,
      ep,
      name,
      cmd: p.cmd as string[],
      env,
      ...(typeof p.cwd === 'string' ? { cwd: p.cwd } : {}),
    });
    try {
      this.kernel.reserve(Date.now(), dc.id, ep, info.pid, name);
    } catch (e) {
      // The child may have connected and self-bound before we got here: that is the same binding.
      const row = this.kernel.endpoints(dc.id).find((r) => r.ep === ep && r.node === this.nodeId);
      if (!(e instanceof DvsError && e.code === 'EBOUND' && row?.pid === info.pid)) {
        await this.processes.kill(dc.id, ep, 'SIGKILL', 0).catch(() => {});
        throw e;
      }
    }
    this.logger.info({ dc: dc.id, ep, pid: info.pid, cmd: info.cmd }, 'process started');
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

function stringParam(v: unknown, what: string, maxLen: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLen) {
    throw dvsError('EINVAL', `${what} must be a string of 1..${maxLen} characters`);
  }
  return v;
}
