/**
 * The admin RPC a node daemon serves on its local Unix socket (the CLI, and later the REST API, use it).
 * A request is `{id, method, params}`, a response `{id, result}` or `{id, error: WireError}`, both as
 * MessagePack in control frames of the process protocol (src/protocol/proc-frames.ts, op ADMIN / ADMIN_RESULT).
 *
 * Each method's params and result types are listed in {@link AdminMethods}. Without a cluster store, DC
 * configuration is pushed by the CLI to every node of the DC (as the prototype's operator did); with one
 * (`dvs node start --store`), one node writes it to the store and every node applies it from its watch.
 */
import type { DcConfig, DcId, Endpoint, EndpointInfo, NodeId } from '../kernel/types.js';

/** A peer node as a daemon knows it. */
export interface PeerConfig {
  id: NodeId;
  name: string;
  /** host:port of its node-link listener. */
  address: string;
}

/** State of one node link, as `dvs status` shows it. */
export interface LinkInfo {
  node: NodeId;
  name: string;
  address: string;
  /** connecting: never connected yet; up: connected; reconnecting: dropped, within grace; down: declared dead. */
  state: 'connecting' | 'up' | 'reconnecting' | 'down';
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Frames written again after a reconnect. */
  retransmits: number;
  /** Duplicates dropped on receipt. */
  duplicates: number;
  reconnects: number;
  /** Smoothed heartbeat round trip, ms (null before the first). */
  rttMs: number | null;
  /** Frames queued and not yet acknowledged by the peer. */
  unacked: number;
  /** ms since the last state change. */
  sinceMs: number;
}

/** `status` result. */
export interface NodeStatus {
  id: NodeId;
  name: string;
  /** Node-link listen address host:port. */
  address: string;
  /** Local socket path. */
  socket: string;
  /** Metrics URL (http://host:port/metrics) or null if disabled. */
  metrics: string | null;
  pid: number;
  /** Random id of this daemon run; a restarted daemon has a new one. */
  incarnation: string;
  startedAt: number;
  uptimeMs: number;
  version: string;
  links: LinkInfo[];
  dcs: number;
  endpoints: number;
  /** Present when the node runs with a cluster store (`--store`). */
  cluster?: ClusterStatus;
}

/** The cluster store as one node sees it (`status`, when the node runs with `--store`). */
export interface ClusterStatus {
  /** `embedded` (hosted here), `embedded:<node>` (hosted by that node), or `etcd://...`. */
  store: string;
  /** True while this node cannot trust the store (IPC between known endpoints keeps working). */
  degraded: boolean;
  /** Why degraded (one line). */
  reason?: string;
  /** The membership view: every node registered in the store since this node started. */
  members: ClusterMember[];
}

/** One row of the membership view. */
export interface ClusterMember {
  id: NodeId;
  name: string;
  address: string;
  /** From the store's registration and this node's link to it (docs/cluster.md, liveness rule). */
  state: 'up' | 'suspect' | 'down';
  link: 'up' | 'down' | 'unknown';
  /** ms since that incarnation registered (by its clock), null when down. */
  uptimeMs: number | null;
  /** ms since it entered `state` (by our clock). */
  sinceMs: number;
  self: boolean;
}

/** A process started by `dvs run`, as the node tracks it. */
export interface ProcessInfo {
  dc: DcId;
  dcName: string;
  ep: Endpoint;
  name: string;
  pid: number;
  node: NodeId;
  cmd: string[];
  startedAt: number;
  /** null while running. */
  exit: { code: number | null; signal: string | null; at: number } | null;
}

/**
 * One entry of a daemon's event log (src/node/events.ts): what happened (`kind`, e.g. `node.down`,
 * `dc.created`, `proc.exited`), to what (`subject`, e.g. `node2`, `dc demo`, `demo/100`), seen by which node.
 * `seq` grows by one per event within a daemon run (a restarted daemon starts again at 1).
 */
