/**
 * GcsNode: the group communication system of one node (one per DVK daemon), as a pure state machine.
 * It hosts the node's local group members, takes part in the view-change protocol (membership.ts) and in
 * the total ordering of its configuration (ordering.ts), and derives group views from both:
 *
 * - Every join, leave and multicast of a local member becomes an {@link Op} queued here (`pending`) and
 *   submitted to the configuration's sequencer; a member's ops stay in submission order (FIFO), and the
 *   ones not ordered when the configuration changes are resubmitted in the next one (unless the view
 *   change shows that some node already processed them: they were ordered on the other side of a split).
 * - Every node of the configuration processes the same ordered ops, so every node holds the same group
 *   table; a join or leave changes a group's view at its position in the order (view id `(cfg, seq)`).
 * - At a configuration change, each node reports its local members and the new table is their union, so
 *   sides of a healed partition merge their groups (reason merge) and members of unreachable nodes drop
 *   out (reason partition).
 *
 * Flow control: each delivery to a local member counts against its backlog until the daemon reports it
 * `consumed`; above `maxBacklog` the member is expelled from all its groups (reason expel).
 */
import { dvsError } from '../protocol/errors.js';
import { isDc, isEndpoint, isGroupName, isOrder, parseFrame } from './frames.js';
import { type FlushState, type InstallFrame, Membership, mergeSeen } from './membership.js';
import { Stream } from './ordering.js';
import {
  type CfgId,
  compareMembers,
  type DcId,
  type Endpoint,
  type GcsApi,
  type GcsEvent,
  type GcsFrame,
  type GcsIO,
  type GcsOptions,
  type GroupId,
  groupKey,
  type LeaveReason,
  type Member,
  type MemberRow,
  type NodeId,
  type Op,
  type Order,
  type OrderedOp,
  type Seen,
  type SeqOp,
  sameCfg,
  type View,
  type ViewId,
  type ViewReason,
} from './types.js';

/** Default largest multicast payload (1 MiB). */
export const DEFAULT_GCS_MAX_PAYLOAD = 1 << 20;
/** Default unconsumed deliveries before a member is expelled. */
export const DEFAULT_MAX_BACKLOG = 1024;
/** Default unordered local operations per node. */
export const DEFAULT_MAX_PENDING = 4096;

/** Most ops and payload bytes in one `submit` frame (the `ordered` frame mirrors it). */
const SUBMIT_OPS = 256;
const SUBMIT_BYTES = 256 * 1024;

type LocalState = 'joining' | 'joined' | 'leaving';

interface LocalGroup {
  group: GroupId;
  state: LocalState;
  /** The last view delivered to the member in this group. */
  view: View | undefined;
}

interface LocalMember {
  member: Member;
  groups: Map<string, LocalGroup>;
  /** Deliveries not yet consumed. */
  backlog: number;
  /** Expelled or gone: it is delivered nothing more. */
  silenced: boolean;
}

interface GroupState {
  id: GroupId;
  members: Member[];
  viewId: ViewId;
}

function hasMember(list: readonly Member[], m: Member): boolean {
  return list.some((x) => x.node === m.node && x.ep === m.ep);
}

function sameMembers(a: readonly Member[], b: readonly Member[]): boolean {
  return a.length === b.length && a.every((m, i) => compareMembers(m, b[i] as Member) === 0);
}

/** Options of {@link GcsNode}. */
export interface GcsNodeOptions extends GcsOptions {
  nodeId: NodeId;
  /**
   * Distinguishes restarts of this node: larger after every restart (the daemon's start time in ms is a
   * good choice). Op ids restart at 1 with each incarnation; peers tell them apart by it.
   */
  incarnation: number;
  io: GcsIO;
}

/** Counters a daemon may export as metrics. */
export interface GcsStats {
  /** Installed configuration and its nodes. */
  cfg: CfgId;
  nodes: NodeId[];
  flushing: boolean;
  /** View-change rounds this node started as coordinator. */
  rounds: number;
  /** Ops held for a possible view change, and local ops not yet ordered. */
  held: number;
  pending: number;
  groups: number;
  localMembers: number;
  /**
   * Local multicasts never delivered here because they were ordered only on the other side of a split
   * (see docs/gcs.md, "Limits"): delivered to the members there, not to their sender.
   */
  orderedElsewhere: number;
}

