/**
 * The built CLI as a user types it (`node bin/dvs.js --dir D ...`), for the tests that start a local cluster
 * with `dvs up` in a temp dir (test/integration/{services-daemon,scheduling,gcs}, test/e2e/cli, the
 * dashboard e2e): run a command, require success, parse `--json`, and tear the cluster down whatever state
 * the test left it in. Daemons and the CLI run from dist/: build first (`npx tsc -p tsconfig.build.json`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './harness.js';

/** The CLI's entry point. */
export const BIN = join(REPO, 'bin', 'dvs.js');
/** The built SDK, for the programs a test writes and runs with `dvs run`. */
export const SDK = join(REPO, 'dist', 'src', 'sdk', 'index.js');

/** Whether the CLI and the SDK have been built (a test skips or fails with a hint otherwise). */
export function built(): boolean {
  return existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js')) && existsSync(SDK);
}

/** Whether process `pid` exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGKILL every pid in `pids` that still runs. */
export function killAll(pids: readonly number[]): void {
  for (const pid of pids) {
    if (!(pid > 0 && alive(pid))) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited between the check and the kill
    }
  }
}

/** What one CLI run returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The node of a cluster file (`<dir>/cluster.json`, written by `dvs up`), as far as tests read it. */
export interface ClusterFileNode {
  id: number;
  pid: number;
  socket: string;
}

/**
 * The CLI against the cluster of one temp dir. Its methods are bound, so a test may destructure them
 * (`const { dvs, ok, json } = c`) before `start()` makes the dir.
 */
export class CliCluster {
  private _dir: string | undefined;

  /**
   * @param prefix of the temp dir's name.
   * @param env added to the CLI's environment (and so to the daemons `dvs up` starts), e.g. DVS_ISOLATION.
   */
  constructor(
    private readonly prefix: string,
    private readonly env: Record<string, string> = {},
  ) {}

  /** The temp dir (throws before `start()`). */
  get dir(): string {
    assert.ok(this._dir !== undefined, 'CliCluster.start() first');
    return this._dir;
  }

  /** Whether `start()` made a dir (so `stop()` has something to do). */
  get started(): boolean {
    return this._dir !== undefined;
  }

  /** Make the temp dir; returns it. */
  async start(): Promise<string> {
    this._dir = await mkdtemp(join(tmpdir(), this.prefix));
    return this._dir;
  }

  /** Run `dvs --dir <dir> ...args` (60 s at most, no colours); never rejects. */
  readonly dvs = (...args: string[]): Promise<CliResult> => {
    const dir = this.dir;
    return new Promise((res) => {
      execFile(
        process.execPath,
        [BIN, '--dir', dir, ...args],
        { cwd: dir, timeout: 60_000, env: { ...process.env, NO_COLOR: '1', ...this.env } },
        (err, stdout, stderr) =>
          res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
  };

  /** Run a command that must succeed; its stdout. */
  readonly ok = async (...args: string[]): Promise<string> => {
    const r = await this.dvs(...args);
    assert.equal(r.code, 0, `dvs ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };

  /** Run a command that must succeed and parse its stdout (pass `--json`). */
  readonly json = async <T>(...args: string[]): Promise<T> => JSON.parse(await this.ok(...args)) as T;

  /** The nodes of the cluster file (empty if there is none: nothing was started). */
  async nodes(): Promise<ClusterFileNode[]> {
    try {
      const f = JSON.parse(await readFile(join(this.dir, 'cluster.json'), 'utf8')) as {
        nodes: ClusterFileNode[];
      };
      return f.nodes;
    } catch {
      return [];
    }
  }

  /**
   * `dvs down`, then SIGKILL every daemon the cluster file names (and `extraPids`, e.g. processes a test
   * started itself), and remove the dir. Safe to call whatever the test got to, also before `start()`.
   */
  readonly stop = async (extraPids: readonly number[] = []): Promise<void> => {
    if (this._dir === undefined) return;
    await this.dvs('down', '--timeout', '3000').catch(() => {});
    killAll([...(await this.nodes()).map((n) => n.pid), ...extraPids]);
    await rm(this._dir, { recursive: true, force: true });
  };
}
