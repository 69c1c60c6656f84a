/**
 * `dvs top`: the cluster's performance per node, DC and endpoint, refreshed every interval: host CPU and
 * memory, the daemon's own usage, links (round trip, bytes), and per endpoint messages, bytes, queue depth,
 * send / sendrec latency and its process's CPU and memory. Rates are deltas between two samples.
 * `--once --json` prints one sample (two reads `--interval` apart) for scripts and tests.
 *
 * Each node answers for itself (admin `status` and service `monitor.snapshot`, src/node/metrics.ts); nodes of
 * the cluster this host does not run are asked through one that it does (`node.call`).
 */
import type { MonitorSnapshot } from '../../node/metrics.js';
import type { ClusterNode } from '../../node/options.js';
import type { NodeStatus } from '../../protocol/admin.js';
import { DvsError } from '../../protocol/errors.js';
import { AdminClient } from '../../sdk/admin.js';
import { type ClusterFileOnDisk, requireCluster, sleep } from '../cluster.js';
import { type Ctx, interruptSignal } from '../context.js';
import { findDc } from './dc.js';

export interface TopOptions {
  dc?: string | number;
  once: boolean;
  json: boolean;
  /** ms between samples (default 1000). */
  interval: number;
}

/** One node in a `dvs top` sample. */
export interface TopNode {
  node: number;
  name: string;
  up: boolean;
  error?: string;
  host?: string;
  cpus?: number;
  cpuBusy?: number;
  memTotalBytes?: number;
  memAvailableBytes?: number;
  daemonCpu?: number;
  daemonRssBytes?: number;
  processes?: number;
  endpoints?: number;
  msgsPerSec: number | null;
  bytesPerSec: number | null;
  queued: number;
  links: {
    peer: number;
    state: string;
    rttMs: number | null;
    bytesSent: number;
    bytesReceived: number;
    unacked: number;
  }[];
}

/** One DC in a sample (its endpoints on every node that answered). */
export interface TopDc {
  dc: number;
  name: string;
  endpoints: number;
  sent: number;
  received: number;
  queued: number;
  msgsPerSec: number | null;
  bytesPerSec: number | null;
  cpu: number;
  rssBytes: number;
}

/** One endpoint in a sample. */
export interface TopEndpoint {
  dc: number;
  dcName: string;
  ep: number;
  name: string;
  node: number;
  pid: number;
  flags: string[];
  queued: number;
  sent: number;
  received: number;
  bytesSent: number;
  bytesReceived: number;
  msgsPerSec: number | null;
  bytesPerSec: number | null;
  latency: Record<string, { count: number; avgMs: number; maxMs: number }>;
  cpu: number | null;
  rssBytes: number | null;
}

export interface TopSample {
  time: number;
  intervalMs: number | null;
  nodes: TopNode[];
  dcs: TopDc[];
  endpoints: TopEndpoint[];
}

interface Raw {
  node: number;
  name: string;
  status?: NodeStatus;
  snap?: MonitorSnapshot;
  error?: string;
}

export async function top(ctx: Ctx, opts: TopOptions): Promise<number> {
  const cluster = await requireCluster(ctx.dir());
  const dcFilter = opts.dc === undefined ? undefined : (await findDc(cluster, opts.dc)).id;
  const stop = interruptSignal();
  try {
    let prev = await readAll(cluster);
    let prevAt = Date.now();
    if (!opts.once && !opts.json) draw(ctx, build(prev, undefined, null, dcFilter));
    for (;;) {
      await sleep(opts.interval, stop.signal).catch(() => undefined);
      if (stop.signal.aborted) return 0;
      const cur = await readAll(cluster);
      const now = Date.now();
      const sample = build(cur, prev, now - prevAt, dcFilter);
      if (opts.json) ctx.out.json(sample);
      else draw(ctx, sample);
      if (opts.once) return 0;
      prev = cur;
      prevAt = now;
    }
  } finally {
    stop.dispose();
  }
}

/** Every node's status and snapshot (nodes of other hosts through one of ours). */
async function readAll(cluster: ClusterFileOnDisk): Promise<Raw[]> {
  const local = await Promise.all(cluster.nodes.map((n) => readNode(n)));
  const known = new Set(cluster.nodes.map((n) => n.id));
  const via = cluster.nodes.find((_, i) => local[i]?.status !== undefined);
  const remote: Raw[] = [];
  if (via !== undefined) {
    const peers = new Map<number, string>();
    for (const r of local)
      for (const l of r.status?.links ?? []) if (!known.has(l.node)) peers.set(l.node, l.name);
    remote.push(...(await Promise.all([...peers].map(([id, name]) => readNode(via, id, name)))));
  }
  return [...local, ...remote].sort((a, b) => a.node - b.node);
}