export class GcsNode implements GcsApi {
  readonly nodeId: NodeId;
  private readonly inc: number;
  private readonly io: GcsIO;
  private readonly maxPayload: (g: GroupId) => number;
  private readonly maxBacklog: number;
  private readonly maxPending: number;
  private readonly ackEvery: number;
  private readonly membership: Membership;
  private stream: Stream;
  private readonly groups = new Map<string, GroupState>();
  private readonly locals = new Map<Endpoint, LocalMember>();
  /** Local ops not yet seen ordered; the first `submitted` were sent in the current configuration. */
  private pending: Op[] = [];
  private submitted = 0;
  private nextOpId = 1;
  /** Leaves of local members ordered while closing a configuration (see install). */
  private readonly departed = new Map<string, LeaveReason>();
  /** Per origin node, the newest op processed here: ops are processed in (incarnation, id) order per origin. */
  private readonly seen = new Map<NodeId, Seen>();
  private readonly inbox: GcsFrame[] = [];
  private orderedElsewhere = 0;
  private draining = false;

  constructor(opts: GcsNodeOptions) {
    this.nodeId = opts.nodeId;
    this.inc = opts.incarnation;
    this.io = opts.io;
    const mp = opts.maxPayload ?? DEFAULT_GCS_MAX_PAYLOAD;
    this.maxPayload = typeof mp === 'number' ? () => mp : mp;
    this.maxBacklog = opts.maxBacklog ?? DEFAULT_MAX_BACKLOG;
    this.maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    this.ackEvery = opts.ackEvery ?? 32;
    this.membership = new Membership(
      {
        me: this.nodeId,
        inc: this.inc,
        send: (node, frame) => this.send(node, frame),
        snapshot: () => this.snapshot(),
        install: (now, f) => this.install(now, f),
        log: (level, msg, fields) => this.io.log?.(level, msg, fields),
      },
      { flushTimeoutMs: opts.flushTimeoutMs ?? 500 },
    );
    this.stream = new Stream(this.membership.current, this.membership.currentNodes);
  }

  // ------------------------------------------------------------------------------------------ inputs

  join(now: number, dc: DcId, group: GroupId, member: Member): void {
    this.checkGroup(dc, group);
    this.checkMember(member);
    const lm = this.locals.get(member.ep);
    if (lm?.silenced) throw dvsError('EEXPELLED', 'member was expelled or is gone', { ep: member.ep });
    const gk = groupKey(group);
    const ent = lm?.groups.get(gk);
    // The previous leave must be ordered first: one (member, group) has one state.
    if (ent?.state === 'leaving')
      throw dvsError('EBUSY', 'the previous leave is not ordered yet', { group: gk });
    if (ent !== undefined) throw dvsError('EEXIST', 'already a member of the group', { group: gk });
    this.checkRoom();
    const m = lm ?? { member: { ...member }, groups: new Map(), backlog: 0, silenced: false };
    this.locals.set(member.ep, m);
    m.groups.set(gk, { group: { dc: group.dc, name: group.name }, state: 'joining', view: undefined });
    this.enqueue({ k: 'join', dc: group.dc, g: group.name, ep: member.ep, id: 0 });
    this.drain(now);
  }

  leave(now: number, dc: DcId, group: GroupId, member: Member, reason: 'leave' | 'crash' = 'leave'): void {
    this.checkGroup(dc, group);
    this.checkMember(member);
    const ent = this.locals.get(member.ep)?.groups.get(groupKey(group));
    if (ent === undefined || ent.state === 'leaving') throw dvsError('ENOENT', 'not a member of the group');
    ent.state = 'leaving';
    this.enqueue({ k: 'leave', dc: group.dc, g: group.name, ep: member.ep, r: reason, id: 0 });
    this.drain(now);
  }

  memberGone(now: number, member: Member): void {
    this.checkMember(member);
    const lm = this.locals.get(member.ep);
    if (lm === undefined) return;
    lm.silenced = true;
    lm.backlog = 0;
    for (const ent of lm.groups.values()) this.depart(lm, ent, 'crash');
    this.maybeForget(lm);
    this.drain(now);
  }

