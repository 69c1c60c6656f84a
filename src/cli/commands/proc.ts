/**
 * `dvs run`, `dvs logs`, `dvs kill`, `dvs ps`, `dvs exec`, `dvs ep ls` and `dvs node status`: processes and
 * endpoints of a DC, and the containers they run in.
 */
import { ANY, type DcConfig } from '../../kernel/types.js';
import type { ClusterNode } from '../../node/options.js';
import type { AdminMethods, NodeStatus, ProcessInfo } from '../../protocol/admin.js';
import { dvsError } from '../../protocol/errors.js';
import { type ClusterFileOnDisk, callEach, callNode, nodeById, requireCluster, sleep } from '../cluster.js';
import { type Ctx, interruptSignal } from '../context.js';
import { exitCodeOf } from '../parse.js';
import { placeNode } from './balance.js';
import { findDc, onEachNode, onNode } from './dc.js';

/** How a process ended, in words: `exit code 3`, `killed by SIGTERM`, `killed: out of memory at 256M`. */
export function exitText(exit: ProcessInfo['exit']): string {
  if (exit === null) return 'running';
  if (exit.reason !== undefined) return exit.reason;
  if (exit.oomKilled) return 'killed: out of memory';
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

const POLL_MS = 100;
const LOG_CHUNK = 256 * 1024;

export interface RunOptions {
  dc: string | number;
  ep: number;
  node?: number;
  name?: string;
  json: boolean;
  wait: boolean;
  /** Replicated run (docs/replication.md): replicas in all, and the mode. */
  replicas?: number;
  mode?: string;
}

export async function run(ctx: Ctx, cmd: string[], opts: RunOptions): Promise<number> {
  if (cmd.length === 0)
    throw dvsError('EINVAL', 'no command given (put it after --, e.g. dvs run ... -- node app.js)');
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  // Without --node: the DC node with the most headroom (src/node/scheduler.ts, docs/scheduling.md).
  const placed = opts.node === undefined ? await placeNode(cluster, dc) : undefined;
  const nodeId = opts.node ?? placed?.ranking[0]?.node ?? Math.min(...dc.nodes);
  if (placed !== undefined && !opts.json) {
    const r = placed.ranking[0]!;
    ctx.out.note(
      `dvs: placed on node ${nodeId} (headroom ${Math.round(r.headroom * 100)}%, ${r.processes} processes, ${r.procCpu} cores used)`,
    );
  }
  if (!dc.nodes.includes(nodeId)) {
    throw dvsError(
      'EINVAL',
      `DC '${dc.name}' does not span node ${nodeId} (its nodes: ${dc.nodes.join(',')})`,
    );
  }
  const node = nodeById(cluster, nodeId);
  if (opts.mode !== undefined && opts.replicas === undefined) {
    throw dvsError('EINVAL', '--mode needs --replicas N');
  }
  const mode = opts.mode ?? 'primary-backup';
  if (mode !== 'primary-backup' && mode !== 'state-machine') {
    throw dvsError('EINVAL', `unknown --mode '${mode}' (primary-backup, state-machine)`);
  }
  if (opts.replicas !== undefined && opts.replicas > dc.nodes.length) {
    throw dvsError(
      'EINVAL',
      `--replicas ${opts.replicas} is more than the ${dc.nodes.length} node(s) of DC '${dc.name}' (nodes ${dc.nodes.join(',')}): one replica per node`,
    );
  }
  const info = await callNode(
    node,
    'proc.run',
    {
      dc: dc.id,
      ep: opts.ep,
      cmd,
      cwd: ctx.out.io.cwd,
      ...(opts.name ? { name: opts.name } : {}),
      ...(opts.replicas !== undefined ? { replicas: opts.replicas, mode } : {}),
    },
    opts.replicas !== undefined ? 30_000 : 15_000,
  );
  const group = info.replicas;
  if (opts.json && !opts.wait)
    ctx.out.json({
      dc: dc.name,
      dcId: dc.id,
      ep: info.ep,
      node: info.node,
      pid: info.pid,
      ...(group ? { replicas: group } : {}),
    });
  else if (!opts.wait) {
    ctx.out.line(
      `started '${info.name}' at endpoint ${info.ep} of DC '${dc.name}' on node ${info.node} (pid ${info.pid})`,
    );
    if (group?.mode === 'state-machine')
      ctx.out.line(`state-machine replicas on nodes ${[group.primary, ...group.backups].join(',')}`);
    else if (group)
      ctx.out.line(`primary on node ${group.primary}, backups on nodes ${group.backups.join(',')}`);
  }
  if (!opts.wait) return 0;
  const exit = await streamLog(ctx, node, dc, info.ep, true);
  if (exit === undefined) return 130;
  // Why it ended when that is not the program's own doing (the OOM killer at the DC's limit).
  if (exit.exit?.oomKilled) ctx.out.note(`dvs: ${exitText(exit.exit)}`);
  if (opts.json)
    ctx.out.json({ dc: dc.name, dcId: dc.id, ep: info.ep, node: info.node, pid: info.pid, exit: exit.exit });
  return exitCodeOf(exit.exit);
}

/**
 * Copies the process log to stdout from the start; with `follow`, until the process exits. Returns the
 * process at the end (undefined if the user interrupted).
 */
async function streamLog(
  ctx: Ctx,
  node: ClusterNode,
  dc: DcConfig,
  ep: number,
  follow: boolean,
): Promise<ProcessInfo | undefined> {
  const interrupt = follow ? interruptSignal() : undefined;
  try {
    let offset = 0;
    for (;;) {
      if (interrupt?.signal.aborted) return undefined;
      const chunk = await callNode(node, 'logs.read', { dc: dc.id, ep, offset, max: LOG_CHUNK });
      if (chunk.data.length > 0) ctx.out.raw(chunk.data);
      offset = chunk.offset;
      if (chunk.data.length === LOG_CHUNK) continue;
      // `running` was sampled before the read: false means everything has been read.
      if (!follow || !chunk.running) break;
      await sleep(POLL_MS, interrupt?.signal);
    }
    return await callNode(node, 'proc.wait', { dc: dc.id, ep, timeoutMs: 0 });
  } finally {
    interrupt?.dispose();
  }
}

/** The node that ran (or runs) endpoint `ep` of `dc`: the latest start wins. */
async function findProcess(
  cluster: ClusterFileOnDisk,
  dc: DcConfig,
  ep: number,
): Promise<{ node: ClusterNode; info: ProcessInfo }> {
  const holders = cluster.nodes.filter((n) => dc.nodes.includes(n.id));
  const answers = await callEach(holders, 'proc.list', { dc: dc.id });
  let best: { node: ClusterNode; info: ProcessInfo } | undefined;
  for (const a of answers) {
    if (!a.ok) continue;
    for (const p of a.value) {
      if (p.ep !== ep) continue;
      const better =
        best === undefined ||
        (best.info.exit !== null && p.exit === null) ||
        ((best.info.exit === null) === (p.exit === null) && p.startedAt > best.info.startedAt);
      if (better) best = { node: a.node, info: p };
    }
  }
  if (best === undefined) {
    throw dvsError('ENOENT', `no process was started at endpoint ${ep} of DC '${dc.name}' (by dvs run)`);
  }
  return best;
}

export async function logs(
  ctx: Ctx,
  opts: { dc: string | number; ep: number; follow: boolean },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  const { node } = await findProcess(cluster, dc, opts.ep);
  const end = await streamLog(ctx, node, dc, opts.ep, opts.follow);
  if (end?.exit?.oomKilled) ctx.out.note(`dvs: ${exitText(end.exit)}`);
  return 0;
}

export async function kill(
  ctx: Ctx,
  opts: {
    dc: string | number;
    ep: number;
    signal: string;
    graceMs: number;
    json: boolean;
    replicas?: boolean;
  },
): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  if (opts.replicas) return killGroup(ctx, cluster, dc, opts);
  const { node, info } = await findProcess(cluster, dc, opts.ep);
  if (info.exit !== null) {
    throw dvsError('ENOENT', `the process at endpoint ${opts.ep} of DC '${dc.name}' already exited`);
  }
  const done = await callNode(
    node,
    'proc.kill',
    { dc: dc.id, ep: opts.ep, signal: opts.signal, graceMs: opts.graceMs },
    opts.graceMs + 10_000,
  );
  if (opts.json) ctx.out.json(done);
  else ctx.out.line(killedLine(dc, done));
  return 0;
}

