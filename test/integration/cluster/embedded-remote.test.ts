/**
 * RemoteStore over an in-memory channel to a StoreServer in front of an EmbeddedStore: the compliance suite,
 * then the channel faults (drop with calls in flight, watch re-establishment).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { RemoteStore, StoreServer } from '../../../src/cluster/embedded/remote.js';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { channelPair } from './channel.js';
import { storeCompliance } from './compliance.js';

const logger = pino({ level: 'silent' });
const b = (s: string) => new TextEncoder().encode(s);

async function remoteFixture() {
  const dir = await mkdtemp(join(tmpdir(), 'dvs-remote-'));
  const host = new EmbeddedStore({ dir, logger, historyRevisions: 1000 });
  await host.start();
  const server = new StoreServer({ store: host, logger });
  let current = channelPair();
  let connects = 0;
  const store = new RemoteStore({
    logger,
    reconnectMinMs: 5,
    connect: async () => {
      connects++;
      current = channelPair();
      server.serve(current.server);
      return current.client;
    },
  });
  await store.start();
  return {
    host,
    store,
    drop: () => current.drop(),
    hold: () => current.hold(),
    connects: () => connects,
    async close() {
      await store.stop();
      server.stop();
      await host.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

storeCompliance('remote (in-memory channel)', async () => {
  const f = await remoteFixture();
  return {
    store: f.store,
    close: f.close,
    compact: async (rev) => f.host.compact(rev),
    pause: f.hold,
  };
});

describe('RemoteStore channel faults', () => {
  it('calls in flight when the channel drops fail with ENOTCONN; writes are marked ambiguous', async () => {
    const f = await remoteFixture();
    try {
      const release = f.hold();
      const write = f.store.put('/a', b('1'));
      const read = f.store.get('/a');
      const rejected = Promise.allSettled([write, read]);
      f.drop();
      release();
      const [w, r] = await rejected;
      assert.equal(w.status, 'rejected');
      assert.equal(r.status, 'rejected');
      const we = (w as PromiseRejectedResult).reason as DvsError;
      const re = (r as PromiseRejectedResult).reason as DvsError;
      assert.ok(we instanceof DvsError && re instanceof DvsError);
      assert.deepEqual([we.code, we.details?.ambiguous], ['ENOTCONN', true]);
      assert.deepEqual([re.code, re.details?.ambiguous], ['ENOTCONN', false]);
      // The client reconnects by itself and works again.
      const rev = await f.store.put('/b', b('2'));
      assert.equal((await f.store.get('/b')).kvs[0]?.modRevision, rev);
      assert.ok(f.connects() >= 2);
    } finally {
      await f.close();
    }
  });

  it('a watch survives channel drops with no gap and no duplicate', async () => {
    const f = await remoteFixture();
    try {
      const start = (await f.store.get('/w')).revision + 1;
      const seen: number[] = [];
      const ends: string[] = [];
      const watch = f.store.watch(
        '/w/',
        start,
        (events, rev) => {
          seen.push(rev);
          assert.equal(events.length, 1);
        },
        (why) => ends.push(why),
      );
      // The host's own writers keep going while the client's channel is dropped several times.
      const total = 600;
      let last = 0;
      const writer = (async () => {
        for (let i = 0; i < total; i++) last = await f.host.put(`/w/${i % 7}`, b(String(i)));
      })();
      for (let d = 0; d < 5; d++) {
        await new Promise((r) => setTimeout(r, 15));
        f.drop();
      }
      await writer;
      const deadline = Date.now() + 5000;
      while ((seen.at(-1) ?? 0) < last && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      watch.cancel();
      assert.deepEqual(
        seen,
        Array.from({ length: total }, (_, i) => start + i),
      );
      assert.deepEqual(ends, []);
      assert.ok(f.connects() >= 3, `only ${f.connects()} connects: the drops did not happen mid-stream`);
    } finally {
      await f.close();
    }
  });
});
