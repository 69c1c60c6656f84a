/**
 * The cgroup driver interface, its statistics, and detection of which driver this host needs.
 *
 * One DC on one node = one cgroup `<parent>/<name>` (the driver's `parent` holds all cgroups of this node,
 * e.g. `dvs`, and names carry the node prefix, see addr.ts). Two implementations, one contract (pinned by
 * the compliance suite in test/system/isolation-cgroup.test.ts):
 * - {@link CgroupV1Driver} for hosts with per-controller v1 hierarchies (Debian 12 machines here: memory,
 *   cpu, cpuacct, pids, freezer, blkio mounted separately under /sys/fs/cgroup);
 * - {@link CgroupV2Driver} for the unified hierarchy (cgroup2fs on /sys/fs/cgroup). In a hybrid setup it also
 *   works on `/sys/fs/cgroup/unified` without controllers: freeze, kill and tracking, but no limits.
 *
 * A driver only offers the limits its hierarchy has controllers for ({@link CgroupDriver.supports});
 * `setLimits` refuses the others with ENOTSUP rather than silently ignoring them.
 */
import { readFileSync, statfsSync } from 'node:fs';
import type { DcLimits } from './limits.js';

/** What a limit needs from the hierarchy. */
export type LimitKind = 'memory' | 'cpu' | 'pids' | 'io';

/** Usage against limits of one cgroup. Byte and time counters are cumulative since creation. */
export interface CgroupStats {
  memory?: {
    usageBytes: number;
    /** null = unlimited. */
    limitBytes: number | null;
    /** Peak usage, where the kernel tracks it (v1 always; v2 >= 5.19 `memory.peak`). */
    maxUsageBytes?: number;
    /** Processes killed by the OOM killer inside this cgroup. */
    oomKills: number;
  };
  cpu?: {
    /** CPU time used by all tasks, nanoseconds. */
    usageNs: number;
    /** Quota in CPUs (quota / period), null = unlimited. */
    limitCpus: number | null;
    nrThrottled: number;
    throttledNs: number;
  };
  pids?: {
    current: number;
    limit: number | null;
    /** Times a fork was refused at the limit (`pids.events` max). */
    refused: number;
  };
  io?: {
    readBytes: number;
    writeBytes: number;
  };
  /** Number of processes (thread group leaders) in the cgroup. */
  procs: number;
  frozen: boolean;
}

/** Options common to the calls that wait for the kernel. */
export interface WaitOptions {
  /** Default 5000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * A cgroup driver. Every method is idempotent where that makes sense (create an existing cgroup, remove a
 * missing one), so the daemon can reconcile after a crash without bookkeeping.
 */
export interface CgroupDriver {
  readonly kind: 'v1' | 'v2';
  /** Human-readable: where the hierarchy is and which controllers it has. */
  describe(): string;
  /** Whether `setLimits` can enforce this kind of limit here. */
  supports(kind: LimitKind): boolean;
  /** Creates the cgroup (and the parent) if missing. */
  create(name: string): Promise<void>;
  /**
   * Applies limits: absent fields unchanged, `null` = unlimited. ENOTSUP if a set limit has no controller
   * here (`netBps` is not a cgroup matter and is ignored: tc does it). EINVAL if the kernel refuses a value.
   */
  setLimits(name: string, limits: DcLimits): Promise<void>;
  /** Moves a process (with all its threads) into the cgroup. ENOENT if the cgroup does not exist. */
  addPid(name: string, pid: number): Promise<void>;
  /**
   * The `cgroup.procs` files a process must write its own pid into to join (every v1 hierarchy, or the one
   * v2 file). A spawn wrapper does this before exec, so nothing the command forks escapes the limits.
   */
  procsFiles(name: string): string[];
  /** Pids in the cgroup (empty if it does not exist). */
  pids(name: string): Promise<number[]>;
  stats(name: string): Promise<CgroupStats>;
  /** Freezes every task; resolves when the kernel reports the cgroup frozen (freezing is asynchronous). */
  freeze(name: string, opts?: WaitOptions): Promise<void>;
  thaw(name: string, opts?: WaitOptions): Promise<void>;
  /** Kills every task (v1: freeze + SIGKILL each + thaw; v2: cgroup.kill) and waits until empty. */
  kill(name: string, opts?: WaitOptions): Promise<void>;
  /** Kills what is left, then removes the cgroup. No error if it does not exist. */
  remove(name: string, opts?: WaitOptions): Promise<void>;
  /** Names of the cgroups under the parent (all nodes' if several share it: filter by prefix). */
  list(): Promise<string[]>;
}

/** One line of /proc/self/mounts that matters here. */
export interface CgroupMount {
  path: string;
  fstype: 'cgroup' | 'cgroup2';
  /** v1: the controllers of the hierarchy (`memory`, `cpu`, `cpuacct`, ...; `name=systemd` excluded). */
  controllers: string[];
}

/** Parses /proc/self/mounts into the cgroup mounts (pure). */
export function parseCgroupMounts(mounts: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mounts.split('\n')) {
    const [, mountPoint, fstype, options] = line.split(' ');
    if (mountPoint === undefined || options === undefined) continue;
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    // Mount points escape spaces as \040.
    const path = mountPoint.replace(/\\040/g, ' ');
    const controllers =
      fstype === 'cgroup'
        ? options.split(',').filter((o) => /^[a-z_]+$/.test(o) && !NON_CONTROLLER_OPTS.has(o))
        : [];
    out.push({ path, fstype, controllers });
  }
  return out;
}