/** Ask `node` about itself, or (with `remote`) about node `remote` through it. */
async function readNode(node: ClusterNode, remote?: number, remoteName?: string): Promise<Raw> {
  const id = remote ?? node.id;
  const out: Raw = { node: id, name: remoteName ?? node.name };
  let c: AdminClient | undefined;
  try {
    c = await AdminClient.connect(node.socket, { timeout: 2000 });
    const client = c;
    const ask = (method: string) =>
      remote === undefined
        ? client.service(method, {}, { timeout: 5000 })
        : client.call('node.call', { node: remote, method, params: {} }, { timeout: 5000 });
    out.status =
      remote === undefined
        ? await client.call('status', {}, { timeout: 5000 })
        : ((await ask('status')) as NodeStatus);
    out.name = out.status.name;
    out.snap = (await ask('monitor.snapshot')) as MonitorSnapshot;
  } catch (e) {
    out.error = DvsError.from(e).message;
  } finally {
    await c?.close().catch(() => undefined);
  }
  return out;
}

/** Turn raw reads into a sample; with `prev`, rates over `dt` ms. */
export function build(cur: Raw[], prev: Raw[] | undefined, dt: number | null, dc?: number): TopSample {
  const key = (e: { dc: number; ep: number }, node: number) => `${node}/${e.dc}/${e.ep}`;
  const before = new Map<string, { msgs: number; bytes: number }>();
  for (const r of prev ?? []) {
    for (const e of r.snap?.endpoints ?? []) {
      before.set(key(e, r.node), { msgs: e.sent + e.received, bytes: e.bytesSent + e.bytesReceived });
    }
  }
  const rate = (now: number, then: number | undefined) =>
    dt === null || dt <= 0 || then === undefined ? null : Math.max(0, Math.round(((now - then) * 1000) / dt));
  const endpoints: TopEndpoint[] = [];
  const nodes: TopNode[] = [];
  for (const r of cur) {
    const eps = (r.snap?.endpoints ?? []).filter((e) => dc === undefined || e.dc === dc);
    let msgs: number | null = 0;
    let bytes: number | null = 0;
    for (const e of eps) {
      const b = before.get(key(e, r.node));
      const m = rate(e.sent + e.received, b?.msgs);
      const y = rate(e.bytesSent + e.bytesReceived, b?.bytes);
      msgs = m === null || msgs === null ? null : msgs + m;
      bytes = y === null || bytes === null ? null : bytes + y;
      endpoints.push({
        dc: e.dc,
        dcName: e.dcName,
        ep: e.ep,
        name: e.name,
        node: r.node,
        pid: e.pid,
        flags: e.flags,
        queued: e.queued,
        sent: e.sent,
        received: e.received,
        bytesSent: e.bytesSent,
        bytesReceived: e.bytesReceived,
        msgsPerSec: m,
        bytesPerSec: y,
        latency: e.latency,
        cpu: e.cpu,
        rssBytes: e.rssBytes,
      });
    }
    const l = r.status?.load;
    nodes.push({
      node: r.node,
      name: r.name,
      up: r.status !== undefined,
      ...(r.error !== undefined ? { error: r.error } : {}),
      ...(l
        ? {
            host: l.host,
            cpus: l.cpus,
            cpuBusy: l.cpuBusy,
            memTotalBytes: l.memTotalBytes,
            memAvailableBytes: l.memAvailableBytes,
            daemonCpu: l.daemonCpu,
            daemonRssBytes: l.daemonRssBytes,
            processes: l.procs.length,
          }
        : {}),
      ...(r.status ? { endpoints: r.status.endpoints } : {}),
      msgsPerSec: r.snap === undefined ? null : msgs,
      bytesPerSec: r.snap === undefined ? null : bytes,
      queued: eps.reduce((s, e) => s + e.queued, 0),
      links: (r.status?.links ?? []).map((k) => ({
        peer: k.node,
        state: k.state,
        rttMs: k.rttMs,
        bytesSent: k.bytesSent,
        bytesReceived: k.bytesReceived,
        unacked: k.unacked,
      })),
    });
  }
  const dcs = new Map<number, TopDc>();
  for (const e of endpoints) {
    let d = dcs.get(e.dc);
    if (d === undefined) {
      d = {
        dc: e.dc,
        name: e.dcName,
        endpoints: 0,
        sent: 0,
        received: 0,
        queued: 0,
        msgsPerSec: 0,
        bytesPerSec: 0,
        cpu: 0,
        rssBytes: 0,
      };
      dcs.set(e.dc, d);
    }
    d.endpoints++;
    d.sent += e.sent;
    d.received += e.received;
    d.queued += e.queued;
    d.msgsPerSec = d.msgsPerSec === null || e.msgsPerSec === null ? null : d.msgsPerSec + e.msgsPerSec;
    d.bytesPerSec = d.bytesPerSec === null || e.bytesPerSec === null ? null : d.bytesPerSec + e.bytesPerSec;
    d.cpu = Math.round((d.cpu + (e.cpu ?? 0)) * 1000) / 1000;
    d.rssBytes += e.rssBytes ?? 0;
  }
  return {
    time: Date.now(),
    intervalMs: dt,
    nodes,
    dcs: [...dcs.values()].sort((a, b) => a.dc - b.dc),
    endpoints: endpoints.sort((a, b) => a.dc - b.dc || a.ep - b.ep),
  };
}

