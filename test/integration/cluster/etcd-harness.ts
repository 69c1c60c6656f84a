/**
 * etcd test cluster: N real `etcd` members (Debian's etcd-server 3.4) on 127.0.0.1 with free ports, data dirs
 * in a temp dir, and the tuned timing the coordination reference measured (heartbeat 50 ms, election 300 ms:
 * a leader kill costs 0.4-0.5 s of writes instead of 1.3-2 s).
 *
 * Every member is killed by PID in stop(), and also if the test process exits or is signalled half-way; the
 * temp dir goes with it. Without an etcd binary, `etcdSkipReason()` says why, and the tests skip.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, openSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePorts } from '../harness.js';

/** The etcd binary: $ETCD_BIN, else the first `etcd` on PATH or in the usual system dirs. */
export function findEtcd(): string | undefined {
  const fromEnv = process.env.ETCD_BIN;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin'];
  const candidates = fromEnv ? [fromEnv] : dirs.filter((d) => d !== '').map((d) => join(d, 'etcd'));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here; try the next one
    }
  }
  return undefined;
}

/** Why etcd tests cannot run here, or undefined if they can (pass it as node:test's `skip`). */
export function etcdSkipReason(): string | undefined {
  return findEtcd() === undefined
    ? 'etcd binary not found (apt-get install etcd-server, or set ETCD_BIN); .ci/run installs it'
    : undefined;
}

export { freePorts };

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes (then throw with the last error). */
export async function waitFor<T>(
  fn: () => Promise<T> | T,
  timeoutMs: number,
  what: string,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** What one etcd member needs to know to start (see {@link etcdMemberArgs}). */
export interface EtcdMemberConfig {
  name: string;
  dataDir: string;
  /** `http://host:port` the member serves clients on (listened on and advertised). */
  clientUrl: string;
  /** `http://host:port` for the other members (listened on and advertised). */
  peerUrl: string;
  /** `name=peerUrl,...` of every member. */
  initialCluster: string;
  /** `new` for a first start, `existing` for a restart on the same data dir. */
  state: 'new' | 'existing';
  heartbeatMs: number;
  electionMs: number;
}

/**
 * The command line of one test etcd member: tuned timing, warn-level zap logs on stderr. Shared with the
 * system harness (test/system/harness.ts), which starts the members inside network namespaces.
 */
export function etcdMemberArgs(m: EtcdMemberConfig): string[] {
  return [
    `--name=${m.name}`,
    `--data-dir=${m.dataDir}`,
    `--listen-client-urls=${m.clientUrl}`,
    `--advertise-client-urls=${m.clientUrl}`,
    `--listen-peer-urls=${m.peerUrl}`,
    `--initial-advertise-peer-urls=${m.peerUrl}`,
    `--initial-cluster=${m.initialCluster}`,
    `--initial-cluster-state=${m.state}`,
    '--initial-cluster-token=dvs-test',
    `--heartbeat-interval=${m.heartbeatMs}`,
    `--election-timeout=${m.electionMs}`,
    '--logger=zap',
    '--log-outputs=stderr',
    '--log-level=warn',
  ];
}

export interface EtcdClusterOptions {
  /** Members (default 3). */
  members?: number;
  /** ms (default 50). */
  heartbeatMs?: number;
  /** ms (default 300). */
  electionMs?: number;
  /** How long to wait for a healthy cluster, ms (default 20 000). */
  startTimeoutMs?: number;
}

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  proc: ChildProcess | undefined;
}

/** Members still running in this test process: killed by PID if the process exits before stop(). */
const LIVE = new Set<ChildProcess>();
/** Temp dirs still present: removed on exit. */
const DIRS = new Set<string>();
let guarded = false;

/** Once per process: on exit or a terminating signal, SIGKILL every member still running, remove the dirs. */
function guardExit(): void {
  if (guarded) return;
  guarded = true;
  const cleanup = () => {
    for (const p of LIVE) {
      if (p.pid !== undefined) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    LIVE.clear();
    for (const d of DIRS) rmSync(d, { recursive: true, force: true });
    DIRS.clear();
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanup();
      // Re-raise with the default action, so the exit status still says "killed by a signal".
      process.kill(process.pid, sig);
    });
  }
}

/** A running etcd cluster on loopback. */
export class EtcdTestCluster {
  private readonly members: Member[];
  private stopped = false;

  private constructor(
    private readonly bin: string,
    private readonly dir: string,
    private readonly opts: Required<EtcdClusterOptions>,
    members: Member[],
  ) {
    this.members = members;
  }

