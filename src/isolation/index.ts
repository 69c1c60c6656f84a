/**
 * The isolation facade the daemon uses: one {@link Isolation} per node, turning "DC 5 runs here with these
 * limits and this LAN address" into a container (namespaces), a cgroup and a DC LAN attachment, and
 * spawning the DC's processes inside. See docs/isolation.md.
 *
 * Modes ({@link Isolation.describe}):
 * - `container`: root, a cgroup hierarchy found (v1 or v2), `unshare`/`nsenter`/`ip` present. Every DC has
 *   a container per node; limits enforced; LAN if the node has an underlay configured.
 * - `off`: without root (development), or forced. Processes run as plain children of the daemon, with no
 *   namespaces and no limits; `describe().reason` says why. Limits and LANs are refused with ENOTSUP.
 *
 * Every object carries the node's name prefix, so after a crash the next daemon finds what its predecessor
 * left: {@link Isolation.list} shows it, {@link Isolation.adopt} takes the live containers back,
 * {@link Isolation.sweep} removes the rest.
 *
 * @example
 * const iso = new Isolation({ nodeId: 3, nodeName: 'n3', prefix: 'd3', logger, socketDir: '/var/lib/dvs/n3' });
 * await iso.start();
 * await iso.ensureDc({ dc: 5, name: 'web', limits: { memoryBytes: 256 * 2 ** 20, cpus: 0.5 } });
 * const p = await iso.spawn(5, { cmd: ['node', 'server.js'], env: { DVS_SOCKET: '/run/dvs/dvk.sock' } });
 * const exit = await p.exited; // { code, signal, oomKilled }
 * await iso.removeDc(5);
 */
import { type ChildProcess, spawn as spawnChild } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { DcId, NodeId } from '../kernel/types.js';
import type { IsolationStatus } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import {
  containerMac,
  dcNames,
  dcOfName,
  parseIpv4,
  parsePrefix,
  prefixContains,
  validateLanPrefix,
} from './addr.js';
import { type CgroupDriver, type CgroupStats, detectCgroups } from './cgroup.js';
import { CgroupV1Driver } from './cgroup-v1.js';
import { CgroupV2Driver } from './cgroup-v2.js';
import {
  type ContainerExit,
  type ContainerProcess,
  type ContainerSpawnRequest,
  DcContainer,
  deleteNetns,
  type ExecOptions,
  type ExecResult,
  execWith,
  listNetns,
} from './container.js';
import { DcLanManager, type LanPeers } from './lan.js';
import { type DcLimits, mergeLimits, type NodeCapacity, validateLimits } from './limits.js';
import type { RunOptions } from './run.js';

export * from './addr.js';
export * from './cgroup.js';
export { CgroupV1Driver } from './cgroup-v1.js';
export { CgroupV2Driver } from './cgroup-v2.js';
export * from './container.js';
export * from './lan.js';
export * from './limits.js';

/** Options of an {@link Isolation}. */
export interface IsolationOptions {
  nodeId: NodeId;
  /** Goes into container hostnames (`<dc name>-<node name>`). */
  nodeName: string;
  /** Per-node name prefix of every object (2-5 chars `[a-z0-9]`, e.g. `d3`; unique among nodes of a machine). */
  prefix: string;
  logger: Logger;
  /** Metrics `dvs_isolation_*` go here if given. */
  registry?: Registry;
  /** `off` forces isolation off; `auto` (default) uses containers when possible. */
  mode?: 'auto' | 'off';
  /** Which cgroup driver (default `auto`: {@link detectCgroups}). */
  cgroup?: 'auto' | 'v1' | 'v2';
  /** Directory under each cgroup hierarchy for this node's cgroups (default `dvs`). */
  cgroupParent?: string;
  /** Host directory with the node's DVK socket: bind-mounted at `/run/dvs` in every container. */
  socketDir?: string;
  /**
   * The directory bind-mounted at /run/dvs in DC `dc`'s container (default: `socketDir` for every DC). One
   * per DC lets the daemon serve each DC's processes on a socket that only binds in that DC.
   */
  socketDirFor?: (dc: number) => string;
  /** The node's underlay for DC LANs; absent = no LANs on this node. */
  lan?: { dev: string; localIp: string; port?: number };
  /** Network namespace playing "the node" (tests); default: the daemon's own. */
  nodeNetns?: string;
  /** What limits may not exceed (default: this machine's CPUs and memory). */
  capacity?: NodeCapacity;
}

