/**
 * Integration harness: N real node daemons as separate OS processes on loopback, started through the
 * built CLI (`node bin/dvs.js node start ...`, so `npm run build` must have run: scripts/test.sh does).
 *
 * Every daemon is killed by PID in stop(), even when a test failed half-way; the temp dir goes with it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { DcConfig } from '../../src/kernel/types.js';
import type { AdminMethod, AdminMethods, NodeStatus } from '../../src/protocol/admin.js';
import { AdminClient } from '../../src/sdk/admin.js';

export const REPO = resolve(import.meta.dirname, '../..');
const CLI = join(REPO, 'bin/dvs.js');

export interface TestNode {
  id: number;
  socket: string;
  address: string;
  dataDir: string;
  /** `--store` of this node, if the cluster runs with a cluster store. */
  store: string | undefined;
  proc: ChildProcess | undefined;
}

export interface ClusterOptions {
  nodes?: number;
  heartbeatMs?: number;
  deadAfterMs?: number;
  /** Run with a cluster store: node i gets `--store stores[i]` (and `nodes` is `stores.length`). start() then waits
   *  until every node sees every other registered and linked. */
  stores?: string[];
  /** Extra `dvs node start` arguments of node i (e.g. `--api 127.0.0.1:P`). */
  nodeArgs?: (id: number) => string[];
}