  /** Start the members and resolve once every one of them reports healthy (a leader exists). */
  static async start(options: EtcdClusterOptions = {}): Promise<EtcdTestCluster> {
    const bin = findEtcd();
    if (bin === undefined) throw new Error(etcdSkipReason());
    guardExit();
    const opts: Required<EtcdClusterOptions> = {
      members: options.members ?? 3,
      heartbeatMs: options.heartbeatMs ?? 50,
      electionMs: options.electionMs ?? 300,
      startTimeoutMs: options.startTimeoutMs ?? 20_000,
    };
    const dir = await mkdtemp(join(tmpdir(), 'dvs-etcd-'));
    DIRS.add(dir);
    const ports = await freePorts(opts.members * 2);
    const members = Array.from({ length: opts.members }, (_, i) => ({
      name: `m${i}`,
      clientPort: ports[2 * i]!,
      peerPort: ports[2 * i + 1]!,
      dataDir: join(dir, `m${i}`),
      proc: undefined,
    }));
    const cluster = new EtcdTestCluster(bin, dir, opts, members);
    try {
      for (let i = 0; i < members.length; i++) cluster.spawnMember(i, 'new');
      await Promise.all(members.map((_, i) => cluster.waitHealthy(i)));
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** Client endpoints `127.0.0.1:port`, one per member, in member order. */
  get endpoints(): string[] {
    return this.members.map((m) => `127.0.0.1:${m.clientPort}`);
  }

  /** The `etcd://h:p,h:p,h:p` URL of the cluster. */
  get url(): string {
    return `etcd://${this.endpoints.join(',')}`;
  }

  /** Number of members. */
  get size(): number {
    return this.members.length;
  }

  /** PID of member i, if it runs. */
  pid(i: number): number | undefined {
    return this.member(i).proc?.pid;
  }

  /** SIGKILL member i (by PID) and wait for it to exit. */
  async killMember(i: number): Promise<void> {
    const m = this.member(i);
    const p = m.proc;
    if (p === undefined) return;
    m.proc = undefined;
    await killAndWait(p);
  }

  /** Start member i again on its data dir and wait until it reports healthy. */
  async restartMember(i: number): Promise<void> {
    if (this.member(i).proc !== undefined) throw new Error(`member ${i} is running`);
    this.spawnMember(i, 'existing');
    await this.waitHealthy(i);
  }

  /** Index of the current leader, from the running members' status (etcd's JSON gateway). */
  async leader(timeoutMs = 5_000): Promise<number> {
    const found = await waitFor(
      async () => {
        const ids = new Map<string, number>();
        let leader: string | undefined;
        for (let i = 0; i < this.members.length; i++) {
          if (this.members[i]!.proc === undefined) continue;
          const st = (await this.gateway(i, '/v3/maintenance/status', {})) as {
            header?: { member_id?: string };
            leader?: string;
          };
          if (st.header?.member_id) ids.set(st.header.member_id, i);
          if (st.leader && st.leader !== '0') leader ??= st.leader;
        }
        const idx = leader === undefined ? undefined : ids.get(leader);
        return idx === undefined ? undefined : { idx };
      },
      timeoutMs,
      'an etcd leader',
    );
    return found.idx;
  }

  /** Compact the history below `revision` (physical: done when the call returns). */
  async compact(revision: number): Promise<void> {
    const i = this.members.findIndex((m) => m.proc !== undefined);
    if (i < 0) throw new Error('no member running');
    const res = (await this.gateway(i, '/v3/kv/compaction', {
      revision: String(revision),
      physical: true,
    })) as {
      error?: string;
    };
    if (res.error) throw new Error(`compaction failed: ${res.error}`);
  }

  /** SIGSTOP every running member (they stop answering); returns the function that SIGCONTs them. */
  pauseAll(): () => void {
    const pids = this.members.map((m) => m.proc?.pid).filter((p): p is number => p !== undefined);
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    return () => {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // exited meanwhile
        }
      }
    };
  }

  /** Kill every member by PID and remove the temp dir. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(
      this.members.map(async (m) => {
        const p = m.proc;
        m.proc = undefined;
        if (p !== undefined) await killAndWait(p);
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
    DIRS.delete(this.dir);
  }

  private member(i: number): Member {
    const m = this.members[i];
    if (m === undefined) throw new Error(`no member ${i}`);
    return m;
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    const m = this.member(i);
    mkdirSync(m.dataDir, { recursive: true });
    const peers = this.members.map((x) => `${x.name}=http://127.0.0.1:${x.peerPort}`).join(',');
    const args = etcdMemberArgs({
      name: m.name,
      dataDir: m.dataDir,
      clientUrl: `http://127.0.0.1:${m.clientPort}`,
      peerUrl: `http://127.0.0.1:${m.peerPort}`,
      initialCluster: peers,
      state,
      heartbeatMs: this.opts.heartbeatMs,
      electionMs: this.opts.electionMs,
    });
    // One log per member in the temp dir: readable after a failure (the dir goes on stop()).
    const log = openSync(join(this.dir, `${m.name}.log`), 'a');
    try {
      const p = spawn(this.bin, args, { stdio: ['ignore', log, log] });
      m.proc = p;
      LIVE.add(p);
      p.once('exit', () => {
        LIVE.delete(p);
        if (m.proc === p) m.proc = undefined;
      });
    } finally {
      closeSync(log);
    }
  }

  private async waitHealthy(i: number): Promise<void> {
    const m = this.member(i);
    await waitFor(
      async () => {
        if (m.proc === undefined) throw new Error(`member ${m.name} exited (log in ${this.dir})`);
        const res = await fetch(`http://127.0.0.1:${m.clientPort}/health`, {
          signal: AbortSignal.timeout(1_000),
        });
        const body = (await res.json()) as { health?: string };
        return body.health === 'true';
      },
      this.opts.startTimeoutMs,
      `etcd member ${m.name} healthy`,
    );
  }

  /** POST to a member's JSON gateway (etcd serves the v3 API as JSON over HTTP too). */
  private async gateway(i: number, path: string, body: unknown): Promise<unknown> {
    const res = await fetch(`http://127.0.0.1:${this.member(i).clientPort}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(1_000),
    });
    return res.json();
  }
}

function killAndWait(p: ChildProcess): Promise<void> {
  return new Promise((ok) => {
    if (p.exitCode !== null || p.signalCode !== null) {
      LIVE.delete(p);
      ok();
      return;
    }
    p.once('exit', () => {
      LIVE.delete(p);
      ok();
    });
    if (p.pid !== undefined) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // raced with its own exit; the 'exit' event still fires
      }
    }
  });
}