/** A DC on this node, as the daemon asks for it. */
export interface DcSpec {
  dc: DcId;
  /** DC name (hostname of the container: `<name>-<node name>`). */
  name: string;
  limits?: DcLimits;
  /** The container's place on the DC LAN, if the DC has one. */
  lan?: {
    /** The DC's prefix, `172.31.5.0/24`. */
    prefix: string;
    /** This container's address in it (`nextFreeAddress`). */
    address: string;
    /** Default: {@link containerMac}(dc, nodeId). */
    mac?: string;
    peers?: LanPeers;
  };
}

/** What {@link Isolation.describe} reports: the node's isolation as the admin `status` shows it. */
export type IsolationInfo = IsolationStatus;

/** Usage against limits of one DC on this node. */
export interface DcStats {
  dc: DcId;
  limits: DcLimits;
  /** Undefined in `off` mode. */
  cgroup?: CgroupStats;
  /** Whether the container's pid 1 runs. */
  running: boolean;
}

/** Leftovers of ours, by DC (for {@link Isolation.sweep} and diagnostics). */
export interface FoundDc {
  dc: DcId;
  netns: boolean;
  cgroup: boolean;
  links: string[];
  /** pid 1 of a live container in the netns. */
  initPid?: number;
}

interface DcEntry {
  spec: DcSpec;
  limits: DcLimits;
  container?: DcContainer;
}

const REQUIRED_TOOLS = ['ip', 'unshare', 'nsenter', 'setsid', 'tc', 'bridge'];

/** Per-node isolation: containers, cgroups and DC LANs. Start with {@link start}; see the module doc. */
export class Isolation {
  private readonly opts: IsolationOptions;
  private readonly log: Logger;
  private readonly dcs = new Map<DcId, DcEntry>();
  private driver: CgroupDriver | undefined;
  private lanMgr: DcLanManager | undefined;
  private info: IsolationInfo;
  private readonly capacity: NodeCapacity;
  private readonly metrics:
    | { containers: Gauge; spawns: Counter; ooms: Counter<'dc'>; failures: Counter<'op'> }
    | undefined;

  constructor(opts: IsolationOptions) {
    dcNames(opts.prefix, 1); // validates the prefix early
    this.opts = opts;
    this.log = opts.logger.child({ component: 'isolation' });
    this.capacity = opts.capacity ?? { cpus: availableParallelism(), memoryBytes: totalmem() };
    this.info = { mode: 'off', reason: 'not started', cgroup: 'none', lan: false, prefix: opts.prefix };
    const reg = opts.registry;
    this.metrics = reg
      ? {
          containers: new Gauge({
            name: 'dvs_isolation_containers',
            help: 'DC containers on this node',
            registers: [reg],
          }),
          spawns: new Counter({
            name: 'dvs_isolation_spawns_total',
            help: 'Processes spawned in containers',
            registers: [reg],
          }),
          ooms: new Counter({
            name: 'dvs_isolation_oom_kills_total',
            help: 'Container processes killed by the OOM killer',
            labelNames: ['dc'],
            registers: [reg],
          }),
          failures: new Counter({
            name: 'dvs_isolation_failures_total',
            help: 'Failed isolation operations',
            labelNames: ['op'],
            registers: [reg],
          }),
        }
      : undefined;
  }

