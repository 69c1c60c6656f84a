/**
 * Prometheus metrics of one node daemon: a private prom-client Registry (several daemons may share a test
 * process), served over plain HTTP at /metrics. Names follow `dvs_<subsystem>_<what>_<unit>`.
 *
 * Hot-path counters live in the components as plain numbers; the gauges and counters here read them at
 * scrape time (`collect`), so IPC pays nothing for being observed.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { CallId, CallResult, DcId, Endpoint, EndpointInfo, KernelApi, ProcId } from '../kernel/types.js';
import type { LinkInfo } from '../protocol/admin.js';
import { parseHostPort } from '../transport/net.js';
import { kernelWith } from './kernel-view.js';

/** What the metrics read at scrape time. */
export interface MetricsSources {
  nodeId: number;
  links(): LinkInfo[];
  dcs(): number;
  endpoints(): { local: number; remote: number };
  /** Message counters summed over the local endpoints (see EndpointCounters). */
  messages(): { lclSent: number; rmtSent: number; received: number; notifies: number; copyBytes: number };
  processes(): number;
  sessions(): number;
  /** Kernel counters (Kernel.stats): EMOVED bounces and replays, migrations. */
  kernelStats?(): {
    emovedBounces: number;
    emovedReplays: number;
    migrationsOut: number;
    migrationsIn: number;
  };
}

/** Build the registry with every dvs metric of a node. */
export function createRegistry(src: MetricsSources): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ node: String(src.nodeId) });
  collectDefaultMetrics({ register: registry, prefix: 'dvs_process_' });

  const linkGauge = (name: string, help: string, pick: (l: LinkInfo) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: ['peer'],
      registers: [registry],
      collect() {
        this.reset();
        for (const l of src.links()) {
          const v = pick(l);
          if (v !== null) this.set({ peer: String(l.node) }, v);
        }
      },
    });
  const linkCounter = (name: string, help: string, pick: (l: LinkInfo) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['peer'],
      registers: [registry],
      collect() {
        this.reset();
        for (const l of src.links()) this.inc({ peer: String(l.node) }, pick(l));
      },
    });

  linkGauge('dvs_link_up', '1 if the link to the peer is up, 0 otherwise', (l) => (l.state === 'up' ? 1 : 0));
  linkGauge('dvs_link_rtt_seconds', 'Smoothed heartbeat round trip to the peer', (l) =>
    l.rttMs === null ? null : l.rttMs / 1000,
  );
  linkGauge('dvs_link_unacked_frames', 'Frames sent to the peer and not yet acknowledged', (l) => l.unacked);
  linkCounter('dvs_link_frames_sent_total', 'Frames sent to the peer', (l) => l.framesSent);
  linkCounter('dvs_link_frames_received_total', 'Frames received from the peer', (l) => l.framesReceived);
  linkCounter('dvs_link_bytes_sent_total', 'Bytes written to the peer', (l) => l.bytesSent);
  linkCounter('dvs_link_bytes_received_total', 'Bytes read from the peer', (l) => l.bytesReceived);
  linkCounter('dvs_link_retransmits_total', 'Frames written again after a reconnect', (l) => l.retransmits);
  linkCounter('dvs_link_duplicates_total', 'Duplicate frames dropped on receipt', (l) => l.duplicates);
  linkCounter('dvs_link_reconnects_total', 'Reconnections of the link', (l) => l.reconnects);

  new Gauge({
    name: 'dvs_kernel_dcs',
    help: 'DCs configured on this node',
    registers: [registry],
    collect() {
      this.set(src.dcs());
    },
  });
  new Gauge({
    name: 'dvs_kernel_endpoints',
    help: 'Endpoints known on this node, by location',
    labelNames: ['location'],
    registers: [registry],
    collect() {
      const e = src.endpoints();
      this.set({ location: 'local' }, e.local);
      this.set({ location: 'remote' }, e.remote);
    },
  });
  new Gauge({
    name: 'dvs_ipc_messages',
    help: 'Messages sent and received by the endpoints bound on this node now (sent: to this node or another)',
    labelNames: ['what'],
    registers: [registry],
    collect() {
      const m = src.messages();
      this.set({ what: 'sent_local' }, m.lclSent);
      this.set({ what: 'sent_remote' }, m.rmtSent);
      this.set({ what: 'received' }, m.received);
      this.set({ what: 'notifications' }, m.notifies);
    },
  });
  new Gauge({
    name: 'dvs_ipc_vcopy_bytes',
    help: 'Bytes copied by vcopy with an endpoint bound on this node now as the source',
    registers: [registry],
    collect() {
      this.set(src.messages().copyBytes);
    },
  });
  const kernelCounter = (
    name: string,
    help: string,
    pick: (k: ReturnType<NonNullable<MetricsSources['kernelStats']>>) => number,
  ) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        // The kernel's counter is the truth: mirror it (as the link counters do).
        this.reset();
        const k = src.kernelStats?.();
        if (k !== undefined) this.inc(pick(k));
      },
    });
  kernelCounter(
    'dvs_kernel_emoved_bounces_total',
    'Operations bounced with EMOVED (a stale sender, or the inbox of an endpoint that migrated away)',
    (k) => k.emovedBounces,
  );
  kernelCounter(
    'dvs_kernel_emoved_replays_total',
    'Operations replayed at the new location after an EMOVED',
    (k) => k.emovedReplays,
  );
  kernelCounter(
    'dvs_kernel_migrations_out_total',
    'Endpoints migrated away from this node',
    (k) => k.migrationsOut,
  );
  kernelCounter('dvs_kernel_migrations_in_total', 'Endpoints migrated to this node', (k) => k.migrationsIn);
  new Gauge({
    name: 'dvs_node_processes',
    help: 'Processes started by this node (dvs run) and still running',
    registers: [registry],
    collect() {
      this.set(src.processes());
    },
  });
  new Gauge({
    name: 'dvs_node_sessions',
    help: 'Open sessions on the local socket (processes and CLI clients)',
    registers: [registry],
    collect() {
      this.set(src.sessions());
    },
  });
  return registry;
}

