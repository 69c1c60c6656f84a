/**
 * The contract of the group communication system (GCS): identifiers, delivery events, the IO sink a node
 * acts through, and the frames two nodes' {@link GcsNode}s exchange. Like the kernel, the GCS is a pure
 * state machine: events in (with `now`), effects out through {@link GcsIO}; no clock, no I/O, no random.
 * docs/gcs.md describes the protocol and its guarantees.
 */
import type { DcId, Endpoint, NodeId } from '../kernel/types.js';

export type { DcId, Endpoint, NodeId };

/** A group member: one process, named by the node hosting it and its endpoint. */
export interface Member {
  node: NodeId;
  ep: Endpoint;
}

/** A group: a name inside one DC. Groups of different DCs never see each other. */
export interface GroupId {
  dc: DcId;
  name: string;
}

/** Delivery orders, weakest first. Every one is delivered in the total order of the view's sequencer. */
export const ORDERS = ['fifo', 'causal', 'agreed', 'safe'] as const;
export type Order = (typeof ORDERS)[number];

/**
 * A view id: `(epoch, coord, inc)` names the node configuration (agreed by the view-change protocol; `inc`
 * is the coordinator's incarnation, so a restarted coordinator never reuses an id) and `seq` the position
 * in that configuration's total order where the view was installed (0 = at the configuration change
 * itself). Unique cluster-wide, and strictly increasing at every member ({@link compareViewIds}).
 */
export interface ViewId {
  epoch: number;
  coord: NodeId;
  inc: number;
  seq: number;
}

/** Why a view changed. */
export type ViewReason =
  /** A member joined (also the first view a joiner sees). */
  | 'join'
  /** A member left voluntarily. */
  | 'leave'
  /** A member's process died (reported by its daemon through {@link GcsApi.leave} with reason `crash`). */
  | 'crash'
  /** Members were lost because their node became unreachable (it crashed or the network was cut). */
  | 'partition'
  /** Members were gained because configurations merged (a cut healed, a node came back). */
  | 'merge'
  /** A member was expelled because it stopped reading its deliveries (flow control). */
  | 'expel';

/** A group membership view. `members` are sorted by (node, ep). */
export interface View {
  id: ViewId;
  group: GroupId;
  members: Member[];
  reason: ViewReason;
}

/** What a member is delivered. */
export type GcsEvent =
  | {
      kind: 'message';
      group: GroupId;
      sender: Member;
      order: Order;
      payload: Uint8Array;
      /** Position in the configuration's total order. */
      seq: number;
      /** The view the message is delivered in (the member's last delivered view). */
      view: ViewId;
      /**
       * Delivered while a view closes after a failure (Spread's transitional configuration): a `safe`
       * message not known stable, or a message its sender's side never saw ordered (the flush tail: the
       * sender gets its own message in the view it sent it in). Every member moving on with the receiver
       * delivers it, in the same order; a member lost with the failure may not have it, or may have it in
       * another position. Absent on every other delivery.
       */
      transitional?: true;
    }
  | { kind: 'view'; view: View };

