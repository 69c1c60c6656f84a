/**
 * One SLOTS member: the owner table of every slot of a DC, replicated at every member through agreed-order
 * multicast, and the local allocation state of this member. Pure: events in (allocate, free, deliver, view),
 * effects out through {@link SlotsIO}. No clock, no randomness, no I/O.
 *
 * Safety rests on one rule: a member allocates or donates only slots its own table says it owns, and every
 * change of ownership is either an agreed-order message (donation), a deterministic function of an agreed view
 * (crash reassignment, orphan reclaim in a full view) or a deterministic reconciliation of exchanged tables
 * (join/merge). docs/slots.md gives the argument.
 */
import { DvsError } from '../../protocol/errors.js';
import {
  type MemberId,
  memberId,
  NO_OWNER,
  nodeOf,
  type SlotsConfig,
  type SlotsIO,
  type SlotsMsg,
  type SlotsPhase,
  type SlotsStats,
  type SlotsView,
} from './types.js';

interface Round {
  id: number;
  urgent: boolean;
  /** Members that answered this round. */
  replied: Set<MemberId>;
  /** Slots received for this round. */
  got: number;
}

interface MergeState {
  view: number;
  /** Statuses delivered so far, in agreed order. */
  sides: { side: MemberId[]; owners: Int32Array }[];
  covered: Set<MemberId>;
}

/** Resolved parameters (defaults filled in). */
export interface SlotsParams {
  total: number;
  firstSlot: number;
  lowWater: number;
  highWater: number;
  maxDonation: number;
  maxOwned: number;
  waitForDonation: boolean;
}

/** Fill in the defaults of a config (the thesis' formulas). */
export function slotsParams(cfg: SlotsConfig): SlotsParams {
  if (!Number.isInteger(cfg.total) || cfg.total < 1)
    throw new DvsError('EINVAL', 'slots: total must be >= 1');
  if (cfg.nodes.length === 0) throw new DvsError('EINVAL', 'slots: the DC has no nodes');
  const n = cfg.nodes.length;
  const minOwned = Math.max(1, Math.floor(cfg.total / n));
  const lowWater = cfg.lowWater ?? Math.max(1, Math.floor(minOwned / 2));
  const highWater = Math.max(lowWater, cfg.highWater ?? minOwned);
  return {
    total: cfg.total,
    firstSlot: cfg.firstSlot,
    lowWater,
    highWater,
    maxDonation: Math.max(1, cfg.maxDonation ?? 4),
    maxOwned: cfg.maxOwned ?? Math.max(minOwned, cfg.total - lowWater * (n - 1)),
    waitForDonation: cfg.waitForDonation ?? true,
  };
}

/** The DC's initial owner table: slot i belongs to the first incarnation of node `sorted(nodes)[i % n]`. */
export function initialOwners(cfg: SlotsConfig): Int32Array {
  const nodes = [...cfg.nodes].sort((a, b) => a - b);
  const t = new Int32Array(cfg.total);
  for (let i = 0; i < cfg.total; i++) t[i] = memberId(nodes[i % nodes.length] as number, 0);
  return t;
}

/** Run-length encode an owner table: [owner, count, owner, count...]. */
export function encodeOwners(t: Int32Array): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < t.length) {
    const o = t[i] as number;
    let j = i + 1;
    while (j < t.length && t[j] === o) j++;
    out.push(o, j - i);
    i = j;
  }
  return out;
}

/** Decode {@link encodeOwners}; throws EPROTO if the runs do not cover exactly `total` slots. */
export function decodeOwners(rle: readonly number[], total: number): Int32Array {
  const t = new Int32Array(total);
  let i = 0;
  for (let k = 0; k + 1 < rle.length; k += 2) {
    const o = rle[k] as number;
    const c = rle[k + 1] as number;
    if (!(c > 0) || i + c > total) throw new DvsError('EPROTO', 'slots: bad owner table runs');
    t.fill(o, i, i + c);
    i += c;
  }
  if (i !== total || rle.length % 2 !== 0) throw new DvsError('EPROTO', 'slots: owner table size mismatch');
  return t;
}

