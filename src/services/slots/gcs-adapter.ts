/**
 * {@link SlotsGroup} over src/gcs: SLOTS's abstract group (docs/slots.md, "What SLOTS needs from the GCS")
 * mapped onto one GCS group whose members are the SLOTS members of a DC, one per node.
 *
 * - Member ids: a GCS member is `(node, ep)`; its SLOTS id is `incarnation * 65536 + node`, where the
 *   incarnation is the node's SLOTS life for this DC (0 for the first). The driver decides how a GCS member
 *   carries it ({@link GcsSlotsPort.memberId}); the daemon packs it into the internal member's endpoint.
 * - Views: members mapped to SLOTS ids; the transitional set is the new view ∩ this member's previous view
 *   (itself alone on its first view); reasons map one to one, except `expel` (a member that stopped reading,
 *   alive) which is reported as `partition`: SLOTS may reassign only what dead members owned.
 * - View ids: SLOTS needs one number per view, equal at every member: a 52-bit FNV-1a hash of the GCS view id.
 * - Messages: MessagePack of `{v, m}`: the SlotsMsg `m` and the number of the view it was sent in, in
 *   agreed order. A message delivered in another view than `v` (the GCS orders a multicast sent while a
 *   view was closing in the next configuration) is dropped by every member alike: "delivered in its
 *   sending view, or to nobody", which is what SLOTS's guarantees 2 and 4 ask.
 */
import { Packr } from 'msgpackr';
import type { GcsEvent, Member, ViewId } from '../../gcs/types.js';
import type { MemberId, SlotsGroup, SlotsMsg, SlotsView, ViewReason } from './types.js';

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** What the adapter needs from the GCS side (the daemon's internal member of the DC's SLOTS group). */
export interface GcsSlotsPort {
  /** This member's SLOTS id. */
  readonly self: MemberId;
  /** SLOTS id of a GCS member of the group (undefined: not a SLOTS member, ignored). */
  memberId(m: Member): MemberId | undefined;
  /** Multicast bytes to the group in agreed order. */
  multicast(payload: Uint8Array): void;
}

/** Number of a GCS view id, equal at every member (FNV-1a over its fields, 52 bits). */
export function slotsViewId(id: ViewId): number {
  let h = 0xcbf29ce484222325n;
  const text = `${id.epoch}.${id.coord}.${id.inc}.${id.seq}`;
  for (let i = 0; i < text.length; i++) {
    h ^= BigInt(text.charCodeAt(i));
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(h & 0xfffffffffffffn);
}

/**
 * @example
 * const group = new GcsSlotsGroup(port);
 * const svc = new SlotsService({ group, config, dc, logger });
 * svc.start();
 * // the port's GCS events go to group.onEvent(ev)
 */
export class GcsSlotsGroup implements SlotsGroup {
  readonly self: MemberId;
  private handlers: { deliver(sender: MemberId, msg: SlotsMsg): void; view(view: SlotsView): void } | null =
    null;
  private prev: Set<MemberId> | null = null;
  /** Number of the current view (-1 before the first). */
  private viewNum = -1;
  /** Messages dropped because they were delivered outside their sending view. */
  dropped = 0;
  /** Events that arrived before subscribe (the first view can come as soon as the member joins). */
  private early: GcsEvent[] = [];

  constructor(private readonly port: GcsSlotsPort) {
    this.self = port.self;
  }

  multicast(msg: SlotsMsg): void {
    this.port.multicast(packr.pack({ v: this.viewNum, m: msg }));
  }

  subscribe(handlers: { deliver(sender: MemberId, msg: SlotsMsg): void; view(view: SlotsView): void }) {
    this.handlers = handlers;
    const early = this.early;
    this.early = [];
    for (const ev of early) this.onEvent(ev);
    return () => {
      if (this.handlers === handlers) this.handlers = null;
    };
  }

  /** A GCS delivery for this member. Malformed messages are dropped (every member drops them alike). */
  onEvent(ev: GcsEvent): void {
    const h = this.handlers;
    if (h === null) {
      this.early.push(ev);
      return;
    }
    if (ev.kind === 'view') {
      const members: MemberId[] = [];
      for (const m of ev.view.members) {
        const id = this.port.memberId(m);
        if (id !== undefined) members.push(id);
      }
      const prev = this.prev;
      const transitional = prev === null ? [this.self] : members.filter((m) => prev.has(m));
      if (!transitional.includes(this.self)) transitional.push(this.self);
      this.prev = new Set(members);
      const reason: ViewReason = ev.view.reason === 'expel' ? 'partition' : ev.view.reason;
      this.viewNum = slotsViewId(ev.view.id);
      h.view({ id: this.viewNum, members, reason, transitional });
      return;
    }
    const sender = this.port.memberId(ev.sender);
    if (sender === undefined) return;
    let w: unknown;
    try {
      w = packr.unpack(ev.payload);
    } catch {
      return;
    }
    if (typeof w !== 'object' || w === null) return;
    const { v, m } = w as { v?: unknown; m?: unknown };
    if (!isSlotsMsg(m)) return;
    if (v !== this.viewNum) {
      this.dropped++;
      return;
    }
    h.deliver(sender, m);
  }
}

function isInts(x: unknown): x is number[] {
  return Array.isArray(x) && x.every((v) => typeof v === 'number' && Number.isSafeInteger(v));
}

function isSlotsMsg(x: unknown): x is SlotsMsg {
  if (typeof x !== 'object' || x === null) return false;
  const m = x as Record<string, unknown>;
  switch (m.t) {
    case 'req':
      return typeof m.round === 'number' && typeof m.needed === 'number' && typeof m.urgent === 'boolean';
    case 'don':
      return typeof m.round === 'number' && typeof m.to === 'number' && isInts(m.slots);
    case 'status':
      return typeof m.view === 'number' && isInts(m.side) && (m.owners === null || isInts(m.owners));
    default:
      return false;
  }
}
