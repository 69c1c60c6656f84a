/**
 * The node daemons with a cluster store, one scenario run against each backend (embedded: node 0 hosts it,
 * the others reach it over their node links; etcd: every node is an etcd client). Real daemons as OS
 * processes, the SDK from this process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ClusterStore } from '../../../src/cluster/store.js';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { check } from '../harness.js';
import { StoreCluster } from './store-cluster.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface StoreSuiteOptions {
  /** `--store` of each of the 3 nodes (a function: evaluated when the suite starts). */
  stores: () => string[];
  /** A direct client of the same store, to check what the daemons wrote (optional). */
  openStore?: () => Promise<ClusterStore>;
  skip?: string | false;
}

export function storeSuite(name: string, opts: StoreSuiteOptions): void {
  describe(name, { skip: opts.skip ?? false }, () => {
    let c: StoreCluster;
    const sessions: Dvk[] = [];
    let store: ClusterStore | undefined;

    const open = async (node: number, dc: string, endpoint: number) => {
      const d = await connect({ socket: c.nodes[node]!.socket, dc, endpoint, timeout: 5000 });
      sessions.push(d);
      return d;
    };
    const dcsOn = async (node: number) => (await c.admin(node, 'dc.list', {})).map((d) => d.name).sort();
    const where = async (node: number, dc: string, ep: number) =>
      (await c.admin(node, 'ep.list', { dc })).find((r) => r.ep === ep);
    /** Serve requests on `d` until it is closed: reply with the request's text, upper-cased. */
    const serve = (d: Dvk) => {
      void (async () => {
        for (;;) {
          const req = await d.receiveRequest().catch(() => null);
          if (req === null) return;
          await d
            .reply(req.source, {
              type: req.type + 1,
              payload: enc.encode(dec.decode(req.payload).toUpperCase()),
            })
            .catch(() => {});
        }
      })();
    };

    before(async () => {
      c = await StoreCluster.start(opts.stores());
      store = await opts.openStore?.();
    });
    after(async () => {
      for (const d of sessions) await d.close().catch(() => {});
      await store?.stop();
      await c?.stop();
    });

    test('a DC created through node 1 is applied on every node from the store', async () => {
      const cfg = await c.admin(1, 'dc.create', {
        config: { id: 0, name: 'web', nodes: [0, 1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 64 },
      });
      assert.ok(cfg.id >= 1, 'the store allocated an id');
      for (const n of [0, 1, 2]) {
        await check(async () => (await dcsOn(n)).includes('web'), 10_000, `DC web on node ${n}`);
      }
      const st = await c.status(0);
      assert.equal(st.cluster?.degraded, false);
      assert.deepEqual(
        st.cluster?.members.map((m) => [m.id, m.state]),
        [
          [0, 'up'],
          [1, 'up'],
          [2, 'up'],
        ],
      );
    });

    test('a bind on node 2 is in the directory and node 0 reaches it with sendrec', async () => {
      const srv = await open(2, 'web', 200);
      serve(srv);
      const dcId = (await c.admin(0, 'dc.list', {})).find((d) => d.name === 'web')!.id;
      if (store) {
        const kv = await check(
          async () => (await store!.get(`/dvs/dir/${dcId}/200`)).kvs[0],
          10_000,
          'directory entry of 200',
        );
        assert.ok(kv);
        assert.equal((JSON.parse(dec.decode(kv.value)) as { node: number }).node, 2);
      }
      await check(
        async () => (await where(0, 'web', 200))?.node === 2,
        10_000,
        '200 known at node 2 on node 0',
      );
      const cli = await open(0, 'web', 100);
      const r = await cli.sendrec(200, { type: 10, payload: enc.encode('ping') }, { timeout: 10_000 });
      assert.equal(r.type, 11);
      assert.equal(dec.decode(r.payload), 'PING');
    });

    test('kill -9 of node 2: every node sees it down; it restarts, rejoins and catches up', async () => {
      await c.killNode(2);
      for (const n of [0, 1]) {
        await check(
          async () => (await c.status(n)).cluster?.members.find((m) => m.id === 2)?.state === 'down',
          10_000,
          `node ${n} sees node 2 down`,
        );
      }
      // Its endpoint went with it (its lease carried the directory entry; its link reported it dead).
      await check(async () => (await where(0, 'web', 200)) === undefined, 10_000, '200 forgotten on node 0');
      // While node 2 is away: a new DC, and an endpoint bound on node 1 in it.
      await c.admin(0, 'dc.create', {
        config: { id: 0, name: 'late', nodes: [0, 1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 64 },
      });
      await check(async () => (await dcsOn(1)).includes('late'), 10_000, 'DC late on node 1');
      const late = await open(1, 'late', 300);
      serve(late);

      c.restartNode(2);
      await c.waitMembers([0, 1, 2], 30_000);
      await check(async () => (await dcsOn(2)).includes('late'), 10_000, 'node 2 caught up with DC late');
      await check(
        async () => (await where(2, 'late', 300))?.node === 1,
        10_000,
        'node 2 knows 300 at node 1',
      );
      const back = await open(2, 'late', 301);
      const r = await back.sendrec(300, { type: 20, payload: enc.encode('again') }, { timeout: 10_000 });
      assert.equal(dec.decode(r.payload), 'AGAIN');
    });

    test('dc rm-node and dc rm through one node are applied everywhere', async () => {
      const cfg = await c.admin(0, 'dc.rmNode', { dc: 'late', node: 2 });
      assert.deepEqual(cfg.nodes, [0, 1]);
      await check(async () => !(await dcsOn(2)).includes('late'), 10_000, 'late gone from node 2');
      await c.admin(2, 'dc.remove', { dc: 'late' });
      for (const n of [0, 1]) {
        await check(async () => !(await dcsOn(n)).includes('late'), 10_000, `late gone from node ${n}`);
      }
    });
  });
}
