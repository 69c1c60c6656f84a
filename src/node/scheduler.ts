/**
 * Distributed scheduling (docs/scheduling.md): each daemon samples its load ({@link LoadMonitor}, reported in
 * `status.load`), and two pure, deterministic policies turn the loads of a DC's nodes into decisions:
 *
 * - {@link rankNodes}: where `dvs run` without `--node` places a process: the node with the most headroom.
 * - {@link planBalance}: which processes `dvs balance` migrates so that the DC's nodes carry even loads.
 *
 * Both take plain data and return plain data (no clock, no I/O), so they are unit-tested exhaustively and a
 * decision can be replayed from the loads it was made on (`dvs balance --json` prints them).
 *
 * Shared hosts. Several daemons may run on one machine (a test cluster, network namespaces): their host-wide
 * figures (CPU busy, memory available) describe the same resources, sampled at slightly different instants.
 * The policies group nodes by `load.host` and give every node of a host the same host figures (the most
 * pessimistic sample), so that sampling noise between them never decides; what differs between such nodes is
 * what each daemon itself runs (its processes' CPU and their count), and that decides.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { DcId, Endpoint, NodeId } from '../kernel/types.js';
import type { NodeLoad, ProcLoad } from '../protocol/admin.js';
import { dvsError } from '../protocol/errors.js';

// ------------------------------------------------------------------------------------------- policies

/** A node the placement may choose. */
export interface Candidate {
  node: NodeId;
  /** The node answered and its links are up as far as the caller knows. */
  up: boolean;
  /** Its `status.load`; undefined if it did not report one (then it is not chosen). */
  load: NodeLoad | undefined;
}

/** One row of a placement ranking, best first. */
export interface Ranked {
  node: NodeId;
  host: string;
  /** Fraction (0..1) of the host's bottleneck resource (CPU or memory) still free, in steps of 5%. */
  headroom: number;
  /** CPU used by the node's processes, cores, in steps of 0.1. */
  procCpu: number;
  /** Processes the node runs. */
  processes: number;
}

/** Options of {@link rankNodes}. */
export interface RankOptions {
  /** Leave out nodes whose host has less memory available than this, bytes. */
  minMemBytes?: number;
}

/** Steps that absorb sampling noise: decisions do not flip on a few percent. */
const HEADROOM_STEP = 0.05;
const CPU_STEP = 0.1;

/**
 * Rank `candidates` for a new process, best first: most host headroom (the scarcer of free CPU and free
 * memory, as a fraction of the host), then least CPU used by the node's own processes, then fewest
 * processes, then lowest node id. Nodes down or without a load report are left out; EUNAVAIL if none is left.
 */
export function rankNodes(candidates: readonly Candidate[], opts: RankOptions = {}): Ranked[] {
  const live = candidates.filter((c): c is Candidate & { load: NodeLoad } => c.up && c.load !== undefined);
  const hosts = hostFigures(live.map((c) => c.load));
  const rows: Ranked[] = [];
  for (const c of live) {
    const h = hosts.get(c.load.host)!;
    if (opts.minMemBytes !== undefined && h.memAvailable < opts.minMemBytes) continue;
    rows.push({
      node: c.node,
      host: c.load.host,
      headroom: quantize(Math.min(h.cpuFree, h.memFree), HEADROOM_STEP),
      procCpu: quantize(sumCpu(c.load.procs), CPU_STEP),
      processes: c.load.procs.length,
    });
  }
  if (rows.length === 0) {
    throw dvsError('EUNAVAIL', 'no node of the DC can take a process (none up with a load report and room)');
  }
  return rows.sort(
    (a, b) =>
      b.headroom - a.headroom || a.procCpu - b.procCpu || a.processes - b.processes || a.node - b.node,
  );
}

/** A process that {@link planBalance} may move. */
export interface Movable {
  ep: Endpoint;
  node: NodeId;
  /** CPU, cores (from the node's load report). */
  cpu: number;
  rssBytes: number;
}

/** Input of {@link planBalance}. */
export interface BalanceInput {
  dc: DcId;
  /** The DC's nodes. */
  nodes: readonly Candidate[];
  /** The DC's processes that can migrate (started by dvs run, running), on nodes of `nodes`. */
  movable: readonly Movable[];
  /** At most this many moves (default 8). */
  maxMoves?: number;
  /** A move must cut the gap between the two nodes by at least this much, cores (default IDLE_WEIGHT). */
  minGain?: number;
}

