/**
 * The dvs cases: sendrec round trip, post() throughput and vcopy 1 MiB, each local (both processes on
 * node 0) and cross-node (client on node 0, server on node 1, over the nodes' loopback TCP link). All run
 * in the one shared bench cluster; each case has its own pair of endpoints and processes.
 */
import type { BenchCase, CaseContext, Driver } from '../lib/case.js';
import { driverOf } from '../lib/case.js';
import { Child } from '../lib/proc.js';
import type { BenchCluster } from './cluster.js';
import { startCluster } from './cluster.js';

type Role = 'sendrec' | 'post' | 'vcopy';

function cluster(ctx: CaseContext): Promise<BenchCluster> {
  return ctx.fixture('dvs-cluster', () => startCluster(ctx.root, ctx.tmp, ctx.log, ctx.note));
}

function dvsCase(role: Role, where: 'local' | 'cross', ep: number): BenchCase {
  const name = `dvs.${where}.${role}`;
  const place = where === 'local' ? 'client and server on node 0' : 'client on node 0, server on node 1';
  const what = {
    sendrec: `sendrec round trip, 64 B, ${place}`,
    post: `post() throughput, 64 B messages, first post to the receiver having all, ${place}`,
    vcopy: `vcopy of 1 MiB between two granted buffers, ${place}`,
  }[role];
  return {
    name,
    group: 'dvs',
    unit: role === 'sendrec' ? 'us' : role === 'post' ? 'msg/s' : 'B/s',
    what,
    initialWork: role === 'sendrec' ? 1000 : role === 'post' ? 50_000 : 16,
    async setup(ctx): Promise<Driver> {
      const c = await cluster(ctx);
      const serverNode = where === 'local' ? 0 : 1;
      const common = ['--dc', c.dc, '--role', role];
      const srv = await Child.start(
        'bench/dvs/server.ts',
        ['--socket', c.sockets[serverNode]!, '--ep', String(ep), ...common],
        { cwd: ctx.root, label: `${name} server` },
      );
      try {
        const cli = await Child.start(
          'bench/dvs/client.ts',
          ['--socket', c.sockets[0]!, '--ep', String(ep + 1), '--peer', String(ep), ...common],
          { cwd: ctx.root, label: `${name} client`, readyTimeout: 30_000 },
        );
        return driverOf(cli, [() => cli.stop(), () => srv.stop()]);
      } catch (e) {
        await srv.stop();
        throw e;
      }
    },
  };
}

export const dvsCases: BenchCase[] = [
  dvsCase('sendrec', 'local', 100),
  dvsCase('sendrec', 'cross', 102),
  dvsCase('post', 'local', 104),
  dvsCase('post', 'cross', 106),
  dvsCase('vcopy', 'local', 108),
  dvsCase('vcopy', 'cross', 110),
];
