/**
 * Groups and SLOTS across a real network partition: five daemons in network namespaces, one group member
 * per node multicasting all along, the cut {0,1} | {2,3,4} made with nftables, then healed.
 *
 * Checked: each side installs its own view (reason partition) and keeps delivering; the heal brings one
 * merge view of all five; agreed order held in every view (the same relative order at every member that
 * delivered in it, so within each side during the cut); nothing delivered twice; and SLOTS, asked from every
 * node at once before, during and after the cut, never handed one slot to two nodes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AdminClient, connect, type Dvk, DvsError } from '../../src/sdk/index.js';
import { Reader, sameRelativeOrder } from '../integration/gcs/helpers.js';
import { check, NetnsCluster, systemSkipReason } from './harness.js';

const NODES = 5;
const LEFT = [0, 1];
const RIGHT = [2, 3, 4];
const DEAD_AFTER_MS = 1000;
const SLOTS = 100;

describe('system: groups and SLOTS under a 2|3 partition (5 nodes)', { skip: systemSkipReason() }, () => {
  let c: NetnsCluster;
  const open: Dvk[] = [];
  const admins: AdminClient[] = [];
  const readers: Reader[] = [];
  let sending = true;
  const loops: Promise<void>[] = [];
  /** slot -> node that got it (slots are never freed in this test). */
  const owner = new Map<number, number>();
  const doubles: string[] = [];

  const allocateMany = async (node: number, n: number): Promise<number> => {
    let got = 0;
    await Promise.all(
      Array.from({ length: n }, async () => {
        try {
          const r = (await admins[node]!.service(
            'slots.allocate',
            { dc: 'app', timeout: 5000 },
            { timeout: 8000 },
          )) as {
            slot: number;
          };
          const prev = owner.get(r.slot);
          if (prev !== undefined) doubles.push(`slot ${r.slot}: node ${prev} and node ${node}`);
          owner.set(r.slot, node);
          got++;
        } catch (e) {
          if (!(e instanceof DvsError) || (e.code !== 'ENOSPC' && e.code !== 'ETIMEDOUT')) throw e;
        }
      }),
    );
    return got;
  };

  before(async () => {
    process.env.DVS_SLOTS_TOTAL = String(SLOTS);
    c = await NetnsCluster.start({ nodes: NODES, heartbeatMs: 100, deadAfterMs: DEAD_AFTER_MS });
    delete process.env.DVS_SLOTS_TOTAL;
    await c.createDc({ id: 1, name: 'app' });
    for (let i = 0; i < NODES; i++) {
      const d = await connect({ socket: c.node(i).socket, dc: 'app', endpoint: 100 + i, timeout: 5000 });
      open.push(d);
      readers.push(new Reader(d, await d.join('sys', { timeout: 15_000 })));
      admins.push(await AdminClient.connect(c.node(i).socket, { timeout: 5000 }));
    }
    for (const r of readers) await r.waitView(NODES);
    await check(
      async () => {
        for (const a of admins)
          if (((await a.service('slots.status', { dc: 'app' })) as { phase: string }).phase !== 'running')
            return false;
        return true;
      },
      15_000,
      'slots running everywhere',
    );
    // Every member multicasts, one message at a time, until the end.
    for (const [i, r] of readers.entries()) {
      loops.push(
        (async () => {
          for (let k = 0; sending; k++) {
            await r.group.multicast(`${i}:agreed:${k}`).catch(() => {});
            await new Promise((res) => setTimeout(res, 5));
          }
        })(),
      );
    }
  });
  after(async () => {
    sending = false;
    await Promise.allSettled(loops);
    await Promise.allSettled([...open.map((d) => d.close()), ...admins.map((a) => a.close())]);
    await c?.stop();
  });

  test('partition then heal: side views, merge view, agreed order per view, slots never doubled', async () => {
    assert.ok((await Promise.all([0, 1, 2, 3, 4].map((i) => allocateMany(i, 8)))).every((n) => n === 8));
    await c.partition(LEFT, RIGHT);
    for (const i of LEFT) await readers[i]!.waitView(LEFT.length, (v) => v.reason === 'partition', 15_000);
    for (const i of RIGHT) await readers[i]!.waitView(RIGHT.length, (v) => v.reason === 'partition', 15_000);
    const leftView = readers[0]!.lastView!;
    const rightView = readers[2]!.lastView!;
    assert.deepEqual(readers[1]!.lastView!.id, leftView.id);
    for (const i of RIGHT) assert.deepEqual(readers[i]!.lastView!.id, rightView.id);
    // Both sides keep delivering, and allocate slots at the same time.
    const during = readers.map((r) => r.texts().length);
    const got = await Promise.all([0, 1, 2, 3, 4].map((i) => allocateMany(i, 12)));
    await check(
      () => readers.every((r, i) => r.texts().length >= during[i]! + 50),
      20_000,
      'delivery on both sides',
    );
    assert.ok(
      got.every((n) => n > 0),
      `every node allocated during the cut: ${got.join(',')}`,
    );
    // Nothing from across the cut in a side's view.
    for (const [side, view] of [
      [LEFT, leftView],
      [RIGHT, rightView],
    ] as const) {
      for (const i of side) {
        const senders = new Set(
          readers[i]!.log.flatMap((e) =>
            e.kind === 'message' &&
            e.view.epoch === view.id.epoch &&
            e.view.coord === view.id.coord &&
            e.view.seq >= view.id.seq &&
            e.view.inc === view.id.inc
              ? [e.sender.node]
              : [],
          ),
        );
        for (const s of senders)
          assert.ok(
            (side as readonly number[]).includes(s),
            `node ${i} got node ${s}'s message in its side's view`,
          );
      }
    }
    await c.heal();
    for (const r of readers) await r.waitView(NODES, (v) => v.reason === 'merge', 20_000);
    const merged = readers[0]!.lastView!;
    for (const r of readers) assert.deepEqual(r.lastView!.id, merged.id);
    await allocateMany(0, 5);
    await allocateMany(3, 5);
    sending = false;
    await Promise.allSettled(loops);

    // Views: partition then merge at every member.
    for (const r of readers) {
      const reasons = r.views.map((v) => v.reason);
      const p = reasons.indexOf('partition');
      assert.ok(p >= 0 && reasons.indexOf('merge', p) > p, `views at ${r.dvk.node}: ${reasons.join(',')}`);
    }
    // No duplicates; agreed order the same at every pair of members within each view they share.
    const byView = (r: Reader) => {
      const m = new Map<string, string[]>();
      for (const e of r.log) {
        if (e.kind !== 'message' || e.transitional) continue;
        const k = `${e.view.epoch}.${e.view.coord}.${e.view.inc}.${e.view.seq}`;
        m.set(k, [...(m.get(k) ?? []), new TextDecoder().decode(e.payload)]);
      }
      return m;
    };
    const views = readers.map(byView);
    for (const r of readers)
      assert.equal(new Set(r.texts()).size, r.texts().length, `duplicates at ${r.dvk.node}`);
    for (let a = 0; a < NODES; a++)
      for (let b = a + 1; b < NODES; b++)
        for (const [k, seq] of views[a]!) {
          const other = views[b]!.get(k);
          if (other !== undefined)
            assert.ok(sameRelativeOrder(seq, other), `agreed order in view ${k}: ${a} vs ${b}`);
        }
    assert.deepEqual(doubles, [], 'a slot handed to two nodes');
    assert.ok(owner.size <= SLOTS);
  });
});
