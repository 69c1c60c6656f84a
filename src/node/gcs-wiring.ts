/**
 * Group communication in the daemon (docs/gcs.md, "In the daemon"): one {@link GcsNode} per daemon, fed by
 * the node links and by the `group.*` service methods that SDK processes call.
 *
 * ```
 *   process ──group.join/multicast/leave/consumed──▶ GcsWiring ──▶ GcsNode ──sendTo──▶ links ──▶ peer daemons
 *      ▲                                                │   ▲                                   │
 *      └──── EVENT frames (views, messages) ◀── deliver ┘   └── frames {t:'gcs'}, nodeUp/Down ◀─┘
 * ```
 *
 * Wire format between daemons: one node-link control frame per GCS frame (MessagePack, tag 16):
 * ```
 *   { t: 'gcs', dc: 0, f: GcsFrame }     GcsFrame as drawn in src/gcs/types.ts
 * ```
 * pinned by test/integration/gcs/wire.test.ts.
 *
 * Members. The core names a member `(node, ep)` and keys a node's local members by `ep` alone, but endpoint
 * numbers are unique only inside a DC. The daemon therefore hands the core a *GCS endpoint* that packs the
 * DC in (and back out in views and deliveries):
 * ```
 *   process of DC d, endpoint e (0..2^31-2):     d * 2^31 + e
 *   daemon-internal member (SLOTS), DC d, tag k:  2^47 + k * 2^16 + d
 * ```
 * Group names starting with `.` are reserved for daemon-internal groups (EPERM for processes).
 *
 * Reachability comes from the link layer (nodeUp / nodeDown; a restarted peer is reported down then up);
 * the incarnation is the daemon's start time in ms; a tick timer drives acknowledgements and stuck view
 * changes; a process's memberships end when its session closes (`memberGone`, reason crash).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  type GcsEvent,
  type GcsFrame,
  GcsNode,
  type GroupId,
  type Member,
  ORDERS,
  type Order,
  type View,
  type ViewId,
} from '../gcs/index.js';
import type { ControlFrame, DcId, Endpoint, NodeId } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';
import type { AdminContext } from './local-server.js';
import { callerDc, type ServiceRegistry } from './services.js';

/** Multiplier of the DC in a process's GCS endpoint. */
export const GCS_DC_SHIFT = 2 ** 31;
/** First GCS endpoint of daemon-internal members. */
export const GCS_INTERNAL_BASE = 2 ** 47;

/** The GCS endpoint of endpoint `ep` of DC `dc`. */
export function gcsEndpoint(dc: DcId, ep: Endpoint): number {
  return dc * GCS_DC_SHIFT + ep;
}

/** The GCS endpoint of a daemon-internal member of DC `dc` with tag `tag` (e.g. a SLOTS incarnation). */
export function internalEndpoint(dc: DcId, tag: number): number {
  return GCS_INTERNAL_BASE + tag * 65536 + dc;
}

/** What a GCS endpoint stands for. */
export type DecodedEndpoint =
  | { kind: 'process'; dc: DcId; ep: Endpoint }
  | { kind: 'internal'; dc: DcId; tag: number };

/** Inverse of {@link gcsEndpoint} / {@link internalEndpoint}. */
export function decodeEndpoint(gep: number): DecodedEndpoint {
  if (gep >= GCS_INTERNAL_BASE) {
    const rest = gep - GCS_INTERNAL_BASE;
    return { kind: 'internal', dc: rest % 65536, tag: Math.floor(rest / 65536) };
  }
  return { kind: 'process', dc: Math.floor(gep / GCS_DC_SHIFT), ep: gep % GCS_DC_SHIFT };
}

/** A view as a process sees it: endpoints of its DC. */
export interface GroupView {
  id: ViewId;
  group: string;
  members: Member[];
  reason: View['reason'];
}

/** An EVENT pushed to a process under its join's subscription id. */
export type GroupEventWire =
  | { t: 'view'; view: GroupView }
  | {
      t: 'msg';
      sender: Member;
      order: Order;
      payload: Uint8Array;
      seq: number;
      view: ViewId;
      transitional?: true;
    }
  | { t: 'expelled'; reason: string };

