/**
 * Options of a node daemon (`dvs node start`), and the layout of a local cluster's state directory
 * (`dvs up --dir DIR`).
 *
 * State directory:
 * ```
 * DIR/cluster.json            ClusterFile: the nodes of the local cluster (written by dvs up)
 * DIR/api-token               the REST API bearer token (mode 0600, written by dvs up)
 * DIR/node<N>/dvk.sock        node N's local socket (processes and the CLI)
 * DIR/node<N>/daemon.log      node N's structured log (pino JSON lines)
 * DIR/node<N>/daemon.pid      node N's daemon pid
 * DIR/node<N>/logs/<dc>-<ep>.log   output of processes started by dvs run
 * DIR/node<N>/store/           the embedded cluster store, on the node that hosts it (--store embedded)
 * DIR/ca/                      the cluster CA: ca.crt, ca.key (0600), tokens.json (dvs ca init; docs/security.md)
 * DIR/node<N>/tls/             node N's ca.crt, node.crt, node.key (0600) (dvs node join, dvs up --tls)
 * ```
 */
import type { NodeId } from '../kernel/types.js';
import type { PeerConfig } from '../protocol/admin.js';

export interface NodeOptions {
  nodeId: NodeId;
  /** Defaults to `node<id>`. */
  name?: string;
  /** host:port for node links (port 0 = any; status reports the bound one). */
  listen: string;
  /** Local Unix socket path for processes and the CLI. */
  socket: string;
  /** Directory for this node's files (logs of processes, state). */
  dataDir: string;
  /** Other nodes of the cluster. */
  peers: PeerConfig[];
  /** host:port of the Prometheus /metrics endpoint; omitted = no metrics listener. */
  metrics?: string;
  /** Heartbeat period on every link, ms (default 500). */
  heartbeatMs?: number;
  /** A peer unreachable this long is declared dead, ms (default 3000). */
  deadAfterMs?: number;
  /** pino level (default info). */
  logLevel?: string;
  /** Log destination file (default: stderr). */
  logFile?: string;
  /**
   * Mutual TLS 1.3 on node links (docs/security.md): paths of the cluster CA certificate, this node's
   * certificate (CN node-<id>) and its private key (mode 0600). Omitted: plain TCP links.
   */
  tls?: { ca: string; cert: string; key: string };
  /**
   * Cluster store (omitted: none; DCs are pushed to every node and endpoint locations travel only as link
   * frames, as before the store existed):
   * - `embedded`: this node hosts an EmbeddedStore in `<dataDir>/store` and serves it over its node links;
   * - `embedded:<nodeId>`: the store is hosted by that node (a peer), reached over the node link;
   * - `etcd://h1:2379,h2:2379,...`: an etcd cluster.
   */
  store?: string;
  /**
   * With a store: how long start() waits for a previous incarnation's registration of this node id to
   * expire (a restart after a crash) before refusing with EEXIST, ms. Default: the lease TTL + 1 s.
   */
  storeTakeoverWaitMs?: number;
  /**
   * DC isolation (docs/isolation.md): `auto` (default) runs `dvs run` processes in their DC's container
   * when the daemon is root; `off` runs them as plain processes (also with DVS_ISOLATION=off).
   */
  isolation?: 'auto' | 'off';
  /** Name prefix of this node's namespaces, cgroups and links (default: from the data dir). */
  isolationPrefix?: string;
  /** DC LAN underlay: `auto` (the interface of the listen address, default), `off`, or explicit. */
  lanUnderlay?: { dev: string; localIp: string } | 'auto' | 'off';
  /** host:port of the REST API and dashboard (docs/api.md); omitted = no API server. */
  api?: string;
  /** The API's bearer token. Else read from `apiTokenFile`, else `DVS_API_TOKEN`. */
  apiToken?: string;
  /** File holding the API token (`dvs up` writes DIR/api-token, mode 0600). */
  apiTokenFile?: string;
  /** Development mode, explicit only: loopback clients of the API need no token. */
  apiInsecureLoopback?: boolean;
  /**
   * HTTPS for the API with this node's `tls` credentials (docs/api.md): `auto` (default) exactly when the
   * node has `tls`, `on` (EINVAL at start without `tls`), `off` (plain HTTP).
   */
  apiTls?: 'auto' | 'on' | 'off';
  /**
   * The cluster CA directory, on the node that holds it (`dvs ca init`): its API then serves the network
   * join (`/api/v1/join`, docs/security.md). Needs `api`.
   */
  caDir?: string;
}

/** DIR/cluster.json, written by `dvs up`, read by every CLI command. */
export interface ClusterFile {
  version: 1;
  createdAt: number;
  nodes: ClusterNode[];
  /** Cluster store of every node, as `dvs up --store` set it (`embedded` means node 0 hosts it); omitted: none. */
  store?: string;
}

export interface ClusterNode {
  id: NodeId;
  name: string;
  /** Node-link address host:port. */
  address: string;
  /** Local socket path (absolute). */
  socket: string;
  /** host:port of /metrics. */
  metrics: string;
  /** Node data dir (absolute). */
  dataDir: string;
  /** Daemon pid (as started by dvs up). */
  pid: number;
  /** host:port of its REST API and dashboard (dvs up gives every node one on 127.0.0.1). */
  api?: string;
  /** The API serves HTTPS: path of the cluster CA certificate its clients verify it against. */
  apiCa?: string;
}
