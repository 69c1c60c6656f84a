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
  exit: { code: number | null; signal: string | null; at: number } | null;
}

export interface NodeEvent {
  seq: number;
  time: number;
  kind: string;
  subject: string;
  node: number;
  detail: Record<string, unknown>;
}
