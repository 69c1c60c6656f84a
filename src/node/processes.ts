/**
 * The daemon's process manager: spawns the processes of `dvs run`, captures their output in per-endpoint
 * log files, reports their exits (so the daemon can unbind the endpoint) and stops them on `dvs kill`,
 * `dc rm` or daemon shutdown.
 *
 * Processes run without a shell, in their own process group (so a signal reaches the helpers a script
 * starts, too), with stdout and stderr written straight into `<dataDir>/logs/<dcName>-<ep>.log` by the
 * kernel: no pipe passes through the daemon, so a chatty process cannot slow the event loop and its output
 * survives a daemon crash. Exited entries are kept for a while so `dvs logs` still finds them.
 */
import { type ChildProcess, type StdioOptions, spawn as spawnChild } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DcId, Endpoint, NodeId } from '../kernel/types.js';
import type { ProcessInfo } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';

/** Options of a {@link ProcessManager}. */
export interface ProcessManagerOptions {
  nodeId: NodeId;
  /** The node's data dir; logs go to `<dataDir>/logs/`. */
  dataDir: string;
  logger: Logger;
  /** Called for every exit (after the per-spawn `onExit`). The daemon unbinds the endpoint here. */
  onExit?: (info: ProcessInfo) => void;
  /** How long exited entries stay listed, ms (default 1 h). */
  keepExitedMs?: number;
  /** At most this many exited entries are kept (default 256; the oldest go first). */
  maxExited?: number;
  /** Grace between SIGTERM and SIGKILL in {@link ProcessManager.stop}, ms (default 2000). */
  stopGraceMs?: number;
  /** Clock, ms since the epoch (injectable for tests). */
  now?: () => number;
  /**
   * Starts processes somewhere other than as plain children of the daemon (in the DC's container:
   * src/node/isolation-wiring.ts). Without it, processes are plain detached children.
   */
  spawner?: ProcessSpawner;
}

/** How a process ended, as a {@link ProcessSpawner} reports it. */
export interface SpawnedExit {
  code: number | null;
  signal: string | null;
  /** Killed by the OOM killer at the DC's memory limit. */
  oomKilled?: boolean;
  /** One line for people, e.g. `killed: out of memory at 256M`. */
  reason?: string;
}

/** A process started by a {@link ProcessSpawner}. */
export interface SpawnedProcess {
  /** Host pid (what ProcessInfo.pid shows). */
  pid: number;
  /** The pid the process sees itself (inside a pid namespace): what it reports when it binds. */
  containerPid?: number;
  /** Resolves once, when it exits. */
  exited: Promise<SpawnedExit>;
  /** Signals the process and what it started. */
  kill(signal: NodeJS.Signals): void;
}

/**
 * Starts `req` with the complete `env` and `stdio`; rejects with a DvsError (ENOENT, EINVAL, ...). Resolves
 * with undefined to decline: the manager then spawns a plain child (isolation off).
 */
export type ProcessSpawner = (
  req: SpawnRequest,
  env: Record<string, string>,
  stdio: StdioOptions,
) => Promise<SpawnedProcess | undefined>;

/** What to spawn. */
export interface SpawnRequest {
  dc: DcId;
  /** Names the log file; characters outside [A-Za-z0-9_.-] are replaced. */
  dcName: string;
  ep: Endpoint;
  /** Display name (default `ep<N>`). */
  name?: string;
  /** Executable and arguments; no shell is involved. */
  cmd: string[];
  /** Added on top of the daemon's environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** Called once when this process exits. */
  onExit?: (info: ProcessInfo) => void;
}

/** A chunk of a process's output log. `offset` is where the next read should start. */
export interface LogChunk {
  data: Uint8Array;
  offset: number;
  running: boolean;
}

interface Entry {
  info: ProcessInfo;
  /** What started it (a migration starts the same program elsewhere). */
  req: SpawnRequest;
  /** Undefined when a {@link ProcessSpawner} started it (then `kill` is set). */
  child?: ChildProcess;
  /** Signals the process when it is not a plain child (a container process). */
  kill?: (signal: NodeJS.Signals) => void;
  logPath: string;
  /** Size of the (append-only) log file when this run started: offsets of readLog count from here. */
  logStart: number;
  exited: Promise<ProcessInfo>;
  onExit?: (info: ProcessInfo) => void;
}

const DEFAULT_KEEP_EXITED_MS = 60 * 60 * 1000;
const DEFAULT_MAX_EXITED = 256;
const DEFAULT_STOP_GRACE_MS = 2000;
/** After SIGKILL a process is gone within milliseconds unless stuck in the kernel; do not wait forever. */
const KILL_WAIT_MS = 5000;
const DEFAULT_LOG_READ = 64 * 1024;
const MAX_LOG_READ = 1024 * 1024;

