/**
 * The DVK services (src/services) over a real cluster store, one suite run per backend by embedded.test.ts
 * and etcd.test.ts. "Clients" are service instances in this process, each with its own store client where
 * the backend has clients (etcd), so leases, watches and connections are as independent as on real nodes.
 *
 * Concurrent clients record histories (test/lib/linearizability.ts) that the WGL checker verifies against the
 * sequential models; the op mix comes from a seeded PRNG (the seed is in the test name, so a failure replays).
 * Each test uses its own DC ids, so tests never see each other's keys.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import type { ClusterStore } from '../../../src/cluster/store.js';
import { DvsError, type ErrorCode } from '../../../src/protocol/errors.js';
import { DcScope, DcServices } from '../../../src/services/index.js';
import {
  checkLinearizable,
  HistoryRecorder,
  type KvInput,
  type KvOutput,
  kvModel,
  type LockInput,
  type LockOutput,
  lockModel,
} from '../../lib/linearizability.js';
import { Prng } from '../../sim/prng.js';
import { waitFor } from '../cluster/etcd-harness.js';

export const logger = pino({ level: process.env.DVS_TEST_LOG ?? 'silent' });
const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a backend gives the suite. */
export interface ServicesBackend {
  /** A store client for one simulated node (the same object every time for a single-process store). */
  client(): Promise<ClusterStore>;
  /** Release every client handed out since the last call. */
  releaseClients(): Promise<void>;
}

/** Per-test helpers: started services are stopped, leases revoked, after each test. */
export interface SuiteContext {
  /** Started services of DC `dc` over a fresh client. */
  services(dc: number, timeoutMs?: number): Promise<DcServices & { store: ClusterStore }>;
  /** A fresh DC id (unique in this process run). */
  dc(): number;
}

