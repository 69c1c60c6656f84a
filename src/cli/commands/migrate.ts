/**
 * `dvs migrate`: live-migrate an endpoint (and its process) to another node of its DC. The call goes to a node
 * of the DC, which relays it to the node where the endpoint lives (admin `proc.migrate`, src/node/migration.ts).
 */
import type { MigrationResult } from '../../protocol/admin.js';
import { dvsError } from '../../protocol/errors.js';
import { callNode, requireCluster } from '../cluster.js';
import type { Ctx } from '../context.js';
import { findDc } from './dc.js';

export async function migrate(
  ctx: Ctx,
  opts: { dc: string | number; ep: number; to: number; json: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  if (!dc.nodes.includes(opts.to)) {
    throw dvsError(
      'EINVAL',
      `node ${opts.to} is not a node of DC '${dc.name}' (nodes ${dc.nodes.join(',')})`,
    );
  }
  // Any node of the DC relays to where the endpoint lives; prefer one this host runs.
  const via = cluster.nodes.find((n) => dc.nodes.includes(n.id));
  if (via === undefined) throw dvsError('ENOENT', `no node of DC '${dc.name}' runs on this host`);
  const r: MigrationResult = await callNode(
    via,
    'proc.migrate',
    { dc: dc.id, ep: opts.ep, to: opts.to },
    60_000,
  );
  if (opts.json) ctx.out.json(r);
  else {
    const how = r.stateful ? `state ${r.stateBytes} bytes` : 'restarted without state (no onMigrate hooks)';
    ctx.out.line(
      `endpoint ${r.ep} of DC '${dc.name}' moved from node ${r.from} to node ${r.to} (pid ${r.pid.from} -> ${r.pid.to}, ${how}); frozen ${r.freezeMs} ms, total ${r.totalMs} ms`,
    );
  }
  return 0;
}
