/** File helpers shared by the cgroup drivers: cgroupfs reads/writes with errors mapped to DvsError. */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { DvsError } from '../protocol/errors.js';
import { type CgroupStats, parseKeyValues } from './cgroup.js';
import { pollUntil, sleep } from './run.js';

/** Reads a cgroup file; undefined if it does not exist. */
export async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw wrap(e, `read ${path}`);
  }
}

/** Reads a cgroup file holding one number (`max`/huge values = null); undefined if missing. */
export async function readNumber(path: string): Promise<number | null | undefined> {
  const t = await readText(path);
  if (t === undefined) return undefined;
  const s = t.trim().split(/\s+/)[0] ?? '';
  if (s === 'max' || s === '-1') return null;
  const n = Number(s);
  // v1 reports "unlimited" as PAGE_COUNTER_MAX * page size (9223372036854771712).
  return Number.isFinite(n) && n < 2 ** 62 ? n : null;
}

/** Writes a cgroup control file. The kernel's errno becomes a DvsError: EINVAL, EBUSY, ENOENT, EPERM. */
export async function writeText(path: string, value: string): Promise<void> {
  try {
    await writeFile(path, value, { flag: 'w' });
  } catch (e) {
    throw wrap(e, `write "${value.trim()}" to ${path}`);
  }
}

export async function mkdirp(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (e) {
    throw wrap(e, `mkdir ${path}`);
  }
}

/** Pids listed in a `cgroup.procs` file ([] if missing). */
export async function readPids(procsFile: string): Promise<number[]> {
  const t = await readText(procsFile);
  if (t === undefined) return [];
  return t
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
}

/** Sub-directories of `dir` ([] if missing). */
export async function subdirs(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw wrap(e, `list ${dir}`);
  }
}

/**
 * Removes a cgroup directory, retrying while the kernel still reports it busy: the last task's exit is
 * accounted a moment after `cgroup.procs` reads empty (memory cgroups especially).
 */
export async function rmdirCgroup(dir: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || Date.now() >= deadline) throw wrap(e, `rmdir ${dir}`);
      await sleep(20);
    }
  }
}

/** SIGKILLs every pid listed, ignoring ones already gone. */
export function killPids(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Exited meanwhile.
    }
  }
}

/** Waits until every `cgroup.procs` file lists nothing. */
export async function waitEmpty(
  procsFiles: readonly string[],
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  await pollUntil(
    async () => {
      for (const f of procsFiles) if ((await readPids(f)).length > 0) return false;
      return true;
    },
    `${what} to empty`,
    { timeoutMs },
  );
}

/**
 * `MAJ:MIN` of the node's disks, for block I/O limits: whole disks from /sys/block, without loop, ram,
 * zram and empty devices (the kernel refuses throttling rules on some of those, and they are not what an
 * operator means by "disk I/O").
 */
export function blockDevices(): string[] {
  const out: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync('/sys/block');
  } catch {
    return out;
  }
  for (const n of names) {
    if (/^(loop|ram|zram|nbd|sr|fd)\d*/.test(n)) continue;
    try {
      const size = Number(readFileSync(`/sys/block/${n}/size`, 'utf8').trim());
      if (!(size > 0)) continue;
      out.push(readFileSync(`/sys/block/${n}/dev`, 'utf8').trim());
    } catch {
      // Vanished while scanning.
    }
  }
  return out;
}

function wrap(e: unknown, what: string): DvsError {
  const code = (e as NodeJS.ErrnoException).code;
  const mapped =
    code === 'ENOENT'
      ? 'ENOENT'
      : code === 'EINVAL' || code === 'ERANGE'
        ? 'EINVAL'
        : code === 'EBUSY'
          ? 'EBUSY'
          : code === 'EACCES' || code === 'EPERM'
            ? 'EPERM'
            : code === 'EAGAIN' || code === 'ENOSPC'
              ? 'ENOSPC'
              : 'EINTERNAL';
  return new DvsError(mapped, `${what}: ${(e as Error).message}`, { op: what }, { cause: e });
}

/**
 * The pids controller's usage in cgroup directory `dir`: its files are the same in v1 and v2 (`pids.current`,
 * `pids.max`, and `pids.events` whose `max` counts the forks refused at the limit).
 */
export async function readPidsStats(dir: string): Promise<NonNullable<CgroupStats['pids']>> {
  const ev = parseKeyValues((await readText(`${dir}/pids.events`)) ?? '');
  return {
    current: (await readNumber(`${dir}/pids.current`)) ?? 0,
    limit: (await readNumber(`${dir}/pids.max`)) ?? null,
    refused: ev.get('max') ?? 0,
  };
}
