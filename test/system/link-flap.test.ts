/**
 * A node's LAN port goes down for less than the dead time in the middle of a post() stream across nodes:
 * the node is not declared dead, and the stream arrives complete, once each, in order.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type Dvk } from '../../src/sdk/index.js';
import { leftovers, NetnsCluster, systemSkipReason } from './harness.js';
import { sleep, waitEndpoints } from './ipc.js';

const DEAD_AFTER_MS = 4000;
/** Well under the dead time, even with TCP's retransmission backoff added after the link comes back. */
const OUTAGE_MS = 1000;
const N = 30_000;
const FLAP_AT = 10_000;

describe('system: link down shorter than the dead time during a post stream', {
  skip: systemSkipReason(),
}, () => {
  let c: NetnsCluster;
  const open: Dvk[] = [];
  const bind = async (node: number, endpoint: number): Promise<Dvk> => {
    const d = await connect({ socket: c.node(node).socket, dc: 'app', endpoint, timeout: 5000 });
    open.push(d);
    return d;
  };

  before(async () => {
    c = await NetnsCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: DEAD_AFTER_MS });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    await c?.stop();
  });

  /** Faults applied at post FLAP_AT, undone OUTAGE_MS later; `node` is the one whose network is hit. */
  const faults = [
    { what: "the receiver's LAN port down", node: 1, start: () => c.linkDown(1), end: () => c.linkUp(1) },
    { what: "the sender's LAN port down", node: 0, start: () => c.linkDown(0), end: () => c.linkUp(0) },
    // TCP carries the two above by itself; this one kills the connection, so the link layer reconnects
    // and resends what the peer had not acknowledged.
    {
      what: "the receiver's TCP connections reset",
      node: 1,
      start: () => c.resetTcp(1),
      end: () => c.heal(),
    },
  ];

  faults.forEach((f, k) => {
    test(`posts 0 -> 1 with ${f.what} for ${OUTAGE_MS} ms: no loss, no duplicate, in order`, async () => {
      const src = 110 + k;
      const dst = 210 + k;
      const a = await bind(0, src);
      const b = await bind(1, dst);
      await waitEndpoints(c, [0], 'app', [dst]);
      const linkBefore = (await c.status(0)).links.find((l) => l.node === 1)!;

      const payload = new Uint8Array(4);
      const view = new DataView(payload.buffer);
      const producer = (async () => {
        for (let i = 0; i < N; i++) {
          view.setUint32(0, i, true);
          await a.post(dst, { type: 9, payload });
        }
        await a.flush({ timeout: 30_000 });
      })();
      let outage: Promise<void> | undefined;
      for (let i = 0; i < N; i++) {
        if (i === FLAP_AT) {
          // Cut while the stream runs; the consumer goes on taking what already arrived.
          await f.start();
          outage = sleep(OUTAGE_MS).then(f.end);
        }
        const m = await b.receive(src, { timeout: 20_000 });
        assert.equal(m.kind, 'post');
        const v = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getUint32(0, true);
        if (v !== i) assert.fail(`post ${i} arrived as ${v}`);
      }
      await producer;
      assert.ok(outage, 'the fault was applied during the stream');
      await outage;

      // Nothing more arrives (no duplicate at the tail), and the link is up. Had the node been declared dead,
      // the session would have been dropped and the posts in flight failed: the complete stream shows it was not.
      await assert.rejects(b.receive(src, { timeout: 300 }), { code: 'ETIMEDOUT' });
      const link = (await c.status(0)).links.find((l) => l.node === 1)!;
      assert.equal(link.state, 'up');
      assert.ok(link.framesSent > linkBefore.framesSent + N / 2, 'the stream crossed the link');
      if (f.what.includes('reset'))
        assert.ok(link.reconnects > linkBefore.reconnects, 'the link reconnected');
      await Promise.all([a.close(), b.close()]);
    });
  });

  test('teardown leaves no namespace, link, process or file of the run', async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
