/**
 * The embedded store: the compliance suite, then what only it has (recovery, torn tails, snapshots).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';
import { storeCompliance } from './compliance.js';

const logger = pino({ level: 'silent' });

storeCompliance('embedded', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'dvs-store-'));
  const store = new EmbeddedStore({ dir, logger, historyRevisions: 1000, snapshotEvery: 200 });
  await store.start();
  return {
    store,
    compact: async (rev) => store.compact(rev),
    pause: () => store.holdCommits(),
    async close() {
      await store.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
