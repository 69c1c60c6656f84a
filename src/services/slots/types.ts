/**
 * SLOTS: the fault-tolerant distributed slot allocator of the thesis (IEEE LAT 15(11), 2017), as a pure state
 * machine. These are its contract types: member ids, views, the messages members multicast, the group it runs
 * on, and the effects it emits. docs/slots.md describes the protocol and why it is safe.
 */
import type { DvsError } from '../../protocol/errors.js';

/**
 * A group member: one incarnation of one node's SLOTS member for a DC. Unique over the DC's whole life:
 * `incarnation * 65536 + node` (see {@link memberId}). A node that restarts comes back with a higher
 * incarnation, so nothing owned by its previous incarnation is mistaken for its own.
 */
export type MemberId = number;

/** The owner table's value for "no owner" (an orphan: unclaimed after a merge, reclaimed in a full view). */
export const NO_OWNER: MemberId = -1;

/** Member id of `node`'s `incarnation`-th life in the DC (incarnation 0 = the first). */
export function memberId(node: number, incarnation: number): MemberId {
  return incarnation * 65536 + node;
}

/** The node a member runs on. */
export function nodeOf(m: MemberId): number {
  return m % 65536;
}

/** Which life of its node the member is (0 = the first). */
export function incarnationOf(m: MemberId): number {
  return Math.floor(m / 65536);
}

/**
 * Why a view was installed. `crash` and `leave`: the members that are gone are dead (fail-stop, fenced by the
 * GCS); their slots are reassigned. `partition`: the members that are gone may be alive on the other side;
 * their slots are frozen. `join` and `merge`: members arrive; owner tables are exchanged and reconciled.
 */
export type ViewReason = 'join' | 'leave' | 'crash' | 'partition' | 'merge';

/** A membership view as the member sees it (extended virtual synchrony). */
export interface SlotsView {
  /** View id, unique in the group. */
  id: number;
  /** Members of the view. */
  members: readonly MemberId[];
  reason: ViewReason;
  /**
   * The EVS transitional set: the members of this view that come from the receiver's previous view with it
   * (the receiver included). `[self]` for a member that had no previous view. Members in the same
   * transitional set delivered the same messages before this view, so they hold identical owner tables.
   */
  transitional: readonly MemberId[];
}

/**
 * Protocol messages (multicast in agreed order). All are small except `status`, sent only on view changes.
 *
 * ```
 *   req     { t:'req',    round, needed, urgent }   a member below its low water mark asks for slots
 *                                                   round: requester's round number; needed: slots wanted;
 *                                                   urgent: the requester has 0 free and waiting allocations
 *   don     { t:'don',    round, to, slots[] }      donation answering round `round` of `to`; at most
 *                                                   maxDonation (4) slot indices; may be empty (the
 *                                                   requester's next member always answers)
 *   status  { t:'status', view, side[], owners }    owner table of one side of a join/merge view, sent by
 *                                                   that side's lowest member; owners run-length encoded
 *                                                   [owner, count, owner, count...] over slot indices,
 *                                                   or null for a fresh member (the DC's initial table)
 * ```
 * Slot indices are 0..total-1; slot `i` is endpoint `firstSlot + i`. A `don` with 4 slots is about 30 bytes
 * in MessagePack (pinned by test/unit/slots/member.test.ts).
 */
export type SlotsMsg =
  | { t: 'req'; round: number; needed: number; urgent: boolean }
  | { t: 'don'; round: number; to: MemberId; slots: number[] }
  | { t: 'status'; view: number; side: MemberId[]; owners: number[] | null };

/**
 * What SLOTS needs from the group communication system, and what it guarantees in return. An adapter over
 * src/gcs maps its views and deliveries onto this.
 *
 * Required guarantees (EVS as in Spread):
 * 1. Agreed order: the members of a view deliver the view's messages in one total order.
 * 2. Sending view delivery: a message multicast in view V is delivered only in V (possibly in the transitional
 *    phase, i.e. before the next view callback), never in a later view.
 * 3. Virtual synchrony: members that install the same next view together delivered the same messages in V.
 * 4. Self delivery: a member that does not crash delivers its own message before its next view callback.
 * 5. Crash honesty: a member reported gone with reason `crash` or `leave` is dead and stays dead (a restarted
 *    node joins with a new incarnation id). A member that might be alive is reported with `partition`.
 */
export interface SlotsGroup {
  /** This member's id. */
  readonly self: MemberId;
  /** Multicast `msg` to the current view in agreed order (delivered to the sender too). */
  multicast(msg: SlotsMsg): void;
  /** Register the callbacks; returns a function that unregisters them. */
  subscribe(handlers: {
    deliver(sender: MemberId, msg: SlotsMsg): void;
    view(view: SlotsView): void;
  }): () => void;
}

/** Configuration of SLOTS for one DC. Every member must use the same values. */
export interface SlotsConfig {
  /** Nodes that may host the DC (the DC's node list). Decides the initial table and "full" views. */
  nodes: readonly number[];
  /** First allocatable slot number (the DC's sysEndpoints: system slots are never donated). */
  firstSlot: number;
  /** Number of allocatable slots. */
  total: number;
  /** A member requests slots when it has fewer free than this. Default: max(1, minOwned / 2). */
  lowWater?: number;
  /** A request asks for enough slots to reach this many free. Default: minOwned. */
  highWater?: number;
  /** Most slots in one donation message. Default 4 (the prototype's mess_A). */
  maxDonation?: number;
  /** A member stops refilling (non-urgent requests) once it owns this many. Default: total - lowWater*(n-1): the
   * others keep at least a low-water reserve each. (The prototype's total - minOwned*(n-1) equals minOwned once
   * every node is up, which would stop refills altogether.) */
  maxOwned?: number;
  /**
   * true (default): an allocation with no free slot waits for an urgent request round, which every member
   * answers and where anyone with a free slot gives one; it fails only if nobody reachable had one.
   * false: the prototype's rule: it fails at once with ENOSPC (a low-water refill may still be in progress),
   * and only members with a surplus above their low water mark donate.
   */
  waitForDonation?: boolean;
}

/** Effects of a member (the driver carries them out; the member never does I/O itself). */
export interface SlotsIO {
  /** Multicast `msg` on the group (the driver calls {@link SlotsGroup.multicast}). */
  multicast(msg: SlotsMsg): void;
  /** Allocation `req` got slot `slot` (an endpoint number). Called once per request, or `failed` is. */
  allocated(req: number, slot: number): void;
  /** Allocation `req` failed: ENOSPC when no reachable member could give a slot. */
  failed(req: number, err: DvsError): void;
  /** A diagnostic (an anomaly that would mean a GCS guarantee was broken). */
  log?(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

/** Phase of a member: no view yet, reconciling tables after a join/merge view, or running. */
export type SlotsPhase = 'new' | 'merging' | 'running';

/** Counters of one member (for metrics and the simulation report). */
export interface SlotsStats {
  /** Request rounds started (urgent ones included). */
  rounds: number;
  urgentRounds: number;
  /** Donation messages sent, empty ones included. */
  donationsSent: number;
  /** Slots given away. */
  slotsDonated: number;
  /** Slots received by donation. */
  slotsReceived: number;
  /** Allocations granted / failed. */
  allocated: number;
  failed: number;
  /** Join/merge reconciliations completed. */
  merges: number;
  /** Slots two sides claimed at a merge (must stay 0: it would mean a broken GCS guarantee). */
  conflicts: number;
  /** Slots reassigned to this member as primary (crashed owners, orphans in a full view). */
  reclaimed: number;
}
