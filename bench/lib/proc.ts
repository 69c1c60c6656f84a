/**
 * The runner side of the bench process protocol (see ./worker.ts): start a child script, wait for its ready
 * line, ask it for measurements, and kill it by PID. Every child started here is recorded in a registry so
 * the runner can kill whatever is left on any exit path (normal end, failure, Ctrl-C).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Measurement } from './worker.js';
import { MARK } from './worker.js';

/**
 * Node flags for every Node process the bench starts: `--cpu-prof --cpu-prof-dir DIR` when the runner was
 * given `--cpu-prof DIR` (Node refuses --cpu-prof in NODE_OPTIONS, so it is passed on the command line).
 */
export function profileFlags(): string[] {
  const dir = process.env.DVS_BENCH_CPU_PROF;
  return dir ? ['--cpu-prof', '--cpu-prof-dir', dir] : [];
}

/** PIDs of every live process the bench started (children and dvs daemons). */
const live = new Set<number>();

/** Record a PID started outside {@link Child} (e.g. daemons of `dvs up --detach`). */
export function trackPid(pid: number): void {
  live.add(pid);
}

/** True when a process with this PID exists. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kill a PID: SIGTERM, then SIGKILL after `graceMs` if it is still there. */
export async function killPid(pid: number, graceMs = 1000): Promise<void> {
  if (!pidAlive(pid)) {
    live.delete(pid);
    return;
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {}
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && pidAlive(pid)) await sleep(20);
  if (pidAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  live.delete(pid);
}

/** Synchronous last resort, for process 'exit': SIGKILL every recorded PID. */
export function killAllSync(): void {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  live.clear();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Options of {@link Child.start}. */
export interface ChildOptions {
  /** Working directory (the repo root, so `--import tsx` resolves). */
  cwd: string;
  /** Extra environment. */
  env?: Record<string, string>;
  /** ms to wait for the ready line (default 20 s). */
  readyTimeout?: number;
  /** Label for error messages. */
  label?: string;
  /**
   * Run this command line instead of `node --import tsx <script> ...argv` (e.g. a shell that wires pipes
   * before it execs the Node script); the process must still speak the bench protocol.
   */
  command?: string[];
}

/** A child process speaking the bench protocol. */
export class Child {
  readonly label: string;
  /** The ready line's fields (e.g. `port`). */
  info: Record<string, unknown> = {};
  private readonly proc: ChildProcess;
  private readonly pending = new Map<number, (r: Record<string, unknown>) => void>();
  private nextId = 1;
  private exited: string | null = null;
  private readonly stderrTail: string[] = [];
  private readonly readyP: Promise<void>;

  private constructor(script: string, argv: string[], opts: ChildOptions) {
    this.label = opts.label ?? script;
    const [file, ...fileArgs] = opts.command ?? [
      process.execPath,
      ...profileFlags(),
      '--import',
      'tsx',
      script,
      ...argv,
    ];
    this.proc = spawn(file!, fileArgs, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    if (this.proc.pid !== undefined) live.add(this.proc.pid);
    let onReady: () => void = () => {};
    let onFail: (e: Error) => void = () => {};
    this.readyP = new Promise<void>((res, rej) => {
      onReady = res;
      onFail = rej;
    });
    // A failure before anyone awaits ready() must not crash the runner as an unhandled rejection.
    this.readyP.catch(() => {});
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      if (!line.startsWith(MARK)) return;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line.slice(MARK.length)) as Record<string, unknown>;
      } catch {
        return;
      }
      if (msg.ready === true) {
        this.info = msg;
        onReady();
      } else if (typeof msg.id === 'number') {
        this.pending.get(msg.id)?.(msg);
        this.pending.delete(msg.id);
      }
    });
    createInterface({ input: this.proc.stderr! }).on('line', (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > 20) this.stderrTail.shift();
    });
    this.proc.stdin!.on('error', () => {});
    this.proc.on('error', (e) => {
      this.exited = `spawn failed: ${e.message}`;
      onFail(new Error(`${this.label}: ${this.exited}`));
    });
    this.proc.on('exit', (code, signal) => {
      if (this.proc.pid !== undefined) live.delete(this.proc.pid);
      this.exited = `exited (${signal ?? code})`;
      const err = new Error(`${this.label} ${this.exited}${this.stderrHint()}`);
      onFail(err);
      for (const cb of this.pending.values()) cb({ error: err.message });
      this.pending.clear();
    });
    const timeout = opts.readyTimeout ?? 20_000;
    const timer = setTimeout(
      () => onFail(new Error(`${this.label}: not ready after ${timeout} ms`)),
      timeout,
    );
    this.readyP.then(
      () => clearTimeout(timer),
      () => clearTimeout(timer),
    );
  }

  /** Start `script` (a .ts path) with `argv` and wait until it reports ready. Killed again on failure. */
  static async start(script: string, argv: string[], opts: ChildOptions): Promise<Child> {
    const c = new Child(script, argv, opts);
    try {
      await c.readyP;
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  private stderrHint(): string {
    // A Node crash prints the error line first and a stack and version after it: prefer the error line.
    const lines = this.stderrTail.map((l) => l.trim()).filter((l) => l !== '');
    const err = lines.find((l) => /^\w*Error\b|Error:|error:/.test(l));
    const t = err ?? lines.slice(-2).join(' | ');
    return t !== '' ? `: ${t}` : '';
  }

  /** Ask for one measurement of `work` units; rejects after `timeoutMs` or if the child fails. */
  run(work: number, timeoutMs: number): Promise<Measurement> {
    if (this.exited !== null)
      return Promise.reject(new Error(`${this.label} ${this.exited}${this.stderrHint()}`));
    const id = this.nextId++;
    return new Promise<Measurement>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.label}: no result after ${timeoutMs} ms (work ${work})`));
      }, timeoutMs);
      this.pending.set(id, (msg) => {
        clearTimeout(timer);
        if (typeof msg.error === 'string') reject(new Error(msg.error));
        else resolve(msg as unknown as Measurement);
      });
      this.proc.stdin!.write(`${JSON.stringify({ id, work })}\n`);
    });
  }

  /** Close stdin (the child's cue to exit), then kill it by PID if it lingers. */
  async stop(): Promise<void> {
    try {
      this.proc.stdin!.end();
    } catch {}
    const pid = this.proc.pid;
    if (pid === undefined) return;
    const deadline = Date.now() + 500;
    while (Date.now() < deadline && this.exited === null) await sleep(10);
    if (this.exited === null) await killPid(pid);
    live.delete(pid);
  }
}
