/**
 * Distributed shared memory through real daemons: three node daemons on loopback (no cluster store needed),
 * processes attached with the SDK to each node. Concurrent writers and readers on the three nodes record a
 * history that must be linearizable (so sequentially consistent); locked increments from every node add up;
 * out-of-bounds accesses fail with EFAULT and change nothing; a lock dies with its holder's session; the
 * segment is scoped to its DC. Needs `npx tsc -p tsconfig.build.json` (the harness runs the built CLI).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { connect, type Dvk } from '../../../src/sdk/client.js';
import {
  checkLinearizable,
  HistoryRecorder,
  type KvInput,
  type KvOutput,
  kvModel,
} from '../../lib/linearizability.js';
import { TestCluster } from '../harness.js';

const DC = 1;
const OTHER_DC = 2;

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof DvsError && e.code === code);
}

describe('DSM through the daemons', { timeout: 120_000 }, () => {
  let c: TestCluster;
  const open: Dvk[] = [];
  let nextEp = 100;

  async function proc(node: number, dc = DC): Promise<Dvk> {
    const d = await connect({ socket: c.nodes[node]!.socket, dc, endpoint: nextEp++, timeout: 5000 });
    open.push(d);
    return d;
  }

  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.createDc({ id: DC, name: 'one', nodes: [0, 1, 2] });
    await c.createDc({ id: OTHER_DC, name: 'two', nodes: [0, 1, 2] });
  });

  after(async () => {
    await Promise.all(open.map((d) => d.close().catch(() => {})));
    await c?.stop();
  });

  it('concurrent writers on three nodes produce a linearizable history', async () => {
    const ps = [await proc(0), await proc(1), await proc(2)];
    const segs = await Promise.all(ps.map((p) => p.shm('history', 8192)));
    assert.ok(segs.every((s) => s.home === segs[0]!.home && s.size === 8192));
    // Two slots on page 0 (false sharing), one on page 1.
    const slots = [0, 8, 4100];
    const rec = new HistoryRecorder<KvInput, KvOutput>();
    let next = 1;
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    await Promise.all(
      segs.map(async (seg, node) => {
        for (let i = 0; i < 40; i++) {
          const slot = slots[Math.floor(rand() * slots.length)]!;
          if (rand() < 0.5) {
            const v = next++;
            await rec.record(
              node,
              { op: 'put', key: String(slot), value: String(v) },
              () => seg.set('u32', slot, v, { timeout: 10_000 }),
              () => ({}),
            );
          } else {
            await rec.record(
              node,
              { op: 'get', key: String(slot) },
              () => seg.get('u32', slot, { timeout: 10_000 }),
              (v) => ({ value: v === 0 ? null : String(v) }),
            );
          }
        }
      }),
    );
    assert.equal(rec.ops.length, 120);
    const r = checkLinearizable(kvModel, rec.ops);
    assert.equal(r.outcome, 'ok', `not linearizable: ${JSON.stringify(r.longestPrefix)}`);
  });

  it('locked read-modify-write from three nodes loses no increment', async () => {
    const ps = [await proc(0), await proc(1), await proc(2)];
    const segs = await Promise.all(ps.map((p) => p.shm('counter', 64)));
    const per = 10;
    await Promise.all(
      segs.map(async (seg) => {
        for (let i = 0; i < per; i++) {
          await seg.update(0, 8, (b) => {
            const v = new DataView(b.buffer, b.byteOffset, 8);
            v.setBigUint64(0, v.getBigUint64(0, true) + 1n, true);
          });
        }
      }),
    );
    assert.equal(await segs[1]!.get('u64', 0), BigInt(3 * per));
  });

  it('out-of-bounds access fails with EFAULT and leaves the segment untouched', async () => {
    const p = await proc(1);
    const seg = await p.shm('bounds', 100);
    await seg.write(90, new Uint8Array(10).fill(7));
    await rejectsCode(seg.write(95, new Uint8Array(10).fill(9)), 'EFAULT');
    await rejectsCode(seg.read(100, 1), 'EFAULT');
    // The daemon checks too (a caller that skips the SDK's check).
    await rejectsCode(
      p.service('dsm.write', { name: 'bounds', offset: 95, data: new Uint8Array(10) }),
      'EFAULT',
    );
    await rejectsCode(p.service('dsm.read', { name: 'bounds', offset: -1, length: 2 }), 'EFAULT');
    const q = await proc(2);
    assert.deepEqual([...(await (await q.shm('bounds')).read(88, 12))], [0, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
    await rejectsCode(q.shm('bounds', 200), 'EINVAL');
  });

  it("a lock is released when its holder's process goes, and segments are per DC", async () => {
    const holder = await proc(2);
    const seg = await holder.shm('locked', 16);
    await seg.lock();
    const waiter = await (await proc(0)).shm('locked');
    await rejectsCode(waiter.lock({ timeout: 200 }), 'ETIMEDOUT');
    const taking = waiter.lock({ timeout: 10_000 });
    await holder.close();
    const l = await taking;
    assert.ok(l.token > 0);
    await l.unlock();
    // Same name, another DC: a different segment.
    const other = await proc(1, OTHER_DC);
    await rejectsCode(other.shm('locked'), 'ENOENT');
    await rejectsCode(other.service('dsm.read', { dc: DC, name: 'locked', offset: 0, length: 1 }), 'EPERM');
  });
});