/** Order of members in the ring and for "primary": by node id, then by id. */
function byNode(a: MemberId, b: MemberId): number {
  return nodeOf(a) - nodeOf(b) || a - b;
}

/**
 * The SLOTS state machine of one member.
 *
 * @example
 * const m = new SlotsMember(self, { nodes: [1, 2, 3], firstSlot: 64, total: 192 }, io);
 * group.subscribe({ deliver: (s, msg) => m.deliver(s, msg), view: (v) => m.view(v) });
 * m.allocate(1); // io.allocated(1, slot) now or after a donation, or io.failed(1, ENOSPC)
 */
export class SlotsMember {
  readonly params: SlotsParams;
  private readonly owners: Int32Array;
  /** Indices this member owns per its table (used, donating and free ones). */
  private readonly mine = new Set<number>();
  /** Owned indices in use by local processes. */
  private readonly used = new Set<number>();
  /** Owned indices in a donation multicast but not yet delivered back: neither free nor allocatable. */
  private readonly donating = new Set<number>();
  private current: SlotsView | null = null;
  private phaseNow: SlotsPhase = 'new';
  /** Allocation requests waiting for a donation, FIFO. */
  private readonly waiting: number[] = [];
  private round: Round | null = null;
  private roundSeq = 0;
  /** A non-urgent refill got nothing: do not refill again until a slot is freed or the view changes. */
  private refillBlocked = false;
  private merge: MergeState | null = null;
  /**
   * Members known to hold exactly this member's table: the last view that settled (or this member alone when
   * fresh). A join/merge aborted by another view change leaves the old sides' tables in place, so the sides of
   * the next view are computed from this set, not from the transitional set alone.
   */
  private peers = new Set<MemberId>();
  readonly stats: SlotsStats = {
    rounds: 0,
    urgentRounds: 0,
    donationsSent: 0,
    slotsDonated: 0,
    slotsReceived: 0,
    allocated: 0,
    failed: 0,
    merges: 0,
    conflicts: 0,
    reclaimed: 0,
  };

  constructor(
    readonly self: MemberId,
    readonly config: SlotsConfig,
    private readonly io: SlotsIO,
  ) {
    this.params = slotsParams(config);
    this.owners = initialOwners(config);
    this.rebuildMine();
    this.peers.add(self);
  }

  // ---- introspection (tests, simulation, metrics) ----

  get phase(): SlotsPhase {
    return this.phaseNow;
  }
  /** The installed view, or null before the first one. */
  get view(): SlotsView | null {
    return this.current;
  }
  /** Free slots this member can allocate or donate now. */
  get freeCount(): number {
    return this.mine.size - this.used.size - this.donating.size;
  }
  /** Slots this member owns (free, used and being donated). */
  get ownedCount(): number {
    return this.mine.size;
  }
  get usedCount(): number {
    return this.used.size;
  }
  get waitingCount(): number {
    return this.waiting.length;
  }
  /** The request round in progress, if any. */
  get pendingRound(): { id: number; urgent: boolean } | null {
    return this.round === null ? null : { id: this.round.id, urgent: this.round.urgent };
  }
  /** Owner of slot number `slot` in this member's table (NO_OWNER for an orphan). */
  ownerOf(slot: number): MemberId {
    return this.owners[slot - this.params.firstSlot] ?? NO_OWNER;
  }
  /** A copy of the owner table (by slot index). */
  table(): Int32Array {
    return this.owners.slice();
  }
  /** Slot numbers in use here. */
  usedSlots(): number[] {
    return [...this.used].map((i) => i + this.params.firstSlot);
  }
  /** True if this member may hand out slot number `slot` now (owned, not used, not being donated). */
  canAllocate(slot: number): boolean {
    const i = slot - this.params.firstSlot;
    return this.mine.has(i) && !this.used.has(i) && !this.donating.has(i);
  }

  // ---- local events ----

