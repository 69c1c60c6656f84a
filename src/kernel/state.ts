/**
 * Internal state of the DVK kernel: DCs, endpoint entries, queued messages, process sessions and their
 * pending calls. Plain classes with fixed shapes so V8 keeps them monomorphic on the hot path; nothing here
 * is exported outside src/kernel.
 */
import type { BindKind, CallId, DcConfig, Endpoint, GrantAccess, NodeId, ProcId } from './types.js';

/** "No endpoint" in the wait-for fields. Never a valid endpoint (those are >= 0). */
export const NONE = -1;

/** A DC as this node knows it. */
export class DcState {
  /** Replaced as a whole by Kernel.updateDc (the id and name never change). */
  cfg: DcConfig;
  nodes: ReadonlySet<NodeId>;
  /** Every bound endpoint this node knows of: local ones and remote ones (learned from peers). */
  readonly eps = new Map<Endpoint, Ep>();
  /** Endpoints replicated primary-backup (Kernel.setReplicated): losing the primary holds their callers. */
  readonly replicated = new Set<Endpoint>();
  /** Replicated endpoints whose primary is lost and no successor is known yet: the calls held for each. */
  readonly failover = new Map<Endpoint, PendingCall[]>();

  constructor(cfg: DcConfig) {
    this.cfg = cfg;
    this.nodes = new Set(cfg.nodes);
  }
}

/** Per-endpoint counters, as EndpointInfo shows them. */
export class Counters {
  lclSent = 0;
  rmtSent = 0;
  received = 0;
  notifies = 0;
  copyBytes = 0;
}

/** Receiver-side post() bookkeeping for one (source, destination) pair. */
export class PostIn {
  /** Posts from the source still queued in the destination's inbox. */
  queued = 0;
  /** Posts consumed whose credits have not been returned to the sender yet. */
  owed = 0;
}

/**
 * One endpoint entry of a DC. Local entries (`self`, `local`, `replica`) own an inbox and are driven by a
 * process session; remote entries (`remote`, and `backup`, which routes like a remote) only record where
 * the endpoint lives plus what this node can see of its wait state (for deadlock detection and replies).
 */
export class Ep {
  readonly dc: DcState;
  readonly ep: Endpoint;
  name: string;
  kind: BindKind;
  /** Where the endpoint lives: this node for local entries, the peer (or the primary) otherwise. */
  node: NodeId;
  /** OS pid for local entries, -1 for remote ones. */
  pid: number;
  /** The attached session (local entries only; null while WAITBIND). */
  proc: Proc | null = null;
  /** Reserved by a manager and not attached yet. */
  waitBind = false;
  /** Remote entry whose node was declared down and not re-synced yet. */
  nodeDown = false;
  /** Local entry reserved by migrateIn and not announced yet (migrateActivate). */
  migrating = false;
  /** Remote entry the directory dropped while its node's link was up: removed if that node goes down. */
  forgotten = false;
  /**
   * Backup entry whose primary was unbound (or left the DC) and no successor learned: when the backup's own
   * process goes, there is no primary to fall back to, and the entry goes with it.
   */
  primaryGone = false;

  /** Messages queued to this (local) endpoint, one FIFO for every kind. */
  readonly inbox = new Inbox();
  /** Pending notifications: source endpoint -> timestamp of the first uncollected notify. */
  notes: Map<Endpoint, number> | null = null;
  /** wakeup() arrived while not receiving: the next receive(ANY) fails with EWOKENUP. */
  wokenUp = false;
  /** The blocked receive/receiveRequest of the attached session. */
  recv: PendingCall | null = null;

  /** Wait-for edges (local: from the pending call; remote: what we saw of it here). */
  sendTo: Endpoint = NONE;
  replyFrom: Endpoint = NONE;
  /** Remote client only: op of the request a local server took and must answer. */
  replyOp = 0;
  /** Server side: clients whose request this endpoint took and has not answered yet (NOMIGRATE). */
  serving: Set<Endpoint> | null = null;

  /** Sender side of post(): destination -> posts sent and not yet credited or failed. */
  postOut: Map<Endpoint, number> | null = null;
  /** Node the outstanding posts to each remote destination were sent to (for nodeDown). */
  postAt: Map<Endpoint, NodeId> | null = null;
  /** Receiver side of post(): source -> queued/owed counts. */
  postIn: Map<Endpoint, PostIn> | null = null;

  /** vcopy operations this endpoint takes part in here (requester, source pump or destination writes). */
  copies = 0;
  readonly counters = new Counters();

  constructor(dc: DcState, ep: Endpoint, name: string, kind: BindKind, node: NodeId, pid: number) {
    this.dc = dc;
    this.ep = ep;
    this.name = name;
    this.kind = kind;
    this.node = node;
    this.pid = pid;
  }

  /** True for entries whose traffic is handled by this node's inbox. */
  get isLocal(): boolean {
    return this.kind === 'self' || this.kind === 'local' || this.kind === 'replica';
  }
}

/** A message queued in an inbox (or being handed over directly). */
export class Msg {
  /** Removed from the inbox (taken, cancelled, withdrawn): skipped by scans. */
  gone = false;
  readonly src: Endpoint;
  readonly kind: 'send' | 'request' | 'post';
  readonly type: number;
  readonly payload: Uint8Array;
  /** The local sender's pending call (send/request from this node), else null. */
  readonly call: PendingCall | null;
  /** Node of a remote sender, NONE for a local one. */
  readonly node: NodeId;
  /** The remote sender's operation id (0 for posts). */
  readonly op: number;

