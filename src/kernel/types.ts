/**
 * The contract of the DVK kernel: identifiers, calls, results, the events it emits and the frames two
 * kernels exchange. The kernel is a pure state machine: the daemon (or the simulator) feeds it events
 * (process calls, frames from peer nodes, link state) together with the current time, and the kernel
 * answers through the {@link KernelIO} sink it was built with. It never reads a clock, never does I/O and
 * never draws random numbers, so a seeded simulator can replay any run exactly.
 */
import type { ErrorCode } from '../protocol/errors.js';

/** Node id, 0..65535. */
export type NodeId = number;
/** DC id, 1..65535 (0 is never a DC). */
export type DcId = number;
/** Endpoint number, unique within a DC and stable across migration: 0..MAX_ENDPOINT. */
export type Endpoint = number;
/** A process session on this node (one connection of the local socket), assigned by the daemon. */
export type ProcId = number;
/** A call id chosen by the SDK, unique among the session's outstanding calls. */
export type CallId = number;

/** receive() from any source. */
export const ANY: Endpoint = 0x7fffffff;
/** Largest valid endpoint number. */
export const MAX_ENDPOINT: Endpoint = 0x7ffffffe;
/** Endpoints below this are system endpoints (privileged) unless the DC says otherwise. */
export const DEFAULT_SYS_ENDPOINTS = 64;
/** Default largest message payload, bytes (per DC). Bulk data goes by vcopy. */
export const DEFAULT_MAX_PAYLOAD = 4096;
/** Default number of post() messages one sender may have outstanding towards one destination. */
export const DEFAULT_POST_WINDOW = 1024;
/** Largest payload any DC may configure (the frame codecs rely on it). */
export const MAX_PAYLOAD_LIMIT = 1 << 20;

/**
 * How an endpoint is bound on this node.
 * - `self`: a process bound itself (connect() with a DC and endpoint).
 * - `local`: a manager (dvs run) bound it for a PID; the process attaches when it connects.
 * - `remote`: lives on another node; this node only knows where.
 * - `backup`: a local passive copy of a remote primary; treated as remote until promoted.
 * - `replica`: state-machine replica; the same endpoint may be bound as replica on several nodes.
 */
export type BindKind = 'self' | 'local' | 'remote' | 'backup' | 'replica';

/** How a message was sent, as the receiver sees it. */
export type MsgKind = 'send' | 'request' | 'post' | 'notify';

/** Cluster-wide configuration of a DC, identical on every node that hosts it. */
export interface DcConfig {
  id: DcId;
  name: string;
  /** Nodes that may host the DC's processes. */
  nodes: NodeId[];
  /** Largest message payload, bytes. */
  maxPayload: number;
  /** Endpoints below this number are privileged system endpoints. */
  sysEndpoints: number;
  /** post() window per (sender, destination) pair. */
  postWindow: number;
}

/** A message as a process hands it to the kernel. */
export interface Message {
  type: number;
  payload: Uint8Array;
}

/** A message as receive() returns it. */
export interface Received {
  /** The sender's endpoint (for a notification: the notifier). */
  source: Endpoint;
  /** The sender's message type (for a notification: NOTIFY_TYPE). */
  type: number;
  payload: Uint8Array;
  kind: MsgKind;
  /** For notifications: when the (first uncollected) notify was raised, ms since the epoch. */
  timestamp?: number;
}

/** Message type carried by a delivered notification. */
export const NOTIFY_TYPE = -1;

/** A region of a process's memory that it granted for vcopy: `{ep, grant, offset}`. */
export interface GrantRef {
  ep: Endpoint;
  grant: number;
  offset: number;
}

/** Access a grant allows to vcopy: read (as a source), write (as a destination), or both. */
export type GrantAccess = 'r' | 'w' | 'rw';

