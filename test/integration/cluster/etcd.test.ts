/**
 * The etcd store: the ClusterStore compliance suite on a real 3-member etcd cluster (loopback, tuned timing),
 * then what only this backend has: start() against a cluster that is down fails clearly within its timeout.
 * Skips (with the reason) where no etcd binary is installed; CI installs etcd-server.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { EtcdStore } from '../../../src/cluster/etcd/store.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { storeCompliance } from './compliance.js';
import { EtcdTestCluster, etcdSkipReason, freePorts } from './etcd-harness.js';

const logger = pino({ level: 'silent' });
const skip = etcdSkipReason();

if (skip !== undefined) {
  it('etcd store (compliance, start errors)', { skip }, () => {});
} else {
  let cluster: EtcdTestCluster | undefined;
  before(async () => {
    cluster = await EtcdTestCluster.start({ members: 3 });
  });
  after(async () => {
    await cluster?.stop();
  });

  storeCompliance('etcd (3 members)', async () => {
    const c = cluster!;
    const store = new EtcdStore({
      endpoints: c.endpoints,
      logger,
      dialTimeoutMs: 5_000,
      callTimeoutMs: 5_000,
    });
    await store.start();
    return {
      store,
      compact: (revision) => c.compact(revision),
      pause: () => c.pauseAll(),
      close: () => store.stop(),
    };
  });

  describe('etcd store: start', () => {
    it('fails with ENOTCONN naming the endpoints when etcd is down, within the dial timeout', async () => {
      // Ports nobody listens on: every connection is refused.
      const ports = await freePorts(3);
      const endpoints = ports.map((p) => `127.0.0.1:${p}`);
      const store = new EtcdStore({ endpoints, logger, dialTimeoutMs: 500 });
      const t0 = Date.now();
      try {
        await assert.rejects(store.start(), (e: unknown) => {
          assert.ok(e instanceof DvsError, String(e));
          assert.equal(e.code, 'ENOTCONN');
          assert.match(e.message, new RegExp(endpoints[0]!.replace(/\./g, '\\.')));
          return true;
        });
        // Not a timing assertion on speed: only that start() did not hang far past its own dial timeout.
        assert.ok(Date.now() - t0 < 10_000, 'start() returned long after its dial timeout');
        // A store that never started refuses calls instead of hanging.
        await assert.rejects(store.get('/x'), (e: unknown) => e instanceof DvsError && e.code === 'ENOTCONN');
      } finally {
        await store.stop();
      }
    });

    it('fails with ENOTCONN when a quorum is missing (1 of 3 members up)', async () => {
      const c = await EtcdTestCluster.start({ members: 3 });
      try {
        await c.killMember(1);
        await c.killMember(2);
        const store = new EtcdStore({ endpoints: c.endpoints, logger, dialTimeoutMs: 800 });
        try {
          await assert.rejects(store.start(), (e: unknown) => e instanceof DvsError && e.code === 'ENOTCONN');
        } finally {
          await store.stop();
        }
      } finally {
        await c.stop();
      }
    });

    it('stop() ends live watches with closed and makes later calls fail with ENOTCONN', async () => {
      const c = cluster!;
      const store = new EtcdStore({ endpoints: c.endpoints, logger });
      await store.start();
      const ends: string[] = [];
      store.watch(
        '/stop-test/',
        1,
        () => {},
        (why) => ends.push(why),
      );
      await store.stop();
      assert.deepEqual(ends, ['closed']);
      await assert.rejects(store.get('/x'), (e: unknown) => e instanceof DvsError && e.code === 'ENOTCONN');
    });
  });
}
