/**
 * cgroup v2 driver (unified hierarchy): one directory `<mount>/<parent>/<name>`.
 *
 * Mapping (containers.md 2.6): memory -> `memory.max` (+ `memory.swap.max` 0, so the limit means what v1's
 * memsw limit means), OOM kills from `memory.events`; cpus -> `cpu.max` "quota period"; pids -> `pids.max`;
 * io -> `io.max` "MAJ:MIN rbps= wbps="; pause -> `cgroup.freeze` (wait for `frozen 1` in `cgroup.events`);
 * kill -> `cgroup.kill` (kernel >= 5.14; else freeze + SIGKILL each + thaw); empty -> `populated 0`.
 *
 * Controllers are enabled in `cgroup.subtree_control` of the mount root and of the parent ("no internal
 * processes": the parent holds no tasks itself). On a hybrid host the unified mount has no controllers at
 * all (here: only hugetlb): the driver then still freezes, kills and tracks, and {@link supports} says no
 * to every limit.
 */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dvsError } from '../protocol/errors.js';
import type { CgroupDriver, CgroupStats, LimitKind, WaitOptions } from './cgroup.js';
import { parseKeyValues } from './cgroup.js';
import {
  blockDevices,
  killPids,
  mkdirp,
  readNumber,
  readPids,
  readPidsStats,
  readText,
  rmdirCgroup,
  subdirs,
  waitEmpty,
  writeText,
} from './cgroup-fs.js';
import { checkName } from './cgroup-v1.js';
import type { DcLimits } from './limits.js';
import { pollUntil } from './run.js';

/** Options of {@link CgroupV2Driver}. */
export interface CgroupV2Options {
  /** The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts). */
  mount: string;
  /** Directory under the mount holding this node's cgroups (default `dvs`). */
  parent?: string;
  /** `MAJ:MIN` of the disks io limits apply to (default: the node's disks). */
  ioDevices?: string[];
}

const WANTED = ['memory', 'cpu', 'pids', 'io'] as const;
const CPU_PERIOD_US = 100_000;

export class CgroupV2Driver implements CgroupDriver {
  readonly kind = 'v2' as const;
  private readonly mount: string;
  private readonly parent: string;
  private readonly ioDevices: string[];
  /** Controllers for our cgroups: offered by the root at construction, enabled ones after prepare(). */
  private controllers = new Set<string>();
  private prepared = false;

  constructor(opts: CgroupV2Options) {
    this.mount = opts.mount;
    this.parent = opts.parent ?? 'dvs';
    this.ioDevices = opts.ioDevices ?? blockDevices();
    // Until prepare() enabled them, what the root offers is what we will be able to use.
    try {
      const offered = readFileSync(`${this.mount}/cgroup.controllers`, 'utf8').trim().split(/\s+/);
      this.controllers = new Set(offered.filter((c) => (WANTED as readonly string[]).includes(c)));
    } catch {
      // No such mount: every limit unsupported, create() will fail with the reason.
    }
  }

  describe(): string {
    const ctl = [...this.controllers].sort().join(' ') || 'none (freeze/kill/tracking only)';
    return `cgroup v2 at ${this.mount}, parent "${this.parent}", controllers ${ctl}`;
  }

  supports(kind: LimitKind): boolean {
    if (kind === 'io' && this.ioDevices.length === 0) return false;
    return this.controllers.has(kind);
  }

  private dir(name: string): string {
    return `${this.mount}/${this.parent}/${name}`;
  }

  /** Creates the parent and enables the controllers the root offers, once per driver. */
  async prepare(): Promise<void> {
    if (this.prepared) return;
    const parentDir = `${this.mount}/${this.parent}`;
    await mkdirp(parentDir);
    for (const dir of [this.mount, parentDir]) {
      const offered = ((await readText(`${dir}/cgroup.controllers`)) ?? '').trim().split(/\s+/);
      for (const c of WANTED) {
        if (!offered.includes(c)) continue;
        // One at a time: a single refused controller must not block the others.
        await writeText(`${dir}/cgroup.subtree_control`, `+${c}`).catch(() => {});
      }
    }
    const enabled = ((await readText(`${parentDir}/cgroup.subtree_control`)) ?? '').trim().split(/\s+/);
    this.controllers = new Set(enabled.filter((c) => (WANTED as readonly string[]).includes(c)));
    this.prepared = true;
  }

  async create(name: string): Promise<void> {
    checkName(name);
    await this.prepare();
    await mkdirp(this.dir(name));
  }

