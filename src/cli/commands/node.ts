/** `dvs node start`: one node daemon in the foreground until SIGINT/SIGTERM. */
import type { NodeOptions } from '../../node/options.js';
import { storeFromSeed } from '../../node/store-spec.js';
import type { PeerConfig } from '../../protocol/admin.js';
import { dvsError } from '../../protocol/errors.js';
import { tlsPathsIn } from '../../security/paths.js';
import type { Ctx } from '../context.js';
import { interruptSignal } from '../context.js';

export interface NodeStartOptions {
  nodeId: number;
  listen: string;
  socket: string;
  data: string;
  name?: string;
  peers?: PeerConfig[];
  metrics?: string;
  heartbeatMs?: number;
  deadAfterMs?: number;
  logLevel?: string;
  logFile?: string;
  /** `embedded`, `embedded:<node>` or `etcd://h1:2379,...` (see NodeOptions.store). */
  store?: string;
  /**
   * With `store: 'embedded'`: the node-link address (HOST:PORT) of the node hosting the embedded store;
   * this node then uses it (`embedded:<that node's id>`, found in `peers`) instead of hosting one.
   */
  seed?: string;
  /** Mutual TLS on node links with DIR/ca.crt, DIR/node.crt, DIR/node.key (written by dvs node join). */
  tlsDir?: string;
  /** REST API and dashboard address (docs/api.md). */
  api?: string;
  apiTokenFile?: string;
  apiInsecureLoopback?: boolean;
  /** HTTPS API with the --tls-dir credentials: `auto` (default: when there are some), `on`, `off`. */
  apiTls?: 'auto' | 'on' | 'off';
  /** This node holds the cluster CA: its API serves the network join (`dvs node join --via`). */
  caDir?: string;
  /** DC isolation: containers when root (`auto`, the default) or plain processes (`off`). */
  isolation?: 'auto' | 'off';
}

/** Builds the daemon's options from the command line (pure; exported for tests). EINVAL for a bad --seed. */
export function nodeOptionsOf(o: NodeStartOptions): NodeOptions {
  const store = o.seed === undefined ? o.store : seededStore(o, o.seed);
  return {
    nodeId: o.nodeId,
    listen: o.listen,
    socket: o.socket,
    dataDir: o.data,
    // A node never links to itself, even if the shared --peers list names it.
    peers: (o.peers ?? []).filter((p) => p.id !== o.nodeId),
    ...(o.name !== undefined ? { name: o.name } : {}),
    ...(o.metrics !== undefined ? { metrics: o.metrics } : {}),
    ...(o.heartbeatMs !== undefined ? { heartbeatMs: o.heartbeatMs } : {}),
    ...(o.deadAfterMs !== undefined ? { deadAfterMs: o.deadAfterMs } : {}),
    ...(o.logLevel !== undefined ? { logLevel: o.logLevel } : {}),
    ...(o.logFile !== undefined ? { logFile: o.logFile } : {}),
    ...(store !== undefined ? { store } : {}),
    ...(o.tlsDir !== undefined ? { tls: tlsPathsIn(o.tlsDir) } : {}),
    ...(o.api !== undefined ? { api: o.api } : {}),
    ...(o.apiTokenFile !== undefined ? { apiTokenFile: o.apiTokenFile } : {}),
    ...(o.apiInsecureLoopback ? { apiInsecureLoopback: true } : {}),
    ...(o.apiTls !== undefined ? { apiTls: o.apiTls } : {}),
    ...(o.caDir !== undefined ? { caDir: o.caDir } : {}),
    ...(o.isolation !== undefined ? { isolation: o.isolation } : {}),
  };
}

/** `--store embedded --seed HOST:PORT` → `embedded:<id of the peer at HOST:PORT>`. */
function seededStore(o: NodeStartOptions, seed: string): string {
  if (o.store !== 'embedded') {
    throw dvsError(
      'EINVAL',
      `--seed goes with --store embedded (got ${o.store === undefined ? 'no --store' : `--store ${o.store}`})`,
    );
  }
  return storeFromSeed(seed, o.peers ?? [], o.nodeId, o.listen);
}

export async function nodeStart(ctx: Ctx, o: NodeStartOptions): Promise<number> {
  // Installed before start so a signal during start-up still stops the daemon cleanly.
  const interrupt = interruptSignal();
  try {
    // Before loading the daemon: a bad --seed is reported at once.
    const opts = nodeOptionsOf(o);
    // Loaded on demand: other commands should not pay for the daemon's imports.
    const { startNode } = await import('../../node/daemon.js');
    const daemon = await startNode(opts);
    ctx.out.note(
      `dvs node ${o.nodeId} running (pid ${process.pid}); links on ${o.listen}, socket ${o.socket}`,
    );
    await new Promise<void>((resolve) => {
      if (interrupt.signal.aborted) resolve();
      interrupt.signal.addEventListener('abort', () => resolve(), { once: true });
      // node.shutdown from the admin socket stops the daemon from inside: leave when it has.
      void daemon.stopped.then(resolve, resolve);
    });
    await daemon.stop();
    // Safety net: a handle someone forgot to close must not keep a stopped daemon alive (dvs down would
    // have to SIGKILL it). Unref'd, so a clean exit is not delayed.
    setTimeout(() => process.exit(0), 2000).unref();
    return 0;
  } finally {
    interrupt.dispose();
  }
}
