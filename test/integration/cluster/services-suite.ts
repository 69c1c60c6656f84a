/**
 * The cluster services suite (membership, DC registry, directory), run once per store backend by
 * services.test.ts (embedded) and services-etcd.test.ts (3-member etcd).
 *
 * Each test wipes `/dvs/` first: the services use fixed keys, and a backend may share one server between
 * tests (tests in a file run one after another). "Nodes" are components in this process, each with its own
 * store client where the backend has clients (etcd), so watches and leases are as independent as on real
 * nodes. A node "crashes" by stopping its membership without revoking the lease.
 *
 * Bounds on detection are functional deadlines (TTL + margin), not performance assertions.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { type DcChange, DcRegistry } from '../../../src/cluster/dcs.js';
import { type DirChange, Directory } from '../../../src/cluster/directory.js';
import { dirKey, NODES_PREFIX, nodeKey } from '../../../src/cluster/keys.js';
import { Membership, type MembershipHealth, type NodeChange } from '../../../src/cluster/membership.js';
import type { ClusterStore, Watch, WatchEnd, WatchEvent } from '../../../src/cluster/store.js';
import { DvsError, type ErrorCode } from '../../../src/protocol/errors.js';
import { waitFor } from './etcd-harness.js';

const logger = pino({ level: process.env.DVS_TEST_LOG ?? 'silent' });
const enc = new TextEncoder();

/** What a backend gives the suite. */
export interface ServicesBackend {
  /** A store client for one simulated node (may be the same object every time for a single-process store). */
  client(): Promise<ClusterStore>;
  /** Release every client handed out since the last call (not the backend itself). */
  releaseClients(): Promise<void>;
  /** Lease TTL the membership tests use, s. */
  ttlSeconds: number;
}

export interface ServicesSuiteOptions {
  /** Extra tests that need the backend itself (etcd: leader kill). */
  extra?: (ctx: () => SuiteContext) => void;
}

/** Per-test context: components started by a test are stopped in afterEach. */
export interface SuiteContext {
  backend: ServicesBackend;
  member(id: number, extra?: Partial<ConstructorParameters<typeof Membership>[0]>): Promise<TestMember>;
  cleanups: (() => Promise<void>)[];
}