/** A blocking or completing call from a process. Every call is completed exactly once through KernelIO.complete. */
export type Call =
  | { op: 'send'; dst: Endpoint; type: number; payload: Uint8Array }
  | { op: 'sendrec'; dst: Endpoint; type: number; payload: Uint8Array }
  | { op: 'receive'; src: Endpoint; nowait: boolean }
  | { op: 'receiveRequest'; nowait: boolean }
  | { op: 'reply'; dst: Endpoint; type: number; payload: Uint8Array }
  /** reply(dst), then receiveRequest() in the same call (seL4's ReplyRecv): one round trip per request for a
   *  server loop. Completes with the next request, or with the reply's error (then nothing was received).
   *  A remote reply is not acknowledged to the server: its delivery failure (the client's node died) is lost. */
  | { op: 'replyRecv'; dst: Endpoint; type: number; payload: Uint8Array; nowait: boolean }
  | { op: 'notify'; dst: Endpoint }
  | { op: 'wakeup'; dst: Endpoint }
  | { op: 'grant'; grant: number; size: number; access: GrantAccess }
  | { op: 'revoke'; grant: number }
  | { op: 'vcopy'; src: GrantRef; dst: GrantRef; bytes: number };

/** The outcome of a call. `msg` is set for receive, receiveRequest and sendrec. */
export type CallResult = { ok: true; msg?: Received } | { ok: false; code: ErrorCode; message?: string };

/** Asynchronous events the kernel sends to a process outside of call completions. */
export type ProcEvent =
  /** `n` more post() messages to `dst` may be sent (the receiver consumed them). */
  | { ev: 'credit'; dst: Endpoint; n: number }
  /** post() messages to `dst` failed (not bound, died, not connected, EPERM...). `n` of them were dropped. */
  | { ev: 'postFailed'; dst: Endpoint; code: ErrorCode; n: number }
  /** Read `length` bytes at `offset` of grant `grant` and answer with Kernel.grantData(xfer, ...). */
  | { ev: 'grantRead'; xfer: number; grant: number; offset: number; length: number }
  /** Write `data` at `offset` of grant `grant` and answer with Kernel.grantWritten(xfer, ...). */
  | { ev: 'grantWrite'; xfer: number; grant: number; offset: number; data: Uint8Array };

/**
 * Frames between the kernels of two nodes. The link layer delivers them reliably and in order per node
 * pair, or reports the node down. The receiving kernel re-checks every frame (DC membership of the
 * sending node, endpoint location) and never trusts the sender.
 *
 * The first group (`msg`, `ack`, `reply`, `notify`, `credit`) is the hot path and has a fixed binary
 * layout in src/protocol/node-frames.ts; every other frame travels as MessagePack of this object.
 */
export type NodeFrame =
  /** A message from `src` (on the sending node) to `dst` (on the receiving node). `op` identifies the
   *  sender's pending operation (0 for post). */
  | {
      t: 'msg';
      dc: DcId;
      src: Endpoint;
      dst: Endpoint;
      kind: 'send' | 'request' | 'post';
      op: number;
      type: number;
      payload: Uint8Array;
    }
  /** Outcome of operation `op` of `dst` (the original sender) at `src` (the original destination).
   *  `code` null = taken by the receiver. For EMOVED, `node` is the endpoint's new location. */
  | { t: 'ack'; dc: DcId; src: Endpoint; dst: Endpoint; op: number; code: ErrorCode | null; node?: NodeId }
  /** Reply from server `src` to client `dst` for the client's request operation `op`. */
  | { t: 'reply'; dc: DcId; src: Endpoint; dst: Endpoint; op: number; type: number; payload: Uint8Array }
  /** Notification from `src` to `dst`, raised at `ts` (ms since the epoch). */
  | { t: 'notify'; dc: DcId; src: Endpoint; dst: Endpoint; ts: number }
  /** `dst` (a sender on the receiving node) may post `n` more messages to `src`. */
  | { t: 'credit'; dc: DcId; src: Endpoint; dst: Endpoint; n: number }
  /** Control and bulk frames: see src/kernel for each (`t` names the frame). */
  | ControlFrame;

/** Non-hot-path frames; encoded as MessagePack of the object. */
export type ControlFrame = { t: ControlFrameType; dc: DcId } & Record<string, unknown>;

