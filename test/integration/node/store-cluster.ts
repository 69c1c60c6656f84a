/**
 * Real node daemons running with a cluster store: the integration harness's TestCluster with `--store` per node.
 */
import { TestCluster } from '../harness.js';

export type StoreCluster = TestCluster;

export const StoreCluster = {
  /** Start `stores.length` daemons; node i runs with `--store stores[i]`. Resolves when all are registered. */
  start(stores: string[], opts: { deadAfterMs?: number } = {}): Promise<TestCluster> {
    return TestCluster.start({ ...opts, stores });
  },
};
