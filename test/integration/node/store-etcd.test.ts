/**
 * Three node daemons on a real 3-member etcd cluster (loopback), every node an etcd client. Skips with the
 * reason where no etcd binary is installed.
 */
import { after, before, it } from 'node:test';
import { pino } from 'pino';
import { EtcdStore } from '../../../src/cluster/etcd/store.js';
import { EtcdTestCluster, etcdSkipReason } from '../cluster/etcd-harness.js';
import { storeSuite } from './store-suite.js';

const skip = etcdSkipReason();

if (skip !== undefined) {
  it('node daemons on etcd', { skip }, () => {});
} else {
  let etcd: EtcdTestCluster | undefined;
  before(async () => {
    etcd = await EtcdTestCluster.start({ members: 3 });
  });
  after(async () => {
    await etcd?.stop();
  });
  storeSuite('node daemons on a 3-member etcd', {
    stores: () => {
      const url = `etcd://${etcd!.endpoints.join(',')}`;
      return [url, url, url];
    },
    openStore: async () => {
      const s = new EtcdStore({ endpoints: etcd!.endpoints, logger: pino({ level: 'silent' }) });
      await s.start();
      return s;
    },
  });
}