  multicast(now: number, dc: DcId, group: GroupId, member: Member, order: Order, payload: Uint8Array): void {
    this.checkGroup(dc, group);
    this.checkMember(member);
    if (!isOrder(order)) throw dvsError('EINVAL', `unknown delivery order ${String(order)}`);
    if (!(payload instanceof Uint8Array)) throw dvsError('EINVAL', 'payload must be bytes');
    const limit = this.maxPayload(group);
    if (payload.length > limit)
      throw dvsError('EMSGSIZE', `payload ${payload.length} bytes over the group's ${limit}`, { limit });
    const lm = this.locals.get(member.ep);
    if (lm?.silenced) throw dvsError('EEXPELLED', 'member was expelled or is gone', { ep: member.ep });
    const ent = lm?.groups.get(groupKey(group));
    if (ent === undefined || ent.state === 'leaving') throw dvsError('ENOENT', 'not a member of the group');
    this.checkRoom();
    // Copied: the caller may reuse its buffer, and the op may be resent after a view change.
    this.enqueue({
      k: 'msg',
      dc: group.dc,
      g: group.name,
      ep: member.ep,
      o: order,
      p: payload.slice(),
      id: 0,
    });
    this.drain(now);
  }

  receive(now: number, from: NodeId, frame: unknown): void {
    const f = parseFrame(frame);
    if (f === undefined) {
      this.io.log?.('warn', 'gcs: malformed frame dropped', { from });
      return;
    }
    this.handle(now, from, f);
    this.drain(now);
  }

  reachable(now: number, nodes: ReadonlySet<NodeId>): void {
    this.membership.setReach(now, nodes);
    this.drain(now);
  }

  tick(now: number): void {
    if (!this.membership.flushing && this.stream.recv > this.stream.acked) this.sendAck();
    this.membership.tick(now);
    this.drain(now);
  }

  consumed(member: Member, n: number): void {
    const lm = this.locals.get(member.ep);
    if (lm === undefined || member.node !== this.nodeId || !(n > 0)) return;
    lm.backlog = Math.max(0, lm.backlog - n);
    this.maybeForget(lm);
  }

  // ------------------------------------------------------------------------------------------ queries

  /** The current view of `group` at this node, or undefined if it has no members. */
  view(group: GroupId): { id: ViewId; members: Member[] } | undefined {
    const g = this.groups.get(groupKey(group));
    return g === undefined ? undefined : { id: { ...g.viewId }, members: g.members.map((m) => ({ ...m })) };
  }

  /** Every group with members, as this node sees it. */
  listGroups(): { group: GroupId; id: ViewId; members: Member[] }[] {
    return [...this.groups.values()].map((g) => ({
      group: { ...g.id },
      id: { ...g.viewId },
      members: [...g.members],
    }));
  }

  /** Counters for metrics and tests. */
  stats(): GcsStats {
    return {
      cfg: [...this.stream.id],
      nodes: [...this.stream.nodes],
      flushing: this.membership.flushing,
      rounds: this.membership.rounds,
      held: this.stream.heldCount,
      pending: this.pending.length,
      groups: this.groups.size,
      localMembers: this.locals.size,
      orderedElsewhere: this.orderedElsewhere,
    };
  }

  /** True when the configuration matches reachability and nothing is in flight locally. */
  settled(): boolean {
    return this.membership.settled() && this.pending.length === 0;
  }

  // ------------------------------------------------------------------------------------------ validation

  private checkGroup(dc: DcId, group: GroupId): void {
    if (!isDc(dc) || typeof group !== 'object' || group === null || !isDc(group.dc))
      throw dvsError('EINVAL', 'bad DC id');
    if (group.dc !== dc) throw dvsError('EPERM', `DC ${dc} may not use groups of DC ${group.dc}`);
    if (!isGroupName(group.name))
      throw dvsError('EINVAL', 'group names are 1..64 characters of [A-Za-z0-9._-]');
  }

