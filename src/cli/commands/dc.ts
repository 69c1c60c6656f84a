/**
 * `dvs dc create|ls|rm|add-node|rm-node`. Without a cluster store the CLI pushes the DC configuration to
 * every node of the DC itself (as the prototype's operator did), and undoes a partial create. With one
 * (`dvs up --store`), each command goes to one node, which writes the store; every node applies the change
 * from its watch.
 */
import {
  type DcConfig,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_POST_WINDOW,
  DEFAULT_SYS_ENDPOINTS,
  MAX_PAYLOAD_LIMIT,
} from '../../kernel/types.js';
import type { ClusterNode } from '../../node/options.js';
import { DvsError, dvsError } from '../../protocol/errors.js';
import { type ClusterFileOnDisk, callAny, callEach, nodeById, requireCluster } from '../cluster.js';
import type { Ctx } from '../context.js';

export interface DcCreateOptions {
  nodes?: number[];
  id?: number;
  maxPayload?: number;
  postWindow?: number;
  sysEndpoints?: number;
  json: boolean;
}

/** DCs known by the reachable nodes, merged by id (a DC is listed once with the nodes that have it). */
export async function knownDcs(
  cluster: ClusterFileOnDisk,
): Promise<{ dcs: Map<number, { config: DcConfig; on: number[] }>; down: ClusterNode[] }> {
  const answers = await callEach(cluster.nodes, 'dc.list', {});
  const dcs = new Map<number, { config: DcConfig; on: number[] }>();
  const down: ClusterNode[] = [];
  for (const a of answers) {
    if (!a.ok) {
      down.push(a.node);
      continue;
    }
    for (const cfg of a.value) {
      const e = dcs.get(cfg.id) ?? { config: cfg, on: [] };
      e.on.push(a.node.id);
      dcs.set(cfg.id, e);
    }
  }
  return { dcs, down };
}

/** The configuration of DC `ref` (name or id) as the nodes know it; ENOENT if none does. */
export async function findDc(cluster: ClusterFileOnDisk, ref: string | number): Promise<DcConfig> {
  const { dcs } = await knownDcs(cluster);
  for (const { config } of dcs.values()) {
    if (config.name === ref || config.id === ref) return config;
  }
  throw dvsError(
    'ENOENT',
    `no DC ${typeof ref === 'number' ? `with id ${ref}` : `named '${ref}'`} in this cluster`,
  );
}

export async function dcCreate(ctx: Ctx, name: string, opts: DcCreateOptions): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const nodeIds = opts.nodes ?? cluster.nodes.map((n) => n.id);
  const nodes = nodeIds.map((id) => nodeById(cluster, id));
  const maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  if (maxPayload > MAX_PAYLOAD_LIMIT)
    throw dvsError('EINVAL', `--max-payload is at most ${MAX_PAYLOAD_LIMIT}`);

  if (cluster.store !== undefined) {
    for (const id of nodeIds) nodeById(cluster, id);
    const { value: config } = await callAny(cluster, 'dc.create', {
      config: {
        id: opts.id ?? 0,
        name,
        nodes: nodeIds,
        maxPayload,
        sysEndpoints: opts.sysEndpoints ?? DEFAULT_SYS_ENDPOINTS,
        postWindow: opts.postWindow ?? DEFAULT_POST_WINDOW,
      },
    });
    if (opts.json) ctx.out.json(config);
    else ctx.out.line(`created DC '${name}' (id ${config.id}) on node(s) ${config.nodes.join(',')}`);
    return 0;
  }
  const { dcs, down } = await knownDcs(cluster);
  const unreachable = down.filter((n) => nodeIds.includes(n.id));
  if (unreachable.length > 0) {
    throw dvsError('ENOTCONN', `node ${unreachable[0]!.id} is not answering on ${unreachable[0]!.socket}`, {
      node: unreachable[0]!.id,
    });
  }
  for (const { config } of dcs.values()) {
    if (config.name === name)
      throw dvsError('EEXIST', `a DC named '${name}' already exists (id ${config.id})`);
    if (opts.id !== undefined && config.id === opts.id) {
      throw dvsError('EEXIST', `DC id ${opts.id} is taken by '${config.name}'`);
    }
  }
  const id = opts.id ?? Math.max(0, ...dcs.keys()) + 1;
  const config: DcConfig = {
    id,
    name,
    nodes: nodeIds,
    maxPayload,
    sysEndpoints: opts.sysEndpoints ?? DEFAULT_SYS_ENDPOINTS,
    postWindow: opts.postWindow ?? DEFAULT_POST_WINDOW,
  };

  const results = await callEach(nodes, 'dc.create', { config });
  const failed = results.find((r) => !r.ok);
  if (failed && !failed.ok) {
    const created = results.filter((r) => r.ok).map((r) => r.node);
    await callEach(created, 'dc.remove', { dc: id });
    const e = failed.error;
    throw new DvsError(e.code, `creating DC '${name}' failed on node ${failed.node.id}: ${e.message}`, {
      node: failed.node.id,
    });
  }
  if (opts.json) ctx.out.json(config);
  else ctx.out.line(`created DC '${name}' (id ${id}) on node(s) ${nodeIds.join(',')}`);
  return 0;
}