/** A started membership with its recorded events. */
export interface TestMember {
  m: Membership;
  store: ClusterStore;
  changes: NodeChange[];
  health: MembershipHealth[];
  registered: { lease: string; again: boolean }[];
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, msg?: RegExp): Promise<DvsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DvsError, `expected DvsError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    if (msg) assert.match(e.message, msg);
    return e;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

/**
 * A store client that can be cut off: while cut, every call fails with ENOTCONN and every watch ends with
 * `disconnected` (what a node sees when it loses the store).
 */
export class CuttableStore implements ClusterStore {
  private cut = false;
  private readonly ends = new Set<(why: WatchEnd, err?: Error) => void>();
  constructor(private readonly inner: ClusterStore) {}

  setCut(cut: boolean): void {
    this.cut = cut;
    if (cut) {
      for (const end of [...this.ends]) end('disconnected', new Error('cut'));
      this.ends.clear();
    }
  }

  private gate<T>(f: () => Promise<T>): Promise<T> {
    if (this.cut) return Promise.reject(new DvsError('ENOTCONN', 'store cut off (test)'));
    return f();
  }

  start = () => this.inner.start();
  stop = () => this.inner.stop();
  get: ClusterStore['get'] = (k, o) => this.gate(() => this.inner.get(k, o));
  put: ClusterStore['put'] = (k, v, o) => this.gate(() => this.inner.put(k, v, o));
  delete: ClusterStore['delete'] = (k, o) => this.gate(() => this.inner.delete(k, o));
  txn: ClusterStore['txn'] = (c, s, f, o) => this.gate(() => this.inner.txn(c, s, f, o));
  grantLease: ClusterStore['grantLease'] = (t, o) => this.gate(() => this.inner.grantLease(t, o));
  keepAlive: ClusterStore['keepAlive'] = (l, o) => this.gate(() => this.inner.keepAlive(l, o));
  revokeLease: ClusterStore['revokeLease'] = (l, o) => this.gate(() => this.inner.revokeLease(l, o));
  watch(
    prefix: string,
    from: number,
    onEvents: (events: WatchEvent[], revision: number) => void,
    onEnd: (why: WatchEnd, err?: Error) => void,
  ): Watch {
    if (this.cut) {
      queueMicrotask(() => onEnd('disconnected', new Error('cut')));
      return { cancel() {} };
    }
    let live = true;
    const end = (why: WatchEnd, err?: Error) => {
      if (!live) return;
      live = false;
      inner.cancel();
      onEnd(why, err);
    };
    const inner = this.inner.watch(
      prefix,
      from,
      (e, r) => {
        if (live) onEvents(e, r);
      },
      (why, err) => {
        this.ends.delete(end);
        end(why, err);
      },
    );
    this.ends.add(end);
    return {
      cancel: () => {
        live = false;
        this.ends.delete(end);
        inner.cancel();
      },
    };
  }
}

/** Register the services suite for one backend. `open` is called once per test. */
export function servicesSuite(
  name: string,
  open: () => Promise<ServicesBackend>,
  opts: ServicesSuiteOptions = {},
) {
  describe(`cluster services (${name})`, () => {
    let ctx: SuiteContext | undefined;

    beforeEach(async () => {
      const backend = await open();
      const admin = await backend.client();
      await admin.delete('/dvs/', { prefix: true });
      const cleanups: (() => Promise<void>)[] = [];
      ctx = {
        backend,
        cleanups,
        async member(id, extra = {}) {
          const store = extra.store ?? (await backend.client());
          const t: TestMember = {
            m: undefined as unknown as Membership,
            store,
            changes: [],
            health: [],
            registered: [],
          };
          t.m = new Membership({
            store,
            nodeId: id,
            name: `node${id}`,
            address: `127.0.0.1:${7000 + id}`,
            incarnation: randomBytes(6).toString('hex'),
            ttlSeconds: backend.ttlSeconds,
            logger,
            onChange: (ev) => t.changes.push(ev),
            onHealth: (h) => t.health.push(h),
            onRegistered: (lease, again) => t.registered.push({ lease, again }),
            ...extra,
          });
          await t.m.start();
          cleanups.push(() => t.m.stop());
          return t;
        },
      };
    });

    afterEach(async () => {
      const c = ctx;
      ctx = undefined;
      if (!c) return;
      for (const f of c.cleanups.reverse()) await f().catch(() => {});
      await c.backend.releaseClients();
    });

    const c = (): SuiteContext => {
      assert.ok(ctx, 'no test context');
      return ctx;
    };
    const detectMs = () => c().backend.ttlSeconds * 1000 + 2_000;

    describe('membership', () => {
      it('two nodes see each other up; a crashed node is seen down within the TTL', async () => {
        const a = await c().member(1);
        const b = await c().member(2);
        await waitFor(() => a.m.node(2)?.state === 'up' && b.m.node(1)?.state === 'up', 5_000, 'mutual up');
        const self = a.m.node(1);
        assert.equal(self?.self, true);
        assert.equal(self?.address, '127.0.0.1:7001');
        assert.equal(a.m.nodes().length, 2);

        await b.m.stop({ leave: false }); // a crash: the lease is left to expire
        await waitFor(() => a.m.node(2)?.state === 'down', detectMs(), 'node 2 down after its lease expired');
        const down = a.changes.filter((e) => e.node === 2).map((e) => e.state);
        assert.deepEqual(down, ['up', 'down']);
        // A down node stays in the view, with its address and since when it is down.
        assert.equal(a.m.node(2)?.address, '127.0.0.1:7002');
        assert.equal(a.m.health().degraded, false);
      });

      it('a clean stop revokes the lease: seen down without waiting for the TTL', async () => {
        const a = await c().member(1);
        const b = await c().member(2);
        await waitFor(() => a.m.node(2)?.state === 'up', 5_000, 'node 2 up');
        await b.m.stop();
        await waitFor(() => a.m.node(2)?.state === 'down', 2_000, 'node 2 down after leaving');
      });

      it('refuses a second daemon claiming a live id with EEXIST naming the holder', async () => {
        const b = await c().member(2);
        const err = await rejectsWith(c().member(2), 'EEXIST', /node id 2 is registered by another daemon/);
        assert.equal(err.details?.address, '127.0.0.1:7002');
        assert.equal(err.details?.incarnation, b.m.node(2)?.incarnation);
        assert.doesNotMatch(err.message, /\n/);
        // Waiting a whole TTL does not help against a live holder: the message says two nodes claim it.
        const ttlMs = c().backend.ttlSeconds * 1000;
        await rejectsWith(
          c().member(2, { takeoverWaitMs: ttlMs + 500 }),
          'EEXIST',
          /two nodes claim this id/,
        );
        // The holder was not disturbed.
        assert.equal(b.m.node(2)?.state, 'up');
        assert.equal(b.m.health().degraded, false);
      });

      it('an id reused after a crash: refused until the lease expires, then taken over (seen as a restart)', async () => {
        const a = await c().member(1);
        const old = await c().member(2);
        await waitFor(() => a.m.node(2)?.state === 'up', 5_000, 'node 2 up');
        const oldInc = a.m.node(2)!.incarnation;
        await old.m.stop({ leave: false });
        // At once: the crashed daemon's lease still holds the id.
        await rejectsWith(c().member(2), 'EEXIST', /crashed one's lease \(TTL \d+ s\) has not expired yet/);
        // With a takeover wait of more than a TTL, the new daemon gets the id once the old lease expires.
        const fresh = await c().member(2, { takeoverWaitMs: detectMs() });
        await waitFor(
          () => a.m.node(2)?.state === 'up' && a.m.node(2)?.incarnation !== oldInc,
          5_000,
          'node 2 up with a new incarnation',
        );
        const states = a.changes.filter((e) => e.node === 2).map((e) => e.state);
        assert.deepEqual(states, ['up', 'down', 'up']);
        assert.equal(fresh.m.node(2)?.incarnation, a.m.node(2)?.incarnation);
      });

      it('liveness combines lease and link: suspect, then down after linkDownAfterMs; up again with the link', async () => {
        const a = await c().member(1, { linkDownAfterMs: 300 });
        await c().member(2);
        await waitFor(() => a.m.node(2)?.state === 'up', 5_000, 'node 2 up');
        a.m.linkState(2, 'up');
        assert.equal(a.m.node(2)?.link, 'up');
        a.m.linkState(2, 'down');
        assert.equal(a.m.node(2)?.state, 'suspect');
        await waitFor(() => a.m.node(2)?.state === 'down', 3_000, 'node 2 down by link');
        // The lease is still there: a link that comes back makes the node up again.
        a.m.linkState(2, 'up');
        assert.equal(a.m.node(2)?.state, 'up');
        const states = a.changes.filter((e) => e.node === 2).map((e) => e.state);
        assert.deepEqual(states, ['up', 'suspect', 'down', 'up']);
      });

      it('a node that loses the store keeps its view, says it is degraded, and re-registers when it is back', async () => {
        const a = await c().member(1);
        const cut = new CuttableStore(await c().backend.client());
        const b = await c().member(2, { store: cut });
        await waitFor(() => b.m.node(1)?.state === 'up' && a.m.node(2)?.state === 'up', 5_000, 'mutual up');
        cut.setCut(true);
        await waitFor(() => b.m.health().degraded, detectMs(), 'node 2 degraded');
        // It keeps serving what it knows: node 1 is still in its view, as last seen.
        assert.equal(b.m.node(1)?.state, 'up');
        // The others see it down once its lease expires.
        await waitFor(() => a.m.node(2)?.state === 'down', detectMs(), 'node 2 down for node 1');
        cut.setCut(false);
        await waitFor(() => !b.m.health().degraded, 5_000, 'node 2 healthy again');
        await waitFor(() => a.m.node(2)?.state === 'up', 5_000, 'node 2 up again for node 1');
        assert.ok(
          b.registered.some((r) => r.again),
          'onRegistered(again) after the lease was lost',
        );
        assert.ok(b.health.some((h) => h.degraded && typeof h.reason === 'string'));
      });
    });

    describe('DC registry', () => {
      async function registry(changes: DcChange[] = []): Promise<DcRegistry> {
        const r = new DcRegistry({
          store: await c().backend.client(),
          logger,
          onChange: (e) => changes.push(e),
        });
        await r.start();
        c().cleanups.push(() => r.stop());
        return r;
      }

      it('create / add-node / rm-node / rm are seen by another registry through the watch', async () => {
        const r1 = await registry();
        const seen: DcChange[] = [];
        const r2 = await registry(seen);
        const web = await r1.create({ name: 'web', nodes: [1] });
        assert.equal(web.id, 1);
        assert.equal(web.maxPayload, 4096);
        const db = await r1.create({ name: 'db', nodes: [2, 1] });
        assert.equal(db.id, 2);
        assert.deepEqual(db.nodes, [1, 2]);
        await r1.addNode('web', 3);
        await r1.addNode('web', 3); // idempotent
        await r1.rmNode(2, 2);
        await rejectsWith(
          r1.rmNode('web', 9).then(() => r1.rmNode('db', 1)),
          'EINVAL',
          /last node/,
        );
        await r1.remove('web');
        await waitFor(() => seen.length >= 5, 5_000, 'five changes at registry 2');
        assert.deepEqual(
          seen.map((e) =>
            e.type === 'remove' ? `remove ${e.prev.name}` : `${e.type} ${e.dc.name} ${e.dc.nodes}`,
          ),
          ['create web 1', 'create db 1,2', 'update web 1,3', 'update db 1', 'remove web'],
        );
        assert.deepEqual(
          r2.list().map((d) => d.name),
          ['db'],
        );
        assert.equal(r2.get('db')?.id, 2);
        await rejectsWith(r1.remove('web'), 'ENOENT');
      });

      it('ids and names are unique, also when two nodes race; the next id is allocated in the store', async () => {
        const r1 = await registry();
        const r2 = await registry();
        await r1.create({ id: 10, name: 'ten', nodes: [1] });
        await rejectsWith(
          r2.create({ id: 10, name: 'other', nodes: [1] }),
          'EEXIST',
          /DC id 10 is taken \(by 'ten'\)/,
        );
        await rejectsWith(
          r2.create({ name: 'ten', nodes: [1] }),
          'EEXIST',
          /DC name 'ten' is taken \(DC id 10\)/,
        );
        await rejectsWith(r2.create({ name: 'bad name', nodes: [1] }), 'EINVAL');

        // Same name from two registries at once: exactly one wins.
        const same = await Promise.allSettled([
          r1.create({ name: 'race', nodes: [1] }),
          r2.create({ name: 'race', nodes: [2] }),
        ]);
        assert.equal(same.filter((s) => s.status === 'fulfilled').length, 1);
        const lost = same.find((s) => s.status === 'rejected');
        assert.equal(((lost as PromiseRejectedResult).reason as DvsError).code, 'EEXIST');

        // Different names, no ids, from both at once: all succeed with distinct ids.
        const many = await Promise.all(
          Array.from({ length: 6 }, (_, i) => (i % 2 ? r1 : r2).create({ name: `auto${i}`, nodes: [1] })),
        );
        const ids = many.map((d) => d.id);
        assert.equal(new Set(ids).size, ids.length);
        assert.ok(!ids.includes(10));
      });

      it('a late starter and a restarted registry catch up from the store', async () => {
        const r1 = await registry();
        await r1.create({ name: 'a', nodes: [1] });
        await r1.create({ name: 'b', nodes: [1, 2] });
        const lateSeen: DcChange[] = [];
        const late = await registry(lateSeen);
        assert.deepEqual(
          lateSeen.map((e) => e.type),
          ['create', 'create'],
        );
        await late.stop();
        // Changes while it was down...
        await r1.remove('a');
        await r1.addNode('b', 3);
        await r1.create({ name: 'c', nodes: [4] });
        // ...are all in the view of a new instance (what a restarted daemon does: list + watch).
        const again = await registry();
        assert.deepEqual(
          again.list().map((d) => `${d.name}:${d.nodes}`),
          ['b:1,2,3', 'c:4'],
        );
        // And the old instance's view is the one it had when it stopped (no store access after stop).
        assert.deepEqual(
          late.list().map((d) => d.name),
          ['a', 'b'],
        );
      });
    });

    describe('directory', () => {
      async function setup() {
        const a = await c().member(1);
        const b = await c().member(2);
        const reg = new DcRegistry({ store: await c().backend.client(), logger });
        await reg.start();
        c().cleanups.push(() => reg.stop());
        await reg.create({ id: 1, name: 'app', nodes: [1, 2] });
        const changes1: DirChange[] = [];
        const changes2: DirChange[] = [];
        const d1 = new Directory({ store: a.store, nodeId: 1, logger, onChange: (e) => changes1.push(e) });
        const d2 = new Directory({ store: b.store, nodeId: 2, logger, onChange: (e) => changes2.push(e) });
        await d1.start();
        await d2.start();
        c().cleanups.push(
          () => d1.stop(),
          () => d2.stop(),
        );
        return { a, b, reg, d1, d2, changes1, changes2 };
      }

      it('bind / lookup / unbind, seen by the other node; unbind only by the hosting node', async () => {
        const { d1, d2, changes2 } = await setup();
        const e = await d1.bind(1, 70, { node: 1, name: 'fs', pid: 1234 });
        assert.equal(e.node, 1);
        assert.equal(e.epoch, 0);
        await waitFor(() => d2.lookup(1, 70)?.name === 'fs', 5_000, 'node 2 sees the binding');
        assert.equal(d2.lookup(1, 70)?.pid, 1234);
        // A rebind of the same thing (a retried write) is accepted.
        assert.equal((await d1.bind(1, 70, { node: 1, name: 'fs', pid: 1234 })).node, 1);
        await rejectsWith(d2.unbind(1, 70, 2), 'EPERM', /bound on node 1/);
        await rejectsWith(d2.bind(1, 5, { node: 9 }), 'ENOTCONN', /node 9 is not a registered/);
        await rejectsWith(d2.bind(7, 5, { node: 2 }), 'ENOENT', /no DC 7/);
        assert.equal(await d1.unbind(1, 70, 1), true);
        assert.equal(await d1.unbind(1, 70, 1), false);
        await waitFor(() => d2.lookup(1, 70) === undefined, 5_000, 'node 2 sees the unbind');
        assert.deepEqual(
          changes2.filter((x) => x.ep === 70).map((x) => x.type),
          ['bind', 'unbind'],
        );
      });

      it('two binders race for one endpoint: one wins, the other gets EBOUND naming the owner', async () => {
        const { d1, d2 } = await setup();
        for (let ep = 100; ep < 110; ep++) {
          const r = await Promise.allSettled([
            d1.bind(1, ep, { node: 1, pid: 11 }),
            d2.bind(1, ep, { node: 2, pid: 22 }),
          ]);
          const won = r.filter((x) => x.status === 'fulfilled');
          assert.equal(won.length, 1, `endpoint ${ep}: exactly one binder wins`);
          const winner = (won[0] as PromiseFulfilledResult<{ node: number }>).value.node;
          const err = (r.find((x) => x.status === 'rejected') as PromiseRejectedResult).reason as DvsError;
          assert.equal(err.code, 'EBOUND');
          assert.equal(err.details?.node, winner);
          assert.match(err.message, new RegExp(`bound on node ${winner}`));
        }
      });

      it('move is a CAS: of two racing migrations one commits; a stale mover gets EMOVED', async () => {
        const { d1, d2, changes1 } = await setup();
        await c().member(3);
        await d1.bind(1, 80, { node: 1, name: 'srv', pid: 5 });
        const r = await Promise.allSettled([d1.move(1, 80, 1, 2), d2.move(1, 80, 1, 3)]);
        const won = r.filter((x) => x.status === 'fulfilled');
        assert.equal(won.length, 1, 'exactly one migration commits');
        const to = (won[0] as PromiseFulfilledResult<{ node: number; epoch: number }>).value;
        assert.equal(to.epoch, 1);
        const err = (r.find((x) => x.status === 'rejected') as PromiseRejectedResult).reason as DvsError;
        assert.equal(err.code, 'EMOVED');
        assert.equal(err.details?.node, to.node);
        await waitFor(() => d1.lookup(1, 80)?.node === to.node, 5_000, 'cache follows the move');
        assert.ok(
          changes1.some((x) => x.type === 'move' && x.ep === 80 && x.from === 1 && x.entry.node === to.node),
        );
        // A retried commit of the winning move succeeds (idempotent); moving back works and bumps the epoch.
        assert.equal((await d2.move(1, 80, 1, to.node)).node, to.node);
        assert.equal((await d1.move(1, 80, to.node, 1)).epoch, 2);
        await rejectsWith(d1.move(1, 999, 1, 2), 'ENOTBOUND');
        await rejectsWith(d1.move(1, 80, 1, 9), 'ENOTCONN');
      });

      it("a dead node's entries vanish with its lease; a re-registered node re-asserts its own", async () => {
        const { b, d1, d2, changes1 } = await setup();
        await d2.bind(1, 90, { node: 2, pid: 9 });
        await d2.bind(1, 91, { node: 2, pid: 9 });
        await d1.bind(1, 92, { node: 1, pid: 8 });
        await waitFor(() => d1.lookup(1, 91) !== undefined, 5_000, 'node 1 sees node 2 endpoints');
        await b.m.stop({ leave: false });
        await waitFor(
          () => d1.lookup(1, 90) === undefined && d1.lookup(1, 91) === undefined,
          detectMs(),
          'gone',
        );
        assert.equal(d1.lookup(1, 92)?.node, 1);
        assert.deepEqual(
          changes1.filter((x) => x.type === 'unbind').map((x) => x.ep),
          [90, 91],
        );
        // The node comes back (same directory instance, new lease): its endpoints are restored.
        const b2 = await c().member(2, { store: b.store, takeoverWaitMs: detectMs() });
        const { restored, conflicts } = await d2.reassert();
        assert.deepEqual(
          restored.map((x) => x.ep),
          [90, 91],
        );
        assert.equal(conflicts.length, 0);
        await waitFor(() => d1.lookup(1, 90)?.node === 2, 5_000, 'restored entry visible');
        assert.ok(b2.m.lease !== undefined);
      });

      it('removing a DC removes its directory entries', async () => {
        const { reg, d1, d2 } = await setup();
        await d1.bind(1, 3, { node: 1 });
        await waitFor(() => d2.lookup(1, 3) !== undefined, 5_000, 'bound');
        await reg.remove('app');
        await waitFor(() => d2.lookup(1, 3) === undefined, 5_000, 'entries gone with the DC');
        await rejectsWith(d1.bind(1, 4, { node: 1 }), 'ENOENT');
      });
    });

    describe('bad values in the store', () => {
      it('are logged and ignored by every service, which keep working', async () => {
        const admin = await c().backend.client();
        await admin.put(dirKey(1, 5), enc.encode('{not json'));
        await admin.put('/dvs/dcs/9', enc.encode(JSON.stringify({ id: 9, name: 'x y', nodes: [1] })));
        await admin.put('/dvs/dcs/8', enc.encode(JSON.stringify({ id: 7, name: 'mismatch', nodes: [1] })));
        await admin.put(nodeKey(77), enc.encode(JSON.stringify({ id: 77 })));
        await admin.put(`${NODES_PREFIX}notanumber`, enc.encode('{}'));
        const a = await c().member(1);
        assert.deepEqual(
          a.m.nodes().map((n) => n.id),
          [1],
        );
        const reg = new DcRegistry({ store: admin, logger });
        await reg.start();
        c().cleanups.push(() => reg.stop());
        assert.deepEqual(reg.list(), []);
        const dc = await reg.create({ id: 1, name: 'ok', nodes: [1] });
        const d = new Directory({ store: admin, nodeId: 1, logger });
        await d.start();
        c().cleanups.push(() => d.stop());
        assert.equal(d.lookup(1, 5), undefined);
        assert.deepEqual(d.entries(), []);
        // Binding over the malformed entry is refused (never silently overwritten), others work.
        await rejectsWith(d.bind(dc.id, 5, { node: 1 }), 'EBOUND', /malformed/);
        await d.bind(dc.id, 6, { node: 1 });
        // A valid entry that turns malformed counts as gone.
        await admin.put(dirKey(1, 6), enc.encode('[]'));
        await waitFor(() => d.lookup(1, 6) === undefined, 5_000, 'malformed entry dropped from the cache');
      });
    });

    opts.extra?.(c);
  });
}