  private checkMember(member: Member): void {
    if (typeof member !== 'object' || member === null || !isEndpoint(member.ep))
      throw dvsError('EINVAL', 'bad member endpoint');
    if (member.node !== this.nodeId) throw dvsError('EINVAL', `member of node ${member.node} is not local`);
  }

  private checkRoom(): void {
    if (this.pending.length >= this.maxPending)
      throw dvsError('ENOSPC', 'too many group operations waiting to be ordered', { limit: this.maxPending });
  }

  // ------------------------------------------------------------------------------------------ plumbing

  private enqueue(op: Op): void {
    op.id = this.nextOpId++;
    this.pending.push(op);
  }

  private send(node: NodeId, frame: GcsFrame): void {
    if (node === this.nodeId) this.inbox.push(frame);
    else this.io.sendTo(node, frame);
  }

  /** Process frames this node sent itself, then submit new local ops; repeat until quiet. */
  private drain(now: number): void {
    if (this.draining) return;
    this.draining = true;
    try {
      for (;;) {
        const f = this.inbox.shift();
        if (f !== undefined) {
          this.handle(now, this.nodeId, f);
          continue;
        }
        if (!this.flushSubmits()) break;
      }
    } finally {
      this.draining = false;
    }
  }

  private flushSubmits(): boolean {
    if (this.membership.flushing || this.submitted >= this.pending.length) return false;
    // Several ops per frame (batching), but bounded so that one frame stays within a link's frame size:
    // an op always goes, more only while the payload bytes stay under SUBMIT_BYTES.
    const ops: Op[] = [];
    let bytes = 0;
    while (this.submitted < this.pending.length && ops.length < SUBMIT_OPS) {
      const op = this.pending[this.submitted] as Op;
      const size = op.k === 'msg' ? op.p.length : 0;
      if (ops.length > 0 && bytes + size > SUBMIT_BYTES) break;
      ops.push(op);
      bytes += size;
      this.submitted++;
    }
    this.send(this.stream.sequencer, { t: 'submit', cfg: this.stream.id, inc: this.inc, ops });
    return true;
  }

  private handle(now: number, from: NodeId, f: GcsFrame): void {
    switch (f.t) {
      case 'propose':
      case 'nack':
      case 'flushOk':
      case 'install':
      case 'wake':
        this.membership.onFrame(now, from, f);
        return;
      case 'submit':
        this.onSubmit(from, f.cfg, f.inc, f.ops);
        return;
      case 'ordered':
        this.onOrdered(now, from, f.cfg, f.first, f.ops);
        return;
      case 'ack': {
        if (
          this.membership.flushing ||
          !sameCfg(f.cfg, this.stream.id) ||
          this.stream.sequencer !== this.nodeId
        )
          return;
        const st = this.stream.onAck(from, f.seq);
        if (st !== undefined)
          for (const n of this.stream.nodes) this.send(n, { t: 'stable', cfg: this.stream.id, seq: st });
        return;
      }
      case 'stable':
        if (this.membership.flushing || !sameCfg(f.cfg, this.stream.id) || from !== this.stream.sequencer)
          return;
        this.stream.setStable(f.seq);
        this.deliverLoop();
        return;
    }
  }

  private onSubmit(from: NodeId, cfg: CfgId, inc: number, ops: Op[]): void {
    // Dropped when stopped or stale: the origin resubmits everything unordered after its next install.
    const s = this.stream;
    if (
      this.membership.flushing ||
      !sameCfg(cfg, s.id) ||
      s.sequencer !== this.nodeId ||
      !s.nodes.includes(from)
    )
      return;
    const out = s.sequence(from, inc, ops);
    for (const n of s.nodes) this.send(n, { t: 'ordered', cfg: s.id, first: out.first, ops: out.ops });
  }

  private onOrdered(now: number, from: NodeId, cfg: CfgId, first: number, ops: OrderedOp[]): void {
    const s = this.stream;
    if (this.membership.flushing || !sameCfg(cfg, s.id) || from !== s.sequencer) return;
    const r = s.accept(first, ops);
    if (r === 'gap') {
      this.io.log?.('info', 'gcs: ordered ops lost, changing configuration', { from, first, recv: s.recv });
      this.membership.requestChange(now);
      return;
    }
    if (r === 'duplicate') return;
    if (s.recv - s.acked >= this.ackEvery || ops.some((e) => e.op.k === 'msg' && e.op.o === 'safe'))
      this.sendAck();
    this.deliverLoop();
  }

