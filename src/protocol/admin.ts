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
  /** How this node isolates DC processes (docs/isolation.md); absent on daemons without the wiring. */
  isolation?: IsolationStatus;
  /** Live CPU and memory usage (docs/scheduling.md); absent on daemons without the load monitor. */
  load?: NodeLoad;
}

/**
 * A node's load, sampled by its daemon every second (src/node/scheduler.ts): what placement (`dvs run`
 * without `--node`), `dvs balance` and `dvs top` use. CPU figures are over the last sample interval.
 */
export interface NodeLoad {
  /** The machine (its /etc/machine-id, else its host name): daemons on one host share its CPU and memory. */
  host: string;
  /** CPUs of the host. */
  cpus: number;
  /** Fraction (0..1) of the host's CPU time that was busy. */
  cpuBusy: number;
  /** The host's 1-minute load average. */
  loadAvg1: number;
  memTotalBytes: number;
  /** Memory the host can still give to new work (MemAvailable). */
  memAvailableBytes: number;
  /** The daemon itself: CPU in cores, resident memory in bytes. */
  daemonCpu: number;
  daemonRssBytes: number;
  /** Running processes this node started (`dvs run`, migrations in), with their usage. */
  procs: ProcLoad[];
  /** When sampled (ms since the epoch, this node's clock) and over how long, ms. */
  sampledAt: number;
  intervalMs: number;
}

/** Usage of one process a node started. */
export interface ProcLoad {
  dc: DcId;
  ep: Endpoint;
  pid: number;
  /** CPU in cores (1 = one CPU busy the whole interval). */
  cpu: number;
  rssBytes: number;
}

/** A node's isolation mode, as `status` reports it. */
export interface IsolationStatus {
  /** `container`: namespaces + cgroup limits; `off`: plain processes (no root: development only). */
  mode: 'container' | 'off';
  /** Why this mode (and which cgroup layout was found). */
  reason: string;
  /** Cgroup driver in use. */
  cgroup: 'v1' | 'v2' | 'none';
  cgroupDetail?: string;
  /** Whether this node can attach DCs to a DC LAN (it has an underlay). */
  lan: boolean;
  /** Name prefix of this node's namespaces, cgroups and links. */
  prefix: string;
}

/**
 * DC limits as text, the CLI's flags (`memory: '256M'`, `cpus: '0.5'`, `pids: '128'`, `io-bps: '10M'`,
 * `net-bps: '50M'`); `max` removes a limit (docs/isolation.md, Limits).
 */
export type DcLimitsText = Partial<Record<'memory' | 'cpus' | 'pids' | 'io-bps' | 'net-bps', string>>;

/** Isolation settings of a DC given at `dc.create` (and kept by every node of it). */
export interface DcIsolationSpec {
  limits?: DcLimitsText;
  /**
   * The DC LAN: its prefix, and this node's container address in it (allocated by the caller without a
   * store; with one, each node claims its address in the store and `address` is not given).
   */
  lan?: { prefix: string; address?: string };
}

/** One container of a DC LAN: where it is and how to reach it (pushed to the DC's other nodes). */
export interface LanMember {
  node: NodeId;
  /** The node's underlay address (VXLAN endpoint). */
  underlay: string;
  mac: string;
  /** The container's DC-private address. */
  address: string;
}

/** A DC's isolation on one node (`dc.isolation`, `dc.set`). */
export interface DcIsolationInfo {
  dc: DcId;
  node: NodeId;
  mode: 'container' | 'off';
  /** Limits in force, `key=value,...` (empty: none). */
  limits: string;
  /** This node's container on the DC LAN. */
  lan?: LanMember & { prefix: string };
  /** Whether the container's pid 1 runs (always true when off). */
  running: boolean;
  /** Host pid of the container's pid 1. */
  initPid?: number;
  /** Name of the container's network namespace. */
  netns?: string;
}

/** Usage against limits of a DC on one node (`dc.stats`); numbers as the cgroup reports them. */
export interface DcStatsInfo {
  dc: DcId;
  node: NodeId;
  mode: 'container' | 'off';
  limits: string;
  running: boolean;
  memory?: { usageBytes: number; limitBytes: number | null; maxUsageBytes?: number; oomKills: number };
  cpu?: { usageNs: number; limitCpus: number | null; nrThrottled: number; throttledNs: number };
  pids?: { current: number; limit: number | null; refused: number };
  io?: { readBytes: number; writeBytes: number };
  procs?: number;
  frozen?: boolean;
}