/** Names of control frames (extend here when adding one; the codec rejects unknown names). */
export const CONTROL_FRAME_TYPES = [
  'replyAck',
  'cancel',
  'wakeup',
  'bind',
  'unbind',
  'sync',
  'syncReq',
  'copyReq',
  'copyData',
  'copyAck',
  'copyDone',
  // Added with the kernel (src/kernel/frames.ts documents every control frame):
  'copyAbort',
  'postFail',
  // Added with the cluster store: RemoteStore/StoreServer bytes between a node and the node hosting the
  // embedded store (`{t:'store', dc:0, c, b}`). The daemon takes these before the kernel sees them.
  'store',
  // Daemon to daemon (dc 0), taken by the daemon before the kernel: `rpc` calls between node daemons
  // (src/node/node-rpc.ts: migration, admin forwarding), `gcs` group communication (src/gcs/).
  'rpc',
  'gcs',
  // A notify forwarded by the node an endpoint migrated away from (`from`: the sender's node).
  'fwdNote',
] as const;
export type ControlFrameType = (typeof CONTROL_FRAME_TYPES)[number];

/** The sink through which the kernel acts on the world. The daemon and the simulator implement it. */
export interface KernelIO {
  /** Complete call `callId` of process `proc`. Called exactly once per call. */
  complete(proc: ProcId, callId: CallId, result: CallResult): void;
  /** An asynchronous event for process `proc`. */
  toProc(proc: ProcId, ev: ProcEvent): void;
  /** A frame for the kernel of node `node` (reliable, ordered per pair, or the node is reported down). */
  toNode(node: NodeId, frame: NodeFrame): void;
  /** A diagnostic for the operator (a rejected frame, a protocol violation); the driver logs it. */
  log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
  /**
   * Optional: an endpoint was bound on this node (self, local, replica; re-announced when its name changes).
   * The daemon records it in the cluster directory. Must not call back into the kernel synchronously.
   */
  onLocalBind?(dc: DcId, ep: Endpoint, info: { kind: BindKind; name: string; pid: number }): void;
  /** Optional: a local endpoint was unbound (exit, detach, unbind, DC removed). Same rule as onLocalBind. */
  onLocalUnbind?(dc: DcId, ep: Endpoint): void;
}

/** What the directory (or a peer's bind frame) says about an endpoint that lives on another node. */
export interface RemoteBinding {
  kind: BindKind;
  name: string;
  pid: number;
}

/** One row of `dvs ep ls`: the prototype's procs table. */
export interface EndpointInfo {
  dc: DcId;
  ep: Endpoint;
  name: string;
  node: NodeId;
  /** OS pid for local endpoints, -1 for remote ones. */
  pid: number;
  kind: BindKind;
  /** State flags, e.g. ['RECEIVING'], ['SENDING'], ['REMOTE'], ['WAITBIND'] (empty = runnable/idle). */
  flags: string[];
  /** Endpoint it is blocked sending to, if any. */
  sendTo: Endpoint | null;
  /** Endpoint it is blocked receiving from (ANY included), if any. */
  getFrom: Endpoint | null;
  /** Messages waiting in its inbox, and pending notifications. */
  queued: number;
  pendingNotify: number;
  counters: EndpointCounters;
}

/** Per-endpoint counters (local endpoints count what they did; remote rows are zero). */
export interface EndpointCounters {
  /** Messages sent to endpoints on this node / on other nodes (send, sendrec, reply, post). */
  lclSent: number;
  rmtSent: number;
  /** Messages received. */
  received: number;
  notifies: number;
  /** vcopy bytes where this endpoint was the source. */
  copyBytes: number;
}

/** Options of an attach (a process session taking an endpoint). */
export interface AttachOptions {
  /** OS pid of the process. */
  pid: number;
  /** Name to register for the endpoint (defaults to the reserved name or `ep<N>`). */
  name?: string;
  /** Bind kind requested; default: `local` if a manager reserved the endpoint for this pid, else `self`. */
  kind?: 'self' | 'replica' | 'backup';
  /** For `backup`: the node of the primary. */
  primaryNode?: NodeId;
}

/**
 * What the daemon and the simulator may call on a kernel. `now` is the current time in ms since the epoch
 * (virtual in the simulator). Methods that validate input throw DvsError synchronously; everything that
 * completes later goes through KernelIO.
 */
export interface KernelApi {
  readonly nodeId: NodeId;

