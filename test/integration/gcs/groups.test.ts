/**
 * Groups through real daemons: three node daemons on loopback (from dist/: build first), SDK processes joining
 * a group from every node. Views (join, leave, crash, partition when a daemon is killed), the four orders,
 * DC isolation and bad input, flow control (a reader that stops reading is expelled, one that reads is not).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DcConfig } from '../../../src/kernel/types.js';
import { connect, type Dvk, DvsError } from '../../../src/sdk/index.js';
import { check, TestCluster } from '../harness.js';
import { fifoHolds, Reader, sameRelativeOrder } from './helpers.js';

/** The daemons inherit it: a small flow-control bound keeps the slow-reader test short. */
const MAX_BACKLOG = 300;

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DvsError, `expected DvsError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

describe('groups over three daemons', { timeout: 180_000 }, () => {
  let c: TestCluster;
  let dcA: DcConfig;
  const open: Dvk[] = [];
  const at = async (node: number, endpoint: number, dc = 'ga'): Promise<Dvk> => {
    const d = await connect({ socket: c.nodes[node]!.socket, dc, endpoint, timeout: 5000 });
    open.push(d);
    return d;
  };
  const member = async (node: number, ep: number, group: string, dc = 'ga', reading = true) => {
    const d = await at(node, ep, dc);
    return new Reader(d, await d.join(group, { timeout: 10_000 }), reading);
  };

  before(async () => {
    process.env.DVS_GCS_MAX_BACKLOG = String(MAX_BACKLOG);
    c = await TestCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: 1000 });
    delete process.env.DVS_GCS_MAX_BACKLOG;
    dcA = await c.createDc({ id: 1, name: 'ga' });
    await c.createDc({ id: 2, name: 'gb' });
  });
  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    await c?.stop();
  });

  test('views: join, leave, crash (session closed); same view ids everywhere', async () => {
    const a = await member(0, 100, 'views');
    const b = await member(1, 101, 'views');
    const d = await member(2, 102, 'views');
    const full = await a.waitView(3);
    await b.waitView(3);
    await d.waitView(3);
    assert.deepEqual(b.lastView?.id, full.id);
    assert.deepEqual(d.lastView?.id, full.id);
    assert.deepEqual(
      full.members.map((m) => `${m.node}.${m.ep}`),
      ['0.100', '1.101', '2.102'],
    );
    // Each member's first view contains it, and view ids grow at each member.
    for (const r of [a, b, d]) {
      const first = r.views[0]!;
      assert.ok(first.members.some((m) => m.node === r.dvk.node && m.ep === r.dvk.endpoint));
      assert.equal(first.reason, 'join');
    }
    await b.group.leave();
    const v2 = await a.waitView(2, (v) => v.reason === 'leave');
    await d.waitView(2, (v) => v.reason === 'leave');
    assert.deepEqual(d.lastView?.id, v2.id);
    // A process whose session ends leaves with reason crash.
    await d.dvk.close();
    await a.waitView(1, (v) => v.reason === 'crash');
  });

  test('orders: agreed and safe in one order everywhere, fifo per sender, causal chains', async () => {
    const rs = [await member(0, 110, 'ord'), await member(1, 111, 'ord'), await member(2, 112, 'ord')];
    for (const r of rs) await r.waitView(3);
    const orders = ['fifo', 'causal', 'agreed', 'safe'] as const;
    const N = 40;
    const names = rs.map((r) => `${r.dvk.node}.${r.dvk.endpoint}`);
    await Promise.all(
      rs.map(async (r, i) => {
        const sends: Promise<void>[] = [];
        for (let k = 0; k < N; k++) {
          const order = orders[k % 4]!;
          sends.push(r.group.multicast(`${names[i]}:${order}:${k}`, { order }));
        }
        await Promise.all(sends);
      }),
    );
    // A causal chain: each message is sent by a member after it delivered the previous one.
    await rs[0]!.group.multicast('chain:causal:0', { order: 'causal' });
    await check(() => rs[1]!.texts().includes('chain:causal:0'), 10_000, 'chain 0 at node 1');
    await rs[1]!.group.multicast('chain:causal:1', { order: 'causal' });
    await check(() => rs[2]!.texts().includes('chain:causal:1'), 10_000, 'chain 1 at node 2');
    await rs[2]!.group.multicast('chain:causal:2', { order: 'causal' });
    const total = 3 * N + 3;
    for (const r of rs) await r.waitMessages(total);
    const logs = rs.map((r) => r.texts());
    for (const l of logs) {
      assert.equal(l.length, total, 'every message delivered once');
      assert.equal(new Set(l).size, total, 'no duplicates');
      assert.ok(fifoHolds(l, names), 'fifo per sender');
      const chain = ['chain:causal:0', 'chain:causal:1', 'chain:causal:2'].map((m) => l.indexOf(m));
      assert.ok(chain[0]! < chain[1]! && chain[1]! < chain[2]!, 'causal chain in order');
    }
    const totalOrder = (r: Reader) => r.texts((e) => e.order === 'agreed' || e.order === 'safe');
    assert.ok(sameRelativeOrder(totalOrder(rs[0]!), totalOrder(rs[1]!)), 'agreed/safe order 0 vs 1');
    assert.ok(sameRelativeOrder(totalOrder(rs[0]!), totalOrder(rs[2]!)), 'agreed/safe order 0 vs 2');
    // Every message carries its position in the total order: the same at every member.
    const seqs = rs.map((r) =>
      r.log.flatMap((e) => (e.kind === 'message' ? [`${e.seq}:${new TextDecoder().decode(e.payload)}`] : [])),
    );
    assert.deepEqual(seqs[1], seqs[0]);
    assert.deepEqual(seqs[2], seqs[0]);
    for (const r of rs) await r.group.leave();
  });

  test('DC isolation and bad input: typed errors, nobody disturbed', async () => {
    const a = await member(0, 120, 'iso');
    const b = await member(1, 121, 'iso');
    // The same group name in another DC is another group.
    const other = await member(2, 120, 'iso', 'gb');
    await a.waitView(2);
    await b.waitView(2);
    await other.waitView(1);
    const viewsBefore = a.views.length;
    await rejectsWith(
      a.dvk.service('group.multicast', { name: 'iso', payload: new Uint8Array(1), dc: 2 }),
      'EPERM',
    );
    await rejectsWith(a.dvk.service('group.join', { name: 'iso', sub: 9, dc: 'gb' }), 'EPERM');
    await rejectsWith(a.group.multicast(new Uint8Array(64 * 1024 + 1)), 'EMSGSIZE');
    await rejectsWith(a.group.multicast('x', { order: 'total' as never }), 'EINVAL');
    await rejectsWith(a.dvk.join('bad name!'), 'EINVAL');
    await rejectsWith(a.dvk.join('.slots'), 'EPERM');
    await rejectsWith(a.dvk.join('iso'), 'EEXIST');
    await rejectsWith(
      other.dvk.service('group.multicast', { name: 'nope', payload: new Uint8Array(1) }),
      'ENOENT',
    );
    await a.group.multicast('a:agreed:0');
    await other.group.multicast('o:agreed:0');
    await b.waitMessages(1);
    await other.waitMessages(1);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(b.texts(), ['a:agreed:0']);
    assert.deepEqual(other.texts(), ['o:agreed:0']);
    assert.equal(a.views.length, viewsBefore, 'no view change from rejected calls');
    assert.deepEqual(
      other.lastView?.members.map((m) => `${m.node}.${m.ep}`),
      ['2.120'],
    );
    for (const r of [a, b, other]) await r.group.leave();
  });

  test('flow control: a reader that stops reading is expelled, one that reads is not', async () => {
    const fast = await member(0, 130, 'flow');
    const slow = await member(1, 131, 'flow', 'ga', false);
    const sender = await member(2, 132, 'flow');
    await fast.waitView(3);
    await sender.waitView(3);
    const n = MAX_BACKLOG * 2;
    // Paced by the fast reader (a batch once it has read the previous one), so only a reader that stops
    // reading can fall `MAX_BACKLOG` behind, however loaded the machine is.
    for (let k = 0; k < n; k += 50) {
      const batch: Promise<void>[] = [];
      for (let j = k; j < Math.min(n, k + 50); j++) batch.push(sender.group.multicast(`s:agreed:${j}`));
      await Promise.all(batch);
      await fast.waitMessages(Math.min(n, k + 50));
    }
    const v = await fast.waitView(2, (x) => x.reason === 'expel');
    assert.ok(!v.members.some((m) => m.node === 1), 'the slow reader is out');
    await fast.waitMessages(n);
    await sender.waitMessages(n);
    assert.equal(fast.error, undefined);
    // The slow reader reads what it was given, then its iterator fails with EEXPELLED.
    slow.resume();
    await check(() => slow.error !== undefined, 10_000, 'slow reader ends');
    assert.ok(slow.error instanceof DvsError && slow.error.code === 'EEXPELLED', String(slow.error));
    assert.ok(slow.texts().length <= MAX_BACKLOG + 1, `slow reader got ${slow.texts().length}`);
    await rejectsWith(slow.group.multicast('late'), 'EEXPELLED');
    for (const r of [fast, sender]) await r.group.leave();
  });

  test('group ls on each node: views, members, counters', async () => {
    const a = await member(0, 140, 'ls');
    const b = await member(1, 141, 'ls');
    await a.waitView(2);
    await a.group.multicast('hello');
    await b.waitMessages(1);
    const rows = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const r = (await c.admin(
          i,
          'node.call' as never,
          {
            node: i,
            method: 'group.ls',
            params: { dc: 'ga' },
          } as never,
        )) as { groups: { name: string; view: { members: unknown[] } | null; sent: number }[] };
        return r.groups.find((g) => g.name === 'ls');
      }),
    );
    for (const r of rows) assert.equal(r?.view?.members.length, 2);
    assert.equal(rows[0]?.sent, 1);
    for (const r of [a, b]) await r.group.leave();
  });

  test('a node daemon killed: the others get a partition view without its members', async () => {
    const rs = [await member(0, 150, 'kill'), await member(1, 151, 'kill'), await member(2, 152, 'kill')];
    for (const r of rs) await r.waitView(3);
    await c.killNode(2);
    const v0 = await rs[0]!.waitView(2, (v) => v.reason === 'partition');
    const v1 = await rs[1]!.waitView(2, (v) => v.reason === 'partition');
    assert.deepEqual(v0.id, v1.id);
    assert.deepEqual(
      v0.members.map((m) => m.node),
      [0, 1],
    );
    // The survivors keep going in agreed order.
    await rs[0]!.group.multicast('after:agreed:0');
    await rs[1]!.waitMessages(1);
    // The node comes back (new incarnation): a member there joins the survivors' group again.
    c.restartNode(2);
    await c.waitLinks();
    // Without a cluster store a restarted daemon starts empty: its DC comes back by hand.
    await c.admin(2, 'dc.create', { config: dcA });
    const back = await member(2, 153, 'kill');
    await back.waitView(3);
    await rs[0]!.waitView(3);
  });
});
