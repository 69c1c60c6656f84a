/** `dvs status`: every node of the cluster and its links, and the membership seen in the cluster store. */
import type { ClusterStatus, IsolationStatus, LinkInfo } from '../../protocol/admin.js';
import { callEach, requireCluster } from '../cluster.js';
import type { Ctx } from '../context.js';
import { formatDuration } from '../parse.js';

/** One node in `dvs status --json`. */
export interface StatusRow {
  id: number;
  name: string;
  /** up: the daemon answers on its socket; down: it does not. */
  state: 'up' | 'down';
  address: string;
  pid: number;
  uptimeMs: number | null;
  dcs: number | null;
  endpoints: number | null;
  links: LinkInfo[];
  /** With a cluster store: the store, whether this node is degraded, and its membership view. */
  cluster?: ClusterStatus;
  /** How the node isolates DC processes (containers and cgroup driver, or off). */
  isolation?: IsolationStatus;
}

export async function status(ctx: Ctx, opts: { json: boolean; timeoutMs: number }): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const answers = await callEach(cluster.nodes, 'status', {}, opts.timeoutMs);
  const nodes: StatusRow[] = answers.map((a) =>
    a.ok
      ? {
          id: a.value.id,
          name: a.value.name,
          state: 'up',
          address: a.value.address,
          pid: a.value.pid,
          uptimeMs: a.value.uptimeMs,
          dcs: a.value.dcs,
          endpoints: a.value.endpoints,
          links: a.value.links,
          ...(a.value.cluster ? { cluster: a.value.cluster } : {}),
          ...(a.value.isolation ? { isolation: a.value.isolation } : {}),
        }
      : {
          id: a.node.id,
          name: a.node.name,
          state: 'down',
          address: a.node.address,
          pid: a.node.pid,
          uptimeMs: null,
          dcs: null,
          endpoints: null,
          links: [],
        },
  );
  const { out } = ctx;
  // The membership view of the first node that answers with one (every node has its own judgement; the
  // store is the authority on who is registered).
  const viewer = nodes.find((n) => n.cluster !== undefined);
  if (opts.json) {
    out.json({
      dir: ctx.dir(),
      nodes,
      ...(viewer?.cluster ? { cluster: { ...viewer.cluster, seenBy: viewer.id } } : {}),
    });
    return 0;
  }
  const c = out.colors;
  out.table(
    ['NODE', 'NAME', 'STATE', 'ADDRESS', 'PID', 'UPTIME', 'DCS', 'EPS', 'LINKS UP', 'ISOLATION'],
    nodes.map((n) => [
      n.id,
      n.name,
      n.state === 'up' ? c.green('up') : c.red('down'),
      n.address,
      n.pid,
      n.uptimeMs === null ? '-' : formatDuration(n.uptimeMs),
      n.dcs ?? '-',
      n.endpoints ?? '-',
      n.state === 'up' ? `${n.links.filter((l) => l.state === 'up').length}/${n.links.length}` : '-',
      n.isolation === undefined
        ? '-'
        : n.isolation.mode === 'off'
          ? c.yellow('off')
          : `containers, cgroup ${n.isolation.cgroup}`,
    ]),
  );
  for (const n of nodes) {
    if (n.isolation?.mode === 'off') {
      out.note(c.yellow(`note: node ${n.id} runs processes without isolation: ${n.isolation.reason}`));
    }
  }
  if (viewer?.cluster) {
    const cl = viewer.cluster;
    out.line('');
    out.line(
      `cluster store ${cl.store}: ${cl.degraded ? c.red(`degraded (${cl.reason ?? 'unknown'})`) : c.green('ok')}; members as node ${viewer.id} sees them`,
    );
    out.table(
      ['MEMBER', 'NAME', 'STATE', 'LINK', 'ADDRESS', 'UPTIME', 'SINCE'],
      cl.members.map((m) => [
        m.id,
        m.name,
        m.state === 'up' ? c.green('up') : m.state === 'down' ? c.red('down') : c.yellow(m.state),
        m.self ? '-' : m.link,
        m.address,
        m.uptimeMs === null ? '-' : formatDuration(m.uptimeMs),
        formatDuration(m.sinceMs),
      ]),
    );
    for (const n of nodes) {
      if (n.cluster?.degraded && n.id !== viewer.id) {
        out.note(
          c.yellow(`warning: node ${n.id} is degraded: ${n.cluster.reason ?? 'cluster store unreachable'}`),
        );
      }
    }
  }
  const links = nodes.flatMap((n) => n.links.map((l) => ({ from: n.id, l })));
  if (links.length > 0) {
    out.line('');
    out.table(
      ['NODE', 'PEER', 'STATE', 'RTT', 'SENT', 'RECV', 'UNACKED', 'RETX', 'DUPS', 'RECONN', 'SINCE'],
      links.map(({ from, l }) => [
        from,
        `${l.node} (${l.address})`,
        l.state === 'up' ? c.green(l.state) : l.state === 'down' ? c.red(l.state) : c.yellow(l.state),
        l.rttMs === null ? '-' : `${l.rttMs.toFixed(2)}ms`,
        l.framesSent,
        l.framesReceived,
        l.unacked,
        l.retransmits,
        l.duplicates,
        l.reconnects,
        formatDuration(l.sinceMs),
      ]),
    );
  }
  return 0;
}
