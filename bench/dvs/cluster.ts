/**
 * The dvs fixture of a bench run: a local 2-node cluster started with the CLI (`dvs up --detach`), one DC
 * `bench` over both nodes, stopped with `dvs down` and then by PID (every daemon pid from cluster.json).
 * The CLI runs from dist/, so the fixture builds first when dist is missing or older than src.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SkipError } from '../lib/case.js';
import { killPid, pidAlive, profileFlags, trackPid } from '../lib/proc.js';

/** Where the bench cluster's nodes are. */
export interface BenchCluster {
  dir: string;
  dc: string;
  /** Local socket of node `i`. */
  sockets: string[];
}

interface ExecResult {
  code: number | null;
  out: string;
}

/** Run a command to completion (killed by PID after `timeoutMs`); dvs daemons it starts run without containers. */
export function exec(cmd: string, argv: string[], cwd: string, timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve) => {
    // The bench measures IPC, not containers: its daemons run processes plainly (and an interrupted run
    // leaves no container behind; containers outlive a kill -9 of their daemon by design).
    const p = spawn(cmd, argv, {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DVS_ISOLATION: process.env.DVS_ISOLATION ?? 'off' },
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    if (p.pid !== undefined) trackPid(p.pid);
    const timer = setTimeout(() => {
      if (p.pid !== undefined) void killPid(p.pid, 200);
      out += `\n(killed after ${timeoutMs} ms)`;
    }, timeoutMs);
    p.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, out: e.message });
    });
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Newest mtime (ms) of the .ts files under `dir`. */
async function newestTs(dir: string): Promise<number> {
  let newest = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) {
      const s = await stat(join(e.parentPath, e.name));
      newest = Math.max(newest, s.mtimeMs);
    }
  }
  return newest;
}

/**
 * `npm run build` unless dist/src/cli/main.js is newer than every source file. tsc emits even when it
 * reports type errors (other engineers may be mid-edit), so a failed build with an emitted CLI is used
 * with a note; only a build that leaves no CLI skips the dvs cases.
 */
export async function ensureBuilt(
  root: string,
  log: (m: string) => void,
  note: (m: string) => void,
): Promise<void> {
  const built = await stat(join(root, 'dist/src/cli/main.js')).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  if (built > 0 && built >= (await newestTs(join(root, 'src')))) return;
  log(built === 0 ? 'dist missing: npm run build' : 'dist older than src: npm run build');
  const r = await exec(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['run', 'build'], root, 300_000);
  if (r.code !== 0) {
    const first = (r.out.split('\n').find((l) => /error/i.test(l)) ?? lastLine(r.out)).trim().slice(0, 200);
    const emitted = await stat(join(root, 'dist/src/cli/main.js')).then(
      (s) => s.mtimeMs > built,
      () => false,
    );
    if (!emitted) throw new SkipError(`npm run build failed: ${first}`);
    note(`npm run build reported errors (dvs measured from what tsc emitted anyway): ${first}`);
  }
}

/** Start the cluster; the returned stop() takes it down and kills what is left by PID. */
export async function startCluster(
  root: string,
  tmp: string,
  log: (m: string) => void,
  note: (m: string) => void,
): Promise<{ value: BenchCluster; stop: () => Promise<void> }> {
  await ensureBuilt(root, log, note);
  // A new directory per start: a phase of the run may start the cluster again, and its store must be empty.
  const dir = await mkdtemp(join(tmp, 'cluster-'));
  // `dvs up` starts the daemons with its own Node flags, so profiling it (--cpu-prof) profiles them.
  const cli = (argv: string[], timeoutMs = 60_000) =>
    exec(
      process.execPath,
      [...(argv[0] === 'up' ? profileFlags() : []), join(root, 'bin/dvs.js'), ...argv, '--dir', dir],
      root,
      timeoutMs,
    );
  const pids: number[] = [];
  const stop = async () => {
    await cli(['down'], 20_000);
    for (const pid of pids) if (pidAlive(pid)) await killPid(pid);
  };
  log('starting a 2-node dvs cluster');
  const up = await cli(['up', '--detach', '--nodes', '2']);
  // Record the daemons before judging the outcome, so a half-started cluster is still cleaned up.
  const file = await readFile(join(dir, 'cluster.json'), 'utf8').catch(() => null);
  if (file !== null) {
    const parsed = JSON.parse(file) as { nodes?: Array<{ pid?: number; socket?: string; id?: number }> };
    for (const n of parsed.nodes ?? []) {
      if (typeof n.pid === 'number') {
        pids.push(n.pid);
        trackPid(n.pid);
      }
    }
  }
  try {
    if (up.code !== 0 || file === null) {
      throw new SkipError(`dvs up failed: ${lastLine(up.out)}`);
    }
    const nodes = (JSON.parse(file) as { nodes: Array<{ id: number; socket: string }> }).nodes;
    const sockets: string[] = [];
    for (const n of nodes) sockets[n.id] = n.socket;
    if (sockets[0] === undefined || sockets[1] === undefined)
      throw new SkipError('cluster.json lacks nodes 0 and 1');
    const dc = await cli(['dc', 'create', 'bench', '--nodes', '0,1']);
    if (dc.code !== 0) throw new SkipError(`dvs dc create failed: ${lastLine(dc.out)}`);
    return { value: { dir, dc: 'bench', sockets }, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

function lastLine(s: string): string {
  return (
    s
      .trim()
      .split('\n')
      .filter((l) => l.trim() !== '')
      .pop() ?? '(no output)'
  ).slice(0, 200);
}
