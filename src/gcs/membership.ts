/**
 * The view-change protocol: agreeing on a node configuration among the nodes that can reach each other,
 * with a flush that gives virtual synchrony.
 *
 * The coordinator of a configuration is the lowest node id of the nodes a node can reach. When the
 * reachable set no longer matches the installed configuration (a node became unreachable, appeared, or
 * frames were lost), that node proposes a configuration `[epoch, itself, its incarnation]` with a fresh
 * epoch:
 * ```
 *   C ──propose{id, nodes}──▶ every P in nodes (C too)
 *        P accepts if id is newer than anything it accepted (else nack{promised}): it stops delivering
 *        and ordering in its old configuration and answers with what it holds
 *   P ──flushOk{id, cfg, old, recv, stable, ops, members, pend}──▶ C
 *   C, once every P answered: install{id, nodes, members, recover} = for each old configuration, the union
 *        of the ops its movers hold (plus its stability point and whether all its nodes move), then the
 *        movers' own unordered ops (`pend`) that no mover processed (the flush tail), and every node's
 *        local members
 *   P: delivers its old configuration's ops up to the highest any mover held, then the tail (same set and
 *      order for all movers), then installs `id`: group views are rebuilt from `members`; ops issued
 *      while the view was closing are submitted in the new configuration.
 * ```
 * A coordinator whose reachable set changes, or whose round does not finish within the flush timeout,
 * starts over with a newer epoch. A node whose configuration does not match what it can reach, or whose
 * accepted proposal is not installed in time, pokes its coordinator with `wake`. Stale rounds die on the
 * epoch check. When reachability is stable and transitive, every connected component converges on one
 * configuration.
 */
import {
  type CfgId,
  compareCfg,
  type GcsFrame,
  type MemberRow,
  type NodeId,
  type OrderedOp,
  type Recovery,
  type Seen,
  type SeqOp,
  sameCfg,
} from './types.js';

/** Merge `[node, inc, id]` into a per-node maximum (lexicographic on inc, id). */
export function mergeSeen(into: Map<NodeId, Seen>, e: Seen): void {
  const cur = into.get(e[0]);
  if (cur === undefined || e[1] > cur[1] || (e[1] === cur[1] && e[2] > cur[2]))
    into.set(e[0], [e[0], e[1], e[2]]);
}

export type FlushOkFrame = Extract<GcsFrame, { t: 'flushOk' }>;
export type InstallFrame = Extract<GcsFrame, { t: 'install' }>;

/** What a node reports when it accepts a proposal (everything of `flushOk` but `t` and `id`). */
export type FlushState = Omit<FlushOkFrame, 't' | 'id'>;