/** One group as `group.ls` reports it for one node. */
export interface GroupRow {
  node: NodeId;
  dc: DcId;
  name: string;
  /** The view as this node knows it (null: no member anywhere that this node knows of). */
  view: { id: ViewId; members: Member[] } | null;
  /** This node's members of the group and their unconsumed deliveries. */
  local: { ep: Endpoint; backlog: number }[];
  /** Local counters since the daemon started: multicasts sent by local members, deliveries, views. */
  sent: number;
  delivered: number;
  views: number;
}

/** The result of `group.ls` on one node. */
export interface GroupList {
  node: NodeId;
  /** The node configuration this node is in, and whether a view change is running. */
  cfg: [number, number, number];
  nodes: NodeId[];
  flushing: boolean;
  groups: GroupRow[];
}

/** A daemon-internal member (a DVK service's group). */
export interface InternalMember {
  readonly member: Member;
  multicast(order: Order, payload: Uint8Array): void;
  /** Leave the group (idempotent). */
  close(): void;
}

export interface GcsWiringOptions {
  nodeId: NodeId;
  /** Grows across restarts: the daemon's start time in ms. */
  incarnation: number;
  /** Send a control frame on the link to `node` (false: the link is down, the frame is lost). */
  send(node: NodeId, frame: ControlFrame): boolean;
  resolveDc(ref: DcId | string): DcId;
  logger: Logger;
  registry?: Registry;
  /** Unconsumed deliveries before a member is expelled (default: DVS_GCS_MAX_BACKLOG, else 1024). */
  maxBacklog?: number;
  /** Largest multicast payload, bytes (default 64 KiB: a view change carries unstable ops in one frame). */
  maxPayload?: number;
  /** Timer period, ms (default 20). */
  tickMs?: number;
  /** View-change restart timeout, ms (default 500). */
  flushTimeoutMs?: number;
  /** A configuration change (for the event log). */
  onConfig?(cfg: [number, number, number], nodes: NodeId[]): void;
}

interface Sub {
  sub: number;
  push: (sub: number, data: unknown) => boolean;
}

/** A local member: a process (subs per group) or an internal handler. */
interface LocalRec {
  dc: DcId;
  /** Process endpoint (undefined for internal members). */
  ep: Endpoint | undefined;
  subs: Map<string, Sub>;
  internal: ((ev: GcsEvent) => void) | undefined;
  backlog: number;
  /** The session that owns it (processes). */
  proc: number | undefined;
}

interface GroupCounters {
  sent: number;
  delivered: number;
  views: number;
}

const RESERVED = /^\./;

/** The daemon's group communication: a GcsNode, its timers, its links and its service methods. */
export class GcsWiring {
  readonly gcs: GcsNode;
  private readonly o: GcsWiringOptions;
  private readonly log: Logger;
  private readonly up = new Set<NodeId>();
  private readonly locals = new Map<number, LocalRec>();
  private readonly counters = new Map<string, GroupCounters>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private lastCfg = '';
  private readonly mDelivered: Counter | undefined;
  private readonly mSent: Counter | undefined;
  private readonly mViews: Counter | undefined;
  private readonly mExpelled: Counter | undefined;
  private readonly mConfigs: Counter | undefined;

