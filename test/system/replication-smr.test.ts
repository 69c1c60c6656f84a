/**
 * State-machine replication between nodes in network namespaces, replicas in their DC containers (root): a
 * counter (examples/smr-counter.js) replicated on nodes 0-2 of a 4-node DC serves three clients on nodes 0,
 * 1 and 3 (sendrecOnce in a loop, SMR_REQUESTS in all, default 3000). Under the load the replica process
 * on node 1 is killed (replaced on node 1 after a state transfer), then node 2's daemon is killed with -9
 * (a replica is placed on the spare node 3). The clients see no error, every replica reports the same
 * applied sequence (`smr.status`), exactly as many requests as the clients got replies for.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type Dvk, type SmrStatus } from '../../src/sdk/index.js';
import { REPO } from '../integration/harness.js';
import { check, leftovers, NetnsCluster, systemSkipReason } from './harness.js';
import { codeOf, replicaNodes, smrStatus } from './ipc.js';

const SERVER = 100;
const COUNTER = join(REPO, 'examples/smr-counter.js');
const TOTAL = Number(process.env.SMR_REQUESTS ?? 3000);

describe('system: state-machine replication (4 namespaces, containers)', { skip: systemSkipReason() }, () => {
  let c: NetnsCluster;
  const clients: Dvk[] = [];

  before(async () => {
    c = await NetnsCluster.start({ nodes: 4, heartbeatMs: 100, deadAfterMs: 1000 });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    for (const d of clients) await d.close().catch(() => undefined);
    await c?.stop();
  });

  const status = (node: number) => smrStatus(c, node, 'app', SERVER);
  const replicasAt = (i: number) => replicaNodes(c, i, 'app', SERVER);

  test('a process kill and a daemon kill -9 under load from 3 nodes: replicas identical, no client error', async (t) => {
    const run = await c.admin(0, 'proc.run', {
      dc: 'app',
      ep: SERVER,
      cmd: [process.execPath, COUNTER],
      replicas: 3,
      mode: 'state-machine',
    });
    assert.deepEqual(run.replicas, { mode: 'state-machine', primary: 0, backups: [1, 2], epoch: 1 });
    for (const i of [0, 3]) assert.equal(await replicasAt(i), '0,1,2', `node ${i}: dvs ep ls`);
    await check(
      async () => (await Promise.all([0, 1, 2].map(status))).every((s) => s.synced),
      20_000,
      'replicas synced',
    );
    for (const [i, n] of [0, 1, 3].entries()) {
      clients.push(await connect({ socket: c.node(n).socket, dc: 'app', endpoint: 200 + i, timeout: 5000 }));
    }
    const values: number[][] = clients.map(() => []);
    const errors: string[] = [];
    let done = 0;
    let stop = false;
    const loads = clients.map(async (cl, i) => {
      while (!stop && done < TOTAL && errors.length < 20) {
        try {
          const r = await cl.sendrecOnce(SERVER, { type: 1 }, { timeout: 30_000 });
          values[i]!.push(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true));
          done++;
        } catch (e) {
          errors.push(codeOf(e));
        }
      }
    });
    try {
      await check(() => done >= TOTAL / 3 || errors.length > 0, 120_000, 'a third of the requests');
      const before1 = (await status(1)).applied;
      await c.admin(1, 'proc.kill', { dc: 'app', ep: SERVER, signal: 'SIGKILL', graceMs: 0 });
      await check(
        async () => {
          const s = await status(1);
          return s.synced && s.applied > before1;
        },
        30_000,
        'the replacement on node 1 synced',
      );
      await check(() => done >= (2 * TOTAL) / 3 || errors.length > 0, 120_000, 'two thirds of the requests');
      await c.killNode(2);
      for (const i of [0, 1, 3])
        await check(async () => (await replicasAt(i)) === '0,1,3', 20_000, `node ${i}: replicas 0,1,3`);
      await check(async () => (await status(3)).synced, 30_000, 'the replica on node 3 synced');
      await check(() => done >= TOTAL || errors.length > 0, 120_000, 'all requests');
    } finally {
      stop = true;
      await Promise.all(loads);
    }
    assert.deepEqual(errors, [], 'no client call failed');
    const replies = values.reduce((s, v) => s + v.length, 0);
    const final = (await check(
      async () => {
        const st = await Promise.all([0, 1, 3].map(status));
        return st.every((s) => s.synced && s.applied === replies) ? st : undefined;
      },
      20_000,
      'replicas caught up',
    )) as SmrStatus[];
    for (const s of final) assert.equal(s.hash, final[0]!.hash, `replica on node ${s.node}: same sequence`);
    assert.deepEqual(
      values.flat().sort((a, b) => a - b),
      Array.from({ length: replies }, (_, i) => i + 1),
      'every request applied exactly once',
    );
    t.diagnostic(`${replies} requests from 3 clients`);
  });

  test('teardown leaves nothing behind', async () => {
    for (const d of clients.splice(0)) await d.close().catch(() => undefined);
    // The crashed daemon left its DC container for its next incarnation to adopt (and remove on a clean stop).
    await c.restartNode(2);
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