/** A tiny HTTP server for /metrics (and /healthz). */
export class MetricsServer {
  private server: http.Server | undefined;
  private bound = '';

  constructor(
    private readonly listen: string,
    private readonly registry: Registry,
  ) {}

  /** host:port actually bound. */
  get address(): string {
    return this.bound;
  }

  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.listen);
    const server = http.createServer((req, res) => {
      if (req.url === '/metrics') {
        this.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': this.registry.contentType });
            res.end(text);
          },
          (e: unknown) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(`metrics failed: ${String(e)}\n`);
          },
        );
      } else if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: try /metrics\n');
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as AddressInfo;
    this.bound = `${a.address}:${a.port}`;
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------- per-endpoint IPC statistics

/** Calls whose duration is a latency worth reporting (a receive's duration is idle time, not latency). */
const TIMED_OPS = ['send', 'sendrec', 'vcopy'] as const;
type TimedOp = (typeof TIMED_OPS)[number];

/** What {@link IpcStats} counts for one local endpoint (since it was bound in this daemon run). */
export interface EndpointIpcStats {
  dc: DcId;
  ep: Endpoint;
  /** Payload bytes sent (send, sendrec, reply, post) and received (receive results and receive-ahead). */
  bytesSent: number;
  bytesReceived: number;
  /** Calls that failed (any op). */
  errors: number;
  /** Per timed op: completed calls, total and largest duration in ms. */
  latency: Record<TimedOp, { count: number; totalMs: number; maxMs: number }>;
}

interface EpStats extends EndpointIpcStats {
  /** Call start times (performance.now) by call id, for the timed ops. */
  pending: Map<CallId, { t: number; op: TimedOp }>;
}

/**
 * Per-endpoint byte counts and call latencies, measured where calls enter and leave the kernel (the daemon
 * wraps the kernel its LocalServer drives and the kernel's `complete` sink): a Map lookup and a clock read
 * per call, nothing per post beyond adding its length. Kept per process session; forgotten at detach.
 */
export class IpcStats {
  private readonly byProc = new Map<ProcId, EpStats>();

  constructor(private readonly kernel: Pick<KernelApi, 'procEndpoint'>) {}