  constructor(
    src: Endpoint,
    kind: 'send' | 'request' | 'post',
    type: number,
    payload: Uint8Array,
    call: PendingCall | null,
    node: NodeId,
    op: number,
  ) {
    this.src = src;
    this.kind = kind;
    this.type = type;
    this.payload = payload;
    this.call = call;
    this.node = node;
    this.op = op;
  }
}

/**
 * FIFO of messages with cheap removal anywhere (tombstones). Taking from the head is O(1) amortised;
 * receive(src) and receiveRequest scan from the head, skipping removed entries.
 */
export class Inbox {
  private q: Msg[] = [];
  private head = 0;
  /** Messages queued and not removed. */
  live = 0;

  push(m: Msg): void {
    this.q.push(m);
    this.live++;
  }

  /** First queued message from `src` (ANY: from anyone), or undefined. */
  first(src: Endpoint, any: Endpoint): Msg | undefined {
    if (this.live === 0) return undefined;
    const q = this.q;
    for (let i = this.head; i < q.length; i++) {
      const m = q[i]!;
      if (!m.gone && (src === any || m.src === src)) return m;
    }
    return undefined;
  }

  /** First request whose source has nothing queued ahead of it (per-pair FIFO), or undefined. */
  firstRequest(): Msg | undefined {
    if (this.live === 0) return undefined;
    const q = this.q;
    let blocked: Set<Endpoint> | null = null;
    for (let i = this.head; i < q.length; i++) {
      const m = q[i]!;
      if (m.gone) continue;
      if (m.kind === 'request' && (blocked === null || !blocked.has(m.src))) return m;
      blocked ??= new Set();
      blocked.add(m.src);
    }
    return undefined;
  }

  /** Remove `m` (it must be queued here and not removed yet). */
  remove(m: Msg): void {
    m.gone = true;
    this.live--;
    const q = this.q;
    let h = this.head;
    while (h < q.length && q[h]!.gone) h++;
    if (h === q.length) {
      this.q = [];
      this.head = 0;
    } else if (h > 1024 && h * 2 > q.length) {
      this.q = q.slice(h);
      this.head = 0;
    } else {
      this.head = h;
    }
  }

  /** Live messages, oldest first (a copy: callers may remove while iterating). */
  list(): Msg[] {
    const out: Msg[] = [];
    for (let i = this.head; i < this.q.length; i++) {
      const m = this.q[i]!;
      if (!m.gone) out.push(m);
    }
    return out;
  }
}

/** A grant a process registered for vcopy. */
export interface Grant {
  size: number;
  access: GrantAccess;
}

/** A process session. */
export class Proc {
  readonly id: ProcId;
  ep: Ep | null = null;
  /** Pending calls by id (every call that did not complete synchronously). */
  readonly calls = new Map<CallId, PendingCall>();
  /** The exclusive blocking call (send, sendrec, receive, receiveRequest), if any. */
  blocked: PendingCall | null = null;
  readonly grants = new Map<number, Grant>();

  constructor(id: ProcId) {
    this.id = id;
  }
}

/** Where a pending call stands. */
export const St = {
  /** send/request queued in a local destination's inbox. */
  Queued: 1,
  /** send/request frame sent to a remote node, waiting for its ack (or, for a request, the reply). */
  Remote: 2,
  /** Remote send/request being cancelled: waiting for the peer's ack. */
  Cancelling: 3,
  /** Local request taken by the server, waiting for reply(). */
  WaitReply: 4,
  /** Blocked in receive/receiveRequest. */
  Recv: 5,
  /** reply() to a remote client, waiting for its replyAck. */
  ReplyAck: 6,
  /** vcopy in progress. */
  Copy: 7,
  /** send/request to a replicated endpoint waiting for its new primary (DcState.failover). */
  Held: 8,
} as const;
export type St = (typeof St)[keyof typeof St];

/** A call that did not complete at once. One shape for every kind to keep the hot path monomorphic. */
export class PendingCall {
  readonly proc: Proc;
  readonly id: CallId;
  readonly ep: Ep;
  readonly op: string;
  state: St;
  /** send/sendrec/reply: destination; receive: source filter (ANY included). */
  peer: Endpoint;
  kind: 'send' | 'request' = 'send';
  type = 0;
  payload: Uint8Array = EMPTY;
  /** receiveRequest rather than receive. */
  reqOnly = false;
  /** Local queued message (St.Queued) and the inbox's owner. */
  msg: Msg | null = null;
  target: Ep | null = null;
  /** Remote operation id and the node it went to (St.Remote, St.Cancelling, St.ReplyAck). */
  rop = 0;
  node: NodeId = NONE;
  /** EMOVED bounces so far (a loop guard). */
  bounces = 0;
  /** Why a cancel is in progress. */
  reason: 'ETIMEDOUT' | 'EABORTED' = 'ETIMEDOUT';

  constructor(proc: Proc, id: CallId, ep: Ep, op: string, state: St, peer: Endpoint) {
    this.proc = proc;
    this.id = id;
    this.ep = ep;
    this.op = op;
    this.state = state;
    this.peer = peer;
  }
}

export const EMPTY = new Uint8Array(0);