/** Signal names this platform knows (SIGTERM, SIGKILL, ...). */
export function isSignalName(s: string): s is NodeJS.Signals {
  return Object.hasOwn(osConstants.signals, s);
}

/** Spawns, tracks and stops the processes `dvs run` starts on this node. */
export class ProcessManager {
  readonly nodeId: NodeId;
  readonly logDir: string;
  private readonly log: Logger;
  private readonly opts: ProcessManagerOptions;
  private readonly now: () => number;
  /** Running processes by `dc:ep` (at most one per endpoint). */
  private readonly running = new Map<string, Entry>();
  /** Exited processes, oldest first. */
  private exited: Entry[] = [];
  private stopping = false;

  constructor(opts: ProcessManagerOptions) {
    this.opts = opts;
    this.nodeId = opts.nodeId;
    this.logDir = join(opts.dataDir, 'logs');
    this.log = opts.logger.child({ component: 'processes' });
    this.now = opts.now ?? Date.now;
  }

  /** Creates the log directory. */
  async start(): Promise<void> {
    await mkdir(this.logDir, { recursive: true });
  }

  /**
   * Spawns `req.cmd`. Resolves once the child has a pid; rejects with ENOENT (no such command or cwd),
   * EPERM (not executable), EBOUND (a process of this manager already runs at that endpoint) or EINVAL.
   */
  async spawn(req: SpawnRequest): Promise<ProcessInfo> {
    if (this.stopping) throw dvsError('ENOTCONN', 'the node is shutting down');
    const [file, ...args] = req.cmd;
    if (file === undefined || file === '') throw dvsError('EINVAL', 'empty command');
    const key = keyOf(req.dc, req.ep);
    if (this.running.has(key)) {
      throw dvsError('EBOUND', `a process already runs at endpoint ${req.ep} of DC ${req.dcName}`, {
        dc: req.dc,
        ep: req.ep,
      });
    }
    if (req.cwd !== undefined) {
      const st = await stat(req.cwd).catch(() => undefined);
      if (st === undefined || !st.isDirectory()) throw dvsError('ENOENT', `no such directory: ${req.cwd}`);
    }
    await mkdir(this.logDir, { recursive: true });
    const logPath = join(this.logDir, `${safeName(req.dcName)}-${req.ep}.log`);
    const fh = await open(logPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND, 0o644);
    let entry: Entry;
    try {
      const logStart = (await fh.stat()).size;
      // Re-check after the awaits: a concurrent spawn for the same endpoint may have won.
      if (this.running.has(key)) throw dvsError('EBOUND', `a process already runs at endpoint ${req.ep}`);
      const isolated = this.opts.spawner
        ? await this.spawnWith(this.opts.spawner, req, key, fh.fd, logPath, logStart)
        : undefined;
      if (isolated) return { ...isolated.info };
      const child = spawnChild(file, args, {
        cwd: req.cwd,
        env: { ...process.env, ...req.env },
        stdio: ['ignore', fh.fd, fh.fd],
        detached: true,
        windowsHide: true,
      });
      // Listen for the exit before any await: a short-lived child may exit before the next turn.
      let exitStatus: { code: number | null; signal: string | null } | undefined;
      let onExited: (() => void) | undefined;
      child.once('exit', (code, signal) => {
        exitStatus = { code, signal };
        onExited?.();
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', (e) => reject(spawnError(e, file)));
      });
      const pid = child.pid;
      if (pid === undefined) throw dvsError('EINTERNAL', `spawned ${file} without a pid`);
      const info: ProcessInfo = {
        dc: req.dc,
        dcName: req.dcName,
        ep: req.ep,
        name: req.name ?? `ep${req.ep}`,
        pid,
        node: this.nodeId,
        cmd: [...req.cmd],
        startedAt: this.now(),
        exit: null,
      };
      const exited = new Promise<ProcessInfo>((resolve) => {
        onExited = () => {
          info.exit = { code: exitStatus?.code ?? null, signal: exitStatus?.signal ?? null, at: this.now() };
          this.onChildExit(key, entry);
          resolve(info);
        };
      });
      entry = {
        info,
        req,
        child,
        logPath,
        logStart,
        exited,
        ...(req.onExit ? { onExit: req.onExit } : {}),
      };
      this.running.set(key, entry);
      if (exitStatus !== undefined) onExited?.();
    } finally {
      // The child holds its own copy of the descriptor.
      await fh.close();
    }
    const { info } = entry;
    this.log.info({ dc: req.dc, ep: req.ep, pid: info.pid, cmd: req.cmd }, 'process started');
    return { ...info };
  }