  /** `inner` with call, post, receiveAhead and detach observed (other methods untouched). */
  wrap(inner: KernelApi): KernelApi {
    return kernelWith(inner, {
      call: (now, proc, callId, call) => {
        const s = this.stats(proc);
        if (s !== undefined) {
          if ('payload' in call) s.bytesSent += call.payload.length;
          if (call.op === 'send' || call.op === 'sendrec' || call.op === 'vcopy') {
            s.pending.set(callId, { t: performance.now(), op: call.op });
          }
        }
        inner.call(now, proc, callId, call);
      },
      post: (now, proc, dst, type, payload) => {
        const s = this.stats(proc);
        if (s !== undefined) s.bytesSent += payload.length;
        inner.post(now, proc, dst, type, payload);
      },
      receiveAhead: (now, proc, src, limit) => {
        const got = inner.receiveAhead(now, proc, src, limit);
        if (got.length > 0) {
          const s = this.stats(proc);
          if (s !== undefined) for (const m of got) s.bytesReceived += m.payload.length;
        }
        return got;
      },
      detach: (now, proc) => {
        this.byProc.delete(proc);
        inner.detach(now, proc);
      },
    });
  }

  /** Call `callId` of `proc` completed (the kernel's complete sink). */
  complete(proc: ProcId, callId: CallId, result: CallResult): void {
    const s = this.byProc.get(proc);
    if (s === undefined) return;
    if (!result.ok) s.errors++;
    else if (result.msg !== undefined) s.bytesReceived += result.msg.payload.length;
    const p = s.pending.get(callId);
    if (p === undefined) return;
    s.pending.delete(callId);
    const ms = performance.now() - p.t;
    const l = s.latency[p.op];
    l.count++;
    l.totalMs += ms;
    if (ms > l.maxMs) l.maxMs = ms;
  }

  /** Stats of the endpoints attached now (a copy). */
  list(): EndpointIpcStats[] {
    return [...this.byProc.values()].map(({ pending: _p, latency, ...rest }) => ({
      ...rest,
      latency: {
        send: { ...latency.send },
        sendrec: { ...latency.sendrec },
        vcopy: { ...latency.vcopy },
      },
    }));
  }

  private stats(proc: ProcId): EpStats | undefined {
    let s = this.byProc.get(proc);
    if (s !== undefined) return s;
    const at = this.kernel.procEndpoint(proc);
    if (at === undefined) return undefined;
    s = {
      dc: at.dc,
      ep: at.ep,
      bytesSent: 0,
      bytesReceived: 0,
      errors: 0,
      latency: {
        send: { count: 0, totalMs: 0, maxMs: 0 },
        sendrec: { count: 0, totalMs: 0, maxMs: 0 },
        vcopy: { count: 0, totalMs: 0, maxMs: 0 },
      },
      pending: new Map(),
    };
    this.byProc.set(proc, s);
    return s;
  }
}

/**
 * Per-DC and per-endpoint IPC metrics: messages and queue depths (kernel counters of the local endpoints),
 * bytes and call latencies ({@link IpcStats}). Label cardinality grows with the local endpoints.
 */
export function registerIpcMetrics(
  registry: Registry,
  src: { endpoints(): EndpointInfo[]; ipc: IpcStats },
): void {
  const registers = [registry];
  const ep = (e: { dc: DcId; ep: Endpoint }) => ({ dc: String(e.dc), ep: String(e.ep) });
  new Counter({
    name: 'dvs_endpoint_messages_total',
    help: 'Messages sent and received by a local endpoint',
    labelNames: ['dc', 'ep', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const e of src.endpoints()) {
        this.inc({ ...ep(e), direction: 'sent' }, e.counters.lclSent + e.counters.rmtSent);
        this.inc({ ...ep(e), direction: 'received' }, e.counters.received);
      }
    },
  });
  new Gauge({
    name: 'dvs_endpoint_queue_depth',
    help: "Messages waiting in a local endpoint's inbox",
    labelNames: ['dc', 'ep'],
    registers,
    collect() {
      this.reset();
      for (const e of src.endpoints()) this.set(ep(e), e.queued);
    },
  });
  new Gauge({
    name: 'dvs_dc_queue_depth',
    help: "Messages waiting in the inboxes of a DC's local endpoints",
    labelNames: ['dc'],
    registers,
    collect() {
      this.reset();
      const by = new Map<DcId, number>();
      for (const e of src.endpoints()) by.set(e.dc, (by.get(e.dc) ?? 0) + e.queued);
      for (const [dc, n] of by) this.set({ dc: String(dc) }, n);
    },
  });
  new Counter({
    name: 'dvs_endpoint_bytes_total',
    help: 'Payload bytes sent and received by a local endpoint',
    labelNames: ['dc', 'ep', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const s of src.ipc.list()) {
        this.inc({ ...ep(s), direction: 'sent' }, s.bytesSent);
        this.inc({ ...ep(s), direction: 'received' }, s.bytesReceived);
      }
    },
  });
  new Counter({
    name: 'dvs_endpoint_calls_total',
    help: 'Completed send, sendrec and vcopy calls of a local endpoint',
    labelNames: ['dc', 'ep', 'op'],
    registers,
    collect() {
      this.reset();
      for (const s of src.ipc.list()) {
        for (const op of TIMED_OPS) this.inc({ ...ep(s), op }, s.latency[op].count);
      }
    },
  });
  new Counter({
    name: 'dvs_endpoint_call_duration_seconds_total',
    help: 'Time spent in completed send, sendrec and vcopy calls (divide by dvs_endpoint_calls_total)',
    labelNames: ['dc', 'ep', 'op'],
    registers,
    collect() {
      this.reset();
      for (const s of src.ipc.list()) {
        for (const op of TIMED_OPS) this.inc({ ...ep(s), op }, s.latency[op].totalMs / 1000);
      }
    },
  });
}

