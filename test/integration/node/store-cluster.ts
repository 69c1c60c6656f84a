/**
 * A cluster of real node daemons (OS processes started through the built CLI, as test/integration/harness.ts
 * does) that run with a cluster store: `--store` per node. Every daemon is killed by PID in stop(); the temp
 * dir goes with it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AdminMethod, AdminMethods, NodeStatus } from '../../../src/protocol/admin.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { check, freePorts, REPO } from '../harness.js';

const CLI = join(REPO, 'bin/dvs.js');

export interface StoreNode {
  id: number;
  socket: string;
  address: string;
  dataDir: string;
  store: string;
  proc: ChildProcess | undefined;
  /** stderr of the current process. */
  stderr: string;
}

const LIVE = new Set<ChildProcess>();
let guarded = false;

function guardExit(): void {
  if (guarded) return;
  guarded = true;
  process.once('exit', () => {
    for (const p of LIVE) p.kill('SIGKILL');
  });
}

export class StoreCluster {
  readonly nodes: StoreNode[] = [];

  private constructor(
    readonly dir: string,
    private readonly deadAfterMs: number,
  ) {}

  /** Start `stores.length` daemons; node i runs with `--store stores[i]`. Resolves when all registered. */
  static async start(stores: string[], opts: { deadAfterMs?: number } = {}): Promise<StoreCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'dvs-store-'));
    const c = new StoreCluster(dir, opts.deadAfterMs ?? 1000);
    const ports = await freePorts(stores.length);
    stores.forEach((store, i) => {
      c.nodes.push({
        id: i,
        socket: join(dir, `node${i}`, 'dvk.sock'),
        address: `127.0.0.1:${ports[i]}`,
        dataDir: join(dir, `node${i}`),
        store,
        proc: undefined,
        stderr: '',
      });
    });
    try {
      for (const n of c.nodes) c.spawnNode(n);
      await c.waitMembers(c.nodes.map((n) => n.id));
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  /** Spawn node `n`'s daemon (again, after a kill: a new incarnation). */
  spawnNode(n: StoreNode): ChildProcess {
    guardExit();
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
      '100',
      '--dead-after-ms',
      String(this.deadAfterMs),
      '--store',
      n.store,
      '--log-file',
      join(n.dataDir, 'daemon.log'),
      '--log-level',
      'debug',
    ];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    n.proc = proc;
    n.stderr = '';
    LIVE.add(proc);
    proc.once('exit', () => LIVE.delete(proc));
    proc.stderr?.on('data', (d: Buffer) => {
      n.stderr += d.toString();
    });
    return proc;
  }

  restartNode(i: number): void {
    this.spawnNode(this.nodes[i]!);
  }

  async admin<M extends AdminMethod>(i: number, method: M, params: AdminMethods[M]['params']) {
    const c = await AdminClient.connect(this.nodes[i]!.socket, { timeout: 2000 });
    try {
      return await c.call(method, params, { timeout: 10_000 });
    } finally {
      await c.close();
    }
  }

  status(i: number): Promise<NodeStatus> {
    return this.admin(i, 'status', {});
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

  /** kill -9 node `i`. */
  async killNode(i: number): Promise<void> {
    const p = this.nodes[i]!.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

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