export async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<DvsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DvsError, `expected DvsError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

/** Was this a definite refusal (the op certainly had no effect) or an unknown outcome? */
const unknownOr = (e: unknown): 'unknown' | 'drop' =>
  e instanceof DvsError && (e.details?.ambiguous === true || e.code === 'EUNAVAIL') ? 'unknown' : 'drop';

let dcSeq = 100 + (process.pid % 1000) * 50;

export function servicesSuite(
  label: string,
  backend: () => ServicesBackend,
  extra?: (ctx: () => SuiteContext) => void,
): void {
  describe(`DVK services (${label})`, () => {
    const started: DcServices[] = [];
    const ctx: SuiteContext = {
      async services(dc, timeoutMs = 5_000) {
        const store = await backend().client();
        const s = Object.assign(new DcServices({ store, dc, logger, timeoutMs }), { store });
        await s.start();
        started.push(s);
        return s;
      },
      dc: () => ++dcSeq,
    };

    afterEach(async () => {
      await Promise.all(started.splice(0).map((s) => s.stop()));
      await backend().releaseClients();
    });

    it('kv: 4 concurrent clients on 2 keys produce a linearizable history (seed 7)', async () => {
      const dc = ctx.dc();
      const clients = await Promise.all(Array.from({ length: 4 }, () => ctx.services(dc)));
      const rec = new HistoryRecorder<KvInput, KvOutput>();
      const prng = new Prng(7);
      const keys = ['a', 'b'];
      // Each client's op sequence is drawn up front so the PRNG order does not depend on timing.
      const plans = clients.map((_, c) =>
        Array.from({ length: 30 }, (_, i) => {
          const key = prng.pick(keys);
          const r = prng.int(0, 9);
          if (r < 4) return { op: 'get', key } as const;
          if (r < 7) return { op: 'put', key, value: `c${c}-${i}` } as const;
          if (r < 8) return { op: 'delete', key } as const;
          return { op: 'cas', key, expect: prng.chance(0.5) ? null : 'last', value: `c${c}-${i}` } as const;
        }),
      );
      await Promise.all(
        clients.map(async (svc, c) => {
          let lastSeen: string | null = null;
          for (const p of plans[c]!) {
            const { kv } = svc;
            try {
              if (p.op === 'get') {
                const v = await rec.record(
                  c,
                  p,
                  async () => {
                    try {
                      return dec.decode((await kv.get(p.key)).value);
                    } catch (e) {
                      if (e instanceof DvsError && e.code === 'ENOENT') return null;
                      throw e;
                    }
                  },
                  (value) => ({ value }),
                  () => 'drop',
                );
                lastSeen = v;
              } else if (p.op === 'put') {
                await rec.record(
                  c,
                  p,
                  () => kv.put(p.key, enc.encode(p.value)),
                  () => ({}),
                  unknownOr,
                );
              } else if (p.op === 'delete') {
                await rec.record(
                  c,
                  p,
                  () => kv.delete(p.key),
                  (r) => ({ deleted: r.deleted }),
                  unknownOr,
                );
              } else {
                const expect = p.expect === null ? null : lastSeen;
                const input: KvInput = { op: 'cas', key: p.key, expect, value: p.value };
                await rec.record(
                  c,
                  input,
                  () =>
                    kv.cas(
                      p.key,
                      expect === null ? { revision: 0 } : { value: enc.encode(expect) },
                      enc.encode(p.value),
                    ),
                  (r) => ({ succeeded: r.succeeded }),
                  unknownOr,
                );
              }
            } catch (e) {
              // Recorded above (unknown or dropped); a client that saw an unknown outcome stops, as in Jepsen.
              if (unknownOr(e) === 'unknown') return;
              throw e;
            }
          }
        }),
      );
      assert.ok(rec.ops.length >= 100, `history has ${rec.ops.length} ops`);
      const r = checkLinearizable(kvModel, rec.ops);
      assert.equal(r.outcome, 'ok', `not linearizable:\n${r.longestPrefix?.join('\n')}`);
    });

    it('kv: get/put/delete/cas by revision, list by prefix, watch from a revision', async () => {
      const dc = ctx.dc();
      const { kv } = await ctx.services(dc);
      await rejectsWith(kv.get('cfg/x'), 'ENOENT');
      const w1 = await kv.put('cfg/x', enc.encode('1'));
      const e1 = await kv.get('cfg/x');
      assert.equal(e1.revision, w1.revision);
      assert.equal(e1.version, 1);
      // cas on a stale revision fails and shows the current entry; on the current one it succeeds.
      const w2 = await kv.put('cfg/x', enc.encode('2'));
      const stale = await kv.cas('cfg/x', { revision: w1.revision }, enc.encode('3'));
      assert.equal(stale.succeeded, false);
      assert.equal(stale.current?.revision, w2.revision);
      assert.equal(dec.decode(stale.current!.value), '2');
      const ok = await kv.cas('cfg/x', { revision: w2.revision }, enc.encode('3'));
      assert.ok(ok.succeeded);
      assert.equal(
        (await kv.cas('cfg/new', { revision: 0 }, enc.encode('n'))).succeeded,
        true,
        'create-only',
      );
      assert.equal((await kv.cas('cfg/new', { revision: 0 }, enc.encode('m'))).succeeded, false);
      assert.equal((await kv.cas('cfg/new', { value: enc.encode('n') }, null)).succeeded, true, 'cas delete');
      await kv.put('cfg/y', enc.encode('y'));
      await kv.put('other', enc.encode('o'));
      const list = await kv.list('cfg/');
      assert.deepEqual(
        list.entries.map((e) => [e.key, dec.decode(e.value)]),
        [
          ['cfg/x', '3'],
          ['cfg/y', 'y'],
        ],
      );
      assert.equal((await kv.list('')).entries.length, 3);

      // Watch from the list's revision + 1 sees exactly the later changes under the prefix, in order.
      const seen: string[] = [];
      const w = kv.watch(
        'cfg/',
        list.revision + 1,
        (evs) => {
          for (const ev of evs) seen.push(`${ev.type} ${ev.key} ${dec.decode(ev.value)}`);
        },
        () => {},
      );
      await kv.put('cfg/z', enc.encode('z'));
      await kv.put('other', enc.encode('ignored'));
      assert.deepEqual(await kv.delete('cfg/x'), { deleted: true, revision: (await kv.list('')).revision });
      assert.equal((await kv.delete('cfg/x')).deleted, false);
      await waitFor(() => seen.length >= 2, 5_000, 'watch events');
      assert.deepEqual(seen, ['put cfg/z z', 'delete cfg/x ']);
      w.cancel();

      // Watching from revision 1 replays history (the backend keeps it): the first put is there.
      const replay: number[] = [];
      const w3 = kv.watch(
        'cfg/x',
        w1.revision,
        (evs) => replay.push(...evs.map((e) => e.revision)),
        () => {},
      );
      await waitFor(() => replay.includes(w1.revision), 5_000, 'replayed history');
      w3.cancel();

      await rejectsWith(kv.put('', enc.encode('x')), 'EINVAL');
      await rejectsWith(kv.put('bad\nkey', enc.encode('x')), 'EINVAL');
      await rejectsWith(kv.put('k', 'str' as unknown as Uint8Array), 'EINVAL');
      await rejectsWith(kv.put('k', enc.encode('x'), { lease: '424242' }), 'ENOENT');
    });

    it('DC isolation: DC 1 cannot read, list, lock against or decide for DC 2', async () => {
      const d1 = ctx.dc();
      const d2 = ctx.dc();
      const s1 = await ctx.services(d1);
      const s2 = await ctx.services(d2);
      await s1.kv.put('secret', enc.encode('dc1'));
      await rejectsWith(s2.kv.get('secret'), 'ENOENT');
      assert.deepEqual((await s2.kv.list('')).entries, []);
      await s2.kv.put('secret', enc.encode('dc2'));
      assert.equal(dec.decode((await s1.kv.get('secret')).value), 'dc1');
      // Same lock name in two DCs: both held at once.
      const l1 = await s1.lock.lock('m', { timeout: 2_000 });
      const l2 = await s2.lock.lock('m', { timeout: 2_000 });
      await rejectsWith(s2.lock.checkFence('m', l1.token), 'ESTALE');
      await rejectsWith(s2.lock.unlock('m', l1.token), 'ENOTOWNER');
      assert.deepEqual(
        (await s2.lock.list()).map((l) => l.holder.token),
        [l2.token],
      );
      await l1.unlock();
      await l2.unlock();
      // Same consensus instance in two DCs: independent decisions.
      assert.equal(dec.decode((await s1.consensus.propose('i', enc.encode('one'))).value), 'one');
      assert.equal(dec.decode((await s2.consensus.propose('i', enc.encode('two'))).value), 'two');
      // Same election in two DCs: two leaders.
      const e1 = await s1.election.campaign('e', 'a', { timeout: 2_000 });
      const e2 = await s2.election.campaign('e', 'b', { timeout: 2_000 });
      assert.equal((await s1.election.leader('e')).leader, 'a');
      assert.equal((await s2.election.leader('e')).leader, 'b');
      await e1.resign();
      await e2.resign();
      await rejectsWith(s1.election.leader('e'), 'ENOENT');
    });

    it('lock: 4 clients acquiring, checking and releasing give a linearizable lock history (seed 11)', async () => {
      const dc = ctx.dc();
      const clients = await Promise.all(Array.from({ length: 4 }, () => ctx.services(dc)));
      const rec = new HistoryRecorder<LockInput, LockOutput>();
      const prng = new Prng(11);
      const tokens: number[] = [];
      const oldTokens: number[] = [];
      await Promise.all(
        clients.map(async (svc, c) => {
          for (let round = 0; round < 4; round++) {
            const l = await rec.record(
              c,
              { op: 'acquire' },
              () => svc.lock.lock('res', { ttl: 30, timeout: 20_000, owner: `client ${c}` }),
              (h) => ({ token: h.token }),
            );
            tokens.push(l.token);
            const check = (token: number) =>
              rec
                .record(
                  c,
                  { op: 'check', token },
                  () => svc.lock.checkFence('res', token).then(() => true),
                  (ok) => ({ ok }),
                  (e) => (e instanceof DvsError && e.code === 'ESTALE' ? { ok: false } : 'drop'),
                )
                .catch(() => false);
            await check(l.token);
            // Someone else's old token, now stale.
            const old = oldTokens.length > 0 ? prng.pick(oldTokens) : undefined;
            if (old !== undefined) assert.equal(await check(old), false, 'an old token is stale');
            await new Promise((r) => setTimeout(r, prng.int(0, 5)));
            await rec.record(
              c,
              { op: 'release', token: l.token },
              () => l.unlock().then(() => true),
              (ok) => ({ ok }),
            );
            oldTokens.push(l.token);
          }
        }),
      );
      assert.equal(tokens.length, 16);
      assert.equal(new Set(tokens).size, 16, 'every holder got its own token');
      const r = checkLinearizable(lockModel, rec.ops);
      assert.equal(r.outcome, 'ok', `lock history not linearizable:\n${r.longestPrefix?.join('\n')}`);
      assert.deepEqual(await clients[0]!.lock.list(), [], 'no lock left');
    });

    it("lock: the holder's lease expiring hands the lock on; the old token is stale everywhere", async () => {
      const dc = ctx.dc();
      const a = await ctx.services(dc);
      const b = await ctx.services(dc);
      // A's lease is the daemon-bound kind: nobody renews it here, as if A's process died.
      const lease = await a.store.grantLease(1);
      const la = await a.lock.lock('db', { lease, owner: 'a' });
      await a.kv.put('db/row', enc.encode('a'), { fence: { lock: 'db', token: la.token } });
      const pb = b.lock.lock('db', { ttl: 30, timeout: 15_000, owner: 'b' });
      await waitFor(async () => (await a.lock.list())[0]?.waiters.length === 1, 5_000, 'b queued');
      const info = (await a.lock.list())[0]!;
      assert.equal(info.holder.owner, 'a');
      assert.equal(info.waiters[0]!.owner, 'b');
      const lb = await pb;
      assert.ok(lb.token > la.token, 'fencing tokens increase');
      await rejectsWith(a.lock.checkFence('db', la.token), 'ESTALE');
      await rejectsWith(
        a.kv.put('db/row', enc.encode('a-late'), { fence: { lock: 'db', token: la.token } }),
        'ESTALE',
      );
      await rejectsWith(
        a.kv.cas('db/row', { value: enc.encode('a') }, enc.encode('a-late'), {
          fence: { lock: 'db', token: la.token },
        }),
        'ESTALE',
      );
      await rejectsWith(la.unlock(), 'ENOTOWNER');
      await b.kv.put('db/row', enc.encode('b'), { fence: { lock: 'db', token: lb.token } });
      assert.equal(dec.decode((await b.kv.get('db/row')).value), 'b');
      await lb.unlock();
      await rejectsWith(lb.unlock(), 'ENOTOWNER');
    });

    it('lock: timeout and abort leave the queue; stop() fails waiters with EUNAVAIL and releases', async () => {
      const dc = ctx.dc();
      const a = await ctx.services(dc);
      const b = await ctx.services(dc);
      const la = await a.lock.lock('q', { ttl: 30 });
      await rejectsWith(b.lock.lock('q', { ttl: 30, timeout: 200 }), 'ETIMEDOUT');
      const ac = new AbortController();
      const pb = b.lock.lock('q', { ttl: 30, signal: ac.signal });
      await waitFor(async () => (await a.lock.list())[0]?.waiters.length === 1, 5_000, 'b queued');
      ac.abort();
      await rejectsWith(pb, 'EABORTED');
      assert.equal((await a.lock.list())[0]!.waiters.length, 0);
      const pc = b.lock.lock('q', { ttl: 30 });
      await waitFor(async () => (await a.lock.list())[0]?.waiters.length === 1, 5_000, 'b queued again');
      await b.stop();
      await rejectsWith(pc, 'EUNAVAIL');
      // A's stop releases what it holds (its service-granted lease is revoked).
      await a.lock.stop();
      const c = await ctx.services(dc);
      assert.deepEqual(await c.lock.list(), []);
      const lc = await c.lock.lock('q', { timeout: 2_000 });
      assert.ok(lc.token > la.token);
      await lc.unlock();
      await rejectsWith(c.lock.lock('bad/name'), 'EINVAL');
      await rejectsWith(c.lock.lock('x', { ttl: 0 }), 'EINVAL');
    });

    it("election: a leader's lease expiring elects the next candidate; observers follow terms", async () => {
      const dc = ctx.dc();
      const [a, b, c, o] = await Promise.all([
        ctx.services(dc),
        ctx.services(dc),
        ctx.services(dc),
        ctx.services(dc),
      ]);
      const ac = new AbortController();
      const seen: { leader: string | null; term: number }[] = [];
      const observing = (async () => {
        for await (const st of o.election.observe('primary', { signal: ac.signal })) {
          seen.push({ leader: st.leader, term: st.term });
        }
      })();
      await waitFor(() => seen.length >= 1, 5_000, 'initial state');
      assert.deepEqual(seen[0], { leader: null, term: 0 });

      const leaseA = await a.store.grantLease(2); // not renewed: A "dies"
      const la = await a.election.campaign('primary', 'node-a', { lease: leaseA });
      // B queues before C (campaigns started together may queue in either order).
      const queue = `${new DcScope(dc).electionsRoot}primary/`;
      const queued = async (n: number) => (await o.store.get(queue, { prefix: true })).kvs.length === n;
      const pb = b.election.campaign('primary', 'node-b', { ttl: 30, timeout: 15_000 });
      await waitFor(() => queued(2), 5_000, 'b queued');
      const pc = c.election.campaign('primary', 'node-c', { ttl: 30, timeout: 20_000 });
      await waitFor(() => queued(3), 5_000, 'c queued');
      await waitFor(() => seen.length >= 2, 5_000, 'a observed');
      assert.deepEqual(seen[1], { leader: 'node-a', term: la.term });
      const lb = await pb;
      assert.ok(lb.term > la.term);
      await rejectsWith(a.election.checkTerm('primary', la.term), 'ESTALE');
      await b.election.checkTerm('primary', lb.term);
      await lb.resign();
      const lc = await pc;
      assert.ok(lc.term > lb.term);
      await waitFor(() => seen.some((s) => s.leader === 'node-c'), 5_000, 'c observed');
      assert.deepEqual(
        seen.map((s) => s.leader),
        [null, 'node-a', 'node-b', 'node-c'],
      );
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.term > seen[i - 1]!.term, 'terms increase');
      assert.deepEqual(
        seen.slice(1).map((s) => s.term),
        [la.term, lb.term, lc.term],
      );
      const now = await o.election.leader('primary');
      assert.equal(now.leader, 'node-c');
      assert.equal(now.term, lc.term);
      ac.abort();
      await observing;
      await lc.resign();
      await rejectsWith(lc.resign(), 'ENOTOWNER');
    });

    it('consensus: 10 concurrent proposers agree on one proposed value; later ones learn it', async () => {
      const dc = ctx.dc();
      const clients = await Promise.all(Array.from({ length: 10 }, () => ctx.services(dc)));
      const decisions = await Promise.all(
        clients.map((s, i) => s.consensus.propose('config-v1', enc.encode(`proposal-${i}`))),
      );
      const values = new Set(decisions.map((d) => dec.decode(d.value)));
      assert.equal(values.size, 1, `agreement: ${[...values].join(', ')}`);
      const decided = [...values][0]!;
      assert.match(decided, /^proposal-\d$/, 'validity: a proposed value');
      assert.equal(decisions.filter((d) => d.mine).length, 1, 'exactly one proposer won');
      assert.equal(new Set(decisions.map((d) => d.revision)).size, 1);
      const late = await clients[0]!.consensus.propose('config-v1', enc.encode('late'));
      assert.equal(dec.decode(late.value), decided);
      assert.equal(late.mine, false);
      assert.equal(dec.decode((await clients[1]!.consensus.read('config-v1')).value), decided);
      await rejectsWith(clients[1]!.consensus.read('config-v2'), 'ENOENT');
      await rejectsWith(clients[1]!.consensus.propose('bad name', enc.encode('x')), 'EINVAL');
    });

    it('lost replies: consensus retries to the decision; a kv put reports EUNAVAIL ambiguous, never re-puts', async () => {
      const dc = ctx.dc();
      const real = await backend().client();
      // The first txn is applied, then its reply "lost": what an etcd leader change or a dropped channel does.
      let failNext = 0;
      const flaky: ClusterStore = Object.create(real) as ClusterStore;
      flaky.txn = async (c, ok, fail, o) => {
        const r = await real.txn(c, ok, fail, o);
        if (failNext > 0) {
          failNext--;
          throw new DvsError('ENOTCONN', 'reply lost (test)', { ambiguous: true });
        }
        return r;
      };
      const s = new DcServices({ store: flaky, dc, logger });
      await s.start();
      try {
        failNext = 1;
        const d = await s.consensus.propose('once', enc.encode('mine'));
        assert.equal(failNext, 0, 'the fault was injected');
        assert.equal(dec.decode(d.value), 'mine');
        assert.equal(d.mine, true);

        failNext = 1;
        const e = await rejectsWith(s.kv.put('k', enc.encode('v')), 'EUNAVAIL');
        assert.equal(e.details?.ambiguous, true);
        const entry = await s.kv.get('k');
        assert.equal(entry.version, 1, 'applied exactly once: not retried blindly');
      } finally {
        await s.stop();
      }
    });

    extra?.(() => ctx);
  });
}