  constructor(o: GcsWiringOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'gcs' });
    const env = Number(process.env.DVS_GCS_MAX_BACKLOG);
    const maxBacklog = o.maxBacklog ?? (Number.isInteger(env) && env > 0 ? env : undefined);
    this.gcs = new GcsNode({
      nodeId: o.nodeId,
      incarnation: o.incarnation,
      maxPayload: o.maxPayload ?? 64 * 1024,
      ...(maxBacklog !== undefined ? { maxBacklog } : {}),
      flushTimeoutMs: o.flushTimeoutMs ?? 500,
      io: {
        sendTo: (node, f) => this.sendTo(node, f),
        deliver: (m, ev) => this.deliver(m, ev),
        expelled: (m, reason) => this.expelled(m, reason),
        log: (level, msg, fields) => this.log[level](fields ?? {}, msg),
      },
    });
    const reg = o.registry;
    if (reg) {
      const counter = (name: string, help: string) =>
        (reg.getSingleMetric(name) as Counter | undefined) ?? new Counter({ name, help, registers: [reg] });
      this.mDelivered = counter(
        'dvs_gcs_delivered_messages_total',
        'Group messages delivered to local members',
      );
      this.mSent = counter('dvs_gcs_multicast_messages_total', 'Group messages multicast by local members');
      this.mViews = counter('dvs_gcs_views_total', 'Group views delivered to local members');
      this.mExpelled = counter('dvs_gcs_expelled_members_total', 'Local members expelled (flow control)');
      this.mConfigs = counter('dvs_gcs_configurations_total', 'Node configurations installed');
      const name = 'dvs_gcs_known_groups';
      if (!reg.getSingleMetric(name)) {
        const self = this;
        new Gauge({
          name,
          help: 'Groups with members known to this node',
          registers: [reg],
          collect() {
            this.set(self.gcs.stats().groups);
          },
        });
      }
    }
  }

  /** Register `group.join`, `group.leave`, `group.multicast`, `group.consumed`, `group.ls`. */
  register(registry: ServiceRegistry): void {
    registry.registerAll('group', {
      join: (p, ctx) => this.join(p, ctx),
      leave: (p, ctx) => this.leave(p, ctx),
      multicast: (p, ctx) => this.multicast(p, ctx),
      consumed: (p, ctx) => this.consumed(p, ctx),
      ls: (p, ctx) => this.list(callerDc(p, ctx, (r) => this.o.resolveDc(r))),
    });
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.timer = setInterval(() => this.tick(), this.o.tickMs ?? 20);
    this.timer.unref();
    this.gcs.reachable(Date.now(), this.up);
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const rec of this.locals.values())
      for (const s of rec.subs.values()) s.push(s.sub, { t: 'expelled', reason: 'daemon stopping' });
    this.locals.clear();
  }

  /** A `{t:'gcs'}` control frame from the link to `from`. */
  onFrame(from: NodeId, frame: ControlFrame): void {
    if (!this.running) return;
    this.gcs.receive(Date.now(), from, frame.f);
    this.noteConfig();
  }

  /** The link layer's verdicts. A restarted peer comes as down then up: the core requires it. */
  nodeUp(node: NodeId): void {
    this.up.add(node);
    if (this.running) this.gcs.reachable(Date.now(), this.up);
  }

  nodeDown(node: NodeId): void {
    this.up.delete(node);
    if (this.running) this.gcs.reachable(Date.now(), this.up);
  }

  /**
   * Join `name` of DC `dc` as a daemon-internal member (a DVK service such as SLOTS). `onEvent` is called with
   * each view and message; deliveries are consumed at once (internal members are never flow-controlled).
   */
  joinInternal(dc: DcId, name: string, tag: number, onEvent: (ev: GcsEvent) => void): InternalMember {
    const member: Member = { node: this.o.nodeId, ep: internalEndpoint(dc, tag) };
    const group: GroupId = { dc, name };
    const rec: LocalRec = {
      dc,
      ep: undefined,
      subs: new Map(),
      internal: onEvent,
      backlog: 0,
      proc: undefined,
    };
    // Registered first: the first view may be delivered inside join() when this node is the sequencer.
    this.locals.set(member.ep, rec);
    try {
      this.gcs.join(Date.now(), dc, group, member);
    } catch (e) {
      this.locals.delete(member.ep);
      throw e;
    }
    let closed = false;
    return {
      member,
      multicast: (order, payload) => {
        if (closed) throw dvsError('EEXPELLED', 'internal member closed');
        this.gcs.multicast(Date.now(), dc, group, member, order, payload);
        this.count(group, 'sent');
      },
      close: () => {
        if (closed) return;
        closed = true;
        rec.internal = undefined;
        try {
          this.gcs.leave(Date.now(), dc, group, member);
        } catch {
          // already gone (expelled or never joined): nothing to leave
        }
      },
    };
  }

  /** `group.ls` for DC `dc` on this node. */
  list(dc: DcId): GroupList {
    const st = this.gcs.stats();
    const rows = new Map<string, GroupRow>();
    const row = (name: string): GroupRow => {
      let r = rows.get(name);
      if (r === undefined) {
        const c = this.counters.get(`${dc}/${name}`) ?? { sent: 0, delivered: 0, views: 0 };
        r = { node: this.o.nodeId, dc, name, view: null, local: [], ...c };
        rows.set(name, r);
      }
      return r;
    };
    for (const g of this.gcs.listGroups()) {
      if (g.group.dc !== dc || RESERVED.test(g.group.name)) continue;
      row(g.group.name).view = { id: g.id, members: g.members.map(toProcessMember) };
    }
    for (const rec of this.locals.values()) {
      if (rec.dc !== dc || rec.ep === undefined) continue;
      for (const name of rec.subs.keys()) row(name).local.push({ ep: rec.ep, backlog: rec.backlog });
    }
    return {
      node: this.o.nodeId,
      cfg: st.cfg,
      nodes: st.nodes,
      flushing: st.flushing,
      groups: [...rows.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    };
  }

  // ---------------------------------------------------------------------------------------- service methods

  private processMember(p: Record<string, unknown>, ctx: AdminContext): { dc: DcId; member: Member } {
    if (ctx.caller === undefined)
      throw dvsError('EINVAL', 'groups are used by processes (connect with the SDK)');
    const dc = callerDc(p, ctx, (r) => this.o.resolveDc(r));
    return { dc, member: { node: this.o.nodeId, ep: gcsEndpoint(dc, ctx.caller.ep) } };
  }

  private groupOf(dc: DcId, name: unknown): GroupId {
    if (typeof name !== 'string') throw dvsError('EINVAL', 'name must be a group name');
    if (RESERVED.test(name))
      throw dvsError('EPERM', `group names starting with '.' are reserved for the daemon`);
    return { dc, name };
  }

  private join(p: Record<string, unknown>, ctx: AdminContext): { name: string; member: Member } {
    this.mustRun();
    const { dc, member } = this.processMember(p, ctx);
    const group = this.groupOf(dc, p.name);
    const sub = p.sub;
    if (typeof sub !== 'number' || !Number.isInteger(sub) || sub < 1 || sub > 0xffffffff)
      throw dvsError('EINVAL', 'sub must be a subscription id (1..2^32-1)');
    const proc = ctx.caller?.proc;
    const prev = this.locals.get(member.ep);
    if (prev !== undefined && prev.proc !== proc && prev.subs.size > 0)
      throw dvsError('EBUSY', 'this endpoint is a group member through another session');
    const rec = prev ?? { dc, ep: ctx.caller?.ep, subs: new Map(), internal: undefined, backlog: 0, proc };
    // Registered before join(): the first view may be delivered inside it (this node is the sequencer).
    const had = rec.subs.get(group.name);
    rec.subs.set(group.name, { sub, push: ctx.push });
    this.locals.set(member.ep, rec);
    try {
      this.gcs.join(Date.now(), dc, group, member);
    } catch (e) {
      if (had) rec.subs.set(group.name, had);
      else rec.subs.delete(group.name);
      if (prev === undefined) this.locals.delete(member.ep);
      throw e;
    }
    if (prev === undefined || prev.proc !== proc) {
      rec.proc = proc;
      // The session's end is the process's end as far as its groups go: reason crash for the others.
      ctx.onClose(() => {
        if (this.locals.get(member.ep) !== rec) return;
        this.locals.delete(member.ep);
        if (this.running) this.gcs.memberGone(Date.now(), member);
      });
    }
    return { name: group.name, member: { node: member.node, ep: ctx.caller?.ep ?? 0 } };
  }

  private leave(p: Record<string, unknown>, ctx: AdminContext): null {
    this.mustRun();
    const { dc, member } = this.processMember(p, ctx);
    const group = this.groupOf(dc, p.name);
    this.gcs.leave(Date.now(), dc, group, member);
    this.locals.get(member.ep)?.subs.delete(group.name);
    return null;
  }

  private multicast(p: Record<string, unknown>, ctx: AdminContext): null {
    this.mustRun();
    const { dc, member } = this.processMember(p, ctx);
    const group = this.groupOf(dc, p.name);
    const order = p.order ?? 'agreed';
    if (typeof order !== 'string' || !(ORDERS as readonly string[]).includes(order))
      throw dvsError('EINVAL', `unknown delivery order ${String(order)} (fifo, causal, agreed, safe)`);
    if (!(p.payload instanceof Uint8Array)) throw dvsError('EINVAL', 'payload must be bytes');
    this.gcs.multicast(Date.now(), dc, group, member, order as Order, p.payload);
    this.count(group, 'sent');
    this.mSent?.inc();
    return null;
  }

  private consumed(p: Record<string, unknown>, ctx: AdminContext): null {
    const { member } = this.processMember(p, ctx);
    const n = p.n;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw dvsError('EINVAL', 'n must be >= 1');
    const rec = this.locals.get(member.ep);
    if (rec !== undefined) rec.backlog = Math.max(0, rec.backlog - n);
    this.gcs.consumed(member, n);
    return null;
  }

  // ---------------------------------------------------------------------------------------- GcsIO

  private sendTo(node: NodeId, f: GcsFrame): void {
    try {
      this.o.send(node, { t: 'gcs', dc: 0, f } as ControlFrame);
    } catch (e) {
      // A frame above the link limit (a huge flush): lost, like a frame on a link that went down; the view
      // change restarts after its timeout.
      this.log.error({ err: e, peer: node, frame: f.t }, 'gcs frame not sent');
    }
  }

  private deliver(m: Member, ev: GcsEvent): void {
    const rec = this.locals.get(m.ep);
    const group = ev.kind === 'view' ? ev.view.group : ev.group;
    if (rec === undefined) {
      // Gone meanwhile (its session closed): count it consumed so the core can forget the member.
      queueMicrotask(() => this.gcs.consumed(m, 1));
      return;
    }
    if (ev.kind === 'view') {
      this.count(group, 'views');
      this.mViews?.inc();
    } else {
      this.count(group, 'delivered');
      this.mDelivered?.inc();
    }
    if (rec.internal !== undefined) {
      const fn = rec.internal;
      // Consumed after the core has counted the delivery (it increments the backlog after deliver returns).
      queueMicrotask(() => this.gcs.consumed(m, 1));
      fn(ev);
      return;
    }
    if (rec.internal === undefined && rec.ep === undefined) {
      queueMicrotask(() => this.gcs.consumed(m, 1));
      return;
    }
    const s = rec.subs.get(group.name);
    if (s === undefined) {
      queueMicrotask(() => this.gcs.consumed(m, 1));
      return;
    }
    rec.backlog++;
    const wire: GroupEventWire =
      ev.kind === 'view'
        ? {
            t: 'view',
            view: {
              id: ev.view.id,
              group: group.name,
              members: ev.view.members.map(toProcessMember),
              reason: ev.view.reason,
            },
          }
        : {
            t: 'msg',
            sender: toProcessMember(ev.sender),
            order: ev.order,
            payload: ev.payload,
            seq: ev.seq,
            view: ev.view,
            ...(ev.transitional ? { transitional: true as const } : {}),
          };
    s.push(s.sub, wire);
  }

  private expelled(m: Member, reason: string): void {
    this.mExpelled?.inc();
    const rec = this.locals.get(m.ep);
    this.log.warn({ member: decodeEndpoint(m.ep), reason }, 'group member expelled');
    if (rec === undefined) return;
    for (const s of rec.subs.values()) s.push(s.sub, { t: 'expelled', reason });
    rec.subs.clear();
  }

  // ---------------------------------------------------------------------------------------- helpers

  private tick(): void {
    if (!this.running) return;
    this.gcs.tick(Date.now());
    this.noteConfig();
  }

  private noteConfig(): void {
    const st = this.gcs.stats();
    const key = `${st.cfg.join('.')}|${st.nodes.join(',')}`;
    if (key === this.lastCfg || st.flushing) return;
    this.lastCfg = key;
    this.mConfigs?.inc();
    this.log.info({ cfg: st.cfg, nodes: st.nodes }, 'gcs configuration installed');
    this.o.onConfig?.(st.cfg, st.nodes);
  }

  private count(g: GroupId, what: keyof GroupCounters): void {
    const k = `${g.dc}/${g.name}`;
    let c = this.counters.get(k);
    if (c === undefined) {
      c = { sent: 0, delivered: 0, views: 0 };
      this.counters.set(k, c);
    }
    c[what]++;
  }

  private mustRun(): void {
    if (!this.running) throw dvsError('EUNAVAIL', 'group communication not running');
  }
}

/** A member as a process sees it: its endpoint in the DC (internal members keep their GCS endpoint). */
function toProcessMember(m: Member): Member {
  const d = decodeEndpoint(m.ep);
  return d.kind === 'process' ? { node: m.node, ep: d.ep } : { node: m.node, ep: m.ep };
}