function draw(ctx: Ctx, s: TopSample): void {
  const out = ctx.out;
  if (out.tty) out.io.stdout.write('\x1b[H\x1b[2J');
  const pct = (v: number | undefined) => (v === undefined ? '-' : `${Math.round(v * 100)}%`);
  const per = (v: number | null) => (v === null ? '-' : String(v));
  out.line(
    `dvs top — ${new Date(s.time).toISOString()}${s.intervalMs === null ? '' : `, rates over ${s.intervalMs} ms`}`,
  );
  out.table(
    [
      'NODE',
      'HOST CPU',
      'MEM AVAIL',
      'DAEMON CPU',
      'DAEMON RSS',
      'PROCS',
      'EPS',
      'MSG/S',
      'BYTES/S',
      'QUEUED',
      'LINKS (rtt ms)',
    ],
    s.nodes.map((n) => [
      `${n.node} ${n.name}`,
      n.up ? `${pct(n.cpuBusy)} of ${n.cpus ?? '?'}` : 'down',
      n.memAvailableBytes === undefined ? '-' : mib(n.memAvailableBytes),
      n.daemonCpu === undefined ? '-' : n.daemonCpu.toFixed(2),
      n.daemonRssBytes === undefined ? '-' : mib(n.daemonRssBytes),
      n.processes ?? '-',
      n.endpoints ?? '-',
      per(n.msgsPerSec),
      per(n.bytesPerSec),
      n.queued,
      n.links.map((l) => `${l.peer}:${l.state === 'up' ? (l.rttMs?.toFixed(1) ?? 'up') : l.state}`).join(' '),
    ]),
  );
  if (s.dcs.length > 0) {
    out.table(
      ['DC', 'EPS', 'SENT', 'RECEIVED', 'MSG/S', 'BYTES/S', 'QUEUED', 'CPU', 'RSS'],
      s.dcs.map((d) => [
        `${d.dc} ${d.name}`,
        d.endpoints,
        d.sent,
        d.received,
        per(d.msgsPerSec),
        per(d.bytesPerSec),
        d.queued,
        d.cpu.toFixed(2),
        mib(d.rssBytes),
      ]),
    );
  }
  if (s.endpoints.length > 0) {
    out.table(
      [
        'DC',
        'EP',
        'NAME',
        'NODE',
        'FLAGS',
        'QUEUED',
        'MSG/S',
        'BYTES/S',
        'SENDREC ms (avg/max)',
        'CPU',
        'RSS',
      ],
      s.endpoints.map((e) => {
        const sr = e.latency.sendrec;
        return [
          e.dcName,
          e.ep,
          e.name,
          e.node,
          e.flags.join(',') || '-',
          e.queued,
          per(e.msgsPerSec),
          per(e.bytesPerSec),
          sr && sr.count > 0 ? `${sr.avgMs.toFixed(2)}/${sr.maxMs.toFixed(2)}` : '-',
          e.cpu === null ? '-' : e.cpu.toFixed(2),
          e.rssBytes === null ? '-' : mib(e.rssBytes),
        ];
      }),
    );
  }
}

function mib(b: number): string {
  return `${(b / (1024 * 1024)).toFixed(1)}M`;
}