/** One migration {@link planBalance} proposes. */
export interface Move {
  dc: DcId;
  ep: Endpoint;
  from: NodeId;
  to: NodeId;
  /** The load it moves, cores (its CPU plus the idle weight). */
  weight: number;
}

/** What a plan does to the nodes' loads (cores). */
export interface BalancePlan {
  moves: Move[];
  before: Record<string, number>;
  after: Record<string, number>;
}

/**
 * A process counts at least this many cores, so that idle processes are spread too (by count) and a move
 * of an idle process is never free.
 */
export const IDLE_WEIGHT = 0.05;

/**
 * Moves that even out the DC nodes' loads. A node's load is the weight of every process it runs (any DC),
 * plus, when it is alone on its host, the host's CPU busy with other work (another host's background load
 * is real; on a shared host it is common to all its nodes and cannot be balanced away). Greedy: repeatedly
 * take the most and the least loaded nodes, and move from the first to the second the DC process whose
 * weight is closest to half their gap (it must be smaller than the gap, so every move narrows it), while a
 * move gains at least `minGain`. Ties go to the lower node id, then the lower endpoint: deterministic.
 */
export function planBalance(input: BalanceInput): BalancePlan {
  const maxMoves = input.maxMoves ?? 8;
  const minGain = input.minGain ?? IDLE_WEIGHT;
  const live = input.nodes.filter((c): c is Candidate & { load: NodeLoad } => c.up && c.load !== undefined);
  const hostCount = new Map<string, number>();
  for (const c of live) hostCount.set(c.load.host, (hostCount.get(c.load.host) ?? 0) + 1);
  const load = new Map<NodeId, number>();
  for (const c of live) {
    const own = c.load.procs.reduce((s, p) => s + weight(p.cpu), 0);
    const background =
      hostCount.get(c.load.host) === 1
        ? Math.max(0, c.load.cpuBusy * c.load.cpus - sumCpu(c.load.procs) - c.load.daemonCpu)
        : 0;
    load.set(c.node, own + background);
  }
  const before = Object.fromEntries([...load].map(([n, l]) => [String(n), round(l)]));
  const moved = new Set<Endpoint>();
  const moves: Move[] = [];
  const nodes = [...load.keys()].sort((a, b) => a - b);
  while (moves.length < maxMoves && nodes.length >= 2) {
    let hi = nodes[0]!;
    let lo = nodes[0]!;
    for (const n of nodes) {
      if (load.get(n)! > load.get(hi)!) hi = n;
      if (load.get(n)! < load.get(lo)!) lo = n;
    }
    const gap = load.get(hi)! - load.get(lo)!;
    let best: Movable | undefined;
    let bestGain = 0;
    for (const m of [...input.movable].sort((a, b) => a.ep - b.ep)) {
      if (m.node !== hi || moved.has(m.ep)) continue;
      const w = weight(m.cpu);
      if (w >= gap) continue;
      // The gap after the move is |gap - 2w|; the gain is what it shrinks by.
      const gain = gap - Math.abs(gap - 2 * w);
      if (gain > bestGain + 1e-9) {
        best = m;
        bestGain = gain;
      }
    }
    if (best === undefined || bestGain < minGain) break;
    const w = weight(best.cpu);
    moves.push({ dc: input.dc, ep: best.ep, from: hi, to: lo, weight: round(w) });
    moved.add(best.ep);
    load.set(hi, load.get(hi)! - w);
    load.set(lo, load.get(lo)! + w);
  }
  const after = Object.fromEntries([...load].map(([n, l]) => [String(n), round(l)]));
  return { moves, before, after };
}

/**
 * A process's weight in the balance: its CPU (cores) in CPU_STEP steps, as placement compares nodes, plus a
 * floor for an idle process. The steps keep sampling noise (an idle process measured at 0.00 or 0.04 core)
 * from deciding which node looks busier; a process that really works outweighs idle ones by whole steps.
 */
function weight(cpu: number): number {
  return quantize(Math.max(0, cpu), CPU_STEP) + IDLE_WEIGHT;
}

function sumCpu(procs: readonly ProcLoad[]): number {
  return procs.reduce((s, p) => s + Math.max(0, p.cpu), 0);
}

