/**
 * Scheduling and monitoring as a user types them: the built CLI against a local three-node cluster started by
 * `dvs up` (isolation off: plain processes). Every node reports its load in `status`; `dvs run` without
 * `--node` places processes on the node with the most headroom (on one host: the fewest processes, then the
 * lowest id); `dvs balance` proposes, and with `--apply` performs, the migrations that spread a DC's
 * processes; `dvs top --once --json` reports per node, DC and endpoint counters, bytes, latencies and
 * process usage. Requires `npx tsc -p tsconfig.build.json`.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TopSample } from '../../../src/cli/commands/top.js';
import type { BalancePlan } from '../../../src/node/scheduler.js';
import type { NodeStatus } from '../../../src/protocol/admin.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { connect, type Dvk } from '../../../src/sdk/client.js';
import { built, CliCluster, SDK } from '../cli.js';
import { check } from '../harness.js';

describe('dvs run placement, dvs balance, dvs top', { timeout: 180_000 }, () => {
  const open: Dvk[] = [];
  let sockets: Record<number, string> = {};

  const c = new CliCluster('dvs-sched-', { DVS_ISOLATION: 'off' });
  const { ok, json } = c;

  async function status(node: number): Promise<NodeStatus> {
    const c = await AdminClient.connect(sockets[node]!, { timeout: 2000 });
    try {
      return await c.call('status', {}, { timeout: 5000 });
    } finally {
      await c.close();
    }
  }

  /** Until every node reports its processes idle (a node process starting up burns CPU for a moment). */
  async function settled(): Promise<void> {
    // Idle in two samples in a row on every node: a process sampled once only reports 0 (no previous sample
    // to measure from), so one quiet sample can hide a process still starting up.
    const quiet = new Map<number, number>();
    await check(
      async () => {
        let all = true;
        for (const n of [0, 1, 2]) {
          const l = (await status(n)).load;
          if (l === undefined || l.procs.some((p) => p.cpu >= 0.05)) {
            quiet.delete(n);
            all = false;
            continue;
          }
          const first = quiet.get(n);
          if (first === undefined) quiet.set(n, l.sampledAt);
          if (first === undefined || first === l.sampledAt) all = false;
        }
        return all;
      },
      30_000,
      'processes idle',
    );
  }

  const idle = (ep: number, node?: number) =>
    json<{ node: number; ep: number; pid: number }>(
      'run',
      '--dc',
      'demo',
      '--ep',
      String(ep),
      ...(node === undefined ? [] : ['--node', String(node)]),
      '--json',
      '--',
      process.execPath,
      join(c.dir, 'idle.mjs'),
    );

  before(async () => {
    assert.ok(built(), 'build first');
    const dir = await c.start();
    // Attached through the SDK (a migration waits for the new process to attach), then idle.
    await writeFile(
      join(dir, 'idle.mjs'),
      [
        `import { connect } from ${JSON.stringify(SDK)};`,
        'await connect();',
        'setInterval(() => {}, 60000);',
      ].join('\n'),
    );
    await ok('up', '--nodes', '3', '--detach', '--no-store');
    await ok('dc', 'create', 'demo');
    sockets = Object.fromEntries((await c.nodes()).map((n) => [n.id, n.socket]));
  });

  after(async () => {
    await Promise.all(open.map((d) => d.close().catch(() => {})));
    await c.stop();
  });

  it('every node reports its live load in status', async () => {
    for (const n of [0, 1, 2]) {
      const l = (await status(n)).load;
      assert.ok(l, `node ${n} reports no load`);
      assert.ok(l.cpus >= 1 && l.cpuBusy >= 0 && l.cpuBusy <= 1);
      assert.ok(l.memTotalBytes > 0 && l.memAvailableBytes > 0 && l.memAvailableBytes <= l.memTotalBytes);
      assert.ok(l.daemonRssBytes > 0);
      assert.deepEqual(l.procs, []);
    }
  });

  it('dvs run without --node places on the node with the most headroom', async () => {
    // Two processes on node 0 by hand; then placement spreads the next ones over 1 and 2.
    await idle(100, 0);
    await idle(101, 0);
    await check(async () => (await status(0)).load?.procs.length === 2, 10_000, 'node 0 reports 2 processes');
    await settled();
    assert.equal((await idle(102)).node, 1);
    await check(async () => (await status(1)).load?.procs.length === 1, 10_000, 'node 1 reports its process');
    await settled();
    assert.equal((await idle(103)).node, 2);
  });

  it('dvs balance proposes and applies migrations that even out the load', async () => {
    await idle(104, 0);
    await idle(105, 0);
    await check(async () => (await status(0)).load?.procs.length === 4, 10_000, 'node 0 reports 4 processes');
    await settled();
    const plan = await json<BalancePlan & { applied?: unknown }>('balance', '--dc', 'demo', '--json');
    // 4 / 1 / 1 processes: two move off node 0, one to each other node.
    assert.equal(plan.moves.length, 2, JSON.stringify(plan));
    assert.ok(
      plan.moves.every((m) => m.from === 0),
      JSON.stringify(plan),
    );
    assert.deepEqual(plan.moves.map((m) => m.to).sort(), [1, 2]);
    const spread = (r: Record<string, number>) =>
      Math.max(...Object.values(r)) - Math.min(...Object.values(r));
    assert.ok(spread(plan.after) < spread(plan.before), JSON.stringify(plan));

    const applied = await json<{
      moves: BalancePlan['moves'];
      applied: { ep: number; to: number; ok: boolean }[];
    }>('balance', '--dc', 'demo', '--apply', '--json');
    assert.equal(applied.applied.length, applied.moves.length);
    assert.ok(
      applied.applied.every((a) => a.ok),
      JSON.stringify(applied.applied),
    );
    for (const a of applied.applied) {
      await check(
        async () => (await status(a.to)).load?.procs.some((p) => p.ep === a.ep),
        15_000,
        `ep ${a.ep} running on node ${a.to}`,
      );
    }
    await check(async () => (await status(0)).load?.procs.length === 2, 15_000, 'node 0 down to 2 processes');
  });

  it('dvs top --once --json reports nodes, DCs and endpoints with traffic and latency', async () => {
    const server = await connect({ socket: sockets[2]!, dc: 'demo', endpoint: 201, timeout: 5000 });
    const client = await connect({ socket: sockets[1]!, dc: 'demo', endpoint: 200, timeout: 5000 });
    open.push(server, client);
    const serving = (async () => {
      for (;;) {
        const req = await server.receiveRequest().catch(() => undefined);
        if (req === undefined) return;
        await server.reply(req.source, { type: 1, payload: req.payload }).catch(() => undefined);
      }
    })();
    const N = 50;
    for (let i = 0; i < N; i++) await client.sendrec(201, { type: 1, payload: new Uint8Array(100) });
    const s = await json<TopSample>('top', '--once', '--json', '--interval', '200');
    assert.deepEqual(
      s.nodes.map((n) => n.node),
      [0, 1, 2],
    );
    assert.ok(s.nodes.every((n) => n.up && n.cpuBusy !== undefined && n.links.length === 2));
    const c = s.endpoints.find((e) => e.dc !== undefined && e.ep === 200);
    assert.ok(c, 'client endpoint listed');
    assert.equal(c.node, 1);
    assert.ok(c.sent >= N && c.bytesSent >= N * 100, JSON.stringify(c));
    assert.ok(c.latency.sendrec!.count >= N && c.latency.sendrec!.avgMs > 0, JSON.stringify(c.latency));
    const srv = s.endpoints.find((e) => e.ep === 201);
    assert.ok(srv && srv.node === 2 && srv.received >= N && srv.bytesReceived >= N * 100);
    const demo = s.dcs.find((d) => d.name === 'demo');
    assert.ok(demo && demo.endpoints === s.endpoints.filter((e) => e.dcName === 'demo').length);
    assert.ok(
      s.endpoints.some((e) => e.cpu !== null),
      'processes started by dvs run carry their usage',
    );
    await server.close();
    await serving;
  });
});
