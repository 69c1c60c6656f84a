/**
 * Migration cases: a server holding a state of 1 KiB, 64 KiB or 1 MiB (bench/dvs/stateful.js, moved by the
 * SDK's onMigrate hooks) is migrated back and forth between the bench cluster's two nodes. The figure is the
 * freeze time the daemon reports (freeze of the process to the endpoint announced at the destination), per
 * migration, median of the measurement's migrations. Goal (DESIGN.md §12): <= 50 ms for a small state.
 */
import { join } from 'node:path';
import { AdminClient } from '../../src/sdk/admin.js';
import type { BenchCase, CaseContext, Driver } from '../lib/case.js';
import type { BenchCluster } from './cluster.js';
import { startCluster } from './cluster.js';

function cluster(ctx: CaseContext): Promise<BenchCluster> {
  return ctx.fixture('dvs-cluster', () => startCluster(ctx.root, ctx.tmp, ctx.log, ctx.note));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? 0;

function migrateCase(label: string, bytes: number, ep: number): BenchCase {
  return {
    name: `dvs.migrate.${label}`,
    group: 'dvs',
    unit: 'us',
    what: `live migration freeze time, ${label} of state moved by onMigrate, node 0 <-> node 1`,
    initialWork: 4,
    fixedWork: { full: 10, quick: 4 },
    async setup(ctx): Promise<Driver> {
      const c = await cluster(ctx);
      const admin = await AdminClient.connect(c.sockets[0]!, { timeout: 5000 });
      const cmd = [process.execPath, join(ctx.root, 'bench/dvs/stateful.js'), String(bytes)];
      let at = 0;
      try {
        await admin.call('proc.run', { dc: c.dc, ep, cmd }, { timeout: 15_000 });
        // Wait until it declared its hooks (its first migration needs them to count as stateful).
        for (let i = 0; i < 200; i++) {
          const rows = await admin.call('ep.list', { dc: c.dc }, { timeout: 5000 });
          if (rows.some((r) => r.ep === ep && !r.flags.includes('WAITBIND'))) break;
          await new Promise((r) => setTimeout(r, 25));
        }
        await new Promise((r) => setTimeout(r, 200));
      } catch (e) {
        await admin.close();
        throw e;
      }
      return {
        async run(work, timeoutMs) {
          const t0 = performance.now();
          const freezes: number[] = [];
          for (let i = 0; i < work; i++) {
            const rows = await admin.call('ep.list', { dc: c.dc }, { timeout: 5000 });
            at = rows.find((r) => r.ep === ep)?.node ?? at;
            const to = at === 0 ? 1 : 0;
            const r = await admin.call('proc.migrate', { dc: c.dc, ep, to }, { timeout: timeoutMs });
            if (!r.stateful || r.stateBytes !== bytes)
              throw new Error(`migration lost the state: ${JSON.stringify(r)}`);
            freezes.push(r.freezeMs);
            at = to;
          }
          return {
            value: median(freezes) * 1000,
            elapsedMs: performance.now() - t0,
            extra: { maxUs: Math.max(...freezes) * 1000, migrations: work },
          };
        },
        async stop() {
          await admin
            .call('proc.kill', { dc: c.dc, ep, signal: 'SIGKILL', graceMs: 0 }, { timeout: 5000 })
            .catch(() => {});
          // It may live on node 1 now.
          const other = await AdminClient.connect(c.sockets[1]!, { timeout: 5000 }).catch(() => undefined);
          await other
            ?.call('proc.kill', { dc: c.dc, ep, signal: 'SIGKILL', graceMs: 0 }, { timeout: 5000 })
            .catch(() => {});
          await other?.close();
          await admin.close();
        },
      };
    },
  };
}

export const migrateCases: BenchCase[] = [
  migrateCase('1k', 1024, 120),
  migrateCase('64k', 64 * 1024, 121),
  migrateCase('1m', 1024 * 1024, 122),
];