/** The sink through which a {@link GcsNode} acts. The daemon and the simulator implement it. */
export interface GcsIO {
  /** A frame for the GcsNode of `node` (reliable and FIFO while the link is up; lost when it goes down). */
  sendTo(node: NodeId, frame: GcsFrame): void;
  /** An event for local member `member`. Counts against its backlog until {@link GcsApi.consumed}. */
  deliver(member: Member, event: GcsEvent): void;
  /** Local member `member` was expelled from every group it was in (it gets nothing more). */
  expelled(member: Member, reason: string): void;
  /** Optional diagnostics (a rejected frame, a protocol anomaly). */
  log?(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

/** Limits and timers of a {@link GcsNode}. */
export interface GcsOptions {
  /** Largest multicast payload, bytes: a number, or per group. Default 1 MiB. */
  maxPayload?: number | ((group: GroupId) => number);
  /** Deliveries a local member may have unconsumed before it is expelled. Default 1024. */
  maxBacklog?: number;
  /** Local operations (multicasts, joins, leaves) not yet ordered, per node. Default 4096 (ENOSPC beyond). */
  maxPending?: number;
  /** A view change not completed after this long is restarted (coordinator) or poked (others). Default 500 ms. */
  flushTimeoutMs?: number;
  /** A node acknowledges received messages at least every this many messages (and on every tick). Default 32. */
  ackEvery?: number;
}

/** Group names: 1..64 characters of [A-Za-z0-9._-]. */
export const GROUP_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** -1, 0, 1 as `a` is older than, equal to, or newer than `b`. */
export function compareViewIds(a: ViewId, b: ViewId): number {
  return Math.sign(a.epoch - b.epoch || a.coord - b.coord || a.inc - b.inc || a.seq - b.seq);
}

/** `node.ep`: a member as a map key. */
export function memberKey(m: Member): string {
  return `${m.node}.${m.ep}`;
}

/** `dc/name`: a group as a map key. */
export function groupKey(g: GroupId): string {
  return `${g.dc}/${g.name}`;
}

/** Sort order of members in a view: by node, then endpoint. */
export function compareMembers(a: Member, b: Member): number {
  return a.node - b.node || a.ep - b.ep;
}

// ---------------------------------------------------------------------------------------------------------
// Frames between GcsNodes. Plain objects of numbers, strings, arrays and Uint8Arrays: they travel as
// MessagePack of the object (msgpackr) inside a node-link control frame.
//
//   CfgId = [epoch, coord, inc]            a node configuration: the coordinator (incarnation inc) is also
//                                          its sequencer
//   Op    = {k:'msg',   dc, g, ep, o, p, id}   multicast by member (origin node, ep); o = order, p = payload
//         | {k:'join',  dc, g, ep, id}
//         | {k:'leave', dc, g, ep, r, id}      r = 'leave' | 'crash' | 'expel'
//           id: the origin node's operation counter (restarts at 1 in each node incarnation)
//   SeqOp = {s, n, i, op}                      op number s of the configuration, from origin node n, incarnation i
//   Seen  = [node, incarnation, id]            the newest op of an origin that a node has processed
//
//   view change (coordinator C, every node P of the proposed configuration, C included):
//     C ──propose{id, nodes}──▶ P                      P stops, answers with what it holds
//     P ──flushOk{id, cfg, old, recv, stable, ops, members, seen, pend}──▶ C   pend: P's unordered ops
//     P ──nack{id, promised}──▶ C                      P already accepted a newer proposal
//     C ──install{id, nodes, members, recover, seen}──▶ P   P delivers the union (and the movers'
//                                                           unordered ops after it), then installs `id`
//     P ──wake{}──▶ C                                  "my configuration does not match my reachability"
//   ordering (in configuration `cfg`, sequencer S = cfg[1]):
//     P ──submit{cfg, inc, ops}──▶ S                   S numbers them in arrival order
//     S ──ordered{cfg, first, ops:[{n, i, op}]}──▶ P   ops numbered first, first+1, ...
//     P ──ack{cfg, seq}──▶ S                           P holds every op up to seq
//     S ──stable{cfg, seq}──▶ P                        every node of cfg holds every op up to seq
// ---------------------------------------------------------------------------------------------------------

/** A node configuration id: `[epoch, coordinator, coordinator's incarnation]`, ordered lexicographically. */
export type CfgId = [epoch: number, coord: NodeId, inc: number];

/** Why a member leaves, as carried by a `leave` op. */
export type LeaveReason = 'leave' | 'crash' | 'expel';

/** An operation submitted for total ordering (see the diagram above). */
export type Op =
  | { k: 'msg'; dc: DcId; g: string; ep: Endpoint; o: Order; p: Uint8Array; id: number }
  | { k: 'join'; dc: DcId; g: string; ep: Endpoint; id: number }
  | { k: 'leave'; dc: DcId; g: string; ep: Endpoint; r: LeaveReason; id: number };

/** An op with its origin node and its number in the configuration's total order. */
export interface SeqOp {
  s: number;
  n: NodeId;
  /** The origin node's incarnation. */
  i: number;
  op: Op;
}

/** An op as the sequencer sends it (numbered by its position in the `ordered` frame). */
export interface OrderedOp {
  n: NodeId;
  i: number;
  op: Op;
}

/** `[origin node, incarnation, op id]`: the newest op of that origin a node has processed. */
export type Seen = [node: NodeId, inc: number, id: number];

/** One node's local members of one group, as `flushOk` reports and `install` distributes them. */
export interface MemberRow {
  n: NodeId;
  dc: DcId;
  g: string;
  eps: Endpoint[];
}

/** What one old configuration's movers hold, as the coordinator merged it. */
export interface Recovery {
  cfg: CfgId;
  /** The highest stability point any mover knew: safe ops up to it were held by every node of `cfg`. */
  stable: number;
  /** Every node of `cfg` moves to the new configuration (no safe op is then transitional). */
  full: boolean;
  /**
   * The union of the unstable ops the movers held, sorted by `s`, then the movers' own unordered ops (the
   * flush tail: numbered after everything any mover received, by mover node id, each mover's in its order).
   */
  ops: SeqOp[];
  /** First `s` of the flush tail in `ops` (absent: no tail). */
  tail?: number;
}

export type GcsFrame =
  | { t: 'propose'; id: CfgId; nodes: NodeId[] }
  | { t: 'nack'; id: CfgId; promised: CfgId }
  | {
      t: 'flushOk';
      id: CfgId;
      /** The sender's installed configuration and its nodes. */
      cfg: CfgId;
      old: NodeId[];
      /** Highest op number received (contiguously) and the stability point it knows, in `cfg`. */
      recv: number;
      stable: number;
      /** The ops it holds above `stable`. */
      ops: SeqOp[];
      /** Its local members (joining, joined or leaving), per group. */
      members: MemberRow[];
      /** Per origin node, the newest op it processed. */
      seen: Seen[];
      /**
       * Its own ops not seen ordered (oldest first): the coordinator appends those no mover of `cfg`
       * processed to `cfg`'s recovery, so they are delivered in the view they were sent in (self delivery
       * across a split). Absent = none.
       */
      pend?: OrderedOp[];
    }
  | {
      t: 'install';
      id: CfgId;
      nodes: NodeId[];
      members: MemberRow[];
      recover: Recovery[];
      /** Per origin, the newest op any mover processed or holds: origins drop older unordered ops. */
      seen: Seen[];
    }
  | { t: 'wake' }
  | { t: 'submit'; cfg: CfgId; inc: number; ops: Op[] }
  | { t: 'ordered'; cfg: CfgId; first: number; ops: OrderedOp[] }
  | { t: 'ack'; cfg: CfgId; seq: number }
  | { t: 'stable'; cfg: CfgId; seq: number };

/** Lexicographic order of configuration ids. */
export function compareCfg(a: CfgId, b: CfgId): number {
  return Math.sign(a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
}

/** Same configuration id. */
export function sameCfg(a: CfgId, b: CfgId): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
}

/**
 * What the daemon (or the simulator) calls on a GcsNode. Calls that validate input throw DvsError
 * synchronously (EINVAL, EPERM, EMSGSIZE, ENOENT, EEXIST, EEXPELLED, ENOSPC) and change nothing.
 */
export interface GcsApi {
  readonly nodeId: NodeId;
  /** `member` (a local process of DC `dc`) joins `group`. Its first view arrives once the join is ordered. */
  join(now: number, dc: DcId, group: GroupId, member: Member): void;
  /** `member` leaves `group`; it is delivered nothing more in it. `reason` crash: its process died. */
  leave(now: number, dc: DcId, group: GroupId, member: Member, reason?: 'leave' | 'crash'): void;
  /** The process of `member` died: it leaves every group (reason crash) and its backlog is forgotten. */
  memberGone(now: number, member: Member): void;
  /** Multicast `payload` to `group` in `order`. `member` must have joined it. */
  multicast(now: number, dc: DcId, group: GroupId, member: Member, order: Order, payload: Uint8Array): void;
  /** A frame from the GcsNode of `from`. Malformed or stale frames are logged and dropped. */
  receive(now: number, from: NodeId, frame: unknown): void;
  /** The nodes this node can reach now (itself implied). A node that restarted must first be reported gone. */
  reachable(now: number, nodes: ReadonlySet<NodeId>): void;
  /** Timers: resend acknowledgements, restart a stuck view change. Call every few ms to tens of ms. */
  tick(now: number): void;
  /** The local process of `member` has read `n` more deliveries. */
  consumed(member: Member, n: number): void;
}