  /** Create a DC on this node (EEXIST if the id or name is taken, EINVAL on a bad config). */
  createDc(cfg: DcConfig): void;
  /** Remove a DC: every local endpoint of it is unbound (blocked peers get died errors). Returns the pids of
   *  its local processes so the daemon can stop them. ENOENT if unknown. */
  removeDc(now: number, dc: DcId): number[];
  /** DCs known on this node. */
  listDcs(): DcConfig[];
  /** DC by id or name, or undefined. */
  findDc(idOrName: DcId | string): DcConfig | undefined;

  /** A manager (dvs run) binds `ep` for the process `pid` before it connects (bind kind `local`). */
  reserve(now: number, dc: DcId, ep: Endpoint, pid: number, name?: string): void;
  /** Process session `proc` takes endpoint `ep` of `dc` (EBOUND, ENOENT, EINVAL, EPERM). */
  attach(now: number, proc: ProcId, dc: DcId, ep: Endpoint, opts: AttachOptions): void;
  /** The session closed or the process exited: unbind its endpoint, fail its calls, wake peers with died errors. */
  detach(now: number, proc: ProcId): void;
  /** Unbind a local endpoint (the process of a reserved endpoint exited, or an operator killed it). */
  unbind(now: number, dc: DcId, ep: Endpoint): void;

  /** A call from process `proc`; completed exactly once through KernelIO.complete. */
  call(now: number, proc: ProcId, callId: CallId, call: Call): void;
  /** Cancel a pending call (timeout or AbortSignal). If it already completed, nothing happens. */
  cancel(now: number, proc: ProcId, callId: CallId, reason: 'ETIMEDOUT' | 'EABORTED'): void;
  /** post(): asynchronous send; failures come back as ProcEvent `postFailed`, consumption as `credit`. */
  post(now: number, proc: ProcId, dst: Endpoint, type: number, payload: Uint8Array): void;
  /**
   * Receive-ahead (the post() fast path): take up to `limit` more posts matching `src` (or ANY) from the head
   * of the endpoint's inbox, stopping at the first pending notification, wake-up, or message that is not a
   * post. Each counts as received (credits go back to its sender). Returns nothing while the session has a
   * blocking call pending. Sends and requests are never taken ahead: their rendezvous completes only when the
   * application receives them.
   */
  receiveAhead(now: number, proc: ProcId, src: Endpoint, limit: number): Received[];
  /** Answer to a `grantRead` event: the bytes, or an error code. */
  grantData(now: number, proc: ProcId, xfer: number, data: Uint8Array | ErrorCode): void;
  /** Answer to a `grantWrite` event. */
  grantWritten(now: number, proc: ProcId, xfer: number, code: ErrorCode | null): void;

  /** The link to `node` is up (first time, or after it was declared down). The kernel sends its sync.
   *  Idempotent: a repeat only sends the sync again, which the peer applies as a replacement. */
  nodeUp(now: number, node: NodeId): void;
  /** `node` is declared dead (or restarted): every operation waiting on it fails with ENOTCONN.
   *  Idempotent: membership and the link layer may both report the same death. */
  nodeDown(now: number, node: NodeId): void;
  /** A frame from the kernel of `node`. Checked before use; a bad frame is logged and dropped (or nacked). */
  fromNode(now: number, node: NodeId, frame: NodeFrame): void;

  /** Rows of `dvs ep ls` for a DC. */
  endpoints(dc: DcId): EndpointInfo[];
  /** The endpoint bound to session `proc`, if attached. */
  procEndpoint(proc: ProcId): { dc: DcId; ep: Endpoint } | undefined;
}

/**
 * What the daemon calls on a kernel when the node runs with a cluster store (DcRegistry and Directory
 * watches). Kept apart from {@link KernelApi} so drivers and fakes without a store need not implement it;
 * the real Kernel implements both.
 */
