/**
 * `dvs dc create|ls|rm|add-node|rm-node|set|stats|show|pause|resume`. Without a cluster store the CLI pushes the DC configuration to
 * every node of the DC itself (as the prototype's operator did), and undoes a partial create. With one
 * (`dvs up --store`), each command goes to one node, which writes the store; every node applies the change
 * from its watch.
 */

import { nextFreeAddress, validateLanPrefix } from '../../isolation/addr.js';
import { formatBytes } from '../../isolation/limits.js';
import {
  type DcConfig,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_POST_WINDOW,
  DEFAULT_SYS_ENDPOINTS,
  MAX_PAYLOAD_LIMIT,
} from '../../kernel/types.js';
import type { ClusterNode } from '../../node/options.js';
import type {
  AdminMethod,
  AdminMethods,
  DcIsolationInfo,
  DcIsolationSpec,
  DcLimitsText,
  DcStatsInfo,
} from '../../protocol/admin.js';
import { DvsError, dvsError } from '../../protocol/errors.js';
import {
  type ClusterFileOnDisk,
  callAny,
  callEach,
  callNode,
  nodeById,
  type PerNode,
  requireCluster,
} from '../cluster.js';
import type { Ctx } from '../context.js';

/** Limit flags of `dc create` and `dc set` (text as typed: `256M`, `0.5`, `max` removes one). */
export interface LimitFlags {
  memory?: string;
  cpus?: string;
  pids?: string;
  ioBps?: string;
  netBps?: string;
}