/** The node-level glue the protocol drives. */
export interface MembershipHost {
  readonly me: NodeId;
  /** This node's incarnation (part of the configuration ids it coordinates). */
  readonly inc: number;
  /** Send a frame (to `me` too: the host queues it and hands it back through {@link Membership.onFrame}). */
  send(node: NodeId, frame: GcsFrame): void;
  /** What this node holds of its installed configuration (it has stopped delivering in it). */
  snapshot(): FlushState;
  /** Install a configuration: deliver the recovered ops, rebuild views, resubmit. */
  install(now: number, frame: InstallFrame): void;
  log?(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

/**
 * The coordinator's merge of every `flushOk`: per old configuration, the union of the ops held above
 * the stability points, and every node's local members. Pure.
 */
export function buildInstall(
  id: CfgId,
  nodes: readonly NodeId[],
  replies: ReadonlyMap<NodeId, FlushOkFrame>,
) {
  const members: MemberRow[] = [];
  const seen = new Map<NodeId, Seen>();
  const byCfg = new Map<
    string,
    {
      cfg: CfgId;
      stable: number;
      recv: number;
      ops: Map<number, SeqOp>;
      movers: NodeId[];
      old: NodeId[];
      /** What the movers of this configuration processed or hold, per origin. */
      seen: Map<NodeId, Seen>;
      pend: OrderedOp[][];
    }
  >();
  for (const n of nodes) {
    const r = replies.get(n);
    if (r === undefined) throw new Error(`buildInstall: no flushOk from node ${n}`);
    for (const row of r.members) members.push({ ...row, n });
    for (const e of r.seen) mergeSeen(seen, e);
    for (const op of r.ops) mergeSeen(seen, [op.n, op.i, op.op.id]);
    const key = r.cfg.join('.');
    let e = byCfg.get(key);
    if (e === undefined) {
      e = {
        cfg: r.cfg,
        stable: 0,
        recv: 0,
        ops: new Map(),
        movers: [],
        old: r.old,
        seen: new Map(),
        pend: [],
      };
      byCfg.set(key, e);
    }
    e.stable = Math.max(e.stable, r.stable);
    e.recv = Math.max(e.recv, r.recv);
    e.movers.push(n);
    for (const op of r.ops) e.ops.set(op.s, op);
    for (const x of r.seen) mergeSeen(e.seen, x);
    for (const op of r.ops) mergeSeen(e.seen, [op.n, op.i, op.op.id]);
    if (r.pend !== undefined && r.pend.length > 0) e.pend.push(r.pend);
  }
  const recover: Recovery[] = [...byCfg.values()].map((e) => {
    const ops = [...e.ops.values()].sort((a, b) => a.s - b.s);
    // The flush tail: each mover's ops that no mover of this configuration processed or holds. They may
    // have been ordered on the other side of a split (and delivered there, in the same old view), but not
    // here: delivered here now, in the view they were sent in, rather than resubmitted into the next one
    // (Spread delivers them in the transitional configuration). Numbered after anything any mover received.
    let s = Math.max(e.recv, ops.at(-1)?.s ?? 0);
    const tail = s + 1;
    for (const list of e.pend)
      for (const p of list) {
        const seen = e.seen.get(p.n);
        if (p.op.k !== 'msg') break;
        if (seen !== undefined && (p.i < seen[1] || (p.i === seen[1] && p.op.id <= seen[2]))) continue;
        ops.push({ s: ++s, n: p.n, i: p.i, op: p.op });
        mergeSeen(e.seen, [p.n, p.i, p.op.id]);
      }
    const rec: Recovery = {
      cfg: e.cfg,
      stable: e.stable,
      full: e.old.every((n) => e.movers.includes(n)),
      ops,
    };
    if (s >= tail) rec.tail = tail;
    return rec;
  });
  // Processed now by the movers: their origins must not resubmit them.
  for (const r of recover) for (const op of r.ops) mergeSeen(seen, [op.n, op.i, op.op.id]);
  const frame: InstallFrame = {
    t: 'install',
    id,
    nodes: [...nodes],
    members,
    recover,
    seen: [...seen.values()],
  };
  return frame;
}

/** Timers of the protocol. */
export interface MembershipTimers {
  /** A round not finished after this long is restarted (coordinator) or poked (others). */
  flushTimeoutMs: number;
}

interface Round {
  id: CfgId;
  nodes: NodeId[];
  replies: Map<NodeId, FlushOkFrame>;
  startedAt: number;
}

function sameSet(a: ReadonlySet<NodeId>, b: readonly NodeId[]): boolean {
  return a.size === b.length && b.every((n) => a.has(n));
}

/** One node's side of the view-change protocol. */
export class Membership {
  /** Nodes this node can reach (itself included). */
  private reach: Set<NodeId>;
  /** The installed configuration. */
  current: CfgId;
  currentNodes: NodeId[];
  /** The newest configuration id accepted (>= current). */
  private promised: CfgId;
  /** A proposal newer than `current` was accepted and not yet installed: ordering is stopped. */
  flushing = false;
  private acceptedAt = 0;
  /** The round this node coordinates, if any. */
  private round: Round | undefined;
  /** The installed configuration no longer matches reachability (or frames were lost). */
  private need = false;
  private maxEpoch = 0;
  private lastWakeAt = Number.NEGATIVE_INFINITY;
  /** Rounds started (for metrics and tests). */
  rounds = 0;

  constructor(
    private readonly host: MembershipHost,
    private readonly timers: MembershipTimers,
  ) {
    const me = host.me;
    this.reach = new Set([me]);
    this.current = [0, me, host.inc];
    this.currentNodes = [me];
    this.promised = this.current;
  }

  private get me(): NodeId {
    return this.host.me;
  }

  /** The lowest node this node can reach: the coordinator it expects. */
  private leader(): NodeId {
    return Math.min(...this.reach);
  }

  /** Reachability changed. */
  setReach(now: number, nodes: ReadonlySet<NodeId>): void {
    const next = new Set(nodes);
    next.add(this.me);
    // A configuration member that went out of reach even briefly may have lost frames: change anyway.
    if (this.currentNodes.some((n) => !next.has(n)) || !sameSet(next, this.currentNodes)) this.need = true;
    const changed = !sameSet(next, [...this.reach]);
    this.reach = next;
    if (this.round !== undefined && changed) this.round = undefined;
    if (this.need || this.flushing) this.act(now, changed);
  }

  /** The ordering layer lost frames (a gap) or saw a mismatch: ask for a new configuration. */
  requestChange(now: number): void {
    this.need = true;
    this.act(now, true);
  }

  /** Timers: restart a stuck round, poke the coordinator. */
  tick(now: number): void {
    if (this.round !== undefined) {
      if (now - this.round.startedAt >= this.timers.flushTimeoutMs) this.propose(now);
      return;
    }
    if (this.need || (this.flushing && now - this.acceptedAt >= this.timers.flushTimeoutMs))
      this.act(now, false);
  }

  /** A membership frame from `from`. */
  onFrame(now: number, from: NodeId, f: GcsFrame): void {
    switch (f.t) {
      case 'propose':
        this.onPropose(now, from, f.id, f.nodes);
        return;
      case 'nack':
        this.maxEpoch = Math.max(this.maxEpoch, f.promised[0]);
        if (this.round !== undefined && sameCfg(this.round.id, f.id)) this.propose(now);
        return;
      case 'flushOk':
        this.onFlushOk(now, from, f);
        return;
      case 'install':
        this.onInstall(now, from, f);
        return;
      case 'wake': {
        // A poke from a node that missed (or ignored) the round under way restarts it at once.
        const r = this.round;
        if (this.leader() !== this.me || !this.reach.has(from)) return;
        if (r === undefined || (!r.replies.has(from) && r.nodes.includes(from)) || !r.nodes.includes(from))
          this.propose(now);
        return;
      }
      default:
        return;
    }
  }

  /** Propose (if this node leads its reachable set) or poke the leader. */
  private act(now: number, urgent: boolean): void {
    const leader = this.leader();
    if (leader === this.me) {
      if (this.round === undefined) this.propose(now);
      return;
    }
    if (urgent || now - this.lastWakeAt >= this.timers.flushTimeoutMs / 2) {
      this.lastWakeAt = now;
      this.host.send(leader, { t: 'wake' });
    }
  }

  private propose(now: number): void {
    const epoch = Math.max(this.maxEpoch, this.promised[0], this.current[0]) + 1;
    this.maxEpoch = epoch;
    const nodes = [...this.reach].sort((a, b) => a - b);
    const id: CfgId = [epoch, this.me, this.host.inc];
    this.round = { id, nodes, replies: new Map(), startedAt: now };
    this.rounds++;
    for (const n of nodes) this.host.send(n, { t: 'propose', id, nodes });
  }

  private onPropose(now: number, from: NodeId, id: CfgId, nodes: NodeId[]): void {
    this.maxEpoch = Math.max(this.maxEpoch, id[0]);
    if (from !== id[1] || !nodes.includes(this.me) || !this.reach.has(from)) return;
    if (compareCfg(id, this.promised) <= 0) {
      this.host.send(from, { t: 'nack', id, promised: this.promised });
      return;
    }
    this.promised = id;
    this.flushing = true;
    this.acceptedAt = now;
    if (this.round !== undefined && !sameCfg(this.round.id, id)) this.round = undefined;
    this.host.send(from, { t: 'flushOk', id, ...this.host.snapshot() });
  }

  private onFlushOk(now: number, from: NodeId, f: FlushOkFrame): void {
    const r = this.round;
    if (r === undefined || !sameCfg(r.id, f.id) || !r.nodes.includes(from)) return;
    r.replies.set(from, f);
    if (r.replies.size < r.nodes.length) return;
    this.round = undefined;
    const install = buildInstall(r.id, r.nodes, r.replies);
    for (const n of r.nodes) this.host.send(n, install);
    void now;
  }

  private onInstall(now: number, from: NodeId, f: InstallFrame): void {
    if (!this.flushing || !sameCfg(f.id, this.promised) || from !== f.id[1]) {
      this.host.log?.('debug', 'gcs: stale install ignored', { from, id: f.id, promised: this.promised });
      return;
    }
    this.flushing = false;
    this.current = f.id;
    this.currentNodes = [...f.nodes];
    this.need = !sameSet(this.reach, this.currentNodes);
    this.host.install(now, f);
    if (this.need) this.act(now, true);
  }

  /** The installed configuration matches reachability and no change is under way (for tests and the sim). */
  settled(): boolean {
    return !this.flushing && !this.need && this.round === undefined && sameSet(this.reach, this.currentNodes);
  }
}