export interface KernelClusterApi {
  /**
   * Apply a new configuration of a hosted DC (same id and name; node set and limits may change). Remote
   * endpoints at nodes no longer in the DC are unbound (peers waiting on them get died errors). ENOENT if
   * unknown, EINVAL on a bad config or one that no longer includes this node (use removeDc).
   */
  updateDc(now: number, cfg: DcConfig): void;
  /**
   * The cluster directory says `ep` of `dc` is bound at `node` (another node of the DC): the same knowledge
   * a `bind` frame carries. Idempotent. Ignored for an unknown DC (the daemon replays the directory when the
   * DC arrives), this node, and (logged) a node outside the DC or an endpoint bound here. A frame that
   * reaches a stale location is still bounced with EMOVED.
   */
  learnRemote(now: number, dc: DcId, ep: Endpoint, node: NodeId, info: RemoteBinding): void;
  /**
   * The cluster directory says `ep` of `dc` is no longer bound at `node`: as an `unbind` frame from it.
   * Idempotent; ignored unless this node knows `ep` at `node`.
   */
  forgetRemote(now: number, dc: DcId, ep: Endpoint, node: NodeId): void;
}

/** What moves with a migrating endpoint besides its process's own state (see {@link KernelMigrationApi}). */
export interface MigrationCarry {
  /** Pending (uncollected) notifications: source endpoint and the first notify's timestamp. */
  notes: [Endpoint, number][];
  /** A wakeup() that arrived while it was not receiving (the next receive(ANY) fails with EWOKENUP). */
  wokenUp: boolean;
}

/**
 * Live migration of an endpoint from node S to node D (driven by the daemons, DESIGN.md §7):
 * 1. D `migrateIn`: the endpoint is reserved here as a local endpoint waiting for its new process (not
 *    announced: the rest of the DC still sends to S). Messages reaching D for it queue here.
 * 2. S `migrateOut` (the commit point): the endpoint becomes a remote entry at D. Everything queued for it at S
 *    goes to D: local senders' calls are re-sent there, remote senders get EMOVED with D and replay there
 *    (sends, requests and posts alike), frames arriving later are bounced the same way, notifications are
 *    forwarded. Refused (EBUSY) while its process is inside a call, serving a request or copying: a sendrec
 *    in progress is never split.
 * 3. D `migrateActivate`: the endpoint is announced at D (peers re-point; their EMOVED replays go here). The
 *    onLocalBind hook is not called: the daemon moves the directory entry itself.
 * `migrateAbort` at D undoes step 1 (before S committed): what queued there goes back to S.
 */
export interface KernelMigrationApi {
  /** Calling it again while the reservation waits for its process only sets the pid. */
  migrateIn(now: number, dc: DcId, ep: Endpoint, pid: number, carry: MigrationCarry, name?: string): void;
  migrateOut(now: number, dc: DcId, ep: Endpoint, to: NodeId): MigrationCarry;
  /** `carry` is what migrateOut returned at the source (notifications raised here, a pending wakeup). */
  migrateActivate(now: number, dc: DcId, ep: Endpoint, carry?: MigrationCarry): void;
  migrateAbort(now: number, dc: DcId, ep: Endpoint, back: NodeId): void;
}

/**
 * Primary-backup failover of an endpoint (driven by the daemons, docs/replication.md). Every node of the DC
 * marks the endpoint replicated; from then on losing its primary (its node declared down, its process
 * unbound, a send bounced with EDSTDIED / ENOTBOUND by the old primary's node) does not fail the callers
 * blocked on it: their send/sendrec calls are held (flag FAILOVER in `dvs ep ls`) until a new primary is
 * known here (a `bind` or `sync` from its node, the directory, or a local promotion), then replayed there,
 * requests already taken by the old primary included (the server deduplicates them: see the SDK's request
 * ids). Posts and notifications are not held: they fail as for any endpoint.
 */
export interface KernelReplicationApi {
  /**
   * Mark `ep` of `dc` replicated (on) or not (off). Off fails the calls held for it (EDSTDIED): the group is
   * gone. ENOENT for an unknown DC.
   */
  setReplicated(now: number, dc: DcId, ep: Endpoint, on: boolean): void;
  /**
   * The local backup of `ep` becomes its primary: the entry turns into a local endpoint of the attached
   * backup process, is announced to the DC (peers re-point and replay their held calls here), and the calls
   * of local callers (held, or sent to the old primary) are queued here. EINVAL unless a backup process is
   * attached here for `ep`.
   */
  promote(now: number, dc: DcId, ep: Endpoint): void;
}
