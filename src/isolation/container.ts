/**
 * The container of one DC on one node: a long-lived holder process in new pid, mount, uts and ipc
 * namespaces, inside the DC's named network namespace, in the DC's cgroup. Every process of the DC on this
 * node joins it with `nsenter` (containers.md 1.2, 1.5), so they share one pid space, one hostname, one
 * network stack.
 *
 * ```
 *   daemon
 *    └─ sh (joins the cgroup: writes $$ to every cgroup.procs, then exec)
 *        └─ nsenter --net=/run/netns/<prefix>c<dc>  (exec)
 *            └─ unshare --pid --fork --kill-child --mount --uts --ipc        (host pid ns)
 *                └─ sh dvs-init  = pid 1 of the container: hostname, /proc, /sys, /run/dvs, then sleeps
 *                                  and reaps orphans; SIGKILL to it ends the whole pid namespace
 *   spawn: sh (joins the cgroup) -> nsenter -t <init> -p -m -u -i -n [--wd] -> setsid <cmd>
 * ```
 * Inside, the container sees the host's file system (no image: programs are the host's), but its own
 * `/proc` (only the DC's processes), a fresh `/sys` (only its own interfaces), a private tmpfs on `/run`
 * with the node's DVK socket directory bind-mounted at `/run/dvs`, and private `/dev/shm` and mqueue.
 * Hardening (seccomp, capabilities, a read-only root) is left to an optional runc backend
 * (containers.md 3).
 */
import { type ChildProcess, type StdioOptions, spawn as spawnChild } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { DvsError, dvsError } from '../protocol/errors.js';
import type { CgroupDriver } from './cgroup.js';
import { pollUntil, type RunOptions, runTool, tryTool } from './run.js';

/** Where the node's DVK socket directory appears inside every container. */
export const CONTAINER_SOCKET_DIR = '/run/dvs';

/** Marker in the holder's command line, used to find it again after a daemon restart. */
const INIT_MARK = 'dvs-init';

/**
 * pid 1 of the container. Runs with the new namespaces already entered. `/run` is covered by a tmpfs (the
 * host's /run holds every netns handle and daemon socket), so the socket dir is staged on top of /proc
 * first and moved under the new /run afterwards; then a fresh proc hides the host's processes.
 */
const INIT_SCRIPT = `set -e
hostname "$1"
mount --make-rprivate /
if [ -n "$2" ]; then mount --bind "$2" /proc; fi
mount -t tmpfs -o mode=755,size=1m dvs-run /run
mkdir -p ${CONTAINER_SOCKET_DIR}
if [ -n "$2" ]; then mount --move /proc ${CONTAINER_SOCKET_DIR}; fi
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys 2>/dev/null || true
if [ -d /dev/shm ]; then mount -t tmpfs -o nosuid,nodev,size=64m dvs-shm /dev/shm || true; fi
if [ -d /dev/mqueue ]; then mount -t mqueue mqueue /dev/mqueue 2>/dev/null || true; fi
echo ready
exec >/dev/null 2>&1 </dev/null
trap 'exit 0' TERM
while :; do sleep 3600 & wait $! || true; done`;

/**
 * Joins cgroups before exec: the pid is written to every `cgroup.procs` passed before `--`, so nothing
 * the command forks ever runs outside the limits.
 */
const JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"';

/** Options of {@link DcContainer.create}. */
export interface DcContainerOptions {
  /** Network namespace name under /run/netns: created by {@link DcContainer.create} if missing. */
  netns: string;
  /** Hostname inside (DC name + node name; sanitised, at most 63 characters). */
  hostname: string;
  /** Host directory holding the node's DVK socket; appears at {@link CONTAINER_SOCKET_DIR} inside. */
  socketDir?: string;
  /** The DC's cgroup: holder and every process join it. */
  cgroup: { driver: CgroupDriver; name: string };
  logger: Logger;
}

/** How a container process ended. */
export interface ContainerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when the process died of SIGKILL and the DC's cgroup counted a new OOM kill meanwhile. */
  oomKilled: boolean;
}

/** What to run inside a container. */
export interface ContainerSpawnRequest {
  /** Executable and arguments (no shell). */
  cmd: string[];
  /** The complete environment (nothing of the daemon's is added). */
  env?: Record<string, string>;
  /** Working directory, a path inside the container (the host's file system). */
  cwd?: string;
  /** As for child_process.spawn (e.g. `['ignore', logFd, logFd]`). Default: all ignored. */
  stdio?: StdioOptions;
  signal?: AbortSignal;
}