  /**
   * Sends `signal` to the process of `ep` (and its process group); if it is still alive after `graceMs`,
   * SIGKILL. Resolves with the exited process. An already exited process resolves at once; ENOENT if this
   * node never ran one there, EINVAL for an unknown signal.
   */
  async kill(dc: DcId, ep: Endpoint, signal = 'SIGTERM', graceMs = 3000): Promise<ProcessInfo> {
    if (!isSignalName(signal)) throw dvsError('EINVAL', `unknown signal ${signal}`);
    if (!Number.isFinite(graceMs) || graceMs < 0) throw dvsError('EINVAL', `bad grace period ${graceMs}`);
    const entry = this.running.get(keyOf(dc, ep));
    if (entry === undefined) {
      const done = this.findExited(dc, ep);
      if (done) return { ...done.info };
      throw dvsError('ENOENT', `no process at endpoint ${ep} of DC ${dc} on node ${this.nodeId}`, { dc, ep });
    }
    return this.terminate(entry, signal, graceMs);
  }

  /** Running and recently exited processes, optionally of one DC; oldest first. */
  list(dc?: DcId): ProcessInfo[] {
    this.prune();
    const all = [...this.exited, ...this.running.values()];
    return all
      .filter((e) => dc === undefined || e.info.dc === dc)
      .sort((a, b) => a.info.startedAt - b.info.startedAt)
      .map((e) => ({ ...e.info }));
  }

  /** The running process of `ep`, else the latest exited one, else undefined. */
  /** How the running process of `ep` was started (cmd, env, cwd), if one runs. */
  request(dc: DcId, ep: Endpoint): SpawnRequest | undefined {
    const e = this.running.get(keyOf(dc, ep));
    return e === undefined ? undefined : { ...e.req, cmd: [...e.req.cmd], env: { ...e.req.env } };
  }

  get(dc: DcId, ep: Endpoint): ProcessInfo | undefined {
    const e = this.running.get(keyOf(dc, ep)) ?? this.findExited(dc, ep);
    return e ? { ...e.info } : undefined;
  }

