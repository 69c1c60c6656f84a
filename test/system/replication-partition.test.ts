/**
 * Primary-backup under a network partition, with etcd as the cluster store (5 nodes, an etcd member on
 * each): a replicated counter (examples/replicated-counter.js) has its primary on node 0 and backups on 1
 * and 2; a client on node 1 and one on node 3 run sendrecOnce in a loop. The partition {0,1} | {2,3,4} cuts
 * the primary off with a minority of the store. The store fences both sides (docs/replication.md,
 * "Partitions"): node 2 promotes on the majority side and node 3's client goes on; the old primary cannot
 * drop its unreachable backup without the store, so it acknowledges nothing more and node 1's client waits.
 * No counter value is ever handed out twice (two primaries would). After the heal the old primary learns it
 * was deposed and stops its process, and node 1's client is served by the new primary.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type Dvk } from '../../src/sdk/index.js';
import { REPO } from '../integration/harness.js';
import { check, etcdSystemSkipReason, leftovers, NetnsCluster } from './harness.js';
import { codeOf } from './ipc.js';

const SERVER = 100;
const COUNTER = join(REPO, 'examples/replicated-counter.js');

/** A client's sendrecOnce loop: every reply's counter value and when it came (performance.now). */
class Load {
  readonly replies: { value: number; at: number }[] = [];
  readonly errors: string[] = [];
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(private readonly dvk: Dvk) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        const r = await this.dvk.sendrecOnce(SERVER, { type: 1 }, { timeout: 30_000 });
        const value = new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true);
        this.replies.push({ value, at: performance.now() });
      } catch (e) {
        this.errors.push(codeOf(e));
        if (!this.stopped) await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

describe('system: primary-backup under a partition, fenced by the store (5 nodes, etcd)', {
  skip: etcdSystemSkipReason(),
}, () => {
  let c: NetnsCluster;
  const clients: Dvk[] = [];

  before(async () => {
    c = await NetnsCluster.start({ nodes: 5, heartbeatMs: 100, deadAfterMs: 1000, etcdOn: [0, 1, 2, 3, 4] });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    for (const d of clients) await d.close().catch(() => undefined);
    await c?.stop();
  });

  const primaryAt = async (i: number) =>
    (await c.admin(i, 'ep.list', { dc: 'app' })).find((e) => e.ep === SERVER && e.role === 'primary')?.node;

  test('the minority primary acknowledges nothing, the majority promotes, no value twice', async (t) => {
    const run = await c.admin(0, 'proc.run', {
      dc: 'app',
      ep: SERVER,
      cmd: [process.execPath, COUNTER],
      replicas: 3,
      mode: 'primary-backup',
    });
    assert.deepEqual(run.replicas?.backups, [1, 2]);
    for (const i of [1, 3]) {
      clients.push(await connect({ socket: c.node(i).socket, dc: 'app', endpoint: 200 + i, timeout: 5000 }));
    }
    const [minority, majority] = clients.map((d) => new Load(d)) as [Load, Load];
    let healedAt = 0;
    let partedAt = 0;
    try {
      await check(() => minority.replies.length > 30 && majority.replies.length > 30, 15_000, 'load flowing');
      await c.partition([0, 1], [2, 3, 4]);
      partedAt = performance.now();
      await check(async () => (await primaryAt(3)) === 2, 20_000, 'node 2 promoted on the majority side');
      const n = majority.replies.length;
      await check(
        () => majority.replies.length > n + 50,
        20_000,
        'the majority side served after the promotion',
      );
      // Long enough for a split brain to show: the minority primary would be serving all along.
      await new Promise((r) => setTimeout(r, 2000));
      // Taken before: the heal lifts the cut node by node, so replies may flow before it returns.
      healedAt = performance.now();
      await c.heal();
      const m = minority.replies.length;
      await check(
        () => minority.replies.length > m + 20,
        30_000,
        'the minority client served after the heal',
      );
      for (const i of [0, 1, 2, 3, 4])
        await check(async () => (await primaryAt(i)) === 2, 20_000, `node ${i}: primary on 2`);
    } finally {
      await minority.stop();
      await majority.stop();
    }
    // Node 1's client got nothing while cut off (a reply in flight at the cut may still arrive: 1 s of grace).
    const cutOff = minority.replies.filter((r) => r.at > partedAt + 1000 && r.at < healedAt);
    assert.deepEqual(cutOff, [], 'no reply from the cut-off primary');
    const all = [...minority.replies, ...majority.replies].map((r) => r.value);
    const seen = new Set<number>();
    const twice = all.filter((v) => seen.has(v) || !seen.add(v));
    assert.deepEqual(twice, [], 'no counter value handed out twice');
    for (const l of [minority, majority]) {
      for (let i = 1; i < l.replies.length; i++)
        assert.ok(l.replies[i]!.value > l.replies[i - 1]!.value, `a client's replies only grow (${i})`);
    }
    assert.deepEqual(majority.errors, [], 'the majority client saw no error');
    // The old primary learns it was deposed once the store answers it again: its process stops then.
    await check(
      async () =>
        !(await c.admin(0, 'proc.list', { dc: 'app' })).some((p) => p.ep === SERVER && p.exit === null),
      20_000,
      'the deposed primary process gone',
    );
    t.diagnostic(
      `minority client: ${minority.replies.length} replies, errors ${JSON.stringify(minority.errors)}; ` +
        `majority client: ${majority.replies.length} replies`,
    );
  });

  test('teardown leaves nothing behind', async () => {
    for (const d of clients.splice(0)) await d.close().catch(() => undefined);
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