  /**
   * Allocate a slot for request `req`: `io.allocated(req, slot)` now if a free owned slot exists, else after a
   * donation; `io.failed(req, ENOSPC)` when no reachable member could give one. Before the first view the
   * request waits.
   */
  allocate(req: number): void {
    const i = this.phaseNow === 'new' ? undefined : this.takeFree();
    if (i !== undefined) {
      this.grant(req, i);
    } else if (this.params.waitForDonation || this.phaseNow === 'new') {
      this.waiting.push(req);
    } else {
      this.waiting.push(req);
      this.failWaiting(undefined);
    }
    this.maybeRequest();
  }

  /** Withdraw a waiting allocation (its caller gave up). True if it was still waiting. */
  cancel(req: number): boolean {
    const k = this.waiting.indexOf(req);
    if (k < 0) return false;
    this.waiting.splice(k, 1);
    return true;
  }

  /** A local process holding `slot` is gone: the slot is free again. Throws EINVAL if it is not in use here. */
  free(slot: number): void {
    const i = slot - this.params.firstSlot;
    if (!this.used.delete(i))
      throw new DvsError('EINVAL', `slots: slot ${slot} is not in use here`, { slot });
    this.refillBlocked = false;
    this.serveWaiting();
  }

  // ---- group events ----

  /** A message delivered by the group in agreed order. */
  deliver(sender: MemberId, msg: SlotsMsg): void {
    switch (msg.t) {
      case 'status':
        this.onStatus(msg);
        return;
      case 'req':
        if (sender === this.self) return;
        if (this.phaseNow !== 'running') {
          this.log('warn', 'slots: request delivered while not running', { sender, phase: this.phaseNow });
          return;
        }
        this.answer(sender, msg);
        return;
      case 'don':
        this.onDonation(sender, msg);
        return;
    }
  }

  /** A new view. */
  onView(v: SlotsView): void {
    const prev = this.current;
    this.current = { ...v, members: [...v.members].sort(byNode), transitional: [...v.transitional] };
    // Guarantee 4 (self delivery): a donation not delivered back to us before the view was delivered to nobody.
    this.donating.clear();
    this.round = null;
    this.refillBlocked = false;
    this.merge = null;
    // My side: the members that come with me and hold my table.
    const side = v.transitional.filter((m) => this.peers.has(m) || m === this.self).sort(byNode);
    if (side.length === v.members.length) {
      // Everyone holds my table: no exchange. Members gone for good (crash, leave) that shared my table lose
      // their slots to the primary; one that did not share it may have donated slots I do not know about, so its
      // slots stay frozen like those of a partitioned member.
      if (prev !== null && (v.reason === 'crash' || v.reason === 'leave')) {
        const members = new Set(v.members);
        const gone = new Set(prev.members.filter((m) => !members.has(m) && this.peers.has(m)));
        this.reassign((o) => gone.has(o));
      }
      this.settle();
      return;
    }
    // Members arrive from elsewhere: each side's lowest member multicasts its side's table; every member merges
    // the tables at the same point of the agreed order (when the last side's status is delivered).
    this.phaseNow = 'merging';
    this.merge = { view: v.id, sides: [], covered: new Set() };
    if (side[0] === this.self)
      this.io.multicast({
        t: 'status',
        view: v.id,
        side,
        owners: prev === null ? null : encodeOwners(this.owners),
      });
  }

  // ---- protocol ----

  private answer(requester: MemberId, req: Extract<SlotsMsg, { t: 'req' }>): void {
    const members = this.current?.members ?? [];
    const donors = Math.max(1, members.length - 1);
    const free = this.freeCount;
    const share = Math.max(1, Math.ceil(req.needed / donors));
    const surplus = free - this.params.lowWater;
    let give = surplus > 0 ? Math.min(this.params.maxDonation, share, surplus) : 0;
    // An urgent requester has nothing and processes waiting: anyone with a free slot gives at least one, so an
    // allocation fails only when no reachable member had a free slot.
    if (req.urgent && give === 0 && free > 0)
      give = Math.min(this.params.maxDonation, share, Math.ceil(free / 2));
    // The requester's next member always answers (even with nothing), so the requester never waits forever.
    const must = req.urgent || this.nextOf(requester) === this.self;
    if (give === 0 && !must) return;
    const slots: number[] = [];
    for (const i of this.mine) {
      if (slots.length >= give) break;
      if (this.used.has(i) || this.donating.has(i)) continue;
      slots.push(i);
    }
    for (const i of slots) this.donating.add(i);
    this.stats.donationsSent++;
    this.stats.slotsDonated += slots.length;
    this.io.multicast({ t: 'don', round: req.round, to: requester, slots });
  }

