/**
 * `dvs group ls --dc D`: the DC's process groups as the whole cluster sees them. Each node knows its own
 * local members and counters and its view of every group, so the command asks every node (`node.call` →
 * `group.ls`, relayed by whichever node answers) and merges: one row per group with the newest view any node
 * reports, the members of that view, and the counters summed over the nodes. A node that does not answer is
 * named in a warning (a partitioned node's groups may differ: that is what a partition is).
 */
import type { GroupList } from '../../node/gcs-wiring.js';
import { mergeGroups } from '../../node/views.js';
import { DvsError } from '../../protocol/errors.js';
import { CALL_TIMEOUT_MS, callAny, requireCluster } from '../cluster.js';
import type { Ctx } from '../context.js';

/** `dvs group ls --dc D [--json]`. */
export async function groupList(ctx: Ctx, opts: { dc: string | number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const lists: GroupList[] = [];
  const missing: number[] = [];
  let firstError: DvsError | undefined;
  let unknown: DvsError | undefined;
  await Promise.all(
    cluster.nodes.map(async (n) => {
      try {
        const { value } = await callAny(
          cluster,
          'node.call',
          { node: n.id, method: 'group.ls', params: { dc: opts.dc }, timeoutMs: CALL_TIMEOUT_MS },
          CALL_TIMEOUT_MS + 1000,
        );
        lists.push(value as GroupList);
      } catch (e) {
        const err = DvsError.from(e);
        // A node that does not host the DC has no groups of it.
        if (err.code === 'ENOENT') {
          unknown ??= err;
          return;
        }
        firstError ??= err;
        missing.push(n.id);
      }
    }),
  );
  if (lists.length === 0 && firstError) throw firstError;
  // No node hosts it: an unknown DC, not an empty one.
  if (lists.length === 0 && unknown) throw unknown;
  lists.sort((a, b) => a.node - b.node);
  const rows = mergeGroups(lists);
  for (const id of missing.sort((a, b) => a - b))
    ctx.out.note(ctx.out.colors.yellow(`warning: node ${id} is not answering; its groups are missing`));
  if (opts.json) {
    ctx.out.json({
      dc: opts.dc,
      nodes: lists.map((l) => ({ node: l.node, cfg: l.cfg, nodes: l.nodes, flushing: l.flushing })),
      groups: rows,
    });
    return 0;
  }
  if (rows.length === 0) {
    ctx.out.line(`no groups in DC ${opts.dc}`);
    return 0;
  }
  ctx.out.table(
    ['GROUP', 'VIEW', 'MEMBERS', 'SENT', 'DELIVERED', 'VIEWS', 'BEHIND'],
    rows.map((r) => [
      r.name,
      r.view ? `${r.view.id.epoch}.${r.view.id.coord}.${r.view.id.seq}` : '-',
      r.view ? r.view.members.map((m) => `${m.ep}@${m.node}`).join(' ') : '-',
      r.sent,
      r.delivered,
      r.views,
      r.behind.length > 0 ? r.behind.join(',') : '-',
    ]),
  );
  return 0;
}