  async setLimits(name: string, limits: DcLimits): Promise<void> {
    await this.requireExists(name);
    const need = (kind: LimitKind, v: number | null | undefined) => {
      if (v === undefined || v === null || this.supports(kind)) return v !== undefined && this.supports(kind);
      throw dvsError('ENOTSUP', `cgroup v2 at ${this.mount} has no ${kind} controller`, { kind });
    };
    const d = this.dir(name);
    if (need('memory', limits.memoryBytes)) {
      const v = limits.memoryBytes == null ? 'max' : String(limits.memoryBytes);
      await writeText(`${d}/memory.max`, v);
      if ((await readText(`${d}/memory.swap.max`)) !== undefined) {
        await writeText(`${d}/memory.swap.max`, limits.memoryBytes == null ? 'max' : '0');
      }
    }
    if (need('cpu', limits.cpus)) {
      const quota =
        limits.cpus == null ? 'max' : String(Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US)));
      await writeText(`${d}/cpu.max`, `${quota} ${CPU_PERIOD_US}`);
    }
    if (need('pids', limits.pids)) {
      await writeText(`${d}/pids.max`, limits.pids == null ? 'max' : String(limits.pids));
    }
    if (need('io', limits.ioBps)) {
      const v = limits.ioBps == null ? 'max' : String(limits.ioBps);
      for (const dev of this.ioDevices) await writeText(`${d}/io.max`, `${dev} rbps=${v} wbps=${v}`);
    }
  }

  procsFiles(name: string): string[] {
    return [`${this.dir(name)}/cgroup.procs`];
  }

  async addPid(name: string, pid: number): Promise<void> {
    await this.requireExists(name);
    await writeText(`${this.dir(name)}/cgroup.procs`, String(pid));
  }

  async pids(name: string): Promise<number[]> {
    checkName(name);
    return readPids(`${this.dir(name)}/cgroup.procs`);
  }

  private async events(name: string): Promise<Map<string, number>> {
    return parseKeyValues((await readText(`${this.dir(name)}/cgroup.events`)) ?? '');
  }

  async stats(name: string): Promise<CgroupStats> {
    await this.requireExists(name);
    const d = this.dir(name);
    const out: CgroupStats = {
      procs: (await this.pids(name)).length,
      frozen: (await this.events(name)).get('frozen') === 1,
    };
    if (this.controllers.has('memory')) {
      const ev = parseKeyValues((await readText(`${d}/memory.events`)) ?? '');
      const peak = await readNumber(`${d}/memory.peak`);
      out.memory = {
        usageBytes: (await readNumber(`${d}/memory.current`)) ?? 0,
        limitBytes: (await readNumber(`${d}/memory.max`)) ?? null,
        ...(typeof peak === 'number' ? { maxUsageBytes: peak } : {}),
        oomKills: ev.get('oom_kill') ?? 0,
      };
    }
    // cpu.stat exists without the cpu controller (usage only); quota needs the controller.
    const st = parseKeyValues((await readText(`${d}/cpu.stat`)) ?? '');
    if (st.size > 0) {
      const max = ((await readText(`${d}/cpu.max`)) ?? 'max').trim().split(/\s+/);
      const quota = max[0] === 'max' || max[0] === undefined ? null : Number(max[0]);
      const period = Number(max[1] ?? CPU_PERIOD_US) || CPU_PERIOD_US;
      out.cpu = {
        usageNs: (st.get('usage_usec') ?? 0) * 1000,
        limitCpus: quota === null ? null : quota / period,
        nrThrottled: st.get('nr_throttled') ?? 0,
        throttledNs: (st.get('throttled_usec') ?? 0) * 1000,
      };
    }
    if (this.controllers.has('pids')) out.pids = await readPidsStats(d);
    if (this.controllers.has('io')) {
      let readBytes = 0;
      let writeBytes = 0;
      // Lines "MAJ:MIN rbytes=N wbytes=N rios=N ...".
      for (const line of ((await readText(`${d}/io.stat`)) ?? '').split('\n')) {
        for (const kv of line.trim().split(/\s+/).slice(1)) {
          const [k, v] = kv.split('=');
          if (k === 'rbytes') readBytes += Number(v) || 0;
          if (k === 'wbytes') writeBytes += Number(v) || 0;
        }
      }
      out.io = { readBytes, writeBytes };
    }
    return out;
  }

  async freeze(name: string, opts: WaitOptions = {}): Promise<void> {
    await this.requireExists(name);
    await writeText(`${this.dir(name)}/cgroup.freeze`, '1');
    await pollUntil(
      async () => (await this.events(name)).get('frozen') === 1,
      `cgroup ${name} to freeze`,
      opts,
    );
  }

  async thaw(name: string, opts: WaitOptions = {}): Promise<void> {
    await this.requireExists(name);
    await writeText(`${this.dir(name)}/cgroup.freeze`, '0');
    await pollUntil(
      async () => (await this.events(name)).get('frozen') !== 1,
      `cgroup ${name} to thaw`,
      opts,
    );
  }

  async kill(name: string, opts: WaitOptions = {}): Promise<void> {
    checkName(name);
    const d = this.dir(name);
    if ((await readText(`${d}/cgroup.procs`)) === undefined) return;
    const timeoutMs = opts.timeoutMs ?? 5000;
    if (await this.hasKillFile(d)) {
      await writeText(`${d}/cgroup.kill`, '1');
    } else {
      await this.freeze(name, { timeoutMs: Math.min(1000, timeoutMs) }).catch(() => {});
      killPids(await this.pids(name));
      await writeText(`${d}/cgroup.freeze`, '0');
    }
    await pollUntil(async () => (await this.events(name)).get('populated') !== 1, `cgroup ${name} to empty`, {
      timeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    await waitEmpty(this.procsFiles(name), `cgroup ${name}`, timeoutMs);
  }

  /** `cgroup.kill` is write-only (kernel >= 5.14): look for it in the directory rather than reading it. */
  private async hasKillFile(dir: string): Promise<boolean> {
    const names = await readdir(dir).catch(() => [] as string[]);
    return names.includes('cgroup.kill');
  }

  async remove(name: string, opts: WaitOptions = {}): Promise<void> {
    await this.kill(name, opts);
    await rmdirCgroup(this.dir(name), opts.timeoutMs);
  }

  async list(): Promise<string[]> {
    return (await subdirs(`${this.mount}/${this.parent}`)).sort();
  }

  private async requireExists(name: string): Promise<void> {
    checkName(name);
    if ((await readText(`${this.dir(name)}/cgroup.procs`)) === undefined) {
      throw dvsError('ENOENT', `no cgroup ${name}`, { cgroup: name });
    }
  }
}