export interface NodeEvent {
  seq: number;
  /** ms since the epoch, by the observing node's clock. */
  time: number;
  kind: string;
  subject: string;
  /** The node that observed and logged it. */
  node: NodeId;
  detail: Record<string, unknown>;
}

/** Params and results of every admin method. */
export interface AdminMethods {
  /** This node's status and links. */
  status: { params: Record<string, never>; result: NodeStatus };
  /**
   * Without a cluster store: create a DC on this node (the CLI calls every node of the DC). With one: write
   * the DC to the store (any node answers for the cluster; every node of the DC applies it from its watch);
   * `config.id` may then be 0 to let the store allocate one.
   */
  'dc.create': { params: { config: DcConfig }; result: DcConfig };
  /** Without a store: remove a DC from this node; its local processes are killed. With one: remove it from
   *  the store (every node applies it); `killed` lists what this node stopped. */
  'dc.remove': { params: { dc: DcId | string }; result: { killed: number[] } };
  /** Store only (ENOTSUP-like EINVAL without one): add `node` to a DC's nodes. Idempotent. */
  'dc.addNode': { params: { dc: DcId | string; node: NodeId }; result: DcConfig };
  /** Store only: remove `node` from a DC's nodes (EINVAL for the last one). Idempotent. */
  'dc.rmNode': { params: { dc: DcId | string; node: NodeId }; result: DcConfig };
  'dc.list': { params: Record<string, never>; result: DcConfig[] };
  /** Spawn a process bound to `ep` of `dc` on this node. Returns once it runs and is bound. */
  'proc.run': {
    params: {
      dc: DcId | string;
      ep: Endpoint;
      name?: string;
      cmd: string[];
      env?: Record<string, string>;
      cwd?: string;
    };
    result: ProcessInfo;
  };
  /** Signal the process bound to `ep` (default SIGTERM, then SIGKILL after `graceMs`). */
  'proc.kill': {
    params: { dc: DcId | string; ep: Endpoint; signal?: string; graceMs?: number };
    result: ProcessInfo;
  };
  /** Processes started on this node (running and recently exited). */
  'proc.list': { params: { dc?: DcId | string }; result: ProcessInfo[] };
  /** Wait until the process of `ep` exits (or `timeoutMs` passes: result.exit stays null). */
  'proc.wait': { params: { dc: DcId | string; ep: Endpoint; timeoutMs?: number }; result: ProcessInfo };
  /** Read the output log of the process of `ep` from byte `offset` (at most `max` bytes). */
  'logs.read': {
    params: { dc: DcId | string; ep: Endpoint; offset: number; max?: number };
    result: { data: Uint8Array; offset: number; running: boolean };
  };
  /** Endpoint table of a DC on this node (local and remote rows). */
  'ep.list': { params: { dc: DcId | string }; result: EndpointInfo[] };
  /** This node's event log after `since` (a seq; default 0), oldest first, at most `limit` (default 1000).
   *  `last` is the newest seq logged so far (pass it as the next `since`). */
  'events.list': { params: { since?: number; limit?: number }; result: { events: NodeEvent[]; last: number } };
  /** Stop this daemon (processes it started are stopped too). */
  'node.shutdown': { params: Record<string, never>; result: { ok: true } };
}

export type AdminMethod = keyof AdminMethods;

/**
 * Method name meaning "the client gave up on the call with id `params.id`" (timeout or abort): the daemon
 * aborts that call's signal so a waiting service (a queued lock, a watch) stops. Answered with null.
 */
export const CANCEL_METHOD = '$cancel';
export const ADMIN_METHODS: readonly AdminMethod[] = [
  'status',
  'dc.create',
  'dc.remove',
  'dc.addNode',
  'dc.rmNode',
  'dc.list',
  'proc.run',
  'proc.kill',
  'proc.list',
  'proc.wait',
  'logs.read',
  'ep.list',
  'events.list',
  'node.shutdown',
];
