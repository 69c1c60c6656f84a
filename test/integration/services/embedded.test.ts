/**
 * The DVK services over the embedded store: one store in this process shared by every simulated client, as
 * the embedded backend's host node shares it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';
import { logger, servicesSuite } from './suite.js';

let dir: string | undefined;
let store: EmbeddedStore | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dvs-svc-'));
  // fsync off: these tests are about the services, not durability (the store's own tests cover that).
  store = new EmbeddedStore({ dir, logger, fsync: false, leaseTickMs: 50 });
  await store.start();
});

after(async () => {
  await store?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

servicesSuite('embedded', () => ({ client: async () => store!, releaseClients: async () => {} }));
