/**
 * The admin RPC a node daemon serves on its local Unix socket (the CLI, and later the REST API, use it).
 * A request is `{id, method, params}`, a response `{id, result}` or `{id, error: WireError}`, both as
 * MessagePack in control frames of the process protocol (src/protocol/proc-frames.ts, op ADMIN / ADMIN_RESULT).
 *
 * Each method's params and result types are listed in {@link AdminMethods}. Until the cluster store lands,
 * DC configuration is pushed by the CLI to every node of the DC (as the prototype's operator did).
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

/** Params and results of every admin method. */
export interface AdminMethods {
  /** This node's status and links. */
  status: { params: Record<string, never>; result: NodeStatus };
  /** Create a DC on this node (the CLI calls every node of the DC). */
  'dc.create': { params: { config: DcConfig }; result: DcConfig };
  /** Remove a DC from this node; its local processes are killed. */
  'dc.remove': { params: { dc: DcId | string }; result: { killed: number[] } };
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
  /** Stop this daemon (processes it started are stopped too). */
  'node.shutdown': { params: Record<string, never>; result: { ok: true } };
}

export type AdminMethod = keyof AdminMethods;
export const ADMIN_METHODS: readonly AdminMethod[] = [
  'status',
  'dc.create',
  'dc.remove',
  'dc.list',
  'proc.run',
  'proc.kill',
  'proc.list',
  'proc.wait',
  'logs.read',
  'ep.list',
  'node.shutdown',
];
