/** Shapes of the API answers the dashboard reads (see src/api/ops.ts and src/protocol/admin.ts). */
export interface LinkInfo {
  node: number;
  name: string;
  address: string;
  state: 'connecting' | 'up' | 'reconnecting' | 'down';
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  retransmits: number;
  duplicates: number;
  reconnects: number;
  rttMs: number | null;
  unacked: number;
  sinceMs: number;
}

export interface NodeRow {
  id: number;
  name: string;
  state: 'up' | 'down';
  address: string;
  reachable: boolean;
  self: boolean;
  pid: number | null;
  uptimeMs: number | null;
  version: string | null;
  dcs: number | null;
  endpoints: number | null;
  links: LinkInfo[];
  messages: { sent: number; received: number } | null;
  error?: string;
  load?: NodeLoad;
}

/** A node's sampled load (NodeStatus.load). */
export interface NodeLoad {
  host: string;
  cpus: number;
  cpuBusy: number;
  loadAvg1: number;
  memTotalBytes: number;
  memAvailableBytes: number;
  daemonCpu: number;
  daemonRssBytes: number;
}

export interface DcRow {
  id: number;
  name: string;
  nodes: number[];
  maxPayload: number;
  sysEndpoints: number;
  postWindow: number;
  on: number[];
  endpoints: number;
}

export interface ClusterView {
  self: number;
  time: number;
  store: { name: string; degraded: boolean; reason?: string } | null;
  nodes: NodeRow[];
  dcs: DcRow[];
  messages: { sent: number; received: number };
}

export interface EndpointInfo {
  dc: number;
  ep: number;
  name: string;
  node: number;
  pid: number;
  kind: string;
  flags: string[];
  sendTo: number | null;
  getFrom: number | null;
  queued: number;
  pendingNotify: number;
  counters: { lclSent: number; rmtSent: number; received: number; notifies: number; copyBytes: number };
  /** Replicated endpoints: primary or backup row. */
  role?: 'primary' | 'backup';
}

export interface ProcessInfo {
  dc: number;
  dcName: string;
  ep: number;
  name: string;
  pid: number;
  node: number;
  cmd: string[];
  startedAt: number;
  exit: {
    code: number | null;
    signal: string | null;
    at: number;
    oomKilled?: boolean;
    reason?: string;
  } | null;
}

/** An answer from every node of a DC (`/dcs/{dc}/isolation`, `/stats`, `/limits`). */
export interface PerNodeView<T> {
  dc: string;
  dcId: number;
  nodes: T[];
  unreachable: { node: number; code: string; message: string }[];
}

export interface DcIsolationInfo {
  dc: number;
  node: number;
  mode: 'container' | 'off';
  limits: string;
  lan?: { node: number; underlay: string; mac: string; address: string; prefix: string };
  running: boolean;
  initPid?: number;
  netns?: string;
}

export interface DcStatsInfo {
  dc: number;
  node: number;
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

export interface MigrationResult {
  dc: number;
  ep: number;
  from: number;
  to: number;
  stateful: boolean;
  stateBytes: number;
  freezeMs: number;
  totalMs: number;
}

/** A process group as `/dcs/{dc}/groups` merges it. */
export interface GroupRow {
  name: string;
  view: {
    id: { epoch: number; coord: number; inc: number; seq: number };
    members: { node: number; ep: number }[];
  } | null;
  behind: number[];
  local: { node: number; ep: number; backlog: number }[];
  sent: number;
  delivered: number;
  views: number;
}

export interface NodeEvent {
  seq: number;
  time: number;
  kind: string;
  subject: string;
  node: number;
  detail: Record<string, unknown>;
}
