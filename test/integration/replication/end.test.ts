/**
 * `dvs kill --replicas` (admin `proc.killGroup`) through real daemons on loopback, with the embedded store
 * hosted by node 0: a primary-backup group and a state-machine group are each ended from a node that holds
 * a replica; every replica process exits, no failover or replacement follows, the endpoint is gone from
 * every node, and a client's next call fails instead of waiting for a failover. A
 * non-replicated endpoint is refused (ENOENT) and left running.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { check, REPO, TestCluster } from '../harness.js';

const PB = join(REPO, 'examples/replicated-counter.js');
const SMR = join(REPO, 'examples/smr-counter.js');
const ECHO = join(REPO, 'examples/echo-server.js');
const codeOf = (e: unknown) => (e instanceof DvsError ? e.code : String(e));

describe('ending a replicated endpoint (dvs kill --replicas)', () => {
  let c: TestCluster;
  const clients: Dvk[] = [];

  before(async () => {
    c = await TestCluster.start({
      nodes: 3,
      heartbeatMs: 100,
      deadAfterMs: 1000,
      stores: ['embedded', 'embedded:0', 'embedded:0'],
    });
    await c.waitMembers([0, 1, 2]);
    await c.admin(0, 'dc.create', {
      config: { id: 1, name: 'app', nodes: [0, 1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 },
    });
    await check(
      async () =>
        (await Promise.all([1, 2].map((i) => c.admin(i, 'dc.list', {})))).every((l) => l.length === 1),
      10_000,
      'the DC on every node',
    );
  });
  after(async () => {
    for (const d of clients) await d.close().catch(() => undefined);
    await c?.stop();
  });

  const live = async (ep: number) => {
    const out: number[] = [];
    for (const n of [0, 1, 2]) {
      const procs = await c.admin(n, 'proc.list', { dc: 'app' });
      if (procs.some((p) => p.ep === ep && p.exit === null)) out.push(n);
    }
    return out;
  };
  /** What each node's kernel still knows of `ep` (its own rows and its remote knowledge). */
  const bound = async (ep: number) => {
    const out: string[] = [];
    for (const n of [0, 1, 2]) {
      for (const e of await c.admin(n, 'ep.list', { dc: 'app' })) {
        if (e.ep === ep) out.push(`node ${n}: ${e.kind} at ${e.node} [${e.flags.join(',')}]`);
      }
    }
    return out;
  };

  for (const [mode, cmd, ep] of [
    ['primary-backup', PB, 100],
    ['state-machine', SMR, 110],
  ] as const) {
    test(`${mode}: every replica stops, nothing takes over`, async () => {
      await c.admin(1, 'proc.run', { dc: 'app', ep, cmd: [process.execPath, cmd], replicas: 3, mode });
      await check(async () => (await live(ep)).length === 3, 15_000, 'three replicas running');
      const client = await connect({
        socket: c.nodes[2]!.socket,
        dc: 'app',
        endpoint: 200 + ep,
        timeout: 5000,
      });
      clients.push(client);
      await check(
        async () =>
          client
            .sendrecOnce(ep, { type: 1 }, { timeout: 3000 })
            .then(() => true)
            .catch(() => false),
        15_000,
        'the group serves',
      );

      const r = await c.admin(2, 'proc.killGroup', { dc: 'app', ep, graceMs: 2000 });
      assert.deepEqual(r.unreachable, []);
      assert.deepEqual(r.processes.map((p) => p.node).sort(), [0, 1, 2]);
      assert.ok(
        r.processes.every((p) => p.exit !== null),
        'each replica exited before the call returned',
      );
      // Nothing restarts or takes over: still nothing after the detection time has passed twice.
      await new Promise((res) => setTimeout(res, 2000));
      assert.deepEqual(await live(ep), [], 'no replica running anywhere');
      assert.deepEqual(await bound(ep), [], 'the endpoint is bound nowhere');
      const after = await client.sendrecOnce(ep, { type: 1 }, { timeout: 3000 }).then(
        () => 'answered',
        (e: unknown) => codeOf(e),
      );
      assert.notEqual(after, 'answered');
      assert.notEqual(after, 'ETIMEDOUT', 'the call fails at once, it is not held for a failover');
    });
  }

  test('a process that is not replicated: ENOENT, and it keeps running', async () => {
    await c.admin(0, 'proc.run', { dc: 'app', ep: 120, cmd: [process.execPath, ECHO] });
    await check(async () => (await live(120)).includes(0), 10_000, 'the echo server running');
    await assert.rejects(c.admin(0, 'proc.killGroup', { dc: 'app', ep: 120 }), (e: unknown) => {
      assert.equal(codeOf(e), 'ENOENT');
      assert.match((e as Error).message, /endpoint 120 of DC 'app' is not replicated/);
      return true;
    });
    assert.deepEqual(await live(120), [0]);
  });
});
