/**
 * Live migration between nodes in network namespaces, with etcd as the cluster store (the directory moves
 * with the endpoint): a client on node 0 runs sendrec in a loop against a counter server
 * (examples/counter-server.js) while the server is migrated 0 → 1 → 2 → 0 ten times: zero errors, every
 * reply's counter consecutive, state preserved. The freeze times are reported as a diagnostic.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { MigrationResult } from '../../src/protocol/admin.js';
import { connect, type Dvk } from '../../src/sdk/index.js';
import { REPO } from '../integration/harness.js';
import { check, etcdSystemSkipReason, leftovers, NetnsCluster } from './harness.js';
import { codeOf } from './ipc.js';

const SERVER = 100;
const COUNTER = join(REPO, 'examples/counter-server.js');

describe('system: live migration under load (3 nodes, etcd store)', { skip: etcdSystemSkipReason() }, () => {
  let c: NetnsCluster;
  let client: Dvk | undefined;

  before(async () => {
    c = await NetnsCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: 1500, etcdOn: [0, 1, 2] });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    await client?.close().catch(() => undefined);
    await c?.stop();
  });

  const where = async () => (await c.admin(0, 'ep.list', { dc: 'app' })).find((e) => e.ep === SERVER)?.node;

  test('ten migrations 0 → 1 → 2 → 0 ... under sendrec load: zero errors, counters consecutive', async (t) => {
    await c.admin(0, 'proc.run', { dc: 'app', ep: SERVER, cmd: [process.execPath, COUNTER] });
    await check(async () => (await where()) === 0, 10_000, 'server bound on node 0');
    client = await connect({ socket: c.node(0).socket, dc: 'app', endpoint: 200, timeout: 5000 });
    const values: number[] = [];
    const errors: string[] = [];
    let stop = false;
    const load = (async () => {
      while (!stop) {
        try {
          const r = await client!.sendrec(SERVER, { type: 1 }, { timeout: 15_000 });
          values.push(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true));
        } catch (e) {
          errors.push(codeOf(e));
        }
      }
    })();
    await check(() => values.length > 20, 10_000, 'load flowing');
    const results: MigrationResult[] = [];
    for (const to of [1, 2, 0, 1, 2, 0, 1, 2, 0, 1]) {
      results.push(await c.admin(to === 2 ? 1 : 2, 'proc.migrate', { dc: 'app', ep: SERVER, to }));
      const n = values.length;
      await check(() => values.length > n + 5, 10_000, `load flowing after the move to ${to}`);
    }
    stop = true;
    await load;
    assert.deepEqual(errors, [], 'no client call failed');
    for (let i = 1; i < values.length; i++) {
      assert.equal(values[i], values[i - 1]! + 1, `reply ${i}: ${values[i]} after ${values[i - 1]}`);
    }
    // Every node's directory (kernel and store) follows the endpoint.
    for (const i of [0, 1, 2]) {
      await check(
        async () => (await c.admin(i, 'ep.list', { dc: 'app' })).find((e) => e.ep === SERVER)?.node === 1,
        5000,
        `node ${i} sees the server on node 1`,
      );
    }
    const freeze = results.map((r) => r.freezeMs).sort((a, b) => a - b);
    t.diagnostic(
      `${values.length} replies; freeze ms: median ${freeze[freeze.length >> 1]}, max ${freeze[freeze.length - 1]}`,
    );
  });

  test('teardown leaves nothing behind', async () => {
    await client?.close().catch(() => undefined);
    client = undefined;
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
