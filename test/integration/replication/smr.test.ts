/**
 * State-machine replication through real daemons on loopback (4 nodes, no store): examples/smr-counter.js
 * started with `replicas: 3, mode: 'state-machine'` on nodes 0-2; three clients on nodes 0, 1 and 3 run
 * sendrecOnce in a loop (SMR_REQUESTS in all, default 10 000). A third of the way the replica PROCESS on
 * node 1 is killed (its daemon replaces it; the newcomer gets a state transfer); two thirds of the way the
 * DAEMON of node 2 is killed (-9; a replica is placed on the spare node 3). Then every replica reports the
 * same number of applied requests and the same hash of the applied sequence (`smr.status`), that number is
 * exactly the number of replies the clients got, and the clients saw no error: every reply's counter is
 * new (no request applied twice) and each client's replies increase.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { connect, type Dvk, type SmrStatus } from '../../../src/sdk/index.js';
import { decodeSmrRequest, encodeSmrRequest, SMR_REQUEST_HEADER_BYTES } from '../../../src/sdk/smr.js';
import { check, REPO, TestCluster } from '../harness.js';

const COUNTER = join(REPO, 'examples/smr-counter.js');
const SERVER = 100;
const TOTAL_REQUESTS = Number(process.env.SMR_REQUESTS ?? 10_000);
const codeOf = (e: unknown) => (e instanceof DvsError ? e.code : String(e));

describe('state-machine request message (wire format)', () => {
  test('layout pinned: tag, version, client, session, seq, type, body (little-endian)', () => {
    const body = Uint8Array.of(0xaa, 0xbb);
    const b = encodeSmrRequest({ client: 0x01020304, session: 0x0a0b0c0d, seq: 7, type: -3, body });
    assert.equal(SMR_REQUEST_HEADER_BYTES, 18);
    assert.deepEqual(
      [...b],
      [0x52, 1, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a, 7, 0, 0, 0, 0xfd, 0xff, 0xff, 0xff, 0xaa, 0xbb],
    );
    const d = decodeSmrRequest(b);
    assert.deepEqual(
      { ...d, body: [...(d?.body ?? [])] },
      {
        client: 0x01020304,
        session: 0x0a0b0c0d,
        seq: 7,
        type: -3,
        body: [0xaa, 0xbb],
      },
    );
    assert.equal(decodeSmrRequest(b.subarray(0, 17)), undefined, 'too short');
    assert.equal(decodeSmrRequest(Uint8Array.of(0x53, ...b.subarray(1))), undefined, 'not a request');
  });
});

// Without a store (the full run), and with the embedded store hosted by node 0 (a shorter run: replicas are
// located through the kernels, never the store's one-location directory).
for (const store of [false, true]) {
  const TOTAL = store ? Math.ceil(TOTAL_REQUESTS / 5) : TOTAL_REQUESTS;
  describe(`state-machine replication through daemons (${store ? 'embedded store' : 'no store'})`, () => {
    let c: TestCluster;
    const clients: Dvk[] = [];

    before(async () => {
      c = await TestCluster.start({
        nodes: 4,
        heartbeatMs: 100,
        deadAfterMs: 1000,
        ...(store ? { stores: ['embedded', 'embedded:0', 'embedded:0', 'embedded:0'] } : {}),
      });
      if (store) {
        await c.waitMembers([0, 1, 2, 3]);
        await c.admin(0, 'dc.create', {
          config: {
            id: 1,
            name: 'app',
            nodes: [0, 1, 2, 3],
            maxPayload: 4096,
            sysEndpoints: 64,
            postWindow: 1024,
          },
        });
        await check(
          async () =>
            (await Promise.all([1, 2, 3].map((i) => c.admin(i, 'dc.list', {})))).every((l) => l.length === 1),
          10_000,
          'the DC on every node',
        );
      } else {
        await c.createDc({ id: 1, name: 'app' });
      }
    });
    after(async () => {
      for (const d of clients) await d.close().catch(() => undefined);
      await c?.stop();
    });

    const rows = async (node: number, ep: number) =>
      (await c.admin(node, 'ep.list', { dc: 'app' })).filter((e) => e.ep === ep);
    const status = async (node: number): Promise<SmrStatus> => {
      const a = await AdminClient.connect(c.nodes[node]!.socket, { timeout: 2000 });
      try {
        return (await a.service('smr.status', { dc: 'app', ep: SERVER }, { timeout: 8000 })) as SmrStatus;
      } finally {
        await a.close();
      }
    };

    test('more replicas than the DC has nodes: a clear error, nothing started', async () => {
      await assert.rejects(
        c.admin(0, 'proc.run', {
          dc: 'app',
          ep: 120,
          cmd: [process.execPath, COUNTER],
          replicas: 5,
          mode: 'state-machine',
        }),
        (e: unknown) => {
          assert.equal(codeOf(e), 'EINVAL');
          assert.match((e as Error).message, /--replicas 5 is more than the 4 node\(s\) of DC 'app'/);
          return true;
        },
      );
      for (const n of [0, 1, 2, 3]) {
        assert.deepEqual(await rows(n, 120), [], `nothing bound on node ${n}`);
        const procs = await c.admin(n, 'proc.list', { dc: 'app' });
        assert.ok(!procs.some((p) => p.ep === 120), `nothing started on node ${n}`);
      }
    });

    test('replicas stay identical under load from 3 nodes, through a process kill and a daemon kill', async (t) => {
      const run = await c.admin(0, 'proc.run', {
        dc: 'app',
        ep: SERVER,
        cmd: [process.execPath, COUNTER],
        replicas: 3,
        mode: 'state-machine',
      });
      assert.deepEqual(run.replicas, { mode: 'state-machine', primary: 0, backups: [1, 2], epoch: 1 });
      // dvs ep ls on a node without a replica: one replica row per replica node.
      assert.deepEqual(
        (await rows(3, SERVER)).map((r) => [r.role, r.kind, r.node]),
        [
          ['replica', 'replica', 0],
          ['replica', 'replica', 1],
          ['replica', 'replica', 2],
        ],
      );
      await check(
        async () => (await Promise.all([0, 1, 2].map(status))).every((s) => s.synced),
        15_000,
        'replicas synced',
      );

      // Three clients on three nodes: 0 and 1 have a replica, 3 has none (until it gets the replacement).
      const where = [0, 1, 3];
      for (const [i, n] of where.entries()) {
        clients.push(
          await connect({ socket: c.nodes[n]!.socket, dc: 'app', endpoint: 200 + i, timeout: 5000 }),
        );
      }
      const values: number[][] = where.map(() => []);
      const errors: string[] = [];
      let done = 0;
      let stop = false;
      const loads = clients.map(async (cl, i) => {
        while (!stop && done < TOTAL) {
          try {
            const r = await cl.sendrecOnce(SERVER, { type: 1 }, { timeout: 30_000 });
            values[i]!.push(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true));
            done++;
          } catch (e) {
            errors.push(codeOf(e));
            if (errors.length > 20) return;
          }
        }
      });
      const t0 = performance.now();
      try {
        await check(() => done >= TOTAL / 3 || errors.length > 0, 120_000, 'a third of the requests');

        // 1. The replica process on node 1 dies; its daemon starts a new one, which gets the state first.
        const before1 = (await status(1)).applied;
        await c.admin(1, 'proc.kill', { dc: 'app', ep: SERVER, signal: 'SIGKILL', graceMs: 0 });
        await check(
          async () => {
            const s = await status(1);
            return s.synced && s.applied > before1;
          },
          20_000,
          'the replacement on node 1 synced',
        );
        await check(
          () => done >= (2 * TOTAL) / 3 || errors.length > 0,
          120_000,
          'two thirds of the requests',
        );

        // 2. Node 2's daemon dies: node 3 (spare) gets a replica.
        await c.killNode(2);
        await check(
          async () => (await rows(0, SERVER)).map((r) => r.node).join(',') === '0,1,3',
          15_000,
          'replicas on nodes 0,1,3',
        );
        await check(async () => (await status(3)).synced, 20_000, 'the replica on node 3 synced');
        await check(() => done >= TOTAL || errors.length > 0, 120_000, 'all requests');
      } finally {
        stop = true;
        await Promise.all(loads);
      }
      const secs = (performance.now() - t0) / 1000;
      assert.deepEqual(errors, [], 'no client call failed');

      // Every replica applied the same sequence: exactly the requests the clients got replies for.
      const replies = values.reduce((s, v) => s + v.length, 0);
      const final = (await check(
        async () => {
          const st = await Promise.all([0, 1, 3].map(status));
          return st.every((s) => s.synced && s.applied === replies) ? st : undefined;
        },
        15_000,
        'replicas caught up',
      )) as SmrStatus[];
      for (const s of final) assert.equal(s.hash, final[0]!.hash, `replica on node ${s.node}: same sequence`);
      // Exactly once: every increment answered a distinct counter value, 1..replies, increasing per client.
      const all = values.flat().sort((a, b) => a - b);
      assert.deepEqual(
        all,
        Array.from({ length: replies }, (_, i) => i + 1),
      );
      for (const v of values) for (let i = 1; i < v.length; i++) assert.ok(v[i]! > v[i - 1]!);
      t.diagnostic(
        `${replies} requests from 3 clients in ${secs.toFixed(1)} s (${Math.round(replies / secs)}/s)`,
      );
    });
  });
}