  private onDonation(donor: MemberId, don: Extract<SlotsMsg, { t: 'don' }>): void {
    if (this.phaseNow === 'new') return;
    let n = 0;
    for (const i of don.slots) {
      if (this.owners[i] !== donor) {
        // Never happens while the GCS keeps its guarantees; refusing keeps the table consistent if it does.
        this.log('error', 'slots: donation of a slot the donor does not own', { donor, slot: i });
        continue;
      }
      if (donor === this.self) this.donating.delete(i);
      this.setOwner(i, don.to);
      n++;
    }
    if (don.to !== this.self) return;
    this.stats.slotsReceived += n;
    this.serveWaiting();
    const r = this.round;
    if (r === null || don.round !== r.id) return;
    r.replied.add(donor);
    r.got += n;
    const others = (this.current?.members.length ?? 1) - 1;
    const done = r.urgent ? r.replied.size >= others : donor === this.nextOf(this.self);
    if (!done) return;
    this.round = null;
    if (this.waiting.length > 0 && r.urgent && r.got === 0) {
      this.failWaiting(r.id);
      return;
    }
    if (this.waiting.length === 0 && !r.urgent && r.got === 0) this.refillBlocked = true;
    this.maybeRequest();
  }

  private onStatus(st: Extract<SlotsMsg, { t: 'status' }>): void {
    const m = this.merge;
    if (this.phaseNow !== 'merging' || m === null || st.view !== m.view) return;
    const owners =
      st.owners === null ? initialOwners(this.config) : decodeOwners(st.owners, this.params.total);
    m.sides.push({ side: st.side, owners });
    for (const x of st.side) m.covered.add(x);
    const members = this.current?.members ?? [];
    if (members.every((x) => m.covered.has(x))) this.completeMerge(m);
  }

  /**
   * Reconcile the sides' tables. A side claims a slot when its table names one of the side's own members as
   * owner; only the owner's side can know the owner still holds it. Claimed by one side: that owner. Claimed by
   * none: frozen with the first side's owner if that owner is outside the view (it may be alive elsewhere), an
   * orphan if the named owner is in the view but its side does not claim it (a donation cut by a partition).
   */
  private completeMerge(m: MergeState): void {
    const sides = [...m.sides].sort((a, b) => byNode(a.side[0] ?? 0, b.side[0] ?? 0));
    const members = new Set(this.current?.members ?? []);
    const sets = sides.map((s) => new Set(s.side));
    for (let i = 0; i < this.params.total; i++) {
      let owner: MemberId | undefined;
      for (let k = 0; k < sides.length; k++) {
        const o = (sides[k] as (typeof sides)[number]).owners[i] as number;
        if (!(sets[k] as Set<MemberId>).has(o)) continue;
        if (owner === undefined) owner = o;
        else if (o !== owner) {
          // Two sides each think one of theirs owns it: a GCS guarantee was broken. Lowest member wins.
          this.stats.conflicts++;
          this.log('error', 'slots: slot claimed by two sides at merge', { slot: i, a: owner, b: o });
          if (byNode(o, owner) < 0) owner = o;
        }
      }
      if (owner === undefined) {
        const named = (sides[0]?.owners[i] as number | undefined) ?? NO_OWNER;
        const anyInView = sides.some((s) => members.has(s.owners[i] as number));
        owner = anyInView ? NO_OWNER : named;
      }
      this.owners[i] = owner;
    }
    this.rebuildMine();
    for (const i of this.used)
      if (!this.mine.has(i))
        this.log('error', 'slots: a slot in use here lost its owner at merge', { slot: i });
    this.stats.merges++;
    this.merge = null;
    this.settle();
  }