/** The limit flags as the admin API takes them; undefined if none was given. */
export function limitsText(o: LimitFlags): DcLimitsText | undefined {
  const out: DcLimitsText = {};
  if (o.memory !== undefined) out.memory = o.memory;
  if (o.cpus !== undefined) out.cpus = o.cpus;
  if (o.pids !== undefined) out.pids = o.pids;
  if (o.ioBps !== undefined) out['io-bps'] = o.ioBps;
  if (o.netBps !== undefined) out['net-bps'] = o.netBps;
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Admin `method` on node `node`, relayed by whichever node of the cluster answers first (`node.call`): a
 * node whose socket this host cannot reach is still reached over the node links.
 */
export async function onNode<M extends AdminMethod>(
  cluster: ClusterFileOnDisk,
  node: number,
  method: M,
  params: AdminMethods[M]['params'],
  timeoutMs = 10_000,
): Promise<AdminMethods[M]['result']> {
  const { value } = await callAny(
    cluster,
    'node.call',
    { node, method, params, timeoutMs },
    timeoutMs + 1000,
  );
  return value as AdminMethods[M]['result'];
}

/** {@link onNode} on each of `nodes` in parallel; never throws (failures are per node). */
export async function onEachNode<M extends AdminMethod>(
  cluster: ClusterFileOnDisk,
  nodes: readonly number[],
  method: M,
  params: AdminMethods[M]['params'],
  timeoutMs = 10_000,
): Promise<PerNode<AdminMethods[M]['result']>[]> {
  return Promise.all(
    nodes.map(async (id): Promise<PerNode<AdminMethods[M]['result']>> => {
      const node = nodeById(cluster, id);
      try {
        return { node, ok: true, value: await onNode(cluster, id, method, params, timeoutMs) };
      } catch (e) {
        return { node, ok: false, error: DvsError.from(e) };
      }
    }),
  );
}

/** The first failure of a per-node result list, thrown with the node named. */
function throwFirst<T>(results: PerNode<T>[], what: string): T[] {
  const failed = results.find((r) => !r.ok);
  if (failed && !failed.ok) {
    throw new DvsError(failed.error.code, `${what} on node ${failed.node.id}: ${failed.error.message}`, {
      node: failed.node.id,
    });
  }
  return results.flatMap((r) => (r.ok ? [r.value] : []));
}

export interface DcCreateOptions {
  nodes?: number[];
  id?: number;
  maxPayload?: number;
  postWindow?: number;
  sysEndpoints?: number;
  /** The DC LAN's prefix (`172.31.5.0/24`). */
  lan?: string;
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

export async function dcCreate(ctx: Ctx, name: string, opts: DcCreateOptions & LimitFlags): Promise<number> {
  const limits = limitsText(opts);
  const cluster = await requireCluster(ctx.dir());
  const nodeIds = opts.nodes ?? cluster.nodes.map((n) => n.id);
  const nodes = nodeIds.map((id) => nodeById(cluster, id));
  const maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  if (maxPayload > MAX_PAYLOAD_LIMIT)
    throw dvsError('EINVAL', `--max-payload is at most ${MAX_PAYLOAD_LIMIT}`);

  if (cluster.store !== undefined) {
    for (const id of nodeIds) nodeById(cluster, id);
    // The nodes keep limits and the LAN prefix in the store and claim their LAN addresses there.
    const isolation: DcIsolationSpec | undefined =
      limits !== undefined || opts.lan !== undefined
        ? { ...(limits ? { limits } : {}), ...(opts.lan !== undefined ? { lan: { prefix: opts.lan } } : {}) }
        : undefined;
    const { value: config } = await callAny(cluster, 'dc.create', {
      ...(isolation ? { isolation } : {}),
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

  // The LAN: refused before anything exists if it overlaps another DC's; one address per node.
  const addresses = new Map<number, string>();
  if (opts.lan !== undefined) {
    const others: Record<string, string> = {};
    for (const { config: other, on } of dcs.values()) {
      const holder = cluster.nodes.find((n) => on.includes(n.id));
      if (holder === undefined) continue;
      const r = await callEach([holder], 'dc.isolation', { dc: other.id });
      const lan = r[0]?.ok ? r[0].value.lan : undefined;
      if (lan) others[other.name] = lan.prefix;
    }
    validateLanPrefix(opts.lan, others);
    for (const id of [...nodeIds].sort((a, b) => a - b))
      addresses.set(id, nextFreeAddress(opts.lan, addresses.values()));
  }
  const isolationFor = (id: number): DcIsolationSpec | undefined => {
    if (limits === undefined && opts.lan === undefined) return undefined;
    const address = addresses.get(id);
    return {
      ...(limits ? { limits } : {}),
      ...(opts.lan !== undefined && address !== undefined ? { lan: { prefix: opts.lan, address } } : {}),
    };
  };
  const results = await Promise.all(
    nodes.map(async (node): Promise<PerNode<DcConfig>> => {
      const isolation = isolationFor(node.id);
      try {
        const value = await callNodeLong(node, 'dc.create', { config, ...(isolation ? { isolation } : {}) });
        return { node, ok: true, value };
      } catch (e) {
        return { node, ok: false, error: DvsError.from(e) };
      }
    }),
  );
  const failed = results.find((r) => !r.ok);
  if (failed && !failed.ok) {
    const created = results.filter((r) => r.ok).map((r) => r.node);
    await callEach(created, 'dc.remove', { dc: id });
    const e = failed.error;
    throw new DvsError(e.code, `creating DC '${name}' failed on node ${failed.node.id}: ${e.message}`, {
      node: failed.node.id,
    });
  }
  if (opts.lan !== undefined) {
    // Every node learns where the other containers are (static forwarding: no learning, no flooding).
    const infos = throwFirst(await callEach(nodes, 'dc.isolation', { dc: id }), 'reading the DC LAN');
    const members = infos.flatMap((i) => (i.lan ? [i.lan] : []));
    const pushed = await callEach(nodes, 'dc.lanPeers', { dc: id, members });
    if (pushed.some((r) => !r.ok)) {
      await callEach(nodes, 'dc.remove', { dc: id });
      throwFirst(pushed, 'setting up the DC LAN');
    }
  }
  if (opts.json) ctx.out.json(config);
  else {
    const extra = [
      limits
        ? ` limits ${Object.entries(limits)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}`
        : '',
      opts.lan !== undefined ? ` LAN ${opts.lan}` : '',
    ].join('');
    ctx.out.line(`created DC '${name}' (id ${id}) on node(s) ${nodeIds.join(',')}${extra}`);
  }
  return 0;
}

/** dc.create may build a container and a LAN on the node: allow it more than a plain call. */
async function callNodeLong<M extends AdminMethod>(
  node: ClusterNode,
  method: M,
  params: AdminMethods[M]['params'],
): Promise<AdminMethods[M]['result']> {
  return callNode(node, method, params, 30_000);
}

/** The nodes of DC `ref` that have it (from their answers), with its config. */
async function dcNodesOf(cluster: ClusterFileOnDisk, ref: string | number) {
  const config = await findDc(cluster, ref);
  return { config, nodes: config.nodes.filter((id) => cluster.nodes.some((n) => n.id === id)) };
}

/** `dvs dc set --dc D --memory 512M ...`: change limits live on every node of the DC. */
export async function dcSet(
  ctx: Ctx,
  opts: { dc: string | number; json: boolean } & LimitFlags,
): Promise<number> {
  const limits = limitsText(opts);
  if (limits === undefined)
    throw dvsError('EINVAL', 'nothing to set: give --memory, --cpus, --pids, --io-bps or --net-bps');
  const cluster = await requireCluster(ctx.dir());
  const { config, nodes } = await dcNodesOf(cluster, opts.dc);
  const infos = throwFirst(
    await onEachNode(cluster, nodes, 'dc.set', { dc: config.id, limits }),
    `setting limits of DC '${config.name}'`,
  );
  if (opts.json) ctx.out.json({ dc: config.name, dcId: config.id, nodes: infos });
  else
    for (const i of infos) ctx.out.line(`DC '${config.name}' on node ${i.node}: ${i.limits || 'no limits'}`);
  return 0;
}

/** `dvs dc pause|resume --dc D`: freeze or thaw every process of the DC on all its nodes. */
export async function dcFreeze(
  ctx: Ctx,
  what: 'pause' | 'resume',
  opts: { dc: string | number; json: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const { config, nodes } = await dcNodesOf(cluster, opts.dc);
  throwFirst(
    await onEachNode(cluster, nodes, what === 'pause' ? 'dc.pause' : 'dc.resume', { dc: config.id }),
    `${what} of DC '${config.name}'`,
  );
  if (opts.json)
    ctx.out.json({ dc: config.name, dcId: config.id, nodes, state: what === 'pause' ? 'paused' : 'running' });
  else
    ctx.out.line(
      `DC '${config.name}' ${what === 'pause' ? 'paused' : 'resumed'} on node(s) ${nodes.join(',')}`,
    );
  return 0;
}

/** `dvs dc stats --dc D`: usage against limits per node. */
export async function dcStats(ctx: Ctx, opts: { dc: string | number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const { config, nodes } = await dcNodesOf(cluster, opts.dc);
  const answers = await onEachNode(cluster, nodes, 'dc.stats', { dc: config.id });
  const rows = answers.flatMap((a) => (a.ok ? [a.value] : []));
  if (opts.json) {
    ctx.out.json({
      dc: config.name,
      dcId: config.id,
      nodes: rows,
      unreachable: answers.filter((a) => !a.ok).map((a) => a.node.id),
    });
    return 0;
  }
  ctx.out.table(
    ['NODE', 'STATE', 'MEMORY', 'CPU', 'PIDS', 'IO R/W', 'OOM KILLS', 'LIMITS'],
    rows.map((r) => statsRow(r)),
  );
  for (const a of answers) {
    if (!a.ok) ctx.out.note(ctx.out.colors.yellow(`warning: node ${a.node.id}: ${a.error.message}`));
  }
  return 0;
}

function statsRow(r: DcStatsInfo): (string | number)[] {
  const lim = (v: number | null | undefined, f: (n: number) => string) => (v == null ? 'max' : f(v));
  const state = r.mode === 'off' ? 'no isolation' : !r.running ? 'stopped' : r.frozen ? 'paused' : 'running';
  return [
    r.node,
    state,
    r.memory ? `${formatBytes(r.memory.usageBytes)} / ${lim(r.memory.limitBytes, formatBytes)}` : '-',
    r.cpu ? `${(r.cpu.usageNs / 1e9).toFixed(2)}s / ${lim(r.cpu.limitCpus, String)} cpus` : '-',
    r.pids ? `${r.pids.current} / ${lim(r.pids.limit, String)}` : '-',
    r.io ? `${formatBytes(r.io.readBytes)} / ${formatBytes(r.io.writeBytes)}` : '-',
    r.memory ? r.memory.oomKills : '-',
    r.limits || '-',
  ];
}

/** `dvs dc show --dc D`: config, and per node the container, limits and LAN address. */
export async function dcShow(ctx: Ctx, opts: { dc: string | number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const { config, nodes } = await dcNodesOf(cluster, opts.dc);
  const answers = await onEachNode(cluster, nodes, 'dc.isolation', { dc: config.id });
  const rows: DcIsolationInfo[] = answers.flatMap((a) => (a.ok ? [a.value] : []));
  if (opts.json) {
    ctx.out.json({
      ...config,
      isolation: rows,
      unreachable: answers.filter((a) => !a.ok).map((a) => a.node.id),
    });
    return 0;
  }
  const lan = rows.find((r) => r.lan)?.lan?.prefix;
  ctx.out.line(
    `DC '${config.name}' (id ${config.id}) on node(s) ${config.nodes.join(',')}${lan ? `, LAN ${lan}` : ''}`,
  );
  ctx.out.table(
    ['NODE', 'MODE', 'CONTAINER', 'INIT PID', 'LIMITS', 'LAN ADDRESS', 'MAC'],
    rows.map((r) => [
      r.node,
      r.mode,
      r.mode === 'off' ? '-' : r.running ? (r.netns ?? 'running') : 'stopped',
      r.initPid ?? '-',
      r.limits || '-',
      r.lan?.address ?? '-',
      r.lan?.mac ?? '-',
    ]),
  );
  for (const a of answers) {
    if (!a.ok) ctx.out.note(ctx.out.colors.yellow(`warning: node ${a.node.id}: ${a.error.message}`));
  }
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