/** `endpoint 100 of DC 'web' on node 1 (pid 4321): killed by SIGTERM`. */
function killedLine(dc: DcConfig, p: ProcessInfo): string {
  const how = p.exit === null ? 'still running' : exitText(p.exit);
  return `endpoint ${p.ep} of DC '${dc.name}' on node ${p.node} (pid ${p.pid}): ${how}`;
}

/** `dvs kill --replicas`: one call to a node running a replica, which ends the group everywhere. */
async function killGroup(
  ctx: Ctx,
  cluster: ClusterFileOnDisk,
  dc: DcConfig,
  opts: { ep: number; signal: string; graceMs: number; json: boolean },
): Promise<number> {
  const { node } = await findProcess(cluster, dc, opts.ep);
  const r = await callNode(
    node,
    'proc.killGroup',
    { dc: dc.id, ep: opts.ep, signal: opts.signal, graceMs: opts.graceMs },
    opts.graceMs + 15_000,
  );
  if (opts.json) ctx.out.json(r);
  else {
    for (const p of r.processes) ctx.out.line(killedLine(dc, p));
    ctx.out.line(
      `replicated endpoint ${opts.ep} of DC '${dc.name}' ended (${r.processes.length} replica(s) stopped)`,
    );
    if (r.unreachable.length > 0) {
      ctx.out.note(
        `dvs: node(s) ${r.unreachable.join(',')} could not be told; their replicas stop when they see the group gone`,
      );
    }
  }
  return r.unreachable.length > 0 ? 1 : 0;
}