  private sendAck(): void {
    this.stream.acked = this.stream.recv;
    this.send(this.stream.sequencer, { t: 'ack', cfg: this.stream.id, seq: this.stream.recv });
  }

  private deliverLoop(): void {
    if (this.membership.flushing) return;
    for (let e = this.stream.next(); e !== undefined; e = this.stream.next()) {
      this.stream.advance();
      this.apply(e, false);
    }
  }

  // ------------------------------------------------------------------------------------------ ordered ops

  private apply(e: SeqOp, transitional: boolean): void {
    const op = e.op;
    if (e.n === this.nodeId && e.i === this.inc) this.ordered(op.id);
    const last = this.seen.get(e.n);
    if (last !== undefined && (e.i < last[1] || (e.i === last[1] && op.id <= last[2]))) {
      // Cannot happen while the view change is right (origins drop ops that movers already processed);
      // a message is dropped rather than delivered twice. Joins and leaves are idempotent.
      this.io.log?.('warn', 'gcs: op processed twice', { origin: e.n, inc: e.i, id: op.id, s: e.s });
      if (op.k === 'msg') return;
    } else this.seen.set(e.n, [e.n, e.i, op.id]);
    const gk = `${op.dc}/${op.g}`;
    const m: Member = { node: e.n, ep: op.ep };
    const cfg = this.stream.id;
    switch (op.k) {
      case 'join': {
        let g = this.groups.get(gk);
        if (g === undefined) {
          g = {
            id: { dc: op.dc, name: op.g },
            members: [],
            viewId: { epoch: cfg[0], coord: cfg[1], inc: cfg[2], seq: e.s },
          };
          this.groups.set(gk, g);
        }
        if (hasMember(g.members, m)) return;
        g.members = [...g.members, m].sort(compareMembers);
        g.viewId = { epoch: cfg[0], coord: cfg[1], inc: cfg[2], seq: e.s };
        this.deliverView(g, 'join');
        return;
      }
      case 'leave': {
        if (e.n === this.nodeId) {
          const lm = this.locals.get(op.ep);
          // Only a leaving member is removed: a re-leave (see install) may be ordered after it rejoined.
          if (lm !== undefined && lm.groups.get(gk)?.state === 'leaving') {
            lm.groups.delete(gk);
            this.maybeForget(lm);
          }
          this.departed.set(`${gk}|${op.ep}`, op.r);
        }
        const g = this.groups.get(gk);
        if (g === undefined || !hasMember(g.members, m)) return;
        g.members = g.members.filter((x) => x.node !== m.node || x.ep !== m.ep);
        if (g.members.length === 0) {
          this.groups.delete(gk);
          return;
        }
        g.viewId = { epoch: cfg[0], coord: cfg[1], inc: cfg[2], seq: e.s };
        this.deliverView(g, op.r);
        return;
      }
      case 'msg': {
        const g = this.groups.get(gk);
        // Closed groups: a message whose sender is no longer in the view (it was cut off) is dropped.
        if (g === undefined || !hasMember(g.members, m)) return;
        for (const x of g.members) {
          if (x.node !== this.nodeId) continue;
          const lm = this.locals.get(x.ep);
          const ent = lm?.groups.get(gk);
          if (lm === undefined || ent === undefined || ent.state !== 'joined' || lm.silenced) continue;
          const ev: GcsEvent = {
            kind: 'message',
            group: g.id,
            sender: m,
            order: op.o,
            payload: op.p,
            seq: e.s,
            view: (ent.view as View).id,
          };
          if (transitional) ev.transitional = true;
          this.emit(lm, ev);
        }
        return;
      }
    }
  }

  /** Local op `id` was ordered: it and every earlier one (FIFO per sequencer) leave the pending queue. */
  private ordered(id: number): void {
    let k = 0;
    while (k < this.pending.length && (this.pending[k] as Op).id <= id) k++;
    if (k === 0) return;
    this.pending.splice(0, k);
    this.submitted = Math.max(0, this.submitted - k);
  }

