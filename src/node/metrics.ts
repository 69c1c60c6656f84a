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
import type { LinkInfo } from '../protocol/admin.js';
import { parseHostPort } from '../transport/net.js';

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