/** A process running in a container. */
export interface ContainerProcess {
  /** Host pid of the `nsenter` that waits for it (the `ChildProcess`'s pid). */
  readonly pid: number;
  /** The underlying child (for stdio streams); its exit mirrors the process's (status propagated by nsenter). */
  readonly child: ChildProcess;
  /** Resolves when it exits, with OOM kills told apart from other SIGKILLs. */
  readonly exited: Promise<ContainerExit>;
  /** Host pid of the process itself (inside the pid namespace it has another), once it exists. */
  innerPid(): number | undefined;
  /**
   * Signals the process and everything it started (its own session/process group inside the container).
   * Returns false if it is gone.
   */
  kill(signal?: NodeJS.Signals): boolean;
}

/** Output of {@link DcContainer.exec}. */
export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  oomKilled: boolean;
}

/** Options of an exec (in a container, or plain when isolation is off). */
export interface ExecOptions {
  /** The complete environment (default: only PATH). */
  env?: Record<string, string>;
  cwd?: string;
  /** Written to its stdin (else stdin is closed). */
  input?: string;
  /** ms before it is killed (default 30 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Most bytes of stdout, and of stderr, an exec keeps (the rest is read and dropped). */
const EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024;

/**
 * Run `cmd` to completion through `spawn` (a container's, or the plain one when isolation is off) and collect
 * its output, at most {@link EXEC_OUTPUT_LIMIT} bytes of each stream. Killed (SIGKILL) after `timeoutMs`
 * (default 30 s) or when `signal` aborts, which rejects with ETIMEDOUT / EABORTED. `path` is the PATH given
 * when `env` is not; `what` names the exec in errors.
 */
export async function execWith(
  spawn: (req: ContainerSpawnRequest) => Promise<ContainerProcess>,
  cmd: string[],
  opts: ExecOptions,
  how: { path: string; what: string },
): Promise<ExecResult> {
  const p = await spawn({
    cmd,
    env: opts.env ?? { PATH: process.env.PATH ?? how.path },
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const sizes = { stdout: 0, stderr: 0 };
  for (const k of ['stdout', 'stderr'] as const) {
    p.child[k]?.on('data', (b: Buffer) => {
      if (sizes[k] + b.length <= EXEC_OUTPUT_LIMIT) chunks[k].push(b);
      sizes[k] += b.length;
    });
  }
  if (opts.input !== undefined) p.child.stdin?.end(opts.input);
  let failure: DvsError | undefined;
  const timer = setTimeout(() => {
    failure = dvsError('ETIMEDOUT', `${how.what} timed out: ${cmd.join(' ')}`);
    p.kill('SIGKILL');
  }, opts.timeoutMs ?? 30_000);
  const onAbort = () => {
    failure = dvsError('EABORTED', 'exec aborted');
    p.kill('SIGKILL');
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const exit = await p.exited;
    // Output may still be in flight after the exit event.
    await Promise.all(
      (['stdout', 'stderr'] as const).map(
        (k) =>
          new Promise<void>((r) => {
            const s = p.child[k];
            if (!s || s.readableEnded || s.destroyed) return r();
            s.once('close', () => r());
          }),
      ),
    );
    if (failure) throw failure;
    return {
      ...exit,
      stdout: Buffer.concat(chunks.stdout).toString(),
      stderr: Buffer.concat(chunks.stderr).toString(),
    };
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** The container of one DC on this node. Create with {@link DcContainer.create} or {@link DcContainer.adopt}. */
export class DcContainer {
  readonly netns: string;
  readonly hostname: string;
  private readonly opts: DcContainerOptions;
  private readonly log: Logger;
  /** pid 1 of the container, as a host pid. */
  private _initPid: number;
  private holder: ChildProcess | undefined;

  private constructor(opts: DcContainerOptions, initPid: number, holder: ChildProcess | undefined) {
    this.opts = opts;
    this.netns = opts.netns;
    this.hostname = opts.hostname;
    this.log = opts.logger.child({ component: 'container', netns: opts.netns });
    this._initPid = initPid;
    this.holder = holder;
  }

  /** Host pid of the container's pid 1. */
  get initPid(): number {
    return this._initPid;
  }

  /**
   * Creates the network namespace (if missing, with `lo` up) and starts the holder in the cgroup (which
   * must exist). Resolves when pid 1 has finished its mounts. ETIMEDOUT, EINTERNAL with the init's stderr.
   */
  static async create(opts: DcContainerOptions, run: RunOptions = {}): Promise<DcContainer> {
    await ensureNetns(opts.netns, run);
    const hostname = sanitizeHostname(opts.hostname);
    const procs = opts.cgroup.driver.procsFiles(opts.cgroup.name);
    const args = [
      '-c',
      JOIN_SCRIPT,
      'sh',
      ...procs,
      '--',
      'nsenter',
      `--net=/run/netns/${opts.netns}`,
      'unshare',
      '--pid',
      '--fork',
      '--kill-child',
      '--mount',
      '--uts',
      '--ipc',
      '--',
      'sh',
      '-c',
      INIT_SCRIPT,
      INIT_MARK,
      hostname,
      opts.socketDir ?? '',
    ];
    // Detached: the container outlives a daemon crash (the next daemon adopts it) and the daemon's
    // terminal signals do not reach it.
    const holder = spawnChild('sh', args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    holder.unref();
    let stderr = '';
    let stdout = '';
    holder.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(dvsError('ETIMEDOUT', `container ${opts.netns} did not start`)),
          run.timeoutMs ?? 10_000,
        );
        const onAbort = () => reject(dvsError('EABORTED', 'container start aborted'));
        run.signal?.addEventListener('abort', onAbort, { once: true });
        const done = (f: () => void) => {
          clearTimeout(timer);
          run.signal?.removeEventListener('abort', onAbort);
          f();
        };
        holder.stdout?.on('data', (b: Buffer) => {
          stdout += b.toString();
          if (stdout.includes('ready')) done(resolve);
        });
        holder.once('error', (e) =>
          done(() => reject(new DvsError('EINTERNAL', e.message, undefined, { cause: e }))),
        );
        holder.once('exit', (code, signal) =>
          done(() =>
            reject(
              dvsError(
                'EINTERNAL',
                `container ${opts.netns} init failed (${code ?? signal}): ${stderr.trim() || 'no output'}`,
              ),
            ),
          ),
        );
      });
      const unsharePid = holder.pid;
      if (unsharePid === undefined) throw dvsError('EINTERNAL', 'holder has no pid');
      const initPid = childrenOf(unsharePid)[0];
      if (initPid === undefined) throw dvsError('EINTERNAL', `container ${opts.netns}: init pid not found`);
      holder.stdout?.destroy();
      holder.stderr?.destroy();
      const c = new DcContainer({ ...opts, hostname }, initPid, holder);
      c.log.info({ initPid, hostname }, 'container started');
      return c;
    } catch (e) {
      if (holder.pid !== undefined) killQuietly(holder.pid);
      throw e;
    }
  }

  /**
   * Finds the container a previous daemon left in `opts.netns` (its pid 1 is the process of that netns
   * whose innermost pid is 1 and whose command line carries the init marker). Undefined if none runs.
   */
  static async adopt(opts: DcContainerOptions, run: RunOptions = {}): Promise<DcContainer | undefined> {
    const out = await tryTool('ip', ['netns', 'pids', opts.netns], run);
    if (out === undefined) return undefined;
    for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
      if (isContainerInit(pid)) {
        const hostname = opts.hostname;
        return new DcContainer({ ...opts, hostname }, pid, undefined);
      }
    }
    return undefined;
  }

  /** Whether pid 1 of the container still runs. */
  alive(): boolean {
    return isContainerInit(this._initPid);
  }

  /** Host directory the container's `/run/dvs` shows, if any. */
  get socketDir(): string | undefined {
    return this.opts.socketDir;
  }

  /**
   * Starts `req.cmd` inside the container, in the DC's cgroup, as the leader of its own session (so
   * {@link ContainerProcess.kill} reaches what it starts). Resolves once the wrapper runs; a missing
   * command shows as exit code 127 (reported by nsenter/setsid, which run inside).
   */
  async spawn(req: ContainerSpawnRequest): Promise<ContainerProcess> {
    const [file] = req.cmd;
    if (file === undefined || file === '') throw dvsError('EINVAL', 'empty command');
    req.signal?.throwIfAborted();
    if (!this.alive()) throw dvsError('ENOENT', `container ${this.netns} is not running`);
    const { driver, name } = this.opts.cgroup;
    const oomBefore = await oomCount(driver, name);
    const ns = ['--pid', '--mount', '--uts', '--ipc', '--net'];
    const args = [
      '-c',
      JOIN_SCRIPT,
      'sh',
      ...driver.procsFiles(name),
      '--',
      'nsenter',
      '--target',
      String(this._initPid),
      ...ns,
      ...(req.cwd !== undefined ? [`--wd=${req.cwd}`] : []),
      '--',
      'setsid',
      ...req.cmd,
    ];
    const child = spawnChild('sh', args, {
      env: req.env ?? {},
      stdio: req.stdio ?? 'ignore',
      detached: true,
      ...(req.signal ? { signal: req.signal, killSignal: 'SIGKILL' as const } : {}),
    });
    let exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let onExit: (() => void) | undefined;
    child.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      onExit?.();
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) =>
        reject(new DvsError('EINTERNAL', `spawn in ${this.netns}: ${e.message}`, undefined, { cause: e })),
      );
    });
    const pid = child.pid;
    if (pid === undefined) throw dvsError('EINTERNAL', 'spawned without a pid');
    const exited = new Promise<ContainerExit>((resolve) => {
      onExit = () => {
        const st = exitStatus ?? { code: null, signal: null };
        const killed = st.signal === 'SIGKILL' || st.code === 137;
        void (killed ? oomCount(driver, name) : Promise.resolve(oomBefore)).then((after) =>
          resolve({ ...st, oomKilled: killed && after > oomBefore }),
        );
      };
      if (exitStatus !== undefined) onExit();
    });
    const innerPid = () => {
      const c = childrenOf(pid)[0];
      return c;
    };
    return {
      pid,
      child,
      exited,
      innerPid,
      kill: (signal: NodeJS.Signals = 'SIGTERM') => {
        if (exitStatus !== undefined) return false;
        const inner = innerPid();
        try {
          if (inner !== undefined) process.kill(-inner, signal);
          else process.kill(pid, signal);
          return true;
        } catch {
          try {
            if (inner !== undefined) process.kill(inner, signal);
            return inner !== undefined;
          } catch {
            return false;
          }
        }
      },
    };
  }

  /**
   * Runs a command inside and collects its output (at most 16 MiB each). Killed (SIGKILL) after
   * `timeoutMs` (default 30 s) or when `signal` aborts, which rejects with ETIMEDOUT / EABORTED.
   */
  async exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return execWith((req) => this.spawn(req), cmd, opts, {
      path: '/usr/sbin:/usr/bin:/sbin:/bin',
      what: `exec in ${this.netns}`,
    });
  }

  /**
   * Ends the container: SIGKILL to pid 1 ends every process of the pid namespace; then the network
   * namespace is deleted (its veth ends go with it). The cgroup is the caller's to remove.
   */
  async destroy(run: RunOptions = {}): Promise<void> {
    killQuietly(this._initPid);
    if (this.holder?.pid !== undefined) killQuietly(this.holder.pid);
    await pollUntil(() => !this.alive(), `container ${this.netns} to exit`, {
      timeoutMs: run.timeoutMs ?? 5000,
    });
    await deleteNetns(this.netns, run);
    this.log.info('container removed');
  }
}