  /** Detects what this node can do and picks the mode. Never fails for lack of privileges: goes `off`. */
  async start(): Promise<void> {
    this.info = this.detect();
    this.log.info(this.info, `isolation ${this.info.mode}: ${this.info.reason}`);
  }

  /** Leaves containers running (a restarted daemon adopts them); forgets them here. */
  async stop(): Promise<void> {
    this.dcs.clear();
    this.metrics?.containers.set(0);
  }

  private detect(): IsolationInfo {
    const base = { prefix: this.opts.prefix, lan: false };
    if (this.opts.mode === 'off')
      return { ...base, mode: 'off', reason: 'isolation turned off', cgroup: 'none' };
    if (process.getuid?.() !== 0) {
      return {
        ...base,
        mode: 'off',
        reason: 'not root: processes run without namespaces or limits',
        cgroup: 'none',
      };
    }
    const missing = REQUIRED_TOOLS.filter((t) => !onPath(t));
    if (missing.length > 0) {
      return { ...base, mode: 'off', reason: `missing tools: ${missing.join(', ')}`, cgroup: 'none' };
    }
    const det = detectCgroups();
    const want = this.opts.cgroup ?? 'auto';
    const parent = this.opts.cgroupParent ?? 'dvs';
    try {
      if ((want === 'auto' && det.kind === 'v2') || want === 'v2') {
        if (!det.v2) throw dvsError('ENOTSUP', 'no cgroup2 mount');
        this.driver = new CgroupV2Driver({ mount: det.v2.path, parent });
      } else if ((want === 'auto' && det.kind === 'v1') || want === 'v1') {
        this.driver = new CgroupV1Driver({ mounts: det.v1, parent });
      } else {
        return { ...base, mode: 'off', reason: det.reason, cgroup: 'none' };
      }
    } catch (e) {
      return { ...base, mode: 'off', reason: `cgroups unusable: ${(e as Error).message}`, cgroup: 'none' };
    }
    if (this.opts.lan) {
      this.lanMgr = new DcLanManager({
        prefix: this.opts.prefix,
        underlay: { dev: this.opts.lan.dev, localIp: this.opts.lan.localIp },
        ...(this.opts.lan.port !== undefined ? { port: this.opts.lan.port } : {}),
        ...(this.opts.nodeNetns !== undefined ? { nodeNetns: this.opts.nodeNetns } : {}),
        logger: this.opts.logger,
      });
    }
    return {
      ...base,
      mode: 'container',
      reason: det.reason,
      cgroup: this.driver.kind,
      cgroupDetail: this.driver.describe(),
      lan: this.lanMgr !== undefined,
    };
  }

  /** `container` or `off`. */
  mode(): 'container' | 'off' {
    return this.info.mode;
  }

  /** Mode, reason, cgroup driver, LAN availability. */
  describe(): IsolationInfo {
    return { ...this.info, ...(this.driver ? { cgroupDetail: this.driver.describe() } : {}) };
  }

  /** The cgroup driver in use (undefined when off). */
  cgroupDriver(): CgroupDriver | undefined {
    return this.driver;
  }