  private deliverView(g: GroupState, reason: ViewReason): void {
    const gk = groupKey(g.id);
    for (const x of g.members) {
      if (x.node !== this.nodeId) continue;
      const lm = this.locals.get(x.ep);
      const ent = lm?.groups.get(gk);
      if (lm === undefined || ent === undefined || ent.state === 'leaving' || lm.silenced) continue;
      ent.state = 'joined';
      this.deliverViewTo(lm, ent, g, reason);
    }
  }

  private deliverViewTo(lm: LocalMember, ent: LocalGroup, g: GroupState, reason: ViewReason): void {
    const view: View = {
      id: { ...g.viewId },
      group: g.id,
      members: g.members.map((m) => ({ ...m })),
      reason,
    };
    ent.view = view;
    this.emit(lm, { kind: 'view', view });
  }

  private emit(lm: LocalMember, ev: GcsEvent): void {
    this.io.deliver(lm.member, ev);
    lm.backlog++;
    if (lm.backlog > this.maxBacklog && !lm.silenced) {
      lm.silenced = true;
      this.io.expelled(lm.member, `more than ${this.maxBacklog} deliveries not consumed`);
      for (const ent of lm.groups.values()) this.depart(lm, ent, 'expel');
    }
  }

  private depart(lm: LocalMember, ent: LocalGroup, reason: LeaveReason): void {
    if (ent.state === 'leaving') return;
    ent.state = 'leaving';
    this.enqueue({ k: 'leave', dc: ent.group.dc, g: ent.group.name, ep: lm.member.ep, r: reason, id: 0 });
  }

  private maybeForget(lm: LocalMember): void {
    if (lm.groups.size === 0 && lm.backlog === 0) this.locals.delete(lm.member.ep);
  }

  // ------------------------------------------------------------------------------------------ view change

  private snapshot(): FlushState {
    const rows = new Map<string, MemberRow>();
    for (const lm of this.locals.values())
      for (const [gk, ent] of lm.groups) {
        let row = rows.get(gk);
        if (row === undefined) {
          row = { n: this.nodeId, dc: ent.group.dc, g: ent.group.name, eps: [] };
          rows.set(gk, row);
        }
        row.eps.push(lm.member.ep);
      }
    const s = this.stream;
    const seen = new Map(this.seen);
    for (let k = s.delivered + 1; k <= s.recv; k++) {
      const e = s.get(k);
      if (e !== undefined) mergeSeen(seen, [e.n, e.i, e.op.id]);
    }
    const st: FlushState = {
      seen: [...seen.values()],
      cfg: [...s.id],
      old: [...s.nodes],
      recv: s.recv,
      stable: s.stable,
      ops: s.unstable(),
      members: [...rows.values()],
    };
    // Unordered local ops go to the coordinator: those no mover processed are delivered in this (closing)
    // configuration, so a sender always gets its own message in the view it sent it in.
    // Only a prefix of multicasts: joins and leaves are resubmitted (their views must be numbered by one
    // sequencer), and ops of one origin are processed in id order (`seen`).
    const pend: OrderedOp[] = [];
    for (const op of this.pending) {
      if (op.k !== 'msg') break;
      pend.push({ n: this.nodeId, i: this.inc, op });
    }
    if (pend.length > 0) st.pend = pend;
    return st;
  }

