/**
 * Primary-backup failover between nodes in network namespaces, with etcd as the cluster store (the directory
 * entry moves to the promoted backup): a replicated counter (examples/replicated-counter.js, 3 replicas,
 * primary on node 1) serves a client on node 2 that runs sendrecOnce in a loop; the primary's node daemon is
 * killed with -9. The client only pauses (detection + promotion), the counter stays consecutive, node 0 (the
 * lowest live backup) is the new primary everywhere, in the kernels and in the store's directory.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type Dvk } from '../../src/sdk/index.js';
import { REPO } from '../integration/harness.js';
import { check, etcdSystemSkipReason, leftovers, NetnsCluster } from './harness.js';
import { codeOf } from './ipc.js';

const SERVER = 100;
const COUNTER = join(REPO, 'examples/replicated-counter.js');

describe('system: primary-backup failover on a node crash (3 nodes, etcd store)', {
  skip: etcdSystemSkipReason(),
}, () => {
  let c: NetnsCluster;
  let client: Dvk | undefined;

  before(async () => {
    c = await NetnsCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: 1000, etcdOn: [0, 1, 2] });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    await client?.close().catch(() => undefined);
    await c?.stop();
  });

  const primaryAt = async (i: number) =>
    (await c.admin(i, 'ep.list', { dc: 'app' })).find((e) => e.ep === SERVER && e.role === 'primary')?.node;

  test('kill -9 of the primary node daemon under sendrecOnce load: a pause, counters consecutive', async (t) => {
    const run = await c.admin(1, 'proc.run', {
      dc: 'app',
      ep: SERVER,
      cmd: [process.execPath, COUNTER],
      replicas: 3,
      mode: 'primary-backup',
    });
    assert.deepEqual(run.replicas?.backups, [0, 2]);
    client = await connect({ socket: c.node(2).socket, dc: 'app', endpoint: 200, timeout: 5000 });
    const values: number[] = [];
    const errors: string[] = [];
    let longest = 0;
    let stop = false;
    const load = (async () => {
      while (!stop) {
        const t0 = performance.now();
        try {
          const r = await client!.sendrecOnce(SERVER, { type: 1 }, { timeout: 20_000 });
          values.push(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true));
        } catch (e) {
          errors.push(codeOf(e));
        }
        longest = Math.max(longest, performance.now() - t0);
      }
    })();
    try {
      await check(() => values.length > 50, 10_000, 'load flowing');
      longest = 0;
      await c.killNode(1);
      for (const i of [0, 2])
        await check(async () => (await primaryAt(i)) === 0, 15_000, `node ${i}: primary on 0`);
      const n = values.length;
      await check(() => values.length > n + 50, 15_000, 'load flowing after the crash');
    } finally {
      stop = true;
      await load;
    }
    assert.deepEqual(errors, [], 'no client call failed');
    for (let i = 1; i < values.length; i++) {
      assert.equal(values[i], values[i - 1]! + 1, `reply ${i}: ${values[i]} after ${values[i - 1]}`);
    }
    t.diagnostic(`${values.length} replies; longest pause ${longest.toFixed(0)} ms (dead after 1000 ms)`);
  });

  test('teardown leaves nothing behind', async () => {
    await client?.close().catch(() => undefined);
    client = undefined;
    // The crashed daemon left its DC container for its next incarnation to adopt (and remove on a clean stop).
    await c.restartNode(1);
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