  /**
   * Validates a DC spec without touching anything: limits against the node, the LAN prefix against the
   * node's networks and the LANs of the other DCs here, the address inside the prefix. Throws EINVAL, or
   * ENOTSUP for what this node cannot do (limits or LAN while off, io without a blkio/io controller).
   */
  async validate(spec: DcSpec, run: RunOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(spec.dc) || spec.dc < 1) throw dvsError('EINVAL', `bad DC id ${spec.dc}`);
    const limits = spec.limits ?? {};
    validateLimits(limits, this.capacity);
    const hasLimits = Object.values(limits).some((v) => v !== undefined && v !== null);
    if (this.info.mode === 'off' && (hasLimits || spec.lan)) {
      throw dvsError('ENOTSUP', `isolation is off on node ${this.opts.nodeName} (${this.info.reason})`);
    }
    for (const [kind, v] of [
      ['memory', limits.memoryBytes],
      ['cpu', limits.cpus],
      ['pids', limits.pids],
      ['io', limits.ioBps],
    ] as const) {
      if (v != null && this.driver && !this.driver.supports(kind)) {
        throw dvsError('ENOTSUP', `${kind} limits are not available here (${this.driver.describe()})`);
      }
    }
    if (limits.netBps != null && !spec.lan) throw dvsError('EINVAL', 'net-bps needs a DC LAN');
    if (spec.lan) {
      if (!this.lanMgr) throw dvsError('ENOTSUP', `node ${this.opts.nodeName} has no underlay for DC LANs`);
      const others: Record<string, string> = {};
      for (const [dc, e] of this.dcs)
        if (dc !== spec.dc && e.spec.lan) others[e.spec.name] = e.spec.lan.prefix;
      const p = validateLanPrefix(spec.lan.prefix, others, await this.lanMgr.hostPrefixes(run));
      const addr = parseIpv4(spec.lan.address);
      const size = 2 ** (32 - p.length);
      if (!prefixContains(p, addr) || addr === p.network || addr === p.network + size - 1) {
        throw dvsError('EINVAL', `address ${spec.lan.address} is not a host address of ${spec.lan.prefix}`);
      }
    }
  }

  /**
   * Makes sure DC `spec.dc` has its container here, with the limits and LAN of `spec` (idempotent: a second
   * call applies changed limits and peers). Everything is validated first; on a failure half-way what was
   * created is removed again.
   */
  async ensureDc(spec: DcSpec, run: RunOptions = {}): Promise<void> {
    await this.validate(spec, run);
    const existing = this.dcs.get(spec.dc);
    if (this.info.mode === 'off') {
      this.dcs.set(spec.dc, { spec, limits: {} });
      return;
    }
    const driver = this.need();
    const names = dcNames(this.opts.prefix, spec.dc);
    if (existing?.container?.alive()) {
      if (spec.limits) await this.setLimits(spec.dc, spec.limits, run);
      if (spec.lan?.peers) await this.setLanPeers(spec.dc, spec.lan.peers, run);
      existing.spec = spec;
      return;
    }
    const entry: DcEntry = { spec, limits: spec.limits ?? {} };
    try {
      await driver.create(names.cgroup);
      await driver.setLimits(names.cgroup, withoutNet(entry.limits));
      entry.container = await DcContainer.create(
        {
          netns: names.netns,
          hostname: `${spec.name}-${this.opts.nodeName}`,
          ...this.socketDirOf(spec.dc),
          cgroup: { driver, name: names.cgroup },
          logger: this.opts.logger,
        },
        run,
      );
      if (spec.lan && this.lanMgr) {
        const p = parsePrefix(spec.lan.prefix);
        await this.lanMgr.ensureDc(spec.dc, run);
        await this.lanMgr.attach(
          spec.dc,
          {
            netns: names.netns,
            address: spec.lan.address,
            prefixLength: p.length,
            mac: spec.lan.mac ?? containerMac(spec.dc, this.opts.nodeId),
            netBps: entry.limits.netBps ?? null,
          },
          run,
        );
        if (spec.lan.peers) await this.lanMgr.setPeers(spec.dc, spec.lan.peers, run);
      }
      this.dcs.set(spec.dc, entry);
      this.metrics?.containers.set(this.dcs.size);
      this.log.info(
        { dc: spec.dc, name: spec.name, limits: entry.limits, lan: spec.lan?.address },
        'DC ready',
      );
    } catch (e) {
      this.metrics?.failures.inc({ op: 'ensureDc' });
      await this.removeObjects(spec.dc, run).catch((err: unknown) =>
        this.log.error({ err, dc: spec.dc }, 'cleanup after a failed ensureDc failed'),
      );
      throw e;
    }
  }

  /** Changes limits (absent fields unchanged, `null` removes). Validated first. */
  async setLimits(dc: DcId, update: DcLimits, run: RunOptions = {}): Promise<DcLimits> {
    const e = this.entry(dc);
    const limits = mergeLimits(e.limits, update);
    await this.validate({ ...e.spec, limits }, run);
    if (this.info.mode === 'container') {
      const names = dcNames(this.opts.prefix, dc);
      await this.need().setLimits(names.cgroup, withoutNet(update));
      if (update.netBps !== undefined && this.lanMgr && e.spec.lan) {
        await this.lanMgr.setRate(dc, update.netBps, run);
      }
    }
    e.limits = limits;
    e.spec = { ...e.spec, limits };
    return { ...limits };
  }

  /** Replaces the DC LAN's forwarding entries on this node (from the cluster store). */
  async setLanPeers(dc: DcId, peers: LanPeers, run: RunOptions = {}): Promise<void> {
    const e = this.entry(dc);
    if (!this.lanMgr || !e.spec.lan) throw dvsError('ENOTSUP', `DC ${dc} has no LAN on this node`);
    await this.lanMgr.setPeers(dc, peers, run);
    e.spec = { ...e.spec, lan: { ...e.spec.lan, peers } };
  }

  /**
   * Spawns a process in the DC's container (or, when off, as a plain detached child). `req.env` is the
   * complete environment; inside a container the DVK socket directory is at `/run/dvs` (CONTAINER_SOCKET_DIR).
   */
  async spawn(dc: DcId, req: ContainerSpawnRequest): Promise<ContainerProcess> {
    const e = this.entry(dc);
    const p =
      this.info.mode === 'off'
        ? await spawnPlain(req)
        : await (e.container ?? this.gone(dc)).spawn(req).catch((err: unknown) => {
            this.metrics?.failures.inc({ op: 'spawn' });
            throw err;
          });
    this.metrics?.spawns.inc();
    void p.exited.then((x) => {
      if (x.oomKilled) {
        this.metrics?.ooms.inc({ dc: String(dc) });
        this.log.warn({ dc, pid: p.pid }, 'process killed by the OOM killer at the DC memory limit');
      }
    });
    return p;
  }

  /** Runs a command in the DC's container and returns its output (see {@link DcContainer.exec}). */
  async exec(dc: DcId, cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const e = this.entry(dc);
    if (this.info.mode === 'off') return execPlain(cmd, opts);
    return (e.container ?? this.gone(dc)).exec(cmd, opts);
  }

  /** Usage against limits. */
  async stats(dc: DcId): Promise<DcStats> {
    const e = this.entry(dc);
    if (this.info.mode === 'off') return { dc, limits: { ...e.limits }, running: true };
    const cgroup = await this.need().stats(dcNames(this.opts.prefix, dc).cgroup);
    return { dc, limits: { ...e.limits }, cgroup, running: e.container?.alive() ?? false };
  }

  /** Freezes every process of the DC on this node (waits until frozen). ENOTSUP when off. */
  async pause(dc: DcId, opts: RunOptions = {}): Promise<void> {
    this.entry(dc);
    await this.need().freeze(dcNames(this.opts.prefix, dc).cgroup, opts);
  }

  async resume(dc: DcId, opts: RunOptions = {}): Promise<void> {
    this.entry(dc);
    await this.need().thaw(dcNames(this.opts.prefix, dc).cgroup, opts);
  }

  /**
   * Removes the DC from this node: every process killed (through the cgroup, so none escapes), the
   * container, its network namespace, LAN devices and cgroup deleted. No error if nothing is left.
   */
  async removeDc(dc: DcId, run: RunOptions = {}): Promise<void> {
    if (this.info.mode === 'container') await this.removeObjects(dc, run);
    this.dcs.delete(dc);
    this.metrics?.containers.set(this.dcs.size);
  }

  private async removeObjects(dc: DcId, run: RunOptions): Promise<void> {
    const names = dcNames(this.opts.prefix, dc);
    const driver = this.need();
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    await step(() => driver.kill(names.cgroup, run));
    await step(() => deleteNetns(names.netns, run));
    if (this.lanMgr) await step(() => (this.lanMgr as DcLanManager).removeDc(dc, run));
    await step(() => driver.remove(names.cgroup, run));
    if (errors.length > 0) {
      const first = errors[0];
      throw first instanceof DvsError
        ? first
        : new DvsError('EINTERNAL', `removing DC ${dc}: ${String(first)}`, undefined, { cause: first });
    }
    this.log.info({ dc }, 'DC removed from node');
  }

  /** Everything of ours on this node (network namespaces, cgroups, LAN devices), by DC. */
  async list(run: RunOptions = {}): Promise<FoundDc[]> {
    const found = new Map<DcId, FoundDc>();
    const get = (dc: DcId) => {
      let f = found.get(dc);
      if (!f) {
        f = { dc, netns: false, cgroup: false, links: [] };
        found.set(dc, f);
      }
      return f;
    };
    if (this.info.mode === 'off') return [];
    for (const ns of await listNetns(run)) {
      const dc = dcOfName(this.opts.prefix, 'c', ns);
      if (dc !== undefined) get(dc).netns = true;
    }
    for (const cg of await this.need().list()) {
      const dc = dcOfName(this.opts.prefix, 'c', cg);
      if (dc !== undefined) get(dc).cgroup = true;
    }
    if (this.lanMgr) for (const o of await this.lanMgr.list(run)) get(o.dc).links.push(o.name);
    for (const f of found.values()) {
      if (!f.netns) continue;
      const c = await DcContainer.adopt(this.containerOpts(f.dc, ''), run);
      if (c) f.initPid = c.initPid;
    }
    return [...found.values()].sort((a, b) => a.dc - b.dc);
  }

  /**
   * Takes back the live containers a previous daemon left (netns with a running pid 1 and a cgroup):
   * `specs` says which DCs the cluster store still places here (name, limits, LAN), so limits are
   * re-applied and the LAN re-attached. Returns the adopted DC ids; the rest is for {@link sweep}.
   */
  async adopt(specs: readonly DcSpec[], run: RunOptions = {}): Promise<DcId[]> {
    if (this.info.mode === 'off') return [];
    const bySpec = new Map(specs.map((s) => [s.dc, s]));
    const adopted: DcId[] = [];
    for (const f of await this.list(run)) {
      const spec = bySpec.get(f.dc);
      if (!spec) continue;
      const c =
        f.cgroup && f.initPid !== undefined
          ? await DcContainer.adopt(this.containerOpts(f.dc, `${spec.name}-${this.opts.nodeName}`), run)
          : undefined;
      if (!c) {
        // Half a container: the caller starts a clean one. Say what was missing, for the operator.
        this.log.warn(
          { dc: f.dc, netns: f.netns, cgroup: f.cgroup, initPid: f.initPid ?? null, links: f.links },
          'the container left here is not whole; it will be replaced',
        );
        continue;
      }
      try {
        await this.validate(spec, run);
        const names = dcNames(this.opts.prefix, f.dc);
        await this.need().setLimits(names.cgroup, withoutNet(spec.limits ?? {}));
        if (spec.lan && this.lanMgr) {
          await this.lanMgr.ensureDc(f.dc, run);
          await this.lanMgr.attach(
            f.dc,
            {
              netns: names.netns,
              address: spec.lan.address,
              prefixLength: parsePrefix(spec.lan.prefix).length,
              mac: spec.lan.mac ?? containerMac(f.dc, this.opts.nodeId),
              netBps: spec.limits?.netBps ?? null,
            },
            run,
          );
          if (spec.lan.peers) await this.lanMgr.setPeers(f.dc, spec.lan.peers, run);
        }
        this.dcs.set(f.dc, { spec, limits: spec.limits ?? {}, container: c });
        adopted.push(f.dc);
      } catch (e) {
        this.dcs.delete(f.dc);
        this.log.warn({ err: e, dc: f.dc }, 'could not adopt container; sweep will remove it');
      }
    }
    this.metrics?.containers.set(this.dcs.size);
    return adopted;
  }

  /**
   * Removes every object of ours on this node that is not a DC this daemon holds (after {@link adopt}) or
   * listed in `keep`. Returns the DC ids removed.
   */
  async sweep(keep: readonly DcId[] = [], run: RunOptions = {}): Promise<DcId[]> {
    const removed: DcId[] = [];
    for (const f of await this.list(run)) {
      if (this.dcs.has(f.dc) || keep.includes(f.dc)) continue;
      await this.removeObjects(f.dc, run);
      removed.push(f.dc);
    }
    return removed;
  }

  /** DCs this daemon holds. */
  dcIds(): DcId[] {
    return [...this.dcs.keys()];
  }

  /** The /run/dvs source of DC `dc`'s container, as an option of DcContainer. */
  private socketDirOf(dc: DcId): { socketDir?: string } {
    const dir = this.opts.socketDirFor?.(dc) ?? this.opts.socketDir;
    return dir === undefined ? {} : { socketDir: dir };
  }

  private containerOpts(dc: DcId, hostname: string) {
    return {
      netns: dcNames(this.opts.prefix, dc).netns,
      hostname,
      ...this.socketDirOf(dc),
      cgroup: { driver: this.need(), name: dcNames(this.opts.prefix, dc).cgroup },
      logger: this.opts.logger,
    };
  }

  private entry(dc: DcId): DcEntry {
    const e = this.dcs.get(dc);
    if (!e) throw dvsError('ENOENT', `DC ${dc} has no container on node ${this.opts.nodeName}`, { dc });
    return e;
  }

  private need(): CgroupDriver {
    if (!this.driver)
      throw dvsError('ENOTSUP', `isolation is off on node ${this.opts.nodeName} (${this.info.reason})`);
    return this.driver;
  }

  private gone(dc: DcId): never {
    throw dvsError('ENOENT', `the container of DC ${dc} is not running`, { dc });
  }
}