/** Creates a named network namespace with `lo` up, unless it exists. */
export async function ensureNetns(name: string, run: RunOptions = {}): Promise<void> {
  const list = await runTool('ip', ['netns', 'list'], run);
  if (!list.split('\n').some((l) => l.split(' ')[0] === name)) {
    await runTool('ip', ['netns', 'add', name], run);
  }
  await runTool('ip', ['-n', name, 'link', 'set', 'lo', 'up'], run);
}

/** Deletes a named network namespace, killing whatever still runs in it (by pid). No error if missing. */
export async function deleteNetns(name: string, run: RunOptions = {}): Promise<void> {
  const pids = await tryTool('ip', ['netns', 'pids', name], run);
  if (pids === undefined) return;
  for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) killQuietly(pid);
  await tryTool('ip', ['netns', 'del', name], run);
}

/** Names of the network namespaces under /run/netns. */
export async function listNetns(run: RunOptions = {}): Promise<string[]> {
  const out = (await tryTool('ip', ['netns', 'list'], run)) ?? '';
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

/** Hostnames are at most 63 characters of [A-Za-z0-9-], not starting or ending with '-'. */
export function sanitizeHostname(s: string): string {
  const h = s
    .replace(/[^A-Za-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return h || 'dvs';
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** pid 1 of some pid namespace, running our init script. */
function isContainerInit(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
    if (nspid.length < 2 || nspid[nspid.length - 1] !== '1') return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(INIT_MARK);
  } catch {
    return false;
  }
}

async function oomCount(driver: CgroupDriver, name: string): Promise<number> {
  try {
    return (await driver.stats(name)).memory?.oomKills ?? 0;
  } catch {
    return 0;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
}
