/**
 * cgroup v1 driver: one directory per controller hierarchy (`<mount>/<parent>/<name>` for memory, cpu,
 * cpuacct, pids, freezer, blkio; hierarchies co-mounted like `cpu,cpuacct` share a directory).
 *
 * Mapping (containers.md 2.2-2.3, all measured on these machines):
 * memory -> `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes` where swap accounting exists), OOM
 * kills from `memory.oom_control` `oom_kill N`; cpus -> `cpu.cfs_quota_us` over a 100 ms period, usage from
 * `cpuacct.usage`; pids -> `pids.max`; io -> `blkio.throttle.{read,write}_bps_device` per disk; pause ->
 * `freezer.state` (asynchronous: FREEZING before FROZEN); kill -> freeze, SIGKILL every task, thaw.
 */
import { DvsError, dvsError } from '../protocol/errors.js';
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
import type { DcLimits } from './limits.js';
import { pollUntil } from './run.js';

/** Options of {@link CgroupV1Driver}. */
export interface CgroupV1Options {
  /** Mount point by controller, as {@link detectCgroups} found them (`memory` -> `/sys/fs/cgroup/memory`). */
  mounts: Readonly<Record<string, string>>;
  /** Directory under each hierarchy holding this node's cgroups (default `dvs`). */
  parent?: string;
  /** `MAJ:MIN` of the disks io limits apply to (default: the node's disks, {@link blockDevices}). */
  ioDevices?: string[];
}

const CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'freezer', 'blkio'] as const;
type Controller = (typeof CONTROLLERS)[number];
const CFS_PERIOD_US = 100_000;

export class CgroupV1Driver implements CgroupDriver {
  readonly kind = 'v1' as const;
  private readonly mounts: Partial<Record<Controller, string>> = {};
  private readonly parent: string;
  private readonly ioDevices: string[];

  constructor(opts: CgroupV1Options) {
    for (const c of CONTROLLERS) {
      const m = opts.mounts[c];
      if (m !== undefined) this.mounts[c] = m;
    }
    if (this.mounts.freezer === undefined) {
      throw dvsError('ENOTSUP', 'cgroup v1 driver needs the freezer hierarchy (to stop containers reliably)');
    }
    this.parent = opts.parent ?? 'dvs';
    this.ioDevices = opts.ioDevices ?? blockDevices();
  }

  describe(): string {
    const ctl = CONTROLLERS.filter((c) => this.mounts[c] !== undefined);
    return `cgroup v1, parent "${this.parent}", controllers ${ctl.join(' ')}`;
  }

  supports(kind: LimitKind): boolean {
    switch (kind) {
      case 'memory':
        return this.mounts.memory !== undefined;
      case 'cpu':
        return this.mounts.cpu !== undefined;
      case 'pids':
        return this.mounts.pids !== undefined;
      case 'io':
        return this.mounts.blkio !== undefined && this.ioDevices.length > 0;
    }
  }

  private dir(c: Controller, name: string): string | undefined {
    const m = this.mounts[c];
    return m === undefined ? undefined : `${m}/${this.parent}/${name}`;
  }

  /** One directory per distinct hierarchy (co-mounted controllers share one). */
  private dirs(name: string): string[] {
    const seen = new Set<string>();
    for (const c of CONTROLLERS) {
      const d = this.dir(c, name);
      if (d !== undefined) seen.add(d);
    }
    return [...seen];
  }

  private need(c: Controller, name: string): string {
    const d = this.dir(c, name);
    if (d === undefined) throw dvsError('ENOTSUP', `no ${c} cgroup hierarchy on this node`);
    return d;
  }

  async create(name: string): Promise<void> {
    checkName(name);
    for (const d of this.dirs(name)) await mkdirp(d);
  }

  async setLimits(name: string, limits: DcLimits): Promise<void> {
    await this.requireExists(name);
    if (limits.memoryBytes !== undefined) await this.setMemory(name, limits.memoryBytes);
    if (limits.cpus !== undefined) {
      const d = this.need('cpu', name);
      await writeText(`${d}/cpu.cfs_period_us`, String(CFS_PERIOD_US));
      const quota = limits.cpus === null ? -1 : Math.max(1000, Math.round(limits.cpus * CFS_PERIOD_US));
      await writeText(`${d}/cpu.cfs_quota_us`, String(quota));
    }
    if (limits.pids !== undefined) {
      await writeText(
        `${this.need('pids', name)}/pids.max`,
        limits.pids === null ? 'max' : String(limits.pids),
      );
    }
    if (limits.ioBps !== undefined) {
      if (!this.supports('io'))
        throw dvsError('ENOTSUP', 'block I/O limits need the blkio hierarchy and a disk');
      const d = this.need('blkio', name);
      const bps = limits.ioBps === null ? 0 : limits.ioBps; // 0 removes the rule
      for (const dev of this.ioDevices) {
        await writeText(`${d}/blkio.throttle.read_bps_device`, `${dev} ${bps}`);
        await writeText(`${d}/blkio.throttle.write_bps_device`, `${dev} ${bps}`);
      }
    }
  }

  private async setMemory(name: string, bytes: number | null): Promise<void> {
    const d = this.need('memory', name);
    const value = bytes === null ? '-1' : String(bytes);
    const memsw = `${d}/memory.memsw.limit_in_bytes`;
    const hasMemsw = (await readText(memsw)) !== undefined;
    // The kernel keeps limit <= memsw limit: raise memsw first when growing, lower it last when shrinking.
    const current = await readNumber(`${d}/memory.limit_in_bytes`);
    const growing = bytes === null || (typeof current === 'number' && bytes > current);
    if (hasMemsw && growing) await writeText(memsw, value);
    await writeText(`${d}/memory.limit_in_bytes`, value);
    if (hasMemsw && !growing) await writeText(memsw, value);
  }

