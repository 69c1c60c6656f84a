/**
 * The DVK services through real daemons: three node daemons on loopback sharing the embedded cluster store
 * (node 0 hosts it), processes attached with the SDK on different nodes. Locks (fairness, fencing tokens,
 * release on unlock, process exit and node death), election failover, consensus with concurrent proposers,
 * kv watch order, DC isolation, failure detection (node and endpoint events, false suspicions), and
 * EUNAVAIL without a store. Needs `npm run build` (the harness runs the built CLI).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { connect, type Dvk } from '../../../src/sdk/client.js';
import type { EndpointEvent, LeaderState, NodeEvent, Stream } from '../../../src/sdk/services.js';
import { check, TestCluster } from '../harness.js';

const DC = 1;
const OTHER_DC = 2;
const text = new TextDecoder();

async function rejectsCode(p: Promise<unknown>, code: string): Promise<DvsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DvsError, `not a DvsError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

/** Collects a stream's items in the background. */
function collect<T>(s: Stream<T>): { items: T[]; done: Promise<unknown> } {
  const items: T[] = [];
  const done = (async () => {
    for await (const x of s) items.push(x);
  })().catch((e: unknown) => e);
  return { items, done };
}

describe('DVK services through the daemons', { timeout: 120_000 }, () => {
  let c: TestCluster;
  const open: Dvk[] = [];
  let nextEp = 100;

  /** A process of `dc` attached to node `node` (closed in after()). */
  async function proc(node: number, dc = DC): Promise<Dvk> {
    const d = await connect({ socket: c.nodes[node]!.socket, dc, endpoint: nextEp++, timeout: 5000 });
    open.push(d);
    return d;
  }

  async function lockLs(node: number, dc = DC) {
    const { AdminClient } = await import('../../../src/sdk/admin.js');
    const a = await AdminClient.connect(c.nodes[node]!.socket, { timeout: 2000 });
    try {
      return (await a.service('lock.ls', { dc }, { timeout: 5000 })) as {
        name: string;
        holder: { owner: string; token: number };
        waiters: { owner: string }[];
      }[];
    } finally {
      await a.close();
    }
  }

  before(async () => {
    c = await TestCluster.start({
      stores: ['embedded', 'embedded:0', 'embedded:0'],
      heartbeatMs: 100,
      deadAfterMs: 1000,
    });
    for (const [id, name] of [
      [DC, 'one'],
      [OTHER_DC, 'two'],
    ] as const) {
      await c.admin(0, 'dc.create', {
        config: { id, name, nodes: [0, 1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 64 },
      });
    }
    await check(
      async () => {
        for (const n of c.nodes) {
          const dcs = await c.admin(n.id, 'dc.list', {});
          if (dcs.length < 2) return false;
        }
        return true;
      },
      10_000,
      'DCs on every node',
    );
  });

  after(async () => {
    for (const d of open) await d.close({ timeout: 500 }).catch(() => {});
    await c?.stop();
  });

  it('locks are fair across nodes, tokens increase, and a holder that exits releases', async () => {
    const a = await proc(0);
    const b = await proc(1);
    const d = await proc(2);
    const la = await a.lock('fair', { timeout: 5000 });
    assert.equal(la.owner, `ep${a.endpoint}@node0`);
    const pb = b.lock('fair', { timeout: 20_000 });
    await check(async () => (await lockLs(0)).find((l) => l.name === 'fair')?.waiters.length === 1);
    const pd = d.lock('fair', { timeout: 20_000 });
    const ls = await check(async () => {
      const l = (await lockLs(2)).find((x) => x.name === 'fair');
      return l?.waiters.length === 2 ? l : undefined;
    });
    assert.ok(ls);
    assert.equal(ls.holder.token, la.token);
    assert.deepEqual(
      ls.waiters.map((w) => w.owner),
      [`ep${b.endpoint}@node1`, `ep${d.endpoint}@node2`],
    );

    // The fencing token of a released lock is stale, for checks and for fenced writes.
    await la.unlock();
    const lb = await pb;
    assert.ok(lb.token > la.token, `${lb.token} > ${la.token}`);
    await rejectsCode(la.check(), 'ESTALE');
    await rejectsCode(a.kv.put('fenced', 'x', { fence: { lock: 'fair', token: la.token } }), 'ESTALE');
    await b.kv.put('fenced', 'y', { fence: { lock: 'fair', token: lb.token } });
    await lb.check();
    await rejectsCode(la.unlock(), 'ENOTOWNER');
    // Another process cannot unlock what b holds.
    await rejectsCode(d.unlock('fair', lb.token), 'ENOTOWNER');

    // b's process goes away: its session closes and the lock passes to d.
    await b.close();
    const ld = await pd;
    assert.ok(ld.token > lb.token);
    assert.equal(ld.owner, `ep${d.endpoint}@node2`);
    await ld.unlock();
    assert.equal(
      (await lockLs(1)).find((l) => l.name === 'fair'),
      undefined,
    );
  });

  it('a lock wait that times out leaves the queue', async () => {
    const a = await proc(0);
    const b = await proc(1);
    const la = await a.lock('busy');
    await rejectsCode(b.lock('busy', { timeout: 300 }), 'ETIMEDOUT');
    const ls = await lockLs(0);
    assert.deepEqual(ls.find((l) => l.name === 'busy')?.waiters, []);
    // An aborted wait leaves it too.
    const ac = new AbortController();
    const p = b.lock('busy', { signal: ac.signal });
    await check(async () => (await lockLs(0)).find((l) => l.name === 'busy')?.waiters.length === 1);
    ac.abort();
    await rejectsCode(p, 'EABORTED');
    await check(async () => (await lockLs(0)).find((l) => l.name === 'busy')?.waiters.length === 0);
    await la.unlock();
  });

  it('consensus: concurrent proposers on three nodes decide one value', async () => {
    const ps = await Promise.all([proc(0), proc(1), proc(2)]);
    for (let round = 0; round < 5; round++) {
      const ds = await Promise.all(ps.map((p, i) => p.propose(`round-${round}`, `value-${i}`)));
      const values = new Set(ds.map((d) => text.decode(d.value)));
      assert.equal(values.size, 1, `round ${round}: ${[...values].join(',')}`);
      assert.equal(ds.filter((d) => d.mine).length, 1);
      const winner = ds.findIndex((d) => d.mine);
      assert.equal(text.decode(ds[0]!.value), `value-${winner}`);
      // A later proposer learns the same decision.
      const late = await ps[0]!.propose(`round-${round}`, 'late');
      assert.equal(text.decode(late.value), `value-${winner}`);
      assert.equal(late.mine, false);
    }
  });

  it('kv: a watch on one node sees every write of another node, in order', async () => {
    const w = await proc(2);
    const p = await proc(0);
    const watch = await w.kv.watch('w/');
    const got = collect(watch);
    const revs: number[] = [];
    for (let i = 0; i < 20; i++) revs.push((await p.kv.put(`w/k${i % 3}`, `v${i}`)).revision);
    const del = await p.kv.delete('w/k0');
    assert.equal(del.deleted, true);
    await p.kv.put('other', 'not watched');
    await check(() => got.items.length >= 21, 10_000, 'watch events');
    watch.close();
    assert.deepEqual(
      got.items.map((e) => e.revision),
      [...revs, del.revision],
    );
    assert.deepEqual(
      got.items.slice(0, 20).map((e) => [e.type, e.key, text.decode(e.value)]),
      Array.from({ length: 20 }, (_, i) => ['put', `w/k${i % 3}`, `v${i}`]),
    );
    assert.equal(got.items[20]!.type, 'delete');
    assert.ok(watch.fromRevision <= revs[0]!);

    // Revisions and cas.
    const e = await w.kv.get('w/k1');
    assert.equal(text.decode(e.value), 'v19');
    const bad = await p.kv.cas('w/k1', { revision: e.revision - 1 }, 'nope');
    assert.equal(bad.succeeded, false);
    assert.equal(bad.current?.revision, e.revision);
    assert.equal((await p.kv.cas('w/k1', { revision: e.revision }, 'yes')).succeeded, true);
    const listed = await w.kv.list('w/');
    assert.deepEqual(
      listed.entries.map((x) => [x.key, text.decode(x.value)]),
      [
        ['w/k1', 'yes'],
        ['w/k2', 'v17'],
      ],
    );
  });

  it('a process only reaches its own DC', async () => {
    const one = await proc(0, DC);
    const two = await proc(1, OTHER_DC);
    await rejectsCode(one.service('kv.get', { dc: OTHER_DC, key: 'x' }), 'EPERM');
    await rejectsCode(one.service('kv.put', { dc: 'two', key: 'x', value: new Uint8Array(1) }), 'EPERM');
    await rejectsCode(one.service('lock.ls', { dc: OTHER_DC }), 'EPERM');
    // Naming its own DC is fine; the same key in two DCs are two keys.
    await one.service('kv.put', { dc: DC, key: 'iso', value: new TextEncoder().encode('one') });
    await two.kv.put('iso', 'two');
    assert.equal(text.decode((await one.kv.get('iso')).value), 'one');
    assert.equal(text.decode((await two.kv.get('iso')).value), 'two');
    const l1 = await one.lock('same-name');
    const l2 = await two.lock('same-name', { timeout: 2000 });
    await l1.unlock();
    await l2.unlock();
  });

  it('failure detection: endpoint up/down, and a node paused past the detection time is a false suspicion', async () => {
    const watcher = await proc(0);
    const target = await proc(1);
    const ep = collect<EndpointEvent>(watcher.watchEndpoint(target.endpoint));
    await check(() => ep.items.length >= 1);
    assert.deepEqual([ep.items[0]!.state, ep.items[0]!.node], ['up', 1]);
    await target.close();
    await check(() => ep.items.some((e) => e.state === 'down'), 5000, 'endpoint down');
    assert.equal(ep.items.at(-1)!.reason, 'unbound');

    const nodes = watcher.watchNodes();
    const seen = collect<NodeEvent>(nodes);
    await check(() => seen.items.length >= 3);
    assert.deepEqual(
      seen.items.slice(0, 3).map((e) => [e.node, e.state]),
      [
        [0, 'up'],
        [1, 'up'],
        [2, 'up'],
      ],
    );
    const before = (await watcher.service('fd.nodes', {})) as {
      falseSuspicions: number;
      detectionMs: number;
    };
    assert.equal(before.detectionMs, 1000);
    const n2 = c.nodes[2]!.proc!;
    n2.kill('SIGSTOP');
    try {
      await check(() => seen.items.some((e) => e.node === 2 && e.state === 'down'), 10_000, 'node 2 down');
    } finally {
      n2.kill('SIGCONT');
    }
    await check(() => seen.items.filter((e) => e.node === 2).at(-1)?.state === 'up', 15_000, 'node 2 up');
    await check(
      async () =>
        ((await watcher.service('fd.nodes', {})) as { falseSuspicions: number }).falseSuspicions ===
        before.falseSuspicions + 1,
      10_000,
      'false suspicion counted',
    );
    const metricsUrl = (await c.status(0)).metrics;
    assert.ok(metricsUrl);
    const metrics = await (await fetch(metricsUrl)).text();
    assert.match(
      metrics,
      new RegExp(`^dvs_fd_false_suspicions_total(\\{[^}]*\\})? ${before.falseSuspicions + 1}$`, 'm'),
    );
    nodes.close();
    assert.equal(await seen.done, undefined);
    await c.waitMembers([0, 1, 2]);
  });

  it('when a node dies, its locks and its leadership pass on within the detection time', async () => {
    const obs = await proc(0);
    const holder = await proc(1);
    const next = await proc(2);
    const l = await holder.lock('node-death');
    const lead = await holder.campaign('leader');
    assert.equal(lead.leader, `ep${holder.endpoint}@node1`);
    const states = collect<LeaderState>(obs.observe('leader'));
    await check(() => states.items.at(-1)?.term === lead.term);
    assert.deepEqual([states.items.at(-1)!.ep, states.items.at(-1)!.node], [holder.endpoint, 1]);
    const pl = next.lock('node-death', { timeout: 30_000 });
    const pc = next.campaign('leader', { timeout: 30_000 });
    const ep = collect<EndpointEvent>(obs.watchEndpoint(holder.endpoint));
    await check(() => ep.items.length >= 1);

    await c.killNode(1);
    const [l2, lead2] = await Promise.all([pl, pc]);
    assert.ok(l2.token > l.token);
    assert.ok(lead2.term > lead.term);
    assert.equal(lead2.leader, `ep${next.endpoint}@node2`);
    await check(() => states.items.at(-1)?.term === lead2.term, 10_000, 'observer sees the new leader');
    assert.equal(states.items.at(-1)!.node, 2);
    await check(() => ep.items.at(-1)?.state === 'down', 10_000, 'endpoint down with its node');
    assert.equal(ep.items.at(-1)!.reason === 'node-down' || ep.items.at(-1)!.reason === 'unbound', true);
    await lead2.resign();
    await check(() => states.items.at(-1)?.leader === null, 10_000, 'no leader after resign');
    await l2.unlock();
  });
});

describe('DVK services without a cluster store', { timeout: 60_000 }, () => {
  let c: TestCluster;
  let d: Dvk | undefined;

  before(async () => {
    c = await TestCluster.start({ nodes: 1 });
    await c.createDc({ id: 1, name: 'solo' });
  });

  after(async () => {
    await d?.close({ timeout: 500 }).catch(() => {});
    await c?.stop();
  });

  it('answer EUNAVAIL saying that --store is needed, while failure detection still works', async () => {
    d = await connect({ socket: c.nodes[0]!.socket, dc: 1, endpoint: 100, timeout: 5000 });
    const e = await rejectsCode(d.kv.get('x'), 'EUNAVAIL');
    assert.match(e.message, /--store/);
    await rejectsCode(d.lock('x'), 'EUNAVAIL');
    await rejectsCode(d.propose('x', 'v'), 'EUNAVAIL');
    const s = d.watchEndpoint(100);
    const first = await s.next();
    assert.deepEqual([first.value?.state, first.value?.node], ['up', 0]);
    s.close();
  });
});