/** `dvs ep ls`: every node's own rows (not its remote knowledge), merged. */
export async function epList(ctx: Ctx, opts: { dc: string | number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  const holders = cluster.nodes.filter((n) => dc.nodes.includes(n.id));
  const answers = await callEach(holders, 'ep.list', { dc: dc.id });
  const rows: AdminMethods['ep.list']['result'] = [];
  for (const a of answers) {
    if (!a.ok) {
      ctx.out.note(
        ctx.out.colors.yellow(`warning: node ${a.node.id} is not answering; its endpoints are missing`),
      );
      continue;
    }
    // A replicated endpoint's rows name every backup; each node reports only its own.
    rows.push(
      ...a.value.filter((r) => r.kind !== 'remote' && (r.role === undefined || r.node === a.node.id)),
    );
  }
  rows.sort((a, b) => a.ep - b.ep || a.node - b.node);
  if (opts.json) {
    ctx.out.json({ dc: dc.name, dcId: dc.id, endpoints: rows });
    return 0;
  }
  if (rows.length === 0) {
    ctx.out.line(`no endpoints bound in DC '${dc.name}'`);
    return 0;
  }
  const peer = (e: number | null) => (e === null ? '-' : e === ANY ? 'ANY' : String(e));
  ctx.out.table(
    [
      'DC',
      'EP',
      'NAME',
      'NODE',
      'PID',
      'KIND',
      'FLAGS',
      'SENDTO',
      'GETFROM',
      'QUEUED',
      'NTFY',
      'LSENT',
      'RSENT',
      'RECV',
      'NOTIFIES',
      'COPY',
    ],
    rows.map((r) => [
      dc.name,
      r.ep,
      r.name,
      r.node,
      r.pid,
      r.role === undefined ? r.kind : `${r.kind} (${r.role})`,
      r.flags.length ? r.flags.join('|') : '-',
      peer(r.sendTo),
      peer(r.getFrom),
      r.queued,
      r.pendingNotify,
      r.counters.lclSent,
      r.counters.rmtSent,
      r.counters.received,
      r.counters.notifies,
      r.counters.copyBytes,
    ]),
  );
  return 0;
}

/** `dvs ps [--dc D]`: the processes `dvs run` started, on every node (running and recently exited). */
export async function ps(ctx: Ctx, opts: { dc?: string | number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dc = opts.dc === undefined ? undefined : await findDc(cluster, opts.dc);
  const nodes = cluster.nodes.filter((n) => dc === undefined || dc.nodes.includes(n.id));
  const answers = await callEach(nodes, 'proc.list', dc === undefined ? {} : { dc: dc.id });
  const rows = answers.flatMap((a) => (a.ok ? a.value : []));
  rows.sort((a, b) => a.dc - b.dc || a.ep - b.ep || a.startedAt - b.startedAt);
  if (opts.json) {
    ctx.out.json({ processes: rows, unreachable: answers.filter((a) => !a.ok).map((a) => a.node.id) });
    return 0;
  }
  if (rows.length === 0) ctx.out.line('no processes (start one with: dvs run --dc DC --ep N -- CMD)');
  else {
    ctx.out.table(
      ['DC', 'EP', 'NAME', 'NODE', 'PID', 'CPID', 'STATE', 'COMMAND'],
      rows.map((p) => [
        p.dcName,
        p.ep,
        p.name,
        p.node,
        p.pid,
        p.containerPid ?? '-',
        exitText(p.exit),
        p.cmd.join(' '),
      ]),
    );
  }
  for (const a of answers) {
    if (!a.ok) ctx.out.note(ctx.out.colors.yellow(`warning: node ${a.node.id} is not answering`));
  }
  return 0;
}

/**
 * `dvs exec --dc D [--node N] -- CMD`: runs CMD in the DC's container on node N (default: the DC's lowest
 * node), through whichever node answers (node.call). Prints its output; exits with its exit code.
 */
export async function exec(
  ctx: Ctx,
  cmd: string[],
  opts: { dc: string | number; node?: number; timeoutMs: number; json: boolean },
): Promise<number> {
  if (cmd.length === 0)
    throw dvsError('EINVAL', 'no command given (put it after --, e.g. dvs exec --dc D -- ps)');
  const cluster = await requireCluster(ctx.dir());
  const dc = await findDc(cluster, opts.dc);
  const nodeId = opts.node ?? Math.min(...dc.nodes);
  if (!dc.nodes.includes(nodeId)) {
    throw dvsError(
      'EINVAL',
      `DC '${dc.name}' does not span node ${nodeId} (its nodes: ${dc.nodes.join(',')})`,
    );
  }
  nodeById(cluster, nodeId);
  const r = await onNode(
    cluster,
    nodeId,
    'proc.exec',
    { dc: dc.id, cmd, timeoutMs: opts.timeoutMs, cwd: '/' },
    opts.timeoutMs + 5000,
  );
  if (opts.json) {
    ctx.out.json({ dc: dc.name, dcId: dc.id, node: nodeId, ...r });
    return 0;
  }
  ctx.out.io.stdout.write(r.stdout);
  ctx.out.io.stderr.write(r.stderr);
  if (r.oomKilled) ctx.out.note('dvs: killed: out of memory');
  return exitCodeOf(r);
}

/** `dvs node status [--node N]`: one node's status, with how it isolates DC processes. */
export async function nodeStatus(ctx: Ctx, opts: { node?: number; json: boolean }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const ids = opts.node === undefined ? cluster.nodes.map((n) => n.id) : [nodeById(cluster, opts.node).id];
  const answers = await onEachNode(cluster, ids, 'status', {});
  const rows: NodeStatus[] = answers.flatMap((a) => (a.ok ? [a.value] : []));
  if (opts.json) {
    ctx.out.json({ nodes: rows, unreachable: answers.filter((a) => !a.ok).map((a) => a.node.id) });
    return 0;
  }
  ctx.out.table(
    ['NODE', 'NAME', 'ADDRESS', 'DCS', 'ENDPOINTS', 'ISOLATION', 'CGROUPS', 'DC LAN', 'WHY'],
    rows.map((st) => [
      st.id,
      st.name,
      st.address,
      st.dcs,
      st.endpoints,
      st.isolation?.mode ?? '?',
      st.isolation?.cgroup ?? '?',
      st.isolation ? (st.isolation.lan ? 'yes' : 'no') : '?',
      st.isolation?.reason ?? '',
    ]),
  );
  for (const a of answers) {
    if (!a.ok) ctx.out.note(ctx.out.colors.yellow(`warning: node ${a.node.id}: ${a.error.message}`));
  }
  return 0;
}
