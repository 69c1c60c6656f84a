/**
 * The queued lock with fencing tokens (src/cluster/lock.ts), one suite run on both backends: the embedded
 * store (one store in this process, shared by every simulated client) and a real 3-member etcd cluster (each
 * client its own connection); the etcd run skips with the reason where etcd is missing.
 *
 * Each test uses its own lock name, so tests never see each other's keys. Leases of holders that must not
 * expire get a TTL far beyond a test's duration; the tests that need a lease to go revoke it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';
import { EtcdStore } from '../../../src/cluster/etcd/store.js';
import { acquireLock, checkFence, type LockHandle, lockKey, lockPrefix } from '../../../src/cluster/lock.js';
import type { ClusterStore } from '../../../src/cluster/store.js';
import { DvsError, type ErrorCode } from '../../../src/protocol/errors.js';
import { EtcdTestCluster, etcdSkipReason, waitFor } from './etcd-harness.js';

const logger = pino({ level: process.env.DVS_TEST_LOG ?? 'silent' });
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A backend: store clients for simulated processes, released after each test. */
interface LockBackend {
  client(): Promise<ClusterStore>;
  releaseClients(): Promise<void>;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DvsError, `expected DvsError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

let nameSeq = 0;
const freshName = (what: string) => `${what}-${process.pid}-${++nameSeq}`;

function lockSuite(label: string, backend: () => LockBackend) {
  describe(`queued lock (${label})`, () => {
    const leases: { store: ClusterStore; lease: string }[] = [];

    /** A client with its own lease (TTL 30 s: never expires during a test unless revoked). */
    const proc = async () => {
      const store = await backend().client();
      const lease = await store.grantLease(30);
      leases.push({ store, lease });
      return { store, lease };
    };

    afterEach(async () => {
      await Promise.all(leases.splice(0).map(({ store, lease }) => store.revokeLease(lease).catch(() => {})));
      await backend().releaseClients();
    });

    it('mutual exclusion: 5 concurrent read-modify-writes lose no update; tokens strictly increase', async () => {
      const name = freshName('mutex');
      const counter = `/dvs/test/${name}/counter`;
      const procs = await Promise.all(Array.from({ length: 5 }, proc));
      const rounds = 3;
      let inside = 0;
      let maxInside = 0;
      const tokens: number[] = [];
      await Promise.all(
        procs.map(async ({ store, lease }) => {
          for (let i = 0; i < rounds; i++) {
            const l = await acquireLock(store, name, { lease, logger, timeout: 15_000 });
            inside++;
            maxInside = Math.max(maxInside, inside);
            tokens.push(l.fencingToken);
            // A plain read then a plain write, with a yield between: without the lock, updates get lost.
            const cur = (await store.get(counter)).kvs[0];
            const n = cur ? Number(dec.decode(cur.value)) : 0;
            await new Promise((r) => setTimeout(r, 5));
            await store.put(counter, enc.encode(String(n + 1)));
            inside--;
            await l.release();
          }
        }),
      );
      const admin = await backend().client();
      const final = (await admin.get(counter)).kvs[0];
      assert.equal(final ? Number(dec.decode(final.value)) : 0, 5 * rounds, 'no lost update');
      assert.equal(maxInside, 1, 'never two holders at once');
      for (let i = 1; i < tokens.length; i++) {
        assert.ok(tokens[i]! > tokens[i - 1]!, `tokens strictly increase: ${tokens.join(',')}`);
      }
      assert.equal((await admin.get(lockPrefix(name), { prefix: true })).kvs.length, 0, 'queue empty');
      await admin.delete(`/dvs/test/${name}/`, { prefix: true });
    });

    it('waiters get the lock in the order they queued (FIFO)', async () => {
      const name = freshName('fifo');
      const holder = await proc();
      const waiters = await Promise.all(Array.from({ length: 4 }, proc));
      const first = await acquireLock(holder.store, name, { lease: holder.lease, logger });
      const order: number[] = [];
      const tokens: number[] = [first.fencingToken];
      const done: Promise<void>[] = [];
      for (const [i, w] of waiters.entries()) {
        done.push(
          acquireLock(w.store, name, { lease: w.lease, logger, timeout: 15_000 }).then(async (l) => {
            order.push(i);
            tokens.push(l.fencingToken);
            await l.release();
          }),
        );
        // Queue them one at a time: wait until this waiter's key is in the store before starting the next.
        await waitFor(
          async () => (await holder.store.get(lockKey(name, w.lease))).kvs.length === 1,
          5_000,
          `waiter ${i} queued`,
        );
      }
      assert.deepEqual(order, [], 'nobody gets the lock while it is held');
      await first.release();
      await Promise.all(done);
      assert.deepEqual(order, [0, 1, 2, 3]);
      for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, 'tokens increase');
    });

    it("the holder's lease revoked (process or node death) hands the lock to the next waiter", async () => {
      const name = freshName('expiry');
      const a = await proc();
      const b = await proc();
      const la = await acquireLock(a.store, name, { lease: a.lease, logger });
      let got: LockHandle | undefined;
      const pb = acquireLock(b.store, name, { lease: b.lease, logger, timeout: 15_000 }).then((l) => {
        got = l;
        return l;
      });
      await waitFor(
        async () => (await b.store.get(lockKey(name, b.lease))).kvs.length === 1,
        5_000,
        'b queued',
      );
      assert.equal(got, undefined);
      await a.store.revokeLease(a.lease);
      const lb = await pb;
      assert.ok(lb.fencingToken > la.fencingToken);
      assert.equal((await b.store.get(la.key)).kvs.length, 0, "the dead holder's key is gone");
      // The old holder's fence is stale now: its release is harmless, its fenced write does not land.
      await la.release();
      assert.ok(await checkFence(b.store, name, lb.fencingToken), 'the new holder still holds');
      await lb.release();
    });

    it('a lease that expires without keepalive releases the lock (real TTL)', async () => {
      const name = freshName('ttl');
      const a = await proc();
      const shortStore = await backend().client();
      const short = await shortStore.grantLease(1);
      leases.push({ store: shortStore, lease: short });
      await acquireLock(shortStore, name, { lease: short, logger });
      // Nobody renews `short`: the store deletes its key within about a TTL (plus etcd's lease checkpoint).
      const l = await acquireLock(a.store, name, { lease: a.lease, logger, timeout: 10_000 });
      assert.equal((await a.store.get(lockKey(name, short))).kvs.length, 0);
      await l.release();
    });

    it("timeout and abort reject and remove the waiter's key; the queue keeps moving", async () => {
      const name = freshName('giveup');
      const a = await proc();
      const b = await proc();
      const c = await proc();
      const la = await acquireLock(a.store, name, { lease: a.lease, logger });

      await rejectsWith(acquireLock(b.store, name, { lease: b.lease, logger, timeout: 300 }), 'ETIMEDOUT');
      assert.equal((await a.store.get(lockKey(name, b.lease))).kvs.length, 0, 'timed-out waiter key removed');

      const ac = new AbortController();
      const pc = acquireLock(c.store, name, { lease: c.lease, logger, signal: ac.signal });
      await waitFor(
        async () => (await c.store.get(lockKey(name, c.lease))).kvs.length === 1,
        5_000,
        'c queued',
      );
      ac.abort();
      await rejectsWith(pc, 'EABORTED');
      assert.equal((await a.store.get(lockKey(name, c.lease))).kvs.length, 0, 'aborted waiter key removed');
      await rejectsWith(
        acquireLock(c.store, name, { lease: c.lease, logger, signal: AbortSignal.abort() }),
        'EABORTED',
      );

      // Only the holder is left; after its release the next acquire is immediate.
      assert.deepEqual(
        (await a.store.get(lockPrefix(name), { prefix: true })).kvs.map((kv) => kv.key),
        [la.key],
      );
      await la.release();
      const lb = await acquireLock(b.store, name, { lease: b.lease, logger, timeout: 5_000 });
      await lb.release();
    });

    it('a stale fencing token fails checkFence, and its fenced write does not land', async () => {
      const name = freshName('fence');
      const a = await proc();
      const b = await proc();
      const res = `/dvs/test/${name}/resource`;
      const la = await acquireLock(a.store, name, { lease: a.lease, logger });
      assert.ok(
        await checkFence(a.store, name, la.fencingToken, {
          ops: [{ op: 'put', key: res, value: enc.encode('a') }],
        }),
      );
      const pb = acquireLock(b.store, name, { lease: b.lease, logger, timeout: 10_000 });
      await waitFor(
        async () => (await b.store.get(lockKey(name, b.lease))).kvs.length === 1,
        5_000,
        'b queued',
      );
      // A waiter's createRevision is not a holder's token.
      const waiterRev = (await b.store.get(lockKey(name, b.lease))).kvs[0]!.createRevision;
      assert.equal(await checkFence(b.store, name, waiterRev), false, "a waiter's revision is no token");
      await la.release();
      const lb = await pb;

      const stale = await checkFence(a.store, name, la.fencingToken, {
        ops: [{ op: 'put', key: res, value: enc.encode('a-late') }],
      });
      assert.equal(stale, false, 'stale token rejected');
      // The handle's own guard, used in a caller's txn, fails the same way.
      const r = await a.store.txn([la.fence], [{ op: 'put', key: res, value: enc.encode('a-late2') }]);
      assert.equal(r.succeeded, false);
      assert.ok(
        await checkFence(b.store, name, lb.fencingToken, {
          ops: [{ op: 'put', key: res, value: enc.encode('b') }],
        }),
      );
      assert.equal(dec.decode((await b.store.get(res)).kvs[0]!.value), 'b');
      await lb.release();
      assert.equal(await checkFence(b.store, name, lb.fencingToken), false, 'a free lock has no holder');
      await b.store.delete(`/dvs/test/${name}/`, { prefix: true });
    });

    it('a queue put reported ambiguous (it did land) is retried without double-queueing', async () => {
      const name = freshName('ambiguous');
      const a = await proc();
      // The first txn is applied, then reported lost: what a leader change or a dropped channel looks like.
      let failNext = true;
      const flaky: ClusterStore = Object.create(a.store) as ClusterStore;
      flaky.txn = async (c, ok, fail, o) => {
        const r = await a.store.txn(c, ok, fail, o);
        if (failNext) {
          failNext = false;
          throw new DvsError('ENOTCONN', 'lost with the call in flight (test)', { ambiguous: true });
        }
        return r;
      };
      const l = await acquireLock(flaky, name, { lease: a.lease, logger, timeout: 5_000 });
      assert.equal(failNext, false, 'the fault was injected');
      const kvs = (await a.store.get(lockPrefix(name), { prefix: true })).kvs;
      assert.deepEqual(
        kvs.map((kv) => [kv.key, kv.createRevision]),
        [[l.key, l.fencingToken]],
        'one key, created by the first (ambiguous) attempt',
      );
      await l.release();
    });

    it('one lease cannot queue twice for the same lock (EBUSY); bad names are EINVAL', async () => {
      const name = freshName('busy');
      const a = await proc();
      const la = await acquireLock(a.store, name, { lease: a.lease, logger });
      await rejectsWith(acquireLock(a.store, name, { lease: a.lease, logger, timeout: 1_000 }), 'EBUSY');
      assert.equal((await a.store.get(la.key)).kvs.length, 1, 'the EBUSY attempt left the held key alone');
      await la.release();
      await rejectsWith(acquireLock(a.store, 'a/b', { lease: a.lease, logger }), 'EINVAL');
      await rejectsWith(acquireLock(a.store, name, { lease: 'x', logger }), 'EINVAL');
    });
  });
}

// ------------------------------------------------------------------------------------------------ embedded

{
  let dir: string | undefined;
  let store: EmbeddedStore | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-lock-'));
    // fsync off: these tests are about the recipe, not durability (the store's own tests cover that).
    store = new EmbeddedStore({ dir, logger, fsync: false, leaseTickMs: 50 });
    await store.start();
  });
  after(async () => {
    await store?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  lockSuite('embedded', () => ({ client: async () => store!, releaseClients: async () => {} }));
}

// ------------------------------------------------------------------------------------------------ etcd

const skip = etcdSkipReason();
if (skip !== undefined) {
  it('queued lock (etcd, 3 members)', { skip }, () => {});
} else {
  let cluster: EtcdTestCluster | undefined;
  let clients: EtcdStore[] = [];
  before(async () => {
    cluster = await EtcdTestCluster.start({ members: 3 });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await cluster?.stop();
  });
  const etcd: LockBackend = {
    client: async () => {
      const s = new EtcdStore({ endpoints: cluster!.endpoints, logger, callTimeoutMs: 2_000 });
      await s.start();
      clients.push(s);
      return s;
    },
    releaseClients: async () => {
      const all = clients;
      clients = [];
      await Promise.all(all.map((c) => c.stop()));
    },
  };
  lockSuite('etcd, 3 members', () => etcd);
}