/** `netBps` is tc's business, not the cgroup's. */
function withoutNet(l: DcLimits): DcLimits {
  const { netBps: _, ...rest } = l;
  return rest;
}

function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    try {
      accessSync(join(dir, tool), fsConstants.X_OK);
      return true;
    } catch {
      // Not here.
    }
  }
  return false;
}

/** Isolation off: a plain detached child with the same handle as a container process. */
async function spawnPlain(req: ContainerSpawnRequest): Promise<ContainerProcess> {
  const [file, ...args] = req.cmd;
  if (file === undefined || file === '') throw dvsError('EINVAL', 'empty command');
  const child: ChildProcess = spawnChild(file, args, {
    env: req.env ?? {},
    stdio: req.stdio ?? 'ignore',
    detached: true,
    ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
    ...(req.signal ? { signal: req.signal, killSignal: 'SIGKILL' as const } : {}),
  });
  let status: ContainerExit | undefined;
  const exited = new Promise<ContainerExit>((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal, oomKilled: false };
      resolve(status);
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) => {
      const code = (e as NodeJS.ErrnoException).code;
      reject(
        new DvsError(
          code === 'ENOENT' ? 'ENOENT' : 'EINVAL',
          `cannot spawn ${file}: ${e.message}`,
          undefined,
          { cause: e },
        ),
      );
    });
  });
  const pid = child.pid ?? 0;
  return {
    pid,
    child,
    exited,
    innerPid: () => pid,
    kill: (signal: NodeJS.Signals = 'SIGTERM') => {
      if (status) return false;
      try {
        process.kill(-pid, signal);
        return true;
      } catch {
        return false;
      }
    },
  };
}

function execPlain(cmd: string[], opts: ExecOptions): Promise<ExecResult> {
  return execWith(spawnPlain, cmd, opts, { path: '/usr/bin:/bin', what: 'exec' });
}