function quantize(v: number, step: number): number {
  return round(Math.floor(v / step + 1e-9) * step);
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** Per host: the most pessimistic of its nodes' samples, as fractions free. */
function hostFigures(
  loads: readonly NodeLoad[],
): Map<string, { cpuFree: number; memFree: number; memAvailable: number }> {
  const out = new Map<string, { cpuFree: number; memFree: number; memAvailable: number }>();
  for (const l of loads) {
    const cpuFree = Math.max(0, 1 - l.cpuBusy);
    const memFree = l.memTotalBytes > 0 ? l.memAvailableBytes / l.memTotalBytes : 0;
    const h = out.get(l.host);
    if (h === undefined) out.set(l.host, { cpuFree, memFree, memAvailable: l.memAvailableBytes });
    else {
      h.cpuFree = Math.min(h.cpuFree, cpuFree);
      h.memFree = Math.min(h.memFree, memFree);
      h.memAvailable = Math.min(h.memAvailable, l.memAvailableBytes);
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------ load monitor

/** A process whose usage the monitor samples. */
export interface WatchedProcess {
  dc: DcId;
  ep: Endpoint;
  pid: number;
}

export interface LoadMonitorOptions {
  /** The running processes this node started. */
  processes: () => WatchedProcess[];
  logger: Logger;
  /** Sampling period, ms (default 1000). */
  intervalMs?: number;
  /** Adds dvs_node_cpu_busy_ratio, dvs_node_memory_available_bytes, dvs_proc_cpu_cores, ... */
  registry?: Registry;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux we run on). */
const USER_HZ = 100;

interface CpuTimes {
  busy: number;
  total: number;
}

/** Samples the host's and this node's processes' CPU and memory every interval. */
export class LoadMonitor {
  private readonly o: LoadMonitorOptions;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private host = os.hostname();
  private lastHost: CpuTimes | undefined;
  private lastAt = 0;
  private lastDaemon = process.cpuUsage();
  private readonly lastProc = new Map<number, number>();
  private current: NodeLoad;
  private sampling: Promise<void> | undefined;

  constructor(o: LoadMonitorOptions) {
    this.o = o;
    this.intervalMs = o.intervalMs ?? 1000;
    this.current = this.empty();
    if (o.registry) this.registerMetrics(o.registry);
  }

  async start(): Promise<void> {
    const id = await readFile('/etc/machine-id', 'utf8').catch(() => '');
    if (id.trim() !== '') this.host = id.trim();
    await this.sample();
    this.timer = setInterval(() => {
      this.sampling ??= this.sample()
        .catch((e: unknown) => this.o.logger.debug({ err: e }, 'load sample failed'))
        .finally(() => {
          this.sampling = undefined;
        });
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.sampling;
  }

  /**
   * The latest sample, with the process list as it is now: a process started since the sample counts at
   * once (with no usage yet), so two placements a moment apart do not both see the node as it was.
   */
  load(): NodeLoad {
    const sampled = new Map(this.current.procs.map((p) => [p.pid, p]));
    const procs = this.o.processes().map((p) => sampled.get(p.pid) ?? { ...p, cpu: 0, rssBytes: 0 });
    return { ...this.current, procs };
  }

  private empty(): NodeLoad {
    return {
      host: this.host,
      cpus: os.availableParallelism(),
      cpuBusy: 0,
      loadAvg1: os.loadavg()[0] ?? 0,
      memTotalBytes: os.totalmem(),
      memAvailableBytes: os.freemem(),
      daemonCpu: 0,
      daemonRssBytes: process.memoryUsage.rss(),
      procs: [],
      sampledAt: Date.now(),
      intervalMs: this.intervalMs,
    };
  }

  private async sample(): Promise<void> {
    const now = Date.now();
    const elapsedS = this.lastAt === 0 ? 0 : (now - this.lastAt) / 1000;
    const hostTimes = await readHostCpu();
    let cpuBusy = this.current.cpuBusy;
    if (hostTimes && this.lastHost) {
      const dt = hostTimes.total - this.lastHost.total;
      if (dt > 0) cpuBusy = Math.min(1, Math.max(0, (hostTimes.busy - this.lastHost.busy) / dt));
    }
    if (hostTimes) this.lastHost = hostTimes;
    const daemon = process.cpuUsage();
    const daemonCpu =
      elapsedS > 0
        ? (daemon.user + daemon.system - this.lastDaemon.user - this.lastDaemon.system) / 1e6 / elapsedS
        : 0;
    this.lastDaemon = daemon;
    const procs: ProcLoad[] = [];
    const seen = new Set<number>();
    for (const p of this.o.processes()) {
      const s = await readProc(p.pid);
      if (s === undefined) continue;
      seen.add(p.pid);
      const prev = this.lastProc.get(p.pid);
      this.lastProc.set(p.pid, s.ticks);
      const cpu = prev !== undefined && elapsedS > 0 ? (s.ticks - prev) / USER_HZ / elapsedS : 0;
      procs.push({ dc: p.dc, ep: p.ep, pid: p.pid, cpu: Math.max(0, round(cpu)), rssBytes: s.rssBytes });
    }
    for (const pid of this.lastProc.keys()) if (!seen.has(pid)) this.lastProc.delete(pid);
    const mem = await readMemInfo();
    this.current = {
      host: this.host,
      cpus: os.availableParallelism(),
      cpuBusy: round(cpuBusy),
      loadAvg1: os.loadavg()[0] ?? 0,
      memTotalBytes: mem?.total ?? os.totalmem(),
      memAvailableBytes: mem?.available ?? os.freemem(),
      daemonCpu: round(daemonCpu),
      daemonRssBytes: process.memoryUsage.rss(),
      procs,
      sampledAt: now,
      intervalMs: elapsedS > 0 ? Math.round(elapsedS * 1000) : this.intervalMs,
    };
    this.lastAt = now;
  }

  private registerMetrics(registry: Registry): void {
    const registers = [registry];
    const self = this;
    new Gauge({
      name: 'dvs_node_cpu_busy_ratio',
      help: "Fraction of the host's CPU time busy over the last sample",
      registers,
      collect() {
        this.set(self.current.cpuBusy);
      },
    });
    new Gauge({
      name: 'dvs_node_memory_available_bytes',
      help: 'Memory the host can still give to new work (MemAvailable)',
      registers,
      collect() {
        this.set(self.current.memAvailableBytes);
      },
    });
    new Gauge({
      name: 'dvs_node_daemon_cpu_cores',
      help: 'CPU used by the daemon itself over the last sample, cores',
      registers,
      collect() {
        this.set(self.current.daemonCpu);
      },
    });
    new Gauge({
      name: 'dvs_proc_cpu_cores',
      help: 'CPU used by a process this node started, over the last sample, cores',
      labelNames: ['dc', 'ep'],
      registers,
      collect() {
        this.reset();
        for (const p of self.current.procs) this.set({ dc: String(p.dc), ep: String(p.ep) }, p.cpu);
      },
    });
    new Gauge({
      name: 'dvs_proc_resident_bytes',
      help: 'Resident memory of a process this node started',
      labelNames: ['dc', 'ep'],
      registers,
      collect() {
        this.reset();
        for (const p of self.current.procs) this.set({ dc: String(p.dc), ep: String(p.ep) }, p.rssBytes);
      },
    });
  }
}

/** Busy and total jiffies of the host from /proc/stat (undefined where there is none). */
async function readHostCpu(): Promise<CpuTimes | undefined> {
  const text = await readFile('/proc/stat', 'utf8').catch(() => undefined);
  const line = text?.split('\n', 1)[0];
  if (line === undefined || !line.startsWith('cpu ')) return undefined;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest times are already in user/nice)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  const idleAll = idle + iowait;
  const total = user + nice + system + idleAll + irq + softirq + steal;
  return { busy: total - idleAll, total };
}

async function readMemInfo(): Promise<{ total: number; available: number } | undefined> {
  const text = await readFile('/proc/meminfo', 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const kb = (k: string) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kb('MemTotal');
  const available = kb('MemAvailable');
  return total === undefined || available === undefined ? undefined : { total, available };
}

/** CPU ticks (utime + stime) and resident bytes of `pid`, or undefined if it is gone. */
async function readProc(pid: number): Promise<{ ticks: number; rssBytes: number } | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // The command name (field 2) may contain spaces and parentheses: fields are counted after its last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(rest[11]) + Number(rest[12]);
  const rssPages = Number(rest[21]);
  if (!Number.isFinite(ticks)) return undefined;
  return { ticks, rssBytes: Number.isFinite(rssPages) ? rssPages * 4096 : 0 };
}
