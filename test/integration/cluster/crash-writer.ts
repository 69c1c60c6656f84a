/**
 * Child process of embedded-crash.test.ts: opens an EmbeddedStore in argv[2] and runs `argv[3]` writers as
 * fast as it can, printing every acknowledged write (`p <key> <rev>` / `d <key> <rev>`) on stdout, until it
 * is killed. Not a test by itself.
 */
import { pino } from 'pino';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';

const dir = process.argv[2]!;
const writers = Number(process.argv[3] ?? 64);
const store = new EmbeddedStore({ dir, logger: pino({ level: 'silent' }), snapshotEvery: 3000 });
await store.start();
const enc = new TextEncoder();
process.stdout.write('ready\n');
const round = Date.now().toString(36);
await Promise.all(
  Array.from({ length: writers }, async (_, w) => {
    for (let i = 0; ; i++) {
      const key = `/crash/${round}/${w}/${i}`;
      const rev = await store.put(key, enc.encode(key));
      process.stdout.write(`p ${key} ${rev}\n`);
      if (i % 10 === 9) {
        const gone = `/crash/${round}/${w}/${i - 5}`;
        const r = await store.delete(gone);
        process.stdout.write(`d ${gone} ${r.revision}\n`);
      }
    }
  }),
);
