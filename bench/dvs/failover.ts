/**
 * Failover case: a replicated counter (examples/replicated-counter.js, primary-backup over the bench
 * cluster's two nodes) serves a client that runs sendrecOnce in a loop; the primary's process is killed and
 * the figure is the longest pause the client sees (kill to the first reply from the promoted backup), per
 * failover. Process death is detected at once (the primary's session closes), so this is the failover time
 * after detection that DESIGN.md §12 bounds (goal <= 1 s); a node crash adds the link's dead-after time.
 */
import { join } from 'node:path';
import { AdminClient } from '../../src/sdk/admin.js';
import { connect } from '../../src/sdk/index.js';
import type { BenchCase, CaseContext, Driver } from '../lib/case.js';
import type { BenchCluster } from './cluster.js';
import { startCluster } from './cluster.js';

function cluster(ctx: CaseContext): Promise<BenchCluster> {
  return ctx.fixture('dvs-cluster', () => startCluster(ctx.root, ctx.tmp, ctx.log, ctx.note));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const failoverCase: BenchCase = {
  name: 'dvs.failover.process',
  group: 'dvs',
  unit: 'us',
  what: 'primary-backup failover: longest client pause when the primary process dies (2 replicas)',
  initialWork: 2,
  fixedWork: { full: 4, quick: 2 },
  async setup(ctx): Promise<Driver> {
    const c = await cluster(ctx);
    const admins = await Promise.all(c.sockets.map((s) => AdminClient.connect(s, { timeout: 5000 })));
    const client = await connect({ socket: c.sockets[0]!, dc: c.dc, endpoint: 139, timeout: 5000 });
    const cmd = [process.execPath, join(ctx.root, 'examples/replicated-counter.js')];
    let nextEp = 140;
    const killAll = async (ep: number) => {
      for (const a of admins) {
        await a
          .call('proc.kill', { dc: c.dc, ep, signal: 'SIGKILL', graceMs: 0 }, { timeout: 5000 })
          .catch(() => {});
      }
    };
    /** One failover: start a group, load it, kill its primary, measure the longest pause. */
    const once = async (timeoutMs: number): Promise<number> => {
      const ep = nextEp++;
      const run = await admins[0]!.call(
        'proc.run',
        { dc: c.dc, ep, cmd, replicas: 2, mode: 'primary-backup' },
        { timeout: timeoutMs },
      );
      const primary = run.replicas?.primary ?? 0;
      let last = performance.now();
      let longest = 0;
      let stop = false;
      let replies = 0;
      let failed: unknown;
      const load = (async () => {
        while (!stop) {
          await client.sendrecOnce(ep, { type: 1 }, { timeout: timeoutMs });
          const now = performance.now();
          longest = Math.max(longest, now - last);
          last = now;
          replies++;
        }
      })().catch((e: unknown) => {
        failed = e;
      });
      try {
        // The backup must be bound (and have declared its hooks) before the primary dies, or there is
        // nothing to fail over to.
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const rows = await admins[primary === 0 ? 1 : 0]!.call('ep.list', { dc: c.dc }, { timeout: 5000 });
          const mine = rows.find((r) => r.ep === ep && r.kind === 'backup');
          if (mine !== undefined && !mine.flags.includes('WAITBIND')) break;
          if (Date.now() > deadline) throw new Error(`backup of endpoint ${ep} never bound`);
          await sleep(10);
        }
        await sleep(200);
        while (replies < 20) {
          if (failed !== undefined) throw failed;
          await sleep(5);
        }
        longest = 0; // only the pause around the kill counts
        await admins[primary]!.call(
          'proc.kill',
          { dc: c.dc, ep, signal: 'SIGKILL', graceMs: 0 },
          { timeout: timeoutMs },
        );
        const after = replies;
        while (replies < after + 20) {
          if (failed !== undefined) throw failed;
          await sleep(5);
        }
        return longest;
      } finally {
        stop = true;
        await load;
        await killAll(ep);
      }
    };
    return {
      async run(work, timeoutMs) {
        const t0 = performance.now();
        const pauses: number[] = [];
        for (let i = 0; i < work; i++) pauses.push(await once(timeoutMs));
        pauses.sort((a, b) => a - b);
        return {
          value: (pauses[pauses.length >> 1] ?? 0) * 1000,
          elapsedMs: performance.now() - t0,
          extra: { maxUs: (pauses[pauses.length - 1] ?? 0) * 1000, failovers: work },
        };
      },
      async stop() {
        await client.close().catch(() => undefined);
        for (const a of admins) await a.close().catch(() => undefined);
      },
    };
  },
};