  procsFiles(name: string): string[] {
    return this.dirs(name).map((d) => `${d}/cgroup.procs`);
  }

  async addPid(name: string, pid: number): Promise<void> {
    await this.requireExists(name);
    for (const f of this.procsFiles(name)) await writeText(f, String(pid));
  }

  async pids(name: string): Promise<number[]> {
    return readPids(`${this.need('freezer', name)}/cgroup.procs`);
  }

  async stats(name: string): Promise<CgroupStats> {
    await this.requireExists(name);
    const out: CgroupStats = { procs: (await this.pids(name)).length, frozen: false };
    const mem = this.dir('memory', name);
    if (mem !== undefined) {
      const oom = parseKeyValues((await readText(`${mem}/memory.oom_control`)) ?? '');
      const max = await readNumber(`${mem}/memory.max_usage_in_bytes`);
      out.memory = {
        usageBytes: (await readNumber(`${mem}/memory.usage_in_bytes`)) ?? 0,
        limitBytes: (await readNumber(`${mem}/memory.limit_in_bytes`)) ?? null,
        ...(typeof max === 'number' ? { maxUsageBytes: max } : {}),
        oomKills: oom.get('oom_kill') ?? 0,
      };
    }
    const cpu = this.dir('cpu', name);
    const acct = this.dir('cpuacct', name);
    if (cpu !== undefined) {
      const quota = await readNumber(`${cpu}/cpu.cfs_quota_us`);
      const period = (await readNumber(`${cpu}/cpu.cfs_period_us`)) ?? CFS_PERIOD_US;
      const st = parseKeyValues((await readText(`${cpu}/cpu.stat`)) ?? '');
      out.cpu = {
        usageNs: acct === undefined ? 0 : ((await readNumber(`${acct}/cpuacct.usage`)) ?? 0),
        limitCpus: quota === null || quota === undefined ? null : quota / period,
        nrThrottled: st.get('nr_throttled') ?? 0,
        throttledNs: st.get('throttled_time') ?? 0,
      };
    }
    const pids = this.dir('pids', name);
    if (pids !== undefined) out.pids = await readPidsStats(pids);
    const blkio = this.dir('blkio', name);
    if (blkio !== undefined) {
      let readBytes = 0;
      let writeBytes = 0;
      // Lines "MAJ:MIN Read N" / "MAJ:MIN Write N" / "Total N".
      for (const line of ((await readText(`${blkio}/blkio.throttle.io_service_bytes`)) ?? '').split('\n')) {
        const [, op, n] = line.trim().split(/\s+/);
        if (op === 'Read') readBytes += Number(n) || 0;
        if (op === 'Write') writeBytes += Number(n) || 0;
      }
      out.io = { readBytes, writeBytes };
    }
    out.frozen = (await this.freezerState(name)) === 'FROZEN';
    return out;
  }

  private async freezerState(name: string): Promise<string> {
    return ((await readText(`${this.need('freezer', name)}/freezer.state`)) ?? '').trim();
  }

  async freeze(name: string, opts: WaitOptions = {}): Promise<void> {
    await this.requireExists(name);
    await writeText(`${this.need('freezer', name)}/freezer.state`, 'FROZEN');
    await pollUntil(
      async () => (await this.freezerState(name)) === 'FROZEN',
      `cgroup ${name} to freeze`,
      opts,
    );
  }

  async thaw(name: string, opts: WaitOptions = {}): Promise<void> {
    await this.requireExists(name);
    await writeText(`${this.need('freezer', name)}/freezer.state`, 'THAWED');
    await pollUntil(async () => (await this.freezerState(name)) === 'THAWED', `cgroup ${name} to thaw`, opts);
  }

  async kill(name: string, opts: WaitOptions = {}): Promise<void> {
    if (!(await this.exists(name))) return;
    const timeoutMs = opts.timeoutMs ?? 5000;
    // Frozen tasks cannot fork, so one pass of SIGKILL catches them all; a task stuck in the kernel may keep
    // the cgroup FREEZING, so kill anyway after a short wait and repeat until empty.
    try {
      await this.freeze(name, { timeoutMs: Math.min(1000, timeoutMs) });
    } catch (e) {
      if (!(e instanceof DvsError && e.code === 'ETIMEDOUT')) throw e;
    }
    killPids(await this.pids(name));
    await writeText(`${this.need('freezer', name)}/freezer.state`, 'THAWED');
    await pollUntil(
      async () => {
        const left = await this.pids(name);
        killPids(left);
        return left.length === 0;
      },
      `cgroup ${name} to empty`,
      { timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
    await waitEmpty(this.procsFiles(name), `cgroup ${name}`, timeoutMs);
  }

  async remove(name: string, opts: WaitOptions = {}): Promise<void> {
    checkName(name);
    await this.kill(name, opts);
    for (const d of this.dirs(name)) await rmdirCgroup(d, opts.timeoutMs);
  }

  async list(): Promise<string[]> {
    const names = new Set<string>();
    for (const c of CONTROLLERS) {
      const m = this.mounts[c];
      if (m !== undefined) for (const n of await subdirs(`${m}/${this.parent}`)) names.add(n);
    }
    return [...names].sort();
  }

  private async exists(name: string): Promise<boolean> {
    checkName(name);
    return (await readText(`${this.need('freezer', name)}/cgroup.procs`)) !== undefined;
  }

  private async requireExists(name: string): Promise<void> {
    if (!(await this.exists(name))) throw dvsError('ENOENT', `no cgroup ${name}`, { cgroup: name });
  }
}

/** Cgroup names are one path component of safe characters. */
export function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) {
    throw dvsError('EINVAL', `bad cgroup name "${name}"`, { cgroup: name });
  }
}
