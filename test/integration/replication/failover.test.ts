/**
 * Primary-backup replication through real daemons on loopback (3 nodes, no store): a replicated counter
 * (examples/replicated-counter.js) started with `replicas: 3`; a client on one node runs sendrecOnce in a
 * loop while the primary's PROCESS is killed, then while the new primary's node DAEMON is killed (-9). The
 * client sees only a pause: no error, every reply's counter consecutive (no gap, no repeat). The longest
 * pause (failover time as the client sees it) is reported as a diagnostic.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { check, REPO, TestCluster } from '../harness.js';

const COUNTER = join(REPO, 'examples/replicated-counter.js');
const SERVER = 100;
const codeOf = (e: unknown) => (e instanceof DvsError ? e.code : String(e));

describe('primary-backup replication through daemons', () => {
  let c: TestCluster;
  const clients: Dvk[] = [];

  before(async () => {
    c = await TestCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: 1000 });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    for (const d of clients) await d.close().catch(() => undefined);
    await c?.stop();
  });

  const rows = async (node: number, ep: number) =>
    (await c.admin(node, 'ep.list', { dc: 'app' })).filter((e) => e.ep === ep);

  test('more replicas than the DC has nodes: a clear error, nothing started', async () => {
    await assert.rejects(
      c.admin(0, 'proc.run', { dc: 'app', ep: 120, cmd: [process.execPath, COUNTER], replicas: 4 }),
      (e: unknown) => {
        assert.equal(codeOf(e), 'EINVAL');
        assert.match((e as Error).message, /--replicas 4 is more than the 3 node\(s\) of DC 'app'/);
        return true;
      },
    );
    for (const n of [0, 1, 2]) {
      assert.deepEqual(await rows(n, 120), [], `nothing bound on node ${n}`);
      const procs = await c.admin(n, 'proc.list', { dc: 'app' });
      assert.ok(!procs.some((p) => p.ep === 120), `nothing started on node ${n}`);
    }
  });

  test('a replicated counter survives the kill of its primary process, then of its node: a pause, no gap, no repeat', async (t) => {
    const run = await c.admin(1, 'proc.run', {
      dc: 'app',
      ep: SERVER,
      cmd: [process.execPath, COUNTER],
      replicas: 3,
      mode: 'primary-backup',
    });
    assert.deepEqual(run.replicas, { mode: 'primary-backup', primary: 1, backups: [0, 2], epoch: 1 });
    // dvs ep ls: the primary and both backups, with their nodes.
    const ls = await rows(0, SERVER);
    assert.deepEqual(
      ls.map((r) => [r.role, r.node]),
      [
        ['primary', 1],
        ['backup', 0],
        ['backup', 2],
      ],
    );

    // The client on node 2 (the last backup): it follows the primary from node 1 to 0, then to its own node.
    const client = await connect({ socket: c.nodes[2]!.socket, dc: 'app', endpoint: 200, timeout: 5000 });
    clients.push(client);
    const values: number[] = [];
    const errors: string[] = [];
    let longest = 0;
    let stop = false;
    const load = (async () => {
      while (!stop) {
        const t0 = performance.now();
        try {
          const r = await client.sendrecOnce(SERVER, { type: 1 }, { timeout: 20_000 });
          values.push(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true));
        } catch (e) {
          errors.push(codeOf(e));
        }
        longest = Math.max(longest, performance.now() - t0);
      }
    })();
    const pauses: number[] = [];
    const primaryAt = async (node: number) =>
      (await rows(2, SERVER)).find((r) => r.role === 'primary')?.node === node;
    try {
      await check(() => values.length > 50, 10_000, 'load flowing');

      // 1. The primary's process dies (node 1 stays up): the lowest live backup (node 0) takes over.
      longest = 0;
      await c.admin(1, 'proc.kill', { dc: 'app', ep: SERVER, signal: 'SIGKILL', graceMs: 0 });
      await check(() => primaryAt(0), 10_000, 'node 0 primary');
      let mark = values.length;
      await check(() => values.length > mark + 50, 10_000, 'load flowing after the process kill');
      pauses.push(longest);

      // 2. The new primary's node daemon dies (-9): node 2, the last backup, takes over.
      longest = 0;
      await c.killNode(0);
      await check(() => primaryAt(2), 15_000, 'node 2 primary').catch(async (e: unknown) => {
        const lines = async (i: number) =>
          (await c.log(i))
            .split('\n')
            .filter((l) => /repl|failover|promot|node (up|down)|lost/i.test(l))
            .slice(-25)
            .join('\n');
        throw new Error(`${(e as Error).message}\nnode 1:\n${await lines(1)}\nnode 2:\n${await lines(2)}`);
      });
      mark = values.length;
      await check(() => values.length > mark + 50, 15_000, 'load flowing after the node kill');
      pauses.push(longest);
    } finally {
      stop = true;
      await load;
    }
    assert.deepEqual(errors, [], 'no client call failed');
    for (let i = 1; i < values.length; i++) {
      assert.equal(values[i], values[i - 1]! + 1, `reply ${i}: ${values[i]} after ${values[i - 1]}`);
    }
    assert.ok(values[0]! >= 1);
    t.diagnostic(
      `replies ${values.length}; failover pause seen by the client: process kill ${pauses[0]!.toFixed(0)} ms, node kill ${pauses[1]!.toFixed(0)} ms (detection ${1000} ms)`,
    );
  });
});