export async function dcList(ctx: Ctx, opts: { json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const { dcs, down } = await knownDcs(cluster);
  const rows = [];
  for (const { config, on } of [...dcs.values()].sort((a, b) => a.config.id - b.config.id)) {
    const holders = cluster.nodes.filter((n) => on.includes(n.id));
    const eps = await callEach(holders, 'ep.list', { dc: config.id });
    const local = new Set<number>();
    for (const r of eps) if (r.ok) for (const row of r.value) if (row.kind !== 'remote') local.add(row.ep);
    rows.push({ ...config, endpoints: local.size });
  }
  if (opts.json) {
    ctx.out.json({ dcs: rows, unreachable: down.map((n) => n.id) });
    return 0;
  }
  if (rows.length === 0) ctx.out.line('no DCs (create one with: dvs dc create NAME)');
  else {
    ctx.out.table(
      ['DC', 'NAME', 'NODES', 'ENDPOINTS', 'MAX PAYLOAD', 'SYS EPS', 'POST WINDOW'],
      rows.map((r) => [
        r.id,
        r.name,
        r.nodes.join(','),
        r.endpoints,
        r.maxPayload,
        r.sysEndpoints,
        r.postWindow,
      ]),
    );
  }
  for (const n of down) ctx.out.note(ctx.out.colors.yellow(`warning: node ${n.id} is not answering`));
  return 0;
}

export async function dcRemove(ctx: Ctx, ref: string | number, opts: { json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  if (cluster.store !== undefined) {
    const { value } = await callAny(cluster, 'dc.remove', { dc: ref });
    if (opts.json) ctx.out.json({ dc: ref, killed: value.killed });
    else {
      ctx.out.line(
        `removed DC '${ref}'${value.killed.length ? `; stopped pids ${value.killed.join(',')}` : ''}`,
      );
    }
    return 0;
  }
  const { dcs } = await knownDcs(cluster);
  const hit = [...dcs.values()].find((d) => d.config.name === ref || d.config.id === ref);
  if (hit === undefined) throw dvsError('ENOENT', `no DC '${ref}' in this cluster`);
  const holders = cluster.nodes.filter((n) => hit.on.includes(n.id));
  const results = await callEach(holders, 'dc.remove', { dc: hit.config.id });
  const killed = results.flatMap((r) => (r.ok ? r.value.killed : []));
  const failed = results.find((r) => !r.ok);
  if (opts.json) ctx.out.json({ dc: hit.config.id, name: hit.config.name, killed });
  else {
    ctx.out.line(
      `removed DC '${hit.config.name}' (id ${hit.config.id})${killed.length ? `; stopped pids ${killed.join(',')}` : ''}`,
    );
  }
  if (failed && !failed.ok) {
    throw new DvsError(
      failed.error.code,
      `removing DC on node ${failed.node.id} failed: ${failed.error.message}`,
    );
  }
  return 0;
}

/** `dvs dc add-node|rm-node NAME NODE`: change a DC's nodes in the cluster store (one node writes it). */
export async function dcNodes(
  ctx: Ctx,
  what: 'add' | 'rm',
  ref: string | number,
  node: number,
  opts: { json: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  if (cluster.store === undefined) {
    throw dvsError(
      'EINVAL',
      `dvs dc ${what}-node needs a cluster store (start the cluster with: dvs up --store embedded)`,
    );
  }
  nodeById(cluster, node);
  const { value: config } = await callAny(cluster, what === 'add' ? 'dc.addNode' : 'dc.rmNode', {
    dc: ref,
    node,
  });
  if (opts.json) ctx.out.json(config);
  else ctx.out.line(`DC '${config.name}' (id ${config.id}) is on node(s) ${config.nodes.join(',')}`);
  return 0;
}
