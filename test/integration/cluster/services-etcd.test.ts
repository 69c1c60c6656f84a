/**
 * The cluster services (membership, DC registry, directory) over a real 3-member etcd cluster (loopback,
 * heartbeat 50 ms / election 300 ms), each simulated node with its own client; then what only etcd can show:
 * a node's registration survives the kill of the etcd leader. Skips with the reason where etcd is missing.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { pino } from 'pino';
import { EtcdStore } from '../../../src/cluster/etcd/store.js';
import { nodeKey } from '../../../src/cluster/keys.js';
import { EtcdTestCluster, etcdSkipReason, waitFor } from './etcd-harness.js';
import { servicesSuite } from './services-suite.js';

const logger = pino({ level: 'silent' });
const skip = etcdSkipReason();

if (skip !== undefined) {
  it('cluster services (etcd)', { skip }, () => {});
} else {
  let cluster: EtcdTestCluster | undefined;
  let clients: EtcdStore[] = [];
  before(async () => {
    cluster = await EtcdTestCluster.start({ members: 3 });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await cluster?.stop();
  });

  const client = async (): Promise<EtcdStore> => {
    const s = new EtcdStore({ endpoints: cluster!.endpoints, logger, callTimeoutMs: 2_000 });
    await s.start();
    clients.push(s);
    return s;
  };

  servicesSuite(
    'etcd, 3 members',
    async () => ({
      client,
      releaseClients: async () => {
        const all = clients;
        clients = [];
        await Promise.all(all.map((c) => c.stop()));
      },
      ttlSeconds: 1,
    }),
    {
      extra: (ctx) => {
        it('a registration survives the kill of the etcd leader: never seen down, never degraded', async () => {
          const c = ctx();
          // TTL 2 s: a few times the tuned failover (0.4-0.5 s), as the coordination reference recommends.
          const a = await c.member(1, { ttlSeconds: 2 });
          const b = await c.member(2, { ttlSeconds: 2 });
          await waitFor(() => a.m.node(2)?.state === 'up' && b.m.node(1)?.state === 'up', 5_000, 'mutual up');
          const admin = await c.backend.client();
          const before = (await admin.get(nodeKey(2))).kvs[0];
          assert.ok(before);
          const victim = await cluster!.leader();
          await cluster!.killMember(victim);
          try {
            // Three TTLs: a lost lease would have expired (and been re-registered) by then.
            await new Promise((r) => setTimeout(r, 6_000));
            assert.deepEqual(
              a.changes.filter((e) => e.node === 2).map((e) => e.state),
              ['up'],
              `node 1 never saw node 2 leave: ${JSON.stringify({ a: a.changes.map((e) => [e.node, e.state, e.info.since, e.info.incarnation]), bh: b.health, br: b.registered })}`,
            );
            assert.ok(
              !b.health.some((h) => h.degraded),
              `node 2 never degraded: ${JSON.stringify(b.health)}`,
            );
            assert.ok(!b.registered.some((r) => r.again), 'node 2 never had to re-register');
            const after = (await admin.get(nodeKey(2))).kvs[0];
            assert.equal(after?.createRevision, before.createRevision, 'same registration record');
          } finally {
            await cluster!.restartMember(victim);
          }
        });
      },
    },
  );
}