/** What `proc.exec` returns. */
export interface ExecInfo {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  oomKilled: boolean;
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

/**
 * A replicated endpoint's group (`proc.run` with `replicas`; docs/replication.md). In mode `state-machine`
 * every node listed is a replica: `primary` is the lowest (where nodes without a replica route by default),
 * `backups` the others, and `epoch` is bumped at every membership change.
 */
export interface ReplicaGroupInfo {
  mode: 'primary-backup' | 'state-machine';
  /** Node of the primary (the endpoint's location). */
  primary: NodeId;
  /** Nodes of the backups, in promotion order (the first live one takes over). */
  backups: NodeId[];
  /** Bumped at every promotion. */
  epoch: number;
}

/** Result of `proc.migrate`. */
export interface MigrationResult {
  dc: DcId;
  ep: Endpoint;
  from: NodeId;
  to: NodeId;
  pid: { from: number; to: number };
  /** The process declared onMigrate hooks (its state moved); else it was restarted without state. */
  stateful: boolean;
  stateBytes: number;
  /** From the freeze of the process to the endpoint announced at the destination, ms. */
  freezeMs: number;
  totalMs: number;
}

/** A process started by `dvs run`, as the node tracks it. */
export interface ProcessInfo {
  dc: DcId;
  dcName: string;
  ep: Endpoint;
  name: string;
  pid: number;
  /** The pid inside the DC's container (what the process sees and reports when it binds), if isolated. */
  containerPid?: number;
  node: NodeId;
  cmd: string[];
  startedAt: number;
  /**
   * null while running. `oomKilled`: killed by the OOM killer at the DC's memory limit; `reason`: one line
   * for people (`killed: out of memory at 256M`).
   */
  exit: {
    code: number | null;
    signal: string | null;
    at: number;
    oomKilled?: boolean;
    reason?: string;
  } | null;
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
  'dc.create': { params: { config: DcConfig; isolation?: DcIsolationSpec }; result: DcConfig };
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
      /** Replicas in all (primary included), one per node: the primary here, backups on other DC nodes. */
      replicas?: number;
      /** Replication mode with `replicas` (default primary-backup). */
      mode?: 'primary-backup' | 'state-machine';
    };
    /** `replicas` is set for a replicated run: the group (the result's process is the primary). */
    result: ProcessInfo & { replicas?: ReplicaGroupInfo };
  };
  /** Signal the process bound to `ep` (default SIGTERM, then SIGKILL after `graceMs`). */
  'proc.kill': {
    params: { dc: DcId | string; ep: Endpoint; signal?: string; graceMs?: number };
    result: ProcessInfo;
  };
  /**
   * End replicated endpoint `ep` of `dc` everywhere (`dvs kill --replicas`): no failover, no replacement;
   * every replica's process gets `signal` (SIGKILL after `graceMs`). With a store its record goes first.
   * `unreachable`: DC nodes not told (their replicas stop when they see the record gone).
   */
  'proc.killGroup': {
    params: { dc: DcId | string; ep: Endpoint; signal?: string; graceMs?: number };
    result: { processes: ProcessInfo[]; unreachable: NodeId[] };
  };
  /**
   * Live-migrate endpoint `ep` of `dc` to node `to` (any node answers: the call goes to the node where the
   * endpoint lives). Its process must have been started with `proc.run`; its state moves through the SDK's
   * onMigrate hooks, or it is restarted at `to` without state. Nothing queued for it is lost.
   */
  'proc.migrate': {
    params: { dc: DcId | string; ep: Endpoint; to: NodeId; timeoutMs?: number };
    result: MigrationResult;
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
  'ep.list': {
    params: { dc: DcId | string };
    /** Replicated endpoints: `role` on the primary's row and on one row per backup (its node), with the group;
     *  state-machine groups: role `replica` on one row per replica node. */
    result: (EndpointInfo & { role?: 'primary' | 'backup' | 'replica'; replicas?: ReplicaGroupInfo })[];
  };
  /** This node's event log after `since` (a seq; default 0), oldest first, at most `limit` (default 1000).
   *  `last` is the newest seq logged so far (pass it as the next `since`). */
  'events.list': {
    params: { since?: number; limit?: number };
    result: { events: NodeEvent[]; last: number };
  };
  /**
   * Run admin `method` on node `node` (its daemon answers over the node link; this node relays). Lets any node
   * answer for the cluster. `node.call` and `node.shutdown` cannot be forwarded.
   */
  'node.call': {
    params: { node: NodeId; method: string; params?: unknown; timeoutMs?: number };
    result: unknown;
  };
  /** This node's isolation of a DC: limits, LAN place, container. */
  'dc.isolation': { params: { dc: DcId | string }; result: DcIsolationInfo };
  /** Change a DC's limits on this node (absent keys unchanged, `max` removes one). */
  'dc.set': { params: { dc: DcId | string; limits: DcLimitsText }; result: DcIsolationInfo };
  /** Usage against limits of a DC on this node. */
  'dc.stats': { params: { dc: DcId | string }; result: DcStatsInfo };
  /** Freeze every process of a DC on this node (resolves once frozen). */
  'dc.pause': { params: { dc: DcId | string }; result: { ok: true } };
  /** Thaw them. */
  'dc.resume': { params: { dc: DcId | string }; result: { ok: true } };
  /** Without a store: the other containers of the DC LAN (static forwarding entries on this node). */
  'dc.lanPeers': { params: { dc: DcId | string; members: LanMember[] }; result: { ok: true } };
  /** Run a command inside the DC's container on this node and return its output. */
  'proc.exec': {
    params: {
      dc: DcId | string;
      cmd: string[];
      env?: Record<string, string>;
      cwd?: string;
      input?: string;
      timeoutMs?: number;
    };
    result: ExecInfo;
  };
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
  'proc.killGroup',
  'proc.migrate',
  'proc.list',
  'proc.wait',
  'logs.read',
  'ep.list',
  'events.list',
  'node.call',
  'dc.isolation',
  'dc.set',
  'dc.stats',
  'dc.pause',
  'dc.resume',
  'dc.lanPeers',
  'proc.exec',
  'node.shutdown',
];