const NON_CONTROLLER_OPTS = new Set([
  'rw',
  'ro',
  'nosuid',
  'nodev',
  'noexec',
  'relatime',
  'noatime',
  'xattr',
]);

/** `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control, pids.events) to a map. */
export function parseKeyValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === undefined || v === undefined) continue;
    const n = Number(v);
    if (Number.isFinite(n)) out.set(k, n);
  }
  return out;
}

/** What {@link detectCgroups} found. */
export interface CgroupDetection {
  /** The driver to use, or 'none' (not root, no hierarchy). */
  kind: 'v1' | 'v2' | 'none';
  /** One line for `describe()` and logs. */
  reason: string;
  /** v1 hierarchies by controller (`memory` -> `/sys/fs/cgroup/memory`). */
  v1: Record<string, string>;
  /** The cgroup2 mount, if any, and the controllers its root offers. */
  v2?: { path: string; controllers: string[] };
}

/**
 * Looks at the mounts and picks a driver: v2 when the unified hierarchy has the memory, cpu and pids
 * controllers (a modern host), else v1 when the v1 memory/cpu/pids/freezer hierarchies exist (this
 * machine's hybrid setup: its unified mount only has `hugetlb`), else none. Both arguments are for tests:
 * the mounts table (default /proc/self/mounts) and how to read a cgroup2 root's `cgroup.controllers`.
 */
export function detectCgroups(
  mountsText?: string,
  readControllers: (path: string) => string = (p) => readFileSync(`${p}/cgroup.controllers`, 'utf8'),
): CgroupDetection {
  let text = mountsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mounts', 'utf8');
    } catch {
      return { kind: 'none', reason: 'cannot read /proc/self/mounts', v1: {} };
    }
  }
  const mounts = parseCgroupMounts(text);
  const v1: Record<string, string> = {};
  for (const m of mounts) {
    if (m.fstype !== 'cgroup') continue;
    for (const c of m.controllers) v1[c] ??= m.path;
  }
  let v2: CgroupDetection['v2'];
  const unified = mounts.find((m) => m.fstype === 'cgroup2');
  if (unified) {
    let controllers: string[] = [];
    try {
      controllers = readControllers(unified.path).trim().split(/\s+/).filter(Boolean);
    } catch {
      // Unreadable: treat as no controllers.
    }
    v2 = { path: unified.path, controllers };
  }
  const needed = ['memory', 'cpu', 'pids'];
  if (v2 && needed.every((c) => v2.controllers.includes(c))) {
    return {
      kind: 'v2',
      reason: `cgroup v2 at ${v2.path} (${v2.controllers.join(' ')})`,
      v1,
      ...(v2 ? { v2 } : {}),
    };
  }
  if ([...needed, 'freezer'].every((c) => v1[c] !== undefined)) {
    const hybrid = v2 ? `; unified ${v2.path} has only [${v2.controllers.join(' ')}]` : '';
    return {
      kind: 'v1',
      reason: `cgroup v1 (${Object.keys(v1).sort().join(' ')})${hybrid}`,
      v1,
      ...(v2 ? { v2 } : {}),
    };
  }
  return {
    kind: 'none',
    reason: 'no cgroup hierarchy with memory, cpu and pids controllers',
    v1,
    ...(v2 ? { v2 } : {}),
  };
}

/** Whether `path` is on a cgroup2 file system (statfs magic 0x63677270). */
export function isCgroup2(path: string): boolean {
  try {
    return statfsSync(path).type === 0x63677270;
  } catch {
    return false;
  }
}