  /** After a view (and its merge, if any): running; reclaim orphans in a full view; serve and request. */
  private settle(): void {
    this.phaseNow = 'running';
    const v = this.current;
    if (v !== null) {
      this.peers = new Set(v.members);
      const nodes = new Set(v.members.map(nodeOf));
      if (this.config.nodes.every((n) => nodes.has(n))) {
        // Every node of the DC is here, so no other partition exists: slots of members not in the view (dead
        // incarnations, orphans) belong to nobody alive and go to the primary.
        const members = new Set(v.members);
        this.reassign((o) => !members.has(o));
      }
    }
    this.serveWaiting();
    this.maybeRequest();
  }

  /** Give every slot whose owner matches `gone` to the view's primary (lowest node id). */
  private reassign(gone: (owner: MemberId) => boolean): void {
    const primary = this.current?.members[0];
    if (primary === undefined) return;
    for (let i = 0; i < this.params.total; i++) {
      if (!gone(this.owners[i] as number)) continue;
      this.setOwner(i, primary);
      if (primary === this.self) this.stats.reclaimed++;
    }
  }

  private maybeRequest(): void {
    if (this.phaseNow !== 'running' || this.round !== null) return;
    const v = this.current;
    if (v === null) return;
    const others = v.members.length - 1;
    const free = this.freeCount;
    if (this.waiting.length > 0 && free === 0) {
      if (others === 0 || !this.params.waitForDonation) {
        this.failWaiting(undefined);
        return;
      }
      const needed = Math.min(this.params.maxDonation * others, this.waiting.length + this.params.highWater);
      this.startRound(true, needed);
      return;
    }
    if (others === 0 || this.refillBlocked) return;
    if (free < this.params.lowWater && this.mine.size < this.params.maxOwned)
      this.startRound(false, this.params.highWater - free);
  }

  private startRound(urgent: boolean, needed: number): void {
    const id = ++this.roundSeq;
    this.round = { id, urgent, replied: new Set(), got: 0 };
    this.stats.rounds++;
    if (urgent) this.stats.urgentRounds++;
    this.io.multicast({ t: 'req', round: id, needed, urgent });
  }

  private failWaiting(round: number | undefined): void {
    const reqs = this.waiting.splice(0);
    for (const req of reqs) {
      this.stats.failed++;
      this.io.failed(
        req,
        new DvsError('ENOSPC', 'no free slot reachable in the DC', {
          member: this.self,
          ...(round === undefined ? {} : { round }),
        }),
      );
    }
  }

  private serveWaiting(): void {
    if (this.phaseNow === 'new') return;
    while (this.waiting.length > 0) {
      const i = this.takeFree();
      if (i === undefined) return;
      this.grant(this.waiting.shift() as number, i);
    }
  }

  private takeFree(): number | undefined {
    for (const i of this.mine) if (!this.used.has(i) && !this.donating.has(i)) return i;
    return undefined;
  }

  private grant(req: number, i: number): void {
    this.used.add(i);
    this.stats.allocated++;
    this.io.allocated(req, this.params.firstSlot + i);
  }

  /** The member after `m` in the view's ring (by node id). */
  private nextOf(m: MemberId): MemberId | undefined {
    const ms = this.current?.members ?? [];
    const k = ms.indexOf(m);
    if (k < 0 || ms.length < 2) return undefined;
    return ms[(k + 1) % ms.length];
  }

  private setOwner(i: number, o: MemberId): void {
    this.owners[i] = o;
    if (o === this.self) this.mine.add(i);
    else this.mine.delete(i);
  }

  private rebuildMine(): void {
    this.mine.clear();
    for (let i = 0; i < this.owners.length; i++) if (this.owners[i] === this.self) this.mine.add(i);
  }

  private log(
    level: 'debug' | 'info' | 'warn' | 'error',
    msg: string,
    fields?: Record<string, unknown>,
  ): void {
    this.io.log?.(level, msg, { member: this.self, ...fields });
  }
}
