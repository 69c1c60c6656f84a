/**
 * The ClusterStore compliance suite: every backend (embedded, remote over a channel, etcd) runs exactly these
 * tests, so the cluster recipes written against src/cluster/store.ts behave the same everywhere.
 *
 * Usage, from a backend's `*.test.ts`:
 *
 *   storeCompliance('embedded', async () => {
 *     const store = new EmbeddedStore({ dir, logger });
 *     await store.start();
 *     return { store, close: () => store.stop() };
 *   });
 *
 * Each test opens a fresh harness and closes it, and assumes nobody else writes to the store meanwhile
 * (revisions are checked exactly). Keys live under a random prefix, so a backend may share one server
 * between opens. Optional harness hooks enable the tests that need backend control:
 * - `compact(revision)`: drop watch history below `revision` (etcd: Compact; embedded: compact()).
 * - `pause()`: make the backend stop answering until the returned function is called (etcd: SIGSTOP;
 *   remote: hold the channel). Without it the ETIMEDOUT test is skipped.
 *
 * Error codes the suite requires (stable, DvsError):
 * - EINVAL: empty key, TTL not an integer >= 1, malformed arguments;
 * - ENOENT: put with a lease that does not exist;
 * - EABORTED: a call whose signal is already aborted (it has no effect) or aborted while waiting;
 * - ETIMEDOUT: a call that gets no answer within `timeout` ms.
 * etcd semantics the suite pins: a `value` compare on a missing key is false whatever the operator; a delete
 * or a txn that changes nothing does not bump the revision; lease grants do not bump it either.
 *
 * Kept under ~20 s per backend: leases use TTL 2 s (etcd's minimum with default timing).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { ClusterStore, KeyValue, WatchEnd, WatchEvent } from '../../../src/cluster/store.js';
import { DvsError, type ErrorCode } from '../../../src/protocol/errors.js';

/** What a backend's test gives the suite for one test. */
export interface ComplianceHarness {
  store: ClusterStore;
  /** Stop the store (if the test did not) and release everything the harness started. */
  close(): Promise<void>;
  /** Drop watch history below `revision`; absent if the backend cannot be told to compact. */
  compact?(revision: number): Promise<void>;
  /** Make the backend stop answering; returns the function that resumes it. */
  pause?(): () => void;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const b = (s: string): Uint8Array => enc.encode(s);
/** Values may come back as Buffer or Uint8Array: compare as text. */
const s = (v: Uint8Array): string => dec.decode(v);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<DvsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DvsError, `expected DvsError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`expected rejection with ${code}`);
}

/** Poll `cond` until true or `ms` elapse; returns whether it became true. */
async function eventually(cond: () => boolean | Promise<boolean>, ms: number, step = 50): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(step);
  }
}

/** Collects a watch's deliveries. */
class Recorder {
  readonly batches: { revision: number; events: WatchEvent[] }[] = [];
  readonly ends: { why: WatchEnd; err?: Error }[] = [];
  readonly onEvents = (events: WatchEvent[], revision: number): void => {
    this.batches.push({ revision, events });
  };
  readonly onEnd = (why: WatchEnd, err?: Error): void => {
    this.ends.push(err === undefined ? { why } : { why, err });
  };
  get events(): WatchEvent[] {
    return this.batches.flatMap((x) => x.events);
  }
  get lastRevision(): number {
    return this.batches.at(-1)?.revision ?? 0;
  }
  until(cond: (r: Recorder) => boolean, ms = 5000): Promise<boolean> {
    return eventually(() => cond(this), ms, 5);
  }
}

function keysOf(kvs: KeyValue[]): string[] {
  return kvs.map((kv) => kv.key);
}

/**
 * Register the compliance tests for one backend. `open` is called once per test and must return a started
 * store that nobody else writes to.
 */
export function storeCompliance(name: string, open: () => Promise<ComplianceHarness>): void {
  /** Run `fn` with a fresh harness and a unique key prefix; always closes. */
  const withStore = (fn: (h: ComplianceHarness, p: string) => Promise<void>) => async (): Promise<void> => {
    const h = await open();
    const p = `/compliance/${randomBytes(4).toString('hex')}/`;
    try {
      await fn(h, p);
    } finally {
      await h.close();
    }
  };

  describe(`ClusterStore compliance: ${name}`, () => {
    describe('revisions', () => {
      it(
        'one global revision, +1 per write transaction; create/mod revision and version per key',
        withStore(async ({ store }, p) => {
          const r0 = (await store.get(`${p}none`)).revision;
          assert.ok(Number.isSafeInteger(r0) && r0 >= 0);
          assert.equal(await store.put(`${p}a`, b('1')), r0 + 1);
          assert.equal(await store.put(`${p}a`, b('2')), r0 + 2);
          assert.equal(await store.put(`${p}b`, b('x')), r0 + 3);
          const a = (await store.get(`${p}a`)).kvs[0]!;
          assert.equal(s(a.value), '2');
          assert.deepEqual([a.createRevision, a.modRevision, a.version], [r0 + 1, r0 + 2, 2]);
          assert.equal(a.lease, undefined);

          const del = await store.delete(`${p}a`);
          assert.deepEqual(del, { deleted: 1, revision: r0 + 4 });
          // Deleting nothing changes nothing.
          assert.deepEqual(await store.delete(`${p}a`), { deleted: 0, revision: r0 + 4 });
          assert.equal(await store.put(`${p}a`, b('3')), r0 + 5);
          const again = (await store.get(`${p}a`)).kvs[0]!;
          assert.deepEqual([again.createRevision, again.modRevision, again.version], [r0 + 5, r0 + 5, 1]);

          // A transaction touching several keys is one revision; each key gets it as modRevision.
          const t = await store.txn(
            [],
            [
              { op: 'put', key: `${p}a`, value: b('4') },
              { op: 'put', key: `${p}c`, value: b('5') },
              { op: 'delete', key: `${p}b` },
            ],
          );
          assert.equal(t.succeeded, true);
          assert.equal(t.revision, r0 + 6);
          const all = await store.get(p, { prefix: true });
          assert.equal(all.revision, r0 + 6);
          assert.deepEqual(keysOf(all.kvs), [`${p}a`, `${p}c`]);
          for (const kv of all.kvs) assert.equal(kv.modRevision, r0 + 6);

          // Read-only and failed transactions do not bump the revision.
          const ro = await store.txn([], [{ op: 'get', key: `${p}a` }]);
          assert.equal(ro.revision, r0 + 6);
          const failed = await store.txn(
            [{ key: `${p}a`, target: 'version', op: '==', value: 99 }],
            [{ op: 'put', key: `${p}a`, value: b('no') }],
          );
          assert.deepEqual([failed.succeeded, failed.revision], [false, r0 + 6]);
        }),
      );
    });

    describe('get, put, delete', () => {
      it(
        'prefix get is sorted by key, honours limit and the prefix boundary; values are bytes',
        withStore(async ({ store }, p) => {
          for (const k of ['m', 'b', 'z', 'a', 'ab']) await store.put(`${p}d/${k}`, b(k));
          await store.put(`${p}d0`, b('outside'));
          await store.put(`${p}bin`, Uint8Array.from([0, 255, 1, 128]));
          await store.put(`${p}empty`, new Uint8Array(0));

          const all = await store.get(`${p}d/`, { prefix: true });
          assert.deepEqual(
            keysOf(all.kvs),
            ['a', 'ab', 'b', 'm', 'z'].map((k) => `${p}d/${k}`),
          );
          assert.deepEqual(
            all.kvs.map((kv) => s(kv.value)),
            ['a', 'ab', 'b', 'm', 'z'],
          );
          const two = await store.get(`${p}d/`, { prefix: true, limit: 2 });
          assert.deepEqual(keysOf(two.kvs), [`${p}d/a`, `${p}d/ab`]);

          // Without `prefix`, the key is exact.
          assert.deepEqual((await store.get(`${p}d/`)).kvs, []);
          assert.deepEqual(keysOf((await store.get(`${p}d/a`)).kvs), [`${p}d/a`]);

          assert.deepEqual([...(await store.get(`${p}bin`)).kvs[0]!.value], [0, 255, 1, 128]);
          assert.equal((await store.get(`${p}empty`)).kvs[0]!.value.length, 0);
        }),
      );

      it(
        'prefix delete removes every key under the prefix in one revision',
        withStore(async ({ store }, p) => {
          for (const k of ['x/1', 'x/2', 'x/3', 'y']) await store.put(`${p}${k}`, b(k));
          const before = (await store.get(p, { prefix: true })).revision;
          const del = await store.delete(`${p}x/`, { prefix: true });
          assert.deepEqual(del, { deleted: 3, revision: before + 1 });
          assert.deepEqual(keysOf((await store.get(p, { prefix: true })).kvs), [`${p}y`]);
        }),
      );
    });

    describe('txn', () => {
      it(
        'every compare target and operator, on existing and missing keys',
        withStore(async ({ store }, p) => {
          const lease = await store.grantLease(30);
          const r1 = await store.put(`${p}k`, b('m'));
          const r2 = await store.put(`${p}k`, b('m'), { lease });
          const k = `${p}k`;
          const miss = `${p}missing`;
          const cases: [Parameters<ClusterStore['txn']>[0][number], boolean][] = [
            [{ key: k, target: 'value', op: '==', value: b('m') }, true],
            [{ key: k, target: 'value', op: '!=', value: b('m') }, false],
            [{ key: k, target: 'value', op: '<', value: b('n') }, true],
            [{ key: k, target: 'value', op: '>', value: b('l') }, true],
            [{ key: k, target: 'value', op: '>', value: b('m') }, false],
            [{ key: k, target: 'value', op: '<', value: b('ma') }, true], // byte order: prefix sorts first
            [{ key: k, target: 'version', op: '==', value: 2 }, true],
            [{ key: k, target: 'version', op: '>', value: 1 }, true],
            [{ key: k, target: 'version', op: '<', value: 2 }, false],
            [{ key: k, target: 'createRevision', op: '==', value: r1 }, true],
            [{ key: k, target: 'createRevision', op: '!=', value: r1 }, false],
            [{ key: k, target: 'modRevision', op: '==', value: r2 }, true],
            [{ key: k, target: 'modRevision', op: '<', value: r2 }, false],
            [{ key: k, target: 'modRevision', op: '>', value: r1 }, true],
            [{ key: k, target: 'lease', op: '==', value: lease }, true],
            [{ key: k, target: 'lease', op: '!=', value: '0' }, true],
            [{ key: miss, target: 'createRevision', op: '==', value: 0 }, true],
            [{ key: miss, target: 'modRevision', op: '==', value: 0 }, true],
            [{ key: miss, target: 'version', op: '==', value: 0 }, true],
            [{ key: miss, target: 'version', op: '>', value: 0 }, false],
            [{ key: miss, target: 'lease', op: '==', value: '0' }, true],
            // etcd: comparing the value of a missing key always fails.
            [{ key: miss, target: 'value', op: '!=', value: b('x') }, false],
            [{ key: miss, target: 'value', op: '==', value: b('') }, false],
          ];
          for (const [cmp, expected] of cases) {
            const r = await store.txn([cmp], [{ op: 'get', key: k }], [{ op: 'get', key: miss }]);
            assert.equal(r.succeeded, expected, `${cmp.key === k ? 'k' : 'missing'} ${cmp.target} ${cmp.op}`);
          }
          // Several compares: all must hold.
          const both = await store.txn(
            [
              { key: k, target: 'version', op: '==', value: 2 },
              { key: miss, target: 'version', op: '!=', value: 0 },
            ],
            [],
          );
          assert.equal(both.succeeded, false);
          await store.revokeLease(lease);
        }),
      );

      it(
        'applies exactly one branch, atomically, with per-op results',
        withStore(async ({ store }, p) => {
          await store.put(`${p}q/1`, b('1'));
          await store.put(`${p}q/2`, b('2'));
          const r0 = await store.put(`${p}flag`, b('on'));

          const ok = await store.txn(
            [{ key: `${p}flag`, target: 'value', op: '==', value: b('on') }],
            [
              { op: 'get', key: `${p}q/`, prefix: true },
              { op: 'put', key: `${p}s1`, value: b('a') },
              { op: 'delete', key: `${p}q/`, prefix: true },
              { op: 'get', key: `${p}q/`, prefix: true, limit: 1 },
              { op: 'get', key: `${p}s1` },
            ],
            [{ op: 'put', key: `${p}f1`, value: b('never') }],
          );
          assert.equal(ok.succeeded, true);
          assert.equal(ok.revision, r0 + 1);
          assert.equal(ok.results.length, 5);
          assert.deepEqual(keysOf(ok.results[0]!.kvs), [`${p}q/1`, `${p}q/2`]);
          assert.deepEqual(ok.results[1]!.kvs, []);
          assert.deepEqual(keysOf(ok.results[2]!.kvs).sort(), [`${p}q/1`, `${p}q/2`]);
          // Ops see the effects of earlier ops of the same branch (etcd applies them in order).
          assert.deepEqual(ok.results[3]!.kvs, []);
          assert.equal(s(ok.results[4]!.kvs[0]!.value), 'a');
          assert.equal(ok.results[4]!.kvs[0]!.modRevision, r0 + 1);
          assert.deepEqual((await store.get(`${p}f1`)).kvs, []);

          const ko = await store.txn(
            [{ key: `${p}flag`, target: 'value', op: '==', value: b('off') }],
            [{ op: 'put', key: `${p}s2`, value: b('never') }],
            [
              { op: 'put', key: `${p}g2`, value: b('b') },
              { op: 'put', key: `${p}g3`, value: b('c') },
              { op: 'get', key: `${p}flag` },
            ],
          );
          assert.equal(ko.succeeded, false);
          assert.equal(ko.revision, r0 + 2);
          assert.equal(ko.results.length, 3);
          assert.equal(s(ko.results[2]!.kvs[0]!.value), 'on');
          assert.deepEqual((await store.get(`${p}s2`)).kvs, []);
          const f = await store.get(`${p}g`, { prefix: true });
          assert.deepEqual(keysOf(f.kvs), [`${p}g2`, `${p}g3`]);
          for (const kv of f.kvs) assert.equal(kv.modRevision, r0 + 2);
        }),
      );

      it(
        'CAS races: two loops incrementing one counter lose no update',
        withStore(async ({ store }, p) => {
          const key = `${p}counter`;
          await store.put(key, b('0'));
          const perLoop = 100;
          const loop = async () => {
            for (let done = 0; done < perLoop; ) {
              const cur = (await store.get(key)).kvs[0]!;
              const next = Number(s(cur.value)) + 1;
              const r = await store.txn(
                [{ key, target: 'modRevision', op: '==', value: cur.modRevision }],
                [{ op: 'put', key, value: b(String(next)) }],
              );
              if (r.succeeded) done++;
            }
          };
          await Promise.all([loop(), loop()]);
          const final = (await store.get(key)).kvs[0]!;
          assert.equal(s(final.value), String(2 * perLoop));
          assert.equal(final.version, 2 * perLoop + 1);
        }),
      );
    });

    describe('leases', () => {
      it(
        'expiry deletes the keys (DELETE events), keepAlive extends, revoke deletes at once',
        withStore(async ({ store }, p) => {
          const w = new Recorder();
          const from = (await store.get(p)).revision + 1;
          const watch = store.watch(p, from, w.onEvents, w.onEnd);
          try {
            const dying = await store.grantLease(2);
            const kept = await store.grantLease(2);
            assert.equal(typeof dying, 'string');
            assert.notEqual(dying, kept);
            const granted = Date.now();
            await store.put(`${p}dying/1`, b('1'), { lease: dying });
            await store.put(`${p}dying/2`, b('2'), { lease: dying });
            await store.put(`${p}kept`, b('k'), { lease: kept });
            assert.equal((await store.get(`${p}kept`)).kvs[0]!.lease, kept);

            // Keep `kept` alive while `dying` runs out: TTL + 1.5 s at most.
            let gone = false;
            while (Date.now() - granted < 3500) {
              const ttl = await store.keepAlive(kept);
              assert.ok(ttl > 0, `keepAlive of a live lease returned ${ttl}`);
              if ((await store.get(`${p}dying/`, { prefix: true })).kvs.length === 0) {
                gone = true;
                if (Date.now() - granted > 2500) break;
              }
              await sleep(250);
            }
            assert.ok(gone, 'keys of an expired lease still present after TTL + 1.5 s');
            assert.equal(await store.keepAlive(dying), 0);
            assert.equal((await store.get(`${p}kept`)).kvs.length, 1, 'kept-alive lease expired');

            // Expiry is one revision with a DELETE per key.
            assert.ok(await w.until((r) => r.events.filter((e) => e.type === 'delete').length >= 2));
            const expiry = w.batches.find((x) => x.events.some((e) => e.type === 'delete'))!;
            assert.deepEqual(expiry.events.map((e) => [e.type, e.kv.key]).sort(), [
              ['delete', `${p}dying/1`],
              ['delete', `${p}dying/2`],
            ]);
            for (const e of expiry.events) {
              assert.equal(e.kv.modRevision, expiry.revision);
              assert.equal(e.kv.value.length, 0);
            }

            await store.revokeLease(kept);
            assert.deepEqual((await store.get(`${p}kept`)).kvs, []);
            assert.equal(await store.keepAlive(kept), 0);
            // Unknown leases: revoke is not an error, keepAlive says 0, put refuses.
            await store.revokeLease(kept);
            await rejectsWith(store.put(`${p}orphan`, b('x'), { lease: kept }), 'ENOENT');
            assert.deepEqual((await store.get(`${p}orphan`)).kvs, []);
          } finally {
            watch.cancel();
          }
        }),
      );

      it(
        'rejects a bad TTL with EINVAL',
        withStore(async ({ store }) => {
          for (const ttl of [0, -1, 1.5, Number.NaN]) await rejectsWith(store.grantLease(ttl), 'EINVAL');
        }),
      );
    });

    describe('watch', () => {
      it(
        'replays from a past revision, then goes live, grouped per revision, prefix-filtered',
        withStore(async ({ store }, p) => {
          const r1 = await store.put(`${p}w/a`, b('1'));
          await store.put(`${p}other`, b('not watched'));
          const r3 = await store.put(`${p}w/b`, b('2'));
          await store.delete(`${p}w/a`);

          const w = new Recorder();
          const watch = store.watch(`${p}w/`, r1, w.onEvents, w.onEnd);
          try {
            assert.ok(await w.until((r) => r.batches.length >= 3));
            const t = await store.txn(
              [],
              [
                { op: 'put', key: `${p}w/c`, value: b('3') },
                { op: 'put', key: `${p}w/d`, value: b('4') },
                { op: 'put', key: `${p}outside`, value: b('5') },
              ],
            );
            await store.put(`${p}w/c`, b('6'));
            assert.ok(await w.until((r) => r.batches.length >= 5));
            await sleep(50);
            assert.deepEqual(
              w.batches.map((x) => [
                x.revision,
                x.events.map((e) => `${e.type} ${e.kv.key.slice(p.length)}`),
              ]),
              [
                [r1, ['put w/a']],
                [r3, ['put w/b']],
                [r3 + 1, ['delete w/a']],
                [t.revision, ['put w/c', 'put w/d']],
                [t.revision + 1, ['put w/c']],
              ],
            );
            const put = w.batches[0]!.events[0]!;
            assert.deepEqual(
              [s(put.kv.value), put.kv.createRevision, put.kv.modRevision, put.kv.version],
              ['1', r1, r1, 1],
            );
            const del = w.batches[2]!.events[0]!;
            assert.deepEqual([del.kv.value.length, del.kv.modRevision], [0, r3 + 1]);
            const upd = w.batches[4]!.events[0]!;
            assert.deepEqual([s(upd.kv.value), upd.kv.createRevision, upd.kv.version], ['6', t.revision, 2]);
            assert.deepEqual(w.ends, []);
          } finally {
            watch.cancel();
          }
        }),
      );

      it(
        'no gap and no duplicate under concurrent writers',
        withStore(async ({ store }, p) => {
          const start = (await store.get(p)).revision + 1;
          const w = new Recorder();
          const watch = store.watch(p, start, w.onEvents, w.onEnd);
          try {
            const writers = 8;
            const each = 60;
            const revs: number[] = [];
            await Promise.all(
              Array.from({ length: writers }, async (_, i) => {
                for (let j = 0; j < each; j++) {
                  if (j % 10 === 9) revs.push((await store.delete(`${p}${i}/${j - 1}`)).revision);
                  else revs.push(await store.put(`${p}${i}/${j}`, b(`${i}.${j}`)));
                }
              }),
            );
            const last = Math.max(...revs);
            assert.equal(new Set(revs).size, writers * each, 'two writes got the same revision');
            assert.ok(await w.until((r) => r.lastRevision >= last));
            await sleep(50);
            const seen = w.batches.map((x) => x.revision);
            assert.deepEqual(
              seen,
              Array.from({ length: writers * each }, (_, i) => start + i),
            );
            for (const x of w.batches) {
              assert.equal(x.events.length, 1);
              assert.equal(x.events[0]!.kv.modRevision, x.revision);
            }
          } finally {
            watch.cancel();
          }
        }),
      );

      it(
        'a watch from the future starts there; cancel stops delivery without onEnd',
        withStore(async ({ store }, p) => {
          const now = (await store.get(p)).revision;
          const w = new Recorder();
          const watch = store.watch(p, now + 2, w.onEvents, w.onEnd);
          await store.put(`${p}1`, b('skipped'));
          const r2 = await store.put(`${p}2`, b('seen'));
          assert.ok(await w.until((r) => r.batches.length >= 1));
          watch.cancel();
          await store.put(`${p}3`, b('after cancel'));
          await sleep(200);
          assert.deepEqual(
            w.batches.map((x) => x.revision),
            [r2],
          );
          assert.deepEqual(w.ends, []);
          watch.cancel(); // idempotent
        }),
      );

      it(
        'stop() ends live watches with closed, once',
        withStore(async ({ store }, p) => {
          const w = new Recorder();
          store.watch(p, (await store.get(p)).revision + 1, w.onEvents, w.onEnd);
          await store.stop();
          assert.ok(await w.until((r) => r.ends.length >= 1));
          await sleep(50);
          assert.deepEqual(
            w.ends.map((e) => e.why),
            ['closed'],
          );
        }),
      );

      it(
        'a watch from a compacted revision ends with compacted',
        withStore(async (h, p) => {
          if (!h.compact) return;
          const { store } = h;
          const r1 = await store.put(`${p}a`, b('1'));
          await store.put(`${p}a`, b('2'));
          const r3 = await store.put(`${p}a`, b('3'));
          await h.compact(r3);
          const old = new Recorder();
          const w1 = store.watch(p, r1, old.onEvents, old.onEnd);
          assert.ok(await old.until((r) => r.ends.length >= 1));
          assert.deepEqual(old.batches, []);
          assert.deepEqual(
            old.ends.map((e) => e.why),
            ['compacted'],
          );
          w1.cancel();
          // Watching from the compaction revision onwards still works.
          const fresh = new Recorder();
          const w2 = store.watch(p, r3 + 1, fresh.onEvents, fresh.onEnd);
          try {
            const r4 = await store.put(`${p}a`, b('4'));
            assert.ok(await fresh.until((r) => r.batches.length >= 1));
            assert.equal(fresh.batches[0]!.revision, r4);
            assert.deepEqual(fresh.ends, []);
          } finally {
            w2.cancel();
          }
        }),
      );
    });

    describe('errors', () => {
      it(
        'bad arguments are EINVAL',
        withStore(async ({ store }) => {
          await rejectsWith(store.put('', b('x')), 'EINVAL');
          await rejectsWith(store.get(''), 'EINVAL');
          await rejectsWith(store.txn([], [{ op: 'put', key: '', value: b('x') }]), 'EINVAL');
        }),
      );

      it(
        'an already aborted signal rejects with EABORTED and has no effect',
        withStore(async ({ store }, p) => {
          const signal = AbortSignal.abort();
          await rejectsWith(store.put(`${p}a`, b('x'), { signal }), 'EABORTED');
          await rejectsWith(store.get(`${p}a`, { signal }), 'EABORTED');
          await rejectsWith(store.grantLease(5, { signal }), 'EABORTED');
          assert.deepEqual((await store.get(`${p}a`)).kvs, []);
        }),
      );

      it(
        'a call the backend does not answer times out with ETIMEDOUT, or aborts with EABORTED',
        withStore(async (h, p) => {
          if (!h.pause) return;
          const resume = h.pause();
          try {
            await rejectsWith(h.store.put(`${p}a`, b('x'), { timeout: 200 }), 'ETIMEDOUT');
            const ac = new AbortController();
            const pending = h.store.get(`${p}a`, { signal: ac.signal, timeout: 10_000 });
            setTimeout(() => ac.abort(), 50);
            await rejectsWith(pending, 'EABORTED');
          } finally {
            resume();
          }
          // After resuming, the store works again (the timed-out put may or may not have applied).
          const r = await h.store.put(`${p}b`, b('y'));
          assert.equal((await h.store.get(`${p}b`)).revision, r);
        }),
      );
    });
  });
}