/** One local endpoint as `dvs top` shows it: kernel counters, IPC stats, and its process's usage. */
export interface EndpointSnapshot {
  dc: DcId;
  dcName: string;
  ep: Endpoint;
  name: string;
  pid: number;
  flags: string[];
  queued: number;
  pendingNotify: number;
  sent: number;
  received: number;
  notifies: number;
  copyBytes: number;
  bytesSent: number;
  bytesReceived: number;
  errors: number;
  /** Per timed op (send, sendrec, vcopy): completed calls, mean and largest duration, ms. */
  latency: Record<string, { count: number; avgMs: number; maxMs: number }>;
  /** CPU in cores and resident bytes of its process, when this node started it (dvs run). */
  cpu: number | null;
  rssBytes: number | null;
}

/** What the `monitor.snapshot` service returns: one node's view for `dvs top`. */
export interface MonitorSnapshot {
  node: number;
  time: number;
  endpoints: EndpointSnapshot[];
}

/** Build a node's {@link MonitorSnapshot} from its kernel, its IPC stats and its latest load sample. */
export function monitorSnapshot(src: {
  nodeId: number;
  kernel: Pick<KernelApi, 'listDcs' | 'endpoints'>;
  ipc: IpcStats;
  procs: readonly { dc: DcId; ep: Endpoint; cpu: number; rssBytes: number }[];
}): MonitorSnapshot {
  const ipc = new Map(src.ipc.list().map((s) => [`${s.dc}/${s.ep}`, s]));
  const procs = new Map(src.procs.map((p) => [`${p.dc}/${p.ep}`, p]));
  const endpoints: EndpointSnapshot[] = [];
  for (const dc of src.kernel.listDcs()) {
    for (const e of src.kernel.endpoints(dc.id)) {
      if (e.node !== src.nodeId || e.kind === 'remote') continue;
      const k = `${e.dc}/${e.ep}`;
      const s = ipc.get(k);
      const p = procs.get(k);
      const latency: EndpointSnapshot['latency'] = {};
      for (const op of TIMED_OPS) {
        const l = s?.latency[op];
        latency[op] = {
          count: l?.count ?? 0,
          avgMs: l && l.count > 0 ? Math.round((l.totalMs / l.count) * 1000) / 1000 : 0,
          maxMs: l ? Math.round(l.maxMs * 1000) / 1000 : 0,
        };
      }
      endpoints.push({
        dc: e.dc,
        dcName: dc.name,
        ep: e.ep,
        name: e.name,
        pid: e.pid,
        flags: e.flags,
        queued: e.queued,
        pendingNotify: e.pendingNotify,
        sent: e.counters.lclSent + e.counters.rmtSent,
        received: e.counters.received,
        notifies: e.counters.notifies,
        copyBytes: e.counters.copyBytes,
        bytesSent: s?.bytesSent ?? 0,
        bytesReceived: s?.bytesReceived ?? 0,
        errors: s?.errors ?? 0,
        latency,
        cpu: p?.cpu ?? null,
        rssBytes: p?.rssBytes ?? null,
      });
    }
  }
  return { node: src.nodeId, time: Date.now(), endpoints };
}