  /**
   * Waits until the process of `ep` exits. After `timeoutMs` it resolves anyway, with `exit` still null
   * (the admin `proc.wait` contract); rejects with EABORTED if `signal` aborts, ENOENT if unknown.
   */
  async wait(
    dc: DcId,
    ep: Endpoint,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<ProcessInfo> {
    const entry = this.running.get(keyOf(dc, ep));
    if (entry === undefined) {
      const done = this.findExited(dc, ep);
      if (done) return { ...done.info };
      throw dvsError('ENOENT', `no process at endpoint ${ep} of DC ${dc} on node ${this.nodeId}`, { dc, ep });
    }
    opts.signal?.throwIfAborted();
    return new Promise<ProcessInfo>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        cleanup();
        reject(dvsError('EABORTED', 'wait aborted'));
      };
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          resolve({ ...entry.info });
        }, opts.timeoutMs);
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      void entry.exited.then((info) => {
        cleanup();
        resolve({ ...info });
      });
    });
  }

  /**
   * Reads at most `max` bytes (default 64 KiB, at most 1 MiB) of the output of the latest process of
   * `ep`, from `offset` (0 = the start of that run's output).
   */
  async readLog(dc: DcId, ep: Endpoint, offset: number, max = DEFAULT_LOG_READ): Promise<LogChunk> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw dvsError('EINVAL', `bad log offset ${offset}`);
    if (!Number.isSafeInteger(max) || max <= 0) throw dvsError('EINVAL', `bad read size ${max}`);
    const entry = this.running.get(keyOf(dc, ep)) ?? this.findExited(dc, ep);
    if (entry === undefined) {
      throw dvsError('ENOENT', `no process at endpoint ${ep} of DC ${dc} on node ${this.nodeId}`, { dc, ep });
    }
    // Sample `running` before reading, so a caller that sees running=false knows it has read everything.
    const running = entry.info.exit === null;
    const fh = await open(entry.logPath, 'r').catch((e: unknown) => {
      throw new DvsError('ENOENT', `log file missing: ${entry.logPath}`, undefined, { cause: e });
    });
    try {
      const buf = Buffer.alloc(Math.min(max, MAX_LOG_READ));
      const { bytesRead } = await fh.read(buf, 0, buf.length, entry.logStart + offset);
      return { data: buf.subarray(0, bytesRead), offset: offset + bytesRead, running };
    } finally {
      await fh.close();
    }
  }

  /** Kills every running process it started (SIGTERM, SIGKILL after the grace) and waits for them. */
  async stop(): Promise<void> {
    this.stopping = true;
    const grace = this.opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
    await Promise.all(
      [...this.running.values()].map((e) => this.terminate(e, 'SIGTERM', grace).catch(() => {})),
    );
  }

  private async terminate(entry: Entry, signal: NodeJS.Signals, graceMs: number): Promise<ProcessInfo> {
    if (entry.info.exit !== null) return { ...entry.info };
    this.log.info({ dc: entry.info.dc, ep: entry.info.ep, pid: entry.info.pid, signal }, 'killing process');
    const send = (s: NodeJS.Signals) => (entry.kill ? entry.kill(s) : signalGroup(entry.info.pid, s));
    send(signal);
    if (signal !== 'SIGKILL' && !(await exitedWithin(entry, graceMs))) {
      this.log.warn({ pid: entry.info.pid, graceMs }, 'process ignored the signal, sending SIGKILL');
      send('SIGKILL');
    }
    if (!(await exitedWithin(entry, KILL_WAIT_MS))) {
      throw dvsError('ETIMEDOUT', `process ${entry.info.pid} did not exit after SIGKILL`, {
        pid: entry.info.pid,
      });
    }
    return { ...entry.info };
  }

  /** spawn() through a {@link ProcessSpawner} (the DC's container); the log fd is the child's stdout/err. */
  private async spawnWith(
    spawner: ProcessSpawner,
    req: SpawnRequest,
    key: string,
    fd: number,
    logPath: string,
    logStart: number,
  ): Promise<Entry | undefined> {
    const env = { ...process.env, ...req.env } as Record<string, string>;
    const p = await spawner(req, env, ['ignore', fd, fd]);
    if (p === undefined) return undefined;
    const info: ProcessInfo = {
      dc: req.dc,
      dcName: req.dcName,
      ep: req.ep,
      name: req.name ?? `ep${req.ep}`,
      pid: p.pid,
      ...(p.containerPid !== undefined ? { containerPid: p.containerPid } : {}),
      node: this.nodeId,
      cmd: [...req.cmd],
      startedAt: this.now(),
      exit: null,
    };
    const entry: Entry = {
      info,
      req,
      kill: (s) => p.kill(s),
      logPath,
      logStart,
      exited: p.exited.then((st) => {
        info.exit = {
          code: st.code,
          signal: st.signal,
          at: this.now(),
          ...(st.oomKilled ? { oomKilled: true } : {}),
          ...(st.reason !== undefined ? { reason: st.reason } : {}),
        };
        this.onChildExit(key, entry);
        return info;
      }),
      ...(req.onExit ? { onExit: req.onExit } : {}),
    };
    this.running.set(key, entry);
    this.log.info(
      { dc: req.dc, ep: req.ep, pid: p.pid, containerPid: p.containerPid, cmd: req.cmd },
      'process started in its container',
    );
    return entry;
  }

  private onChildExit(key: string, entry: Entry): void {
    if (this.running.get(key) === entry) this.running.delete(key);
    this.exited.push(entry);
    this.prune();
    const { info } = entry;
    this.log.info({ dc: info.dc, ep: info.ep, pid: info.pid, ...info.exit }, 'process exited');
    for (const cb of [entry.onExit, this.opts.onExit]) {
      if (!cb) continue;
      try {
        cb({ ...info });
      } catch (e) {
        this.log.error({ err: e, pid: info.pid }, 'exit callback failed');
      }
    }
  }

  private findExited(dc: DcId, ep: Endpoint): Entry | undefined {
    for (let i = this.exited.length - 1; i >= 0; i--) {
      const e = this.exited[i]!;
      if (e.info.dc === dc && e.info.ep === ep) return e;
    }
    return undefined;
  }

  private prune(): void {
    const keep = this.opts.keepExitedMs ?? DEFAULT_KEEP_EXITED_MS;
    const max = this.opts.maxExited ?? DEFAULT_MAX_EXITED;
    const cutoff = this.now() - keep;
    this.exited = this.exited.filter((e) => (e.info.exit?.at ?? 0) >= cutoff);
    if (this.exited.length > max) this.exited = this.exited.slice(this.exited.length - max);
  }
}

function keyOf(dc: DcId, ep: Endpoint): string {
  return `${dc}:${ep}`;
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, '_') || '_';
}

/** Signal the process group the child leads; if the group is gone, the pid alone. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone: the exit event will (or did) report it.
    }
  }
}

async function exitedWithin(entry: Entry, ms: number): Promise<boolean> {
  if (entry.info.exit !== null) return true;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([entry.exited.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function spawnError(e: unknown, file: string): DvsError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT')
    return new DvsError('ENOENT', `command not found: ${file}`, { cmd: file }, { cause: e });
  if (code === 'EACCES')
    return new DvsError('EPERM', `command not executable: ${file}`, { cmd: file }, { cause: e });
  return new DvsError('EINVAL', `cannot spawn ${file}: ${(e as Error).message}`, { cmd: file }, { cause: e });
}