  private install(_now: number, f: InstallFrame): void {
    const old = this.stream;
    // 1. Close the old configuration: deliver, in order, everything any mover from it held.
    const rec = f.recover.find((r) => sameCfg(r.cfg, old.id));
    if (rec !== undefined) {
      const union = new Map(rec.ops.map((e) => [e.s, e]));
      const last = Math.max(old.recv, rec.ops.at(-1)?.s ?? 0);
      const stable = Math.max(rec.stable, old.stable);
      for (let s = old.delivered + 1; s <= last; s++) {
        const e = old.get(s) ?? union.get(s);
        if (e === undefined) {
          this.io.log?.('error', 'gcs: op missing from the view-change union', { s, cfg: old.id });
          break;
        }
        const tail = rec.tail !== undefined && s >= rec.tail;
        this.apply(e, e.op.k === 'msg' && !rec.full && (tail || (e.op.o === 'safe' && s > stable)));
      }
    }
    // Ops of this node that some mover already processed were ordered (and delivered) elsewhere: they are
    // not resubmitted, or the nodes that processed them would see them twice. A leave among them is
    // applied locally here; step 3 then leaves again if the new table still lists the member.
    for (const e of f.seen) mergeSeen(this.seen, e);
    const mine = this.seen.get(this.nodeId);
    if (mine !== undefined && mine[1] === this.inc) {
      for (const op of this.pending) {
        if (op.id > mine[2]) break;
        if (op.k === 'msg') this.orderedElsewhere++;
        const lm = op.k === 'leave' ? this.locals.get(op.ep) : undefined;
        const gk = `${op.dc}/${op.g}`;
        if (op.k === 'leave' && lm?.groups.get(gk)?.state === 'leaving') {
          lm.groups.delete(gk);
          this.maybeForget(lm);
          this.departed.set(`${gk}|${op.ep}`, op.r);
        }
      }
      this.ordered(mine[2]);
    }
    // 2. The new configuration and its group table: the union of every node's local members.
    this.stream = new Stream(f.id, f.nodes);
    const table = new Map<string, GroupState>();
    const base: ViewId = { epoch: f.id[0], coord: f.id[1], inc: f.id[2], seq: 0 };
    for (const row of f.members) {
      const gk = `${row.dc}/${row.g}`;
      let g = table.get(gk);
      if (g === undefined) {
        g = { id: { dc: row.dc, name: row.g }, members: [], viewId: base };
        table.set(gk, g);
      }
      for (const ep of row.eps)
        if (!hasMember(g.members, { node: row.n, ep })) g.members.push({ node: row.n, ep });
    }
    for (const [gk, g] of table) {
      g.members.sort(compareMembers);
      const prev = this.groups.get(gk);
      if (prev !== undefined && sameMembers(prev.members, g.members)) g.viewId = prev.viewId;
    }
    this.groups.clear();
    for (const [gk, g] of table) this.groups.set(gk, g);
    // 3. Views for local members whose group changed. Pending joins are resubmitted as they are (a join of
    //    a member the table already lists is a no-op); members the table lists but who left while the old
    //    configuration closed leave again, so every node applies the same leave.
    for (const lm of this.locals.values()) {
      if (lm.silenced) continue;
      for (const [gk, ent] of lm.groups) {
        const g = this.groups.get(gk);
        if (g === undefined || !hasMember(g.members, lm.member) || ent.state === 'leaving') continue;
        const prev = ent.view?.members;
        if (ent.state === 'joined' && prev !== undefined && sameMembers(prev, g.members)) continue;
        const reason =
          ent.state === 'joining' || prev === undefined
            ? 'join'
            : this.reason(prev, g.members, old.nodes, f.nodes);
        ent.state = 'joined';
        this.deliverViewTo(lm, ent, g, reason);
      }
    }
    for (const row of f.members) {
      if (row.n !== this.nodeId) continue;
      const gk = `${row.dc}/${row.g}`;
      for (const ep of row.eps) {
        if (this.locals.get(ep)?.groups.has(gk)) continue;
        const r = this.departed.get(`${gk}|${ep}`) ?? 'leave';
        this.enqueue({ k: 'leave', dc: row.dc, g: row.g, ep, r, id: 0 });
      }
    }
    this.departed.clear();
    this.submitted = 0;
  }

  private reason(
    before: readonly Member[],
    after: readonly Member[],
    oldNodes: readonly NodeId[],
    newNodes: readonly NodeId[],
  ): ViewReason {
    const gained = after.filter((m) => !hasMember(before, m));
    const lost = before.filter((m) => !hasMember(after, m));
    if (gained.some((m) => !oldNodes.includes(m.node))) return 'merge';
    if (lost.some((m) => !newNodes.includes(m.node))) return 'partition';
    return gained.length > 0 ? 'join' : 'leave';
  }
}