/** Free loopback TCP ports (bound and released: a tiny race, acceptable on a test machine). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((ok, fail) => {
          const s = net.createServer();
          s.once('error', fail);
          s.listen(0, '127.0.0.1', () => ok(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
  return ports;
}

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes (then throw with the last error). */
export async function check<T>(fn: () => Promise<T> | T, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Daemons started by this test process and not yet reaped: killed by PID if the test process exits early. */
const LIVE = new Set<ChildProcess>();

export class TestCluster {
  readonly nodes: TestNode[] = [];

  /** Once per test process: on exit (even a crash or a broken pipe), SIGKILL every daemon still running. */
  private static guardExit(): void {
    if (TestCluster.guarded) return;
    TestCluster.guarded = true;
    const killAll = () => {
      for (const p of LIVE) p.kill('SIGKILL');
    };
    process.once('exit', killAll);
    // A test process stopped by a signal (the runner interrupted, a broken pipe) gets no 'exit' event.
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGPIPE'] as const) {
      process.once(sig, () => {
        killAll();
        process.exit(128 + (sig === 'SIGTERM' ? 15 : sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 13));
      });
    }
  }
  private static guarded = false;

  private constructor(
    readonly dir: string,
    private readonly opts: Required<ClusterOptions>,
  ) {}

  static async start(opts: ClusterOptions = {}): Promise<TestCluster> {
    const o = {
      heartbeatMs: 100,
      deadAfterMs: 1000,
      ...opts,
      nodes: opts.stores?.length ?? opts.nodes ?? 3,
      stores: opts.stores ?? [],
      nodeArgs: opts.nodeArgs ?? (() => []),
    };
    const dir = await mkdtemp(join(tmpdir(), 'dvs-it-'));
    const c = new TestCluster(dir, o);
    const ports = await freePorts(o.nodes);
    for (let i = 0; i < o.nodes; i++) {
      c.nodes.push({
        id: i,
        socket: join(dir, `node${i}`, 'dvk.sock'),
        address: `127.0.0.1:${ports[i]}`,
        dataDir: join(dir, `node${i}`),
        store: o.stores[i],
        proc: undefined,
      });
    }
    try {
      for (const n of c.nodes) c.spawnNode(n);
      if (o.stores.length > 0) await c.waitMembers(c.nodes.map((n) => n.id));
      else await c.waitLinks();
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  private spawnNode(n: TestNode): void {
    TestCluster.guardExit();
    const peers = this.nodes.map((p) => `${p.id}=${p.address}`).join(',');
    const args = [
      CLI,
      'node',
      'start',
      '--node-id',
      String(n.id),
      '--listen',
      n.address,
      '--socket',
      n.socket,
      '--data',
      n.dataDir,
      '--peers',
      peers,
      '--heartbeat-ms',
      String(this.opts.heartbeatMs),
      '--dead-after-ms',
      String(this.opts.deadAfterMs),
      ...(n.store === undefined ? [] : ['--store', n.store]),
      '--metrics',
      '127.0.0.1:0',
      '--log-file',
      join(n.dataDir, 'daemon.log'),
      '--log-level',
      'debug',
      ...this.opts.nodeArgs(n.id),
    ];
    // Integration runs test IPC, the store and the services: containers are the system tests' business
    // (they outlive a kill -9 by design, and these tests kill daemons).
    const proc = spawn(process.execPath, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, DVS_ISOLATION: process.env.DVS_ISOLATION ?? 'off' },
    });
    n.proc = proc;
    LIVE.add(proc);
    proc.once('exit', () => LIVE.delete(proc));
    let err = '';
    n.proc.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    n.proc.once('exit', (code, sig) => {
      if (code !== 0 && sig === null && err) process.stderr.write(`[node${n.id} exited ${code}] ${err}\n`);
    });
  }

  /** Admin call on node `i` (a fresh connection each time: simple and robust across restarts). */
  async admin<M extends AdminMethod>(i: number, method: M, params: AdminMethods[M]['params']) {
    const c = await AdminClient.connect(this.nodes[i]!.socket, { timeout: 2000 });
    try {
      return await c.call(method, params, { timeout: 10_000 });
    } finally {
      await c.close();
    }
  }

  async status(i: number): Promise<NodeStatus> {
    return this.admin(i, 'status', {});
  }

  /** Wait until every live node sees every other live node's link up. */
  async waitLinks(timeoutMs = 15_000): Promise<void> {
    const live = this.nodes.filter((n) => n.proc && n.proc.exitCode === null && n.proc.signalCode === null);
    await check(
      async () => {
        for (const n of live) {
          const st = await this.status(n.id);
          for (const p of live) {
            if (p.id === n.id) continue;
            if (st.links.find((l) => l.node === p.id)?.state !== 'up') return false;
          }
        }
        return true;
      },
      timeoutMs,
      'all links up',
    );
  }

  /** Wait until each of `ids` sees every one of `ids` up in its membership view (and its links up). */
  async waitMembers(ids: number[], timeoutMs = 20_000): Promise<void> {
    await check(
      async () => {
        for (const i of ids) {
          const st = await this.status(i);
          for (const j of ids) {
            if (st.cluster?.members.find((m) => m.id === j)?.state !== 'up') return false;
            if (j !== i && st.links.find((l) => l.node === j)?.state !== 'up') return false;
          }
        }
        return true;
      },
      timeoutMs,
      `nodes ${ids.join(',')} registered and linked`,
    );
  }

  /** Create a DC on every node it spans (as the CLI does). */
  async createDc(cfg: Partial<DcConfig> & { id: number; name: string }): Promise<DcConfig> {
    const full: DcConfig = {
      nodes: this.nodes.map((n) => n.id),
      maxPayload: 4096,
      sysEndpoints: 64,
      postWindow: 1024,
      ...cfg,
    };
    for (const id of full.nodes) await this.admin(id, 'dc.create', { config: full });
    return full;
  }

  /** kill -9 the daemon of node `i`. */
  async killNode(i: number): Promise<void> {
    const p = this.nodes[i]!.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  /** Start node `i` again (a new incarnation). */
  restartNode(i: number): void {
    this.spawnNode(this.nodes[i]!);
  }

  /** The node's log, for failure messages. */
  async log(i: number): Promise<string> {
    return readFile(join(this.nodes[i]!.dataDir, 'daemon.log'), 'utf8').catch(() => '');
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.nodes.map(async (n) => {
        const p = n.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }),
    );
    await rm(this.dir, { recursive: true, force: true });
  }
}
