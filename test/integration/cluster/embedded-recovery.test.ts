/**
 * What only the embedded store has: restart recovery, torn tails, corruption reports, snapshots and the
 * bounded watch history.
 */
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { EmbeddedStore, type EmbeddedStoreOptions } from '../../../src/cluster/embedded/store.js';
import type { WatchEnd } from '../../../src/cluster/store.js';
import { DvsError } from '../../../src/protocol/errors.js';

const logger = pino({ level: 'silent' });
const b = (s: string) => new TextEncoder().encode(s);
const s = (v: Uint8Array) => new TextDecoder().decode(v);

describe('embedded store: recovery', () => {
  let dir: string;
  const open: EmbeddedStore[] = [];
  const openStore = async (o: Partial<EmbeddedStoreOptions> = {}) => {
    const st = new EmbeddedStore({ dir, logger, ...o });
    await st.start();
    open.push(st);
    return st;
  };
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-recovery-'));
  });
  afterEach(async () => {
    for (const st of open.splice(0)) await st.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('a restart keeps keys, metadata, revision, leases and the watch history of the log', async () => {
    const a = await openStore();
    const lease = await a.grantLease(60);
    const r1 = await a.put('/k', b('1'));
    const r2 = await a.put('/k', b('2'), { lease });
    await a.put('/gone', b('x'));
    const r4 = (await a.delete('/gone')).revision;
    await a.stop();

    const c = await openStore();
    const kv = (await c.get('/k')).kvs[0]!;
    assert.deepEqual(
      [s(kv.value), kv.createRevision, kv.modRevision, kv.version, kv.lease],
      ['2', r1, r2, 2, lease],
    );
    assert.equal((await c.get('/gone')).kvs.length, 0);
    assert.equal((await c.get('/k')).revision, r4);
    assert.ok((await c.keepAlive(lease)) > 0);
    const revs: number[] = [];
    const w = c.watch(
      '/',
      r1,
      (_e, rev) => revs.push(rev),
      () => {},
    );
    const r5 = await c.put('/k', b('3'));
    while (revs.at(-1) !== r5) await new Promise((r) => setTimeout(r, 5));
    w.cancel();
    assert.deepEqual(revs, [r1, r2, r2 + 1, r4, r5]);
  });

  it('drops a torn last record and keeps going', async () => {
    const a = await openStore();
    const r = await a.put('/a', b('1'));
    await a.stop();
    const seg = (await readdir(dir)).filter((f) => f.startsWith('wal-')).sort();
    // Half a record at the end of the newest segment: what a crash mid-write leaves.
    await appendFile(join(dir, seg.at(-1)!), Buffer.from([40, 0, 0, 0, 1, 2, 3, 4, 5, 6]));
    const c = await openStore();
    assert.equal((await c.get('/a')).kvs[0]?.modRevision, r);
    assert.equal(await c.put('/b', b('2')), r + 1);
    await c.stop();
    open.length = 0;
    const d = await openStore();
    assert.equal((await d.get('/b')).kvs[0]?.modRevision, r + 1);
  });

  it('a corrupt record in the middle is an error naming the file and offset', async () => {
    const a = await openStore();
    await a.put('/a', b('first'));
    await a.put('/b', b('second'));
    await a.stop();
    open.length = 0;
    const name = (await readdir(dir)).filter((f) => f.startsWith('wal-')).sort()[0]!;
    const file = join(dir, name);
    const buf = await readFile(file);
    const at = buf.indexOf('first');
    buf[at] = 'F'.charCodeAt(0);
    await writeFile(file, buf);
    const c = new EmbeddedStore({ dir, logger });
    await assert.rejects(c.start(), (e: unknown) => {
      assert.ok(e instanceof DvsError);
      assert.equal(e.code, 'EINTERNAL');
      assert.equal(e.details?.file, file);
      assert.equal(e.details?.offset, 8);
      return true;
    });
  });

  it('snapshots drop old segments and survive restarts', async () => {
    const a = await openStore({ snapshotEvery: 50 });
    let last = 0;
    for (let i = 0; i < 400; i++) last = await a.put(`/n/${i % 30}`, b(String(i)));
    const files = await readdir(dir);
    assert.ok(files.some((f) => f.startsWith('snap-')));
    assert.ok(files.filter((f) => f.startsWith('wal-')).length <= 2, files.join(' '));
    await a.stop();
    const c = await openStore({ snapshotEvery: 50 });
    const all = await c.get('/n/', { prefix: true });
    assert.equal(all.revision, last);
    assert.equal(all.kvs.length, 30);
    assert.equal(s(all.kvs.find((kv) => kv.key === '/n/9')!.value), '399');
    // History before the snapshot is gone: an old watch is told so.
    const ends: WatchEnd[] = [];
    c.watch(
      '/',
      1,
      () => {},
      (why) => ends.push(why),
    );
    while (ends.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(ends, ['compacted']);
  });

  it('the watch history is bounded: a late watcher gets compacted', async () => {
    const a = await openStore({ historyRevisions: 10 });
    const first = await a.put('/h', b('0'));
    let last = first;
    for (let i = 1; i < 30; i++) last = await a.put('/h', b(String(i)));
    const ends: WatchEnd[] = [];
    a.watch(
      '/',
      first,
      () => {},
      (why) => ends.push(why),
    );
    const revs: number[] = [];
    a.watch(
      '/',
      last - 5,
      (_e, rev) => revs.push(rev),
      () => {},
    );
    while (ends.length === 0 || revs.length < 6) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(ends, ['compacted']);
    assert.deepEqual(revs, [last - 5, last - 4, last - 3, last - 2, last - 1, last]);
  });

  it('refuses a directory open in another live store', async () => {
    await openStore();
    // The lock names this process; a second store in another process would get EBUSY. Simulate one.
    await writeFile(join(dir, 'LOCK'), `${process.ppid}\n`);
    const c = new EmbeddedStore({ dir, logger });
    await assert.rejects(c.start(), (e: unknown) => e instanceof DvsError && e.code === 'EBUSY');
  });
});
