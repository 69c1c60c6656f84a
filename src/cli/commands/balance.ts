/**
 * Scheduling from the CLI (docs/scheduling.md): where `dvs run` without `--node` places a process, and
 * `dvs balance`, which proposes (and with `--apply` performs, through admin `proc.migrate`) the migrations
 * that even out the load of a DC's nodes. The decisions are the pure policies of src/node/scheduler.ts,
 * applied to the load every node of the DC reports in its status.
 */
import type { DcConfig } from '../../kernel/types.js';
import {
  type BalancePlan,
  type Candidate,
  planBalance,
  type Ranked,
  rankNodes,
} from '../../node/scheduler.js';
import type { MigrationResult, NodeStatus } from '../../protocol/admin.js';
import { DvsError, dvsError } from '../../protocol/errors.js';
import { type ClusterFileOnDisk, callNode, requireCluster } from '../cluster.js';
import type { Ctx } from '../context.js';
import { findDc } from './dc.js';

/** The status of one DC node, or why there is none. */
export interface NodeAnswer {
  node: number;
  status: NodeStatus | undefined;
  error?: DvsError;
}

/**
 * The status of every node of `dc`: nodes this host runs are asked on their socket, the others through
 * the first node of the DC this host runs (admin `node.call`).
 */
export async function dcStatuses(
  cluster: ClusterFileOnDisk,
  dc: DcConfig,
  timeoutMs = 5000,
): Promise<NodeAnswer[]> {
  const via = cluster.nodes.find((n) => dc.nodes.includes(n.id));
  return Promise.all(
    dc.nodes.map(async (id): Promise<NodeAnswer> => {
      try {
        const local = cluster.nodes.find((n) => n.id === id);
        if (local) return { node: id, status: await callNode(local, 'status', {}, timeoutMs) };
        if (via === undefined) throw dvsError('ENOENT', `no node of DC '${dc.name}' runs on this host`);
        const st = (await callNode(
          via,
          'node.call',
          { node: id, method: 'status', params: {} },
          timeoutMs,
        )) as NodeStatus;
        return { node: id, status: st };
      } catch (e) {
        return { node: id, status: undefined, error: DvsError.from(e) };
      }
    }),
  );
}

function candidates(answers: readonly NodeAnswer[]): Candidate[] {
  return answers.map((a) => ({ node: a.node, up: a.status !== undefined, load: a.status?.load }));
}

/** The node of `dc` with the most headroom, and the ranking it was chosen from. */
export async function placeNode(
  cluster: ClusterFileOnDisk,
  dc: DcConfig,
): Promise<{ node: number; ranking: Ranked[] }> {
  const ranking = rankNodes(candidates(await dcStatuses(cluster, dc)));
  return { node: ranking[0]!.node, ranking };
}

export interface BalanceOptions {
  dc: string | number;
  apply: boolean;
  json: boolean;
  maxMoves?: number;
}

/** `dvs balance`: print the plan; with --apply, run its migrations one by one. Exit 1 if one failed. */
export async function balance(ctx: Ctx, opts: BalanceOptions): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  const answers = await dcStatuses(cluster, dc);
  const movable = answers.flatMap((a) =>
    (a.status?.load?.procs ?? [])
      .filter((p) => p.dc === dc.id)
      .map((p) => ({ ep: p.ep, node: a.node, cpu: p.cpu, rssBytes: p.rssBytes })),
  );
  const plan: BalancePlan = planBalance({
    dc: dc.id,
    nodes: candidates(answers),
    movable,
    ...(opts.maxMoves !== undefined ? { maxMoves: opts.maxMoves } : {}),
  });
  const unreachable = answers.filter((a) => a.status === undefined).map((a) => a.node);
  for (const n of unreachable) ctx.out.note(`dvs: node ${n} did not answer: left out of the plan`);

  const results: {
    ep: number;
    from: number;
    to: number;
    ok: boolean;
    error?: string;
    result?: MigrationResult;
  }[] = [];
  if (opts.apply) {
    const via = cluster.nodes.find((n) => dc.nodes.includes(n.id));
    if (via === undefined) throw dvsError('ENOENT', `no node of DC '${dc.name}' runs on this host`);
    for (const m of plan.moves) {
      try {
        const r = await callNode(via, 'proc.migrate', { dc: dc.id, ep: m.ep, to: m.to }, 60_000);
        results.push({ ep: m.ep, from: m.from, to: m.to, ok: true, result: r });
      } catch (e) {
        results.push({ ep: m.ep, from: m.from, to: m.to, ok: false, error: DvsError.from(e).message });
      }
    }
  }
  const failed = results.filter((r) => !r.ok).length;
  if (opts.json) {
    ctx.out.json({
      dc: dc.name,
      dcId: dc.id,
      moves: plan.moves,
      before: plan.before,
      after: plan.after,
      unreachable,
      ...(opts.apply ? { applied: results } : {}),
    });
    return failed > 0 ? 1 : 0;
  }
  const loads = (r: Record<string, number>) =>
    Object.entries(r)
      .map(([n, l]) => `node ${n}: ${l.toFixed(2)}`)
      .join(', ');
  ctx.out.line(`load of DC '${dc.name}' nodes (cores): ${loads(plan.before)}`);
  if (plan.moves.length === 0) {
    ctx.out.line('balanced: no migration would even out the load');
    return 0;
  }
  ctx.out.table(
    ['EP', 'FROM', 'TO', 'LOAD', ...(opts.apply ? ['RESULT'] : [])],
    plan.moves.map((m, i) => [
      m.ep,
      m.from,
      m.to,
      m.weight.toFixed(2),
      ...(opts.apply
        ? [
            results[i]?.ok
              ? `moved (${results[i]?.result?.freezeMs} ms frozen)`
              : `failed: ${results[i]?.error}`,
          ]
        : []),
    ]),
  );
  ctx.out.line(`after: ${loads(plan.after)}`);
  if (!opts.apply)
    ctx.out.note(`dvs: run again with --apply to perform these ${plan.moves.length} migrations`);
  return failed > 0 ? 1 : 0;
}
