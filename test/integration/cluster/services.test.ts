/**
 * The cluster services (membership, DC registry, directory) over the embedded store: one store in this
 * process shared by every simulated node, as the embedded backend's host node shares it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { pino } from 'pino';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';
import { servicesSuite } from './services-suite.js';

const logger = pino({ level: 'silent' });
let dir: string | undefined;
let store: EmbeddedStore | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dvs-services-'));
  // fsync off: these tests are about the recipes, not durability (the store's own tests cover that).
  store = new EmbeddedStore({ dir, logger, fsync: false, leaseTickMs: 50 });
  await store.start();
});

after(async () => {
  await store?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

servicesSuite('embedded', async () => ({
  client: async () => store!,
  releaseClients: async () => {},
  ttlSeconds: 1,
}));
