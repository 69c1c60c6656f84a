/**
 * Deterministic simulation of SLOTS (src/services/slots) over an idealized group communication system.
 *
 * The GCS model: nodes sit on network islands; the live members of one island form a component with one
 * view. Messages multicast in a view are delivered to every member of the component in one agreed order,
 * `bcast` virtual ms later (± jitter, never overtaking: a sequencer). On a topology change (crash, restart,
 * split, heal) the messages still in flight in a changed view are flushed first, with extended virtual
 * synchrony: every new component delivers each of them either to all its members coming from that view or to
 * none, and the sender's component always delivers the sender's own messages (self delivery). Then every new
 * component installs its view (reason crash, join, partition or merge) with each member's transitional set.
 *
 * Load: every broadcast time ("round") each live node makes fork attempts (allocate) at `forkRate` on average;
 * each process lives an exponential time of mean `meanLife` rounds, then exits (free). Faults: crashes and
 * restarts (new incarnation), splits and heals, every `faultEvery` rounds. Then everything heals, every dead
 * node restarts, and every member drains the DC (allocates until ENOSPC).
 *
 * Checked: (safety) a slot is never allocated at two live members at once, and no two live members both own a
 * slot in their own tables; (liveness) an urgent request round ends with ENOSPC only if no other member of the
 * component had a free slot when the request was delivered; after healing, all tables agree, nothing is
 * orphaned, and the drain allocates every slot of the DC.
 */
import type { DvsError } from '../../src/protocol/errors.js';
import { SlotsMember } from '../../src/services/slots/member.js';
import {
  type MemberId,
  memberId,
  NO_OWNER,
  nodeOf,
  type SlotsConfig,
  type SlotsMsg,
  type ViewReason,
} from '../../src/services/slots/types.js';
import { Prng } from './prng.js';
import { type EventHandle, Scheduler } from './scheduler.js';
import { Trace } from './trace.js';

export interface SlotsSimConfig {
  seed: number;
  nodes: number;
  /** Allocatable slots in the DC. */
  total: number;
  /** Workload length, in rounds (broadcast times). */
  rounds: number;
  /** Broadcast time, virtual ms. */
  bcast: number;
  /** Latency spread: each delivery takes bcast × [1 - jitter, 1 + jitter] (order kept). */
  jitter: number;
  /** Mean fork attempts per node per round. */
  forkRate: number;
  /** Mean process lifetime, rounds. */
  meanLife: number;
  crashes: boolean;
  partitions: boolean;
  /** Rounds between faults [lo, hi]. */
  faultEvery: [number, number];
  /** Nodes start at random rounds in [0, startSpread] (joins with status transfer). */
  startSpread: number;
  /** Statistics ignore the first `warmup` rounds. */
  warmup: number;
  /** Run the strong ownership check every this many rounds (it is O(members × slots)). */
  checkEvery: number;
  /** Heal, restart and drain the DC at the end, checking that nothing was lost. */
  drain: boolean;
  /** Keep a trace (hash + tail) of every event. */
  trace: boolean;
  /** Extra SLOTS parameters (water marks, donation cap). */
  slots: Partial<
    Pick<SlotsConfig, 'lowWater' | 'highWater' | 'maxDonation' | 'maxOwned' | 'waitForDonation'>
  >;
  /** Sequencer service time per message, in broadcast times (0 = unlimited throughput). */
  seqService: number;
  /** Events before the run counts as a livelock. */
  maxSteps: number;
  /** Deliberately broken GCS for the checker's own test: report splits as crashes (crash honesty broken). */
  lie?: 'partition-as-crash';
}

export const SLOTS_SIM_DEFAULTS: Omit<SlotsSimConfig, 'seed'> = {
  nodes: 4,
  total: 64,
  rounds: 300,
  bcast: 10,
  jitter: 0.5,
  forkRate: 0.5,
  meanLife: 12,
  crashes: true,
  partitions: true,
  faultEvery: [5, 40],
  startSpread: 10,
  warmup: 0,
  checkEvery: 1,
  drain: true,
  trace: true,
  maxSteps: 2_000_000,
  seqService: 0,
  slots: {},
};

export interface SlotsSimStats {
  forks: number;
  allocated: number;
  failed: number;
  /** Allocated and failed after warmup, per round. */
  allocatedPerRound: number;
  failedPerRound: number;
  /** Mean of used/total sampled each round after warmup. */
  utilisation: number;
  /** Request-to-first-donation latency, in broadcast times, bucketed by ceil (index = broadcast times). */
  firstReply: number[];
  /** Request-to-round-end latency (the requester's next member answered, or all did if urgent). */
  roundEnd: number[];
  rounds: number;
  urgentRounds: number;
  donations: number;
  slotsDonated: number;
  views: number;
  /** Status messages (join and merge exchanges). */
  statuses: number;
  crashes: number;
  splits: number;
  heals: number;
  /** Messages of a changed view not delivered to a whole component (EVS cut). */
  cutDeliveries: number;
  /** Messages multicast while their view was closing (dropped for everyone). */
  droppedAtViewChange: number;
}

export interface SlotsSimResult {
  seed: number;
  config: SlotsSimConfig;
  violations: string[];
  traceHash: string;
  tail: string[];
  stats: SlotsSimStats;
}

interface Comp {
  id: number;
  members: MemberId[];
  inflight: Inflight[];
  lastAt: number;
  dead: boolean;
}

interface Inflight {
  sender: MemberId;
  msg: SlotsMsg;
  handle: EventHandle | null;
}

interface SimNode {
  node: number;
  inc: number;
  alive: boolean;
  island: number;
  id: MemberId;
  member: SlotsMember | null;
  comp: Comp | null;
  /** Live processes: slot -> exit event. */
  procs: Map<number, EventHandle>;
}

/** Run one seeded simulation. Pure function of the config. */
export function simulateSlots(partial: Partial<SlotsSimConfig> & { seed: number }): SlotsSimResult {
  const cfg: SlotsSimConfig = { ...SLOTS_SIM_DEFAULTS, ...partial };
  return new SlotsWorld(cfg).run();
}

class SlotsWorld {
  private readonly sched = new Scheduler();
  private readonly prng: Prng;
  private readonly faults: Prng;
  private readonly load: Prng;
  private readonly gcs: Prng;
  private readonly trace: Trace;
  private readonly nodes: SimNode[] = [];
  private readonly byId = new Map<MemberId, SimNode>();
  private readonly slotsCfg: SlotsConfig;
  private readonly violations: string[] = [];
  /** Oracle: slot -> member holding it now (allocated, not freed, member alive). */
  private readonly holder = new Map<number, MemberId>();
  /** Pending allocations: req -> member that was asked. */
  private readonly pending = new Map<number, MemberId>();
  /** Others' free slots when an urgent request was delivered: "member:round" -> count. */
  private readonly urgentFree = new Map<string, number>();
  /** Requests multicast: "member:round" -> virtual time sent. */
  private readonly reqSent = new Map<string, number>();
  private readonly firstReplied = new Set<string>();
  private nextReq = 1;
  private viewSeq = 0;
  private islandSeq = 1;
  private phase: 'work' | 'heal' = 'work';
  private usedSamples = 0;
  private usedSum = 0;
  private readonly st: SlotsSimStats = {
    forks: 0,
    allocated: 0,
    failed: 0,
    allocatedPerRound: 0,
    failedPerRound: 0,
    utilisation: 0,
    firstReply: [],
    roundEnd: [],
    rounds: 0,
    urgentRounds: 0,
    donations: 0,
    slotsDonated: 0,
    views: 0,
    statuses: 0,
    crashes: 0,
    splits: 0,
    heals: 0,
    cutDeliveries: 0,
    droppedAtViewChange: 0,
  };
  private allocAfterWarmup = 0;
  private failAfterWarmup = 0;

  constructor(private readonly cfg: SlotsSimConfig) {
    this.prng = new Prng(cfg.seed);
    this.faults = this.prng.fork();
    this.load = this.prng.fork();
    this.gcs = this.prng.fork();
    this.trace = new Trace(cfg.trace ? Number(process.env.SLOTS_TRACE_KEEP ?? 60) : 1);
    const nodeIds = Array.from({ length: cfg.nodes }, (_, i) => i + 1);
    this.slotsCfg = { nodes: nodeIds, firstSlot: 64, total: cfg.total, ...cfg.slots };
    for (const node of nodeIds) {
      this.nodes.push({
        node,
        inc: -1,
        alive: false,
        island: 0,
        id: -1,
        member: null,
        comp: null,
        procs: new Map(),
      });
    }
  }

  run(): SlotsSimResult {
    const { cfg } = this;
    const B = cfg.bcast;
    for (const n of this.nodes) this.sched.at(this.faults.int(0, cfg.startSpread) * B, () => this.start(n));
    for (let r = 0; r < cfg.rounds; r++) this.sched.at(r * B + B / 2, () => this.tick(r));
    if (cfg.crashes || cfg.partitions) this.scheduleFault(this.faults.int(...cfg.faultEvery) * B);
    const end = cfg.rounds * B;
    this.sched.at(end, () => this.heal());
    const why = this.sched.run(Number.POSITIVE_INFINITY, this.cfg.maxSteps);
    if (why !== 'empty') this.violate(`simulation did not reach quiescence (${why})`);
    this.finalChecks();
    const rounds = Math.max(1, cfg.rounds - cfg.warmup);
    this.st.allocatedPerRound = this.allocAfterWarmup / rounds;
    this.st.failedPerRound = this.failAfterWarmup / rounds;
    this.st.utilisation = this.usedSamples === 0 ? 0 : this.usedSum / this.usedSamples / cfg.total;
    return {
      seed: cfg.seed,
      config: cfg,
      violations: this.violations,
      traceHash: this.trace.hash(),
      tail: this.trace.tail(),
      stats: this.st,
    };
  }

  // ---- trace and checks ----

  private log(line: string): void {
    if (this.cfg.trace) this.trace.add(`${this.sched.now.toFixed(1)} ${line}`);
  }

  private violate(msg: string): void {
    if (this.violations.length < 20) this.violations.push(`t=${this.sched.now.toFixed(1)} ${msg}`);
    this.log(`VIOLATION ${msg}`);
  }

  private live(): SimNode[] {
    return this.nodes.filter((n) => n.alive && n.member !== null);
  }

  /** No two live members own (in their own tables) the same slot. */
  private checkOwnership(): void {
    const live = this.live();
    for (let i = 0; i < this.cfg.total; i++) {
      const slot = this.slotsCfg.firstSlot + i;
      let owner: MemberId | undefined;
      for (const n of live) {
        const m = n.member as SlotsMember;
        if (m.phase === 'new' || m.ownerOf(slot) !== m.self) continue;
        if (owner !== undefined) {
          this.violate(`slot ${slot} owned by both ${fmt(owner)} and ${fmt(m.self)}`);
          return;
        }
        owner = m.self;
      }
    }
  }

  private finalChecks(): void {
    this.checkOwnership();
    if (!this.cfg.drain) return;
    const live = this.live();
    const first = live[0]?.member;
    if (first === undefined || first === null) {
      this.violate('no live member at the end');
      return;
    }
    const t0 = first.table();
    let used = 0;
    for (const n of live) {
      const m = n.member as SlotsMember;
      used += m.usedCount;
      if (m.phase !== 'running') this.violate(`${fmt(m.self)} ends in phase ${m.phase}`);
      if (m.waitingCount !== 0)
        this.violate(`${fmt(m.self)} ends with ${m.waitingCount} waiting allocations`);
      const t = m.table();
      for (let i = 0; i < t.length; i++) {
        if (t[i] !== t0[i]) {
          this.violate(`tables differ at the end: slot index ${i}: ${fmt(t0[i] ?? 0)} vs ${fmt(t[i] ?? 0)}`);
          break;
        }
        if (t[i] === NO_OWNER || !this.byId.has(t[i] as number))
          this.violate(`slot index ${i} has no live owner at the end (${t[i]})`);
      }
    }
    if (used !== this.cfg.total)
      this.violate(`drain allocated ${used} of ${this.cfg.total} slots: slots were lost`);
    if (this.holder.size !== used) this.violate(`oracle holds ${this.holder.size} slots, members ${used}`);
    if (this.pending.size !== 0) this.violate(`${this.pending.size} allocations never completed`);
  }

  // ---- nodes ----

  private start(n: SimNode): void {
    if (n.alive) return;
    n.inc++;
    n.alive = true;
    n.id = memberId(n.node, n.inc);
    const id = n.id;
    n.member = new SlotsMember(id, this.slotsCfg, {
      multicast: (msg) => this.multicast(id, msg),
      allocated: (req, slot) => this.onAllocated(id, req, slot),
      failed: (req, err) => this.onFailed(id, req, err),
      log: (level, msg, fields) => {
        if (level === 'error') this.violate(`${fmt(id)} logged error: ${msg} ${JSON.stringify(fields)}`);
      },
    });
    this.byId.set(id, n);
    this.log(`START ${fmt(id)} island ${n.island}`);
    this.regroup('join');
  }

  private crash(n: SimNode): void {
    this.st.crashes++;
    this.log(`CRASH ${fmt(n.id)}`);
    n.alive = false;
    n.member = null;
    this.byId.delete(n.id);
    for (const [slot, h] of n.procs) {
      h.cancel();
      this.holder.delete(slot);
    }
    n.procs.clear();
    for (const [req, m] of this.pending) if (m === n.id) this.pending.delete(req);
    this.regroup('crash');
  }

  // ---- load ----

  private tick(r: number): void {
    if (this.phase !== 'work') return;
    if (r >= this.cfg.warmup) {
      this.usedSum += this.holder.size;
      this.usedSamples++;
    }
    if (r % this.cfg.checkEvery === 0) this.checkOwnership();
    const whole = Math.floor(this.cfg.forkRate);
    const frac = this.cfg.forkRate - whole;
    for (const n of this.nodes) {
      if (!n.alive || n.member === null) continue;
      // Poisson-like attempts: `whole` spread over the round plus one more with probability `frac`.
      const k = whole + (this.load.chance(frac) ? 1 : 0);
      for (let j = 0; j < k; j++) {
        const id = n.id;
        this.sched.after(this.load.next() * this.cfg.bcast * 0.5, () => this.fork(id, r));
      }
    }
  }

  private fork(id: MemberId, r: number): void {
    const n = this.byId.get(id);
    if (n === undefined || n.member === null || this.phase !== 'work') return;
    const req = this.nextReq++;
    this.st.forks++;
    this.pending.set(req, id);
    this.log(`FORK ${fmt(id)} req ${req}`);
    if (r >= this.cfg.warmup) this.reqRound.set(req, true);
    n.member.allocate(req);
  }

  /** Requests made after warmup (they count in the per-round statistics). */
  private readonly reqRound = new Map<number, boolean>();

  private onAllocated(id: MemberId, req: number, slot: number): void {
    const n = this.byId.get(id);
    this.log(`ALLOC ${fmt(id)} req ${req} slot ${slot}`);
    if (this.pending.get(req) !== id) this.violate(`${fmt(id)} completed unknown allocation ${req}`);
    this.pending.delete(req);
    if (n === undefined || n.member === null) return;
    if (n.member.ownerOf(slot) !== id) this.violate(`${fmt(id)} allocated slot ${slot} it does not own`);
    const h = this.holder.get(slot);
    if (h !== undefined) this.violate(`slot ${slot} allocated at ${fmt(id)} while held by ${fmt(h)}`);
    this.holder.set(slot, id);
    this.st.allocated++;
    if (this.reqRound.delete(req)) this.allocAfterWarmup++;
    if (this.phase !== 'work') {
      n.procs.set(slot, { cancel: () => {} });
      return;
    }
    const life = -Math.log(1 - this.load.next()) * this.cfg.meanLife * this.cfg.bcast;
    n.procs.set(
      slot,
      this.sched.after(life, () => this.exit(n, id, slot)),
    );
  }

  private exit(n: SimNode, id: MemberId, slot: number): void {
    if (n.id !== id || n.member === null) return;
    n.procs.delete(slot);
    this.holder.delete(slot);
    this.log(`EXIT ${fmt(id)} slot ${slot}`);
    n.member.free(slot);
  }

  private onFailed(id: MemberId, req: number, err: DvsError): void {
    this.log(`FAIL ${fmt(id)} req ${req} ${err.code}`);
    if (this.pending.get(req) !== id) this.violate(`${fmt(id)} failed unknown allocation ${req}`);
    this.pending.delete(req);
    this.st.failed++;
    if (this.reqRound.delete(req)) this.failAfterWarmup++;
    if (err.code !== 'ENOSPC') this.violate(`${fmt(id)} failed allocation ${req} with ${err.code}`);
    const round = err.details?.round;
    const n = this.byId.get(id);
    if (typeof round === 'number') {
      const free = this.urgentFree.get(`${id}:${round}`);
      if (free === undefined) this.violate(`${fmt(id)} ENOSPC after round ${round}, never seen as urgent`);
      else if (free > 0)
        this.violate(`${fmt(id)} ENOSPC after round ${round} although others had ${free} free slots`);
    } else if (this.slotsCfg.waitForDonation !== false && (n?.comp?.members.length ?? 0) > 1) {
      this.violate(`${fmt(id)} ENOSPC without asking, not alone in its view`);
    }
  }

  // ---- GCS model ----

  private multicast(from: MemberId, msg: SlotsMsg): void {
    const n = this.byId.get(from);
    const c = n?.comp;
    if (n === undefined || c === null || c === undefined) {
      this.violate(`${fmt(from)} multicast outside a view`);
      return;
    }
    if (c.dead) {
      this.st.droppedAtViewChange++;
      this.log(`DROP ${fmt(from)} ${describe(msg)} (view closing)`);
      return;
    }
    this.log(`MCAST ${fmt(from)} ${describe(msg)}`);
    if (msg.t === 'req') {
      this.reqSent.set(`${from}:${msg.round}`, this.sched.now);
      this.st.rounds++;
      if (msg.urgent) this.st.urgentRounds++;
    } else if (msg.t === 'don') {
      this.st.donations++;
      this.st.slotsDonated += msg.slots.length;
    } else {
      this.st.statuses++;
    }
    const B = this.cfg.bcast;
    const lat = B * (1 - this.cfg.jitter + 2 * this.cfg.jitter * this.gcs.next());
    const at = Math.max(this.sched.now + lat, c.lastAt + this.cfg.seqService * B);
    c.lastAt = at;
    const f: Inflight = { sender: from, msg, handle: null };
    c.inflight.push(f);
    f.handle = this.sched.at(at, () => {
      if (c.inflight[0] !== f) {
        this.violate('sequencer order broken (harness bug)');
        return;
      }
      c.inflight.shift();
      this.deliverAll(c.members, f);
    });
  }

  private deliverAll(to: readonly MemberId[], f: Inflight): void {
    const { msg, sender } = f;
    if (msg.t === 'req' && msg.urgent) {
      let free = 0;
      for (const m of to) if (m !== sender) free += this.byId.get(m)?.member?.freeCount ?? 0;
      this.urgentFree.set(`${sender}:${msg.round}`, free);
    }
    const requester = msg.t === 'don' && to.includes(msg.to) ? this.byId.get(msg.to)?.member : undefined;
    const before = requester?.pendingRound ?? null;
    for (const m of to) {
      const n = this.byId.get(m);
      if (n === undefined || n.member === null) continue;
      n.member.deliver(sender, msg);
    }
    if (msg.t === 'don' && requester !== undefined && requester !== null) {
      const after = requester.pendingRound;
      const ended = before !== null && before.id === msg.round && after?.id !== before.id;
      this.noteReply(msg, ended);
    }
  }

  /** Latencies in broadcast times: request to first donation, request to the end of the round. */
  private noteReply(don: Extract<SlotsMsg, { t: 'don' }>, ended: boolean): void {
    const key = `${don.to}:${don.round}`;
    const sent = this.reqSent.get(key);
    if (sent === undefined || sent / this.cfg.bcast < this.cfg.warmup) return;
    const bt = Math.max(1, Math.ceil((this.sched.now - sent) / this.cfg.bcast - 1e-9));
    if (!this.firstReplied.has(key)) {
      this.firstReplied.add(key);
      bump(this.st.firstReply, bt);
    }
    if (ended) bump(this.st.roundEnd, bt);
  }

  /** Recompute components from islands and liveness; flush changed views (EVS) and install new ones. */
  private regroup(reason: ViewReason): void {
    const groups = new Map<number, MemberId[]>();
    for (const n of this.nodes) {
      if (!n.alive) continue;
      const g = groups.get(n.island) ?? [];
      g.push(n.id);
      groups.set(n.island, g);
    }
    const changedGroups: MemberId[][] = [];
    const changedOld = new Set<Comp>();
    for (const n of this.nodes) if (!n.alive && n.comp !== null) changedOld.add(n.comp);
    for (const island of [...groups.keys()].sort((a, b) => a - b)) {
      const g = (groups.get(island) as MemberId[]).sort((a, b) => nodeOf(a) - nodeOf(b));
      const comps = new Set(g.map((m) => (this.byId.get(m) as SimNode).comp));
      const only = [...comps][0];
      if (comps.size === 1 && only !== null && only !== undefined && sameSet(only.members, g)) continue;
      changedGroups.push(g);
      for (const c of comps) if (c !== null) changedOld.add(c);
    }
    for (const n of this.nodes) if (!n.alive) n.comp = null;
    // Flush the in-flight messages of every changed view, in agreed order, with EVS cuts: each new group
    // delivers all messages of its own members (self delivery) and, per other sender, a prefix of that
    // sender's messages (FIFO and causality: a message only depends on earlier ones of its sender or on ones
    // already delivered). What members multicast while the view is closing is dropped (never delivered to
    // anyone, the sender included), as a GCS does with sends issued after the transitional signal.
    const closing = [...changedOld].sort((a, b) => a.id - b.id);
    for (const c of closing) c.dead = true;
    for (const c of closing) {
      const old = new Set(c.members);
      const msgs = c.inflight.splice(0);
      const cut = new Set<string>();
      for (const f of msgs) {
        f.handle?.cancel();
        changedGroups.forEach((g, gi) => {
          const to = g.filter((m) => old.has(m));
          if (to.length === 0) return;
          const key = `${gi}:${f.sender}`;
          if (to.includes(f.sender) || (!cut.has(key) && this.gcs.chance(0.7))) {
            this.deliverAll(to, f);
          } else {
            cut.add(key);
            this.st.cutDeliveries++;
          }
        });
      }
    }
    for (const g of changedGroups) {
      const c: Comp = { id: ++this.viewSeq, members: g, inflight: [], lastAt: 0, dead: false };
      const transitional = new Map<MemberId, MemberId[]>();
      for (const m of g) {
        const prev = (this.byId.get(m) as SimNode).comp;
        transitional.set(m, prev === null ? [m] : g.filter((x) => prev.members.includes(x)));
      }
      for (const m of g) (this.byId.get(m) as SimNode).comp = c;
      this.st.views++;
      const r: ViewReason =
        reason === 'partition' && this.cfg.lie === 'partition-as-crash' ? 'crash' : reason;
      this.log(`VIEW ${c.id} ${r} [${g.map(fmt).join(' ')}]`);
      for (const m of g) {
        const n = this.byId.get(m);
        if (n === undefined || n.member === null || n.comp !== c) continue;
        n.member.onView({ id: c.id, members: g, reason: r, transitional: transitional.get(m) ?? [m] });
      }
    }
  }

  // ---- faults ----

  private scheduleFault(delay: number): void {
    this.sched.after(delay, () => {
      if (this.phase !== 'work') return;
      this.fault();
      this.scheduleFault(this.faults.int(...this.cfg.faultEvery) * this.cfg.bcast);
    });
  }

  private fault(): void {
    const kinds: string[] = [];
    const live = this.nodes.filter((n) => n.alive);
    const dead = this.nodes.filter((n) => !n.alive && n.inc >= 0);
    if (this.cfg.crashes && live.length > 1) kinds.push('crash');
    if (this.cfg.crashes && dead.length > 0) kinds.push('restart', 'restart');
    const islands = new Map<number, SimNode[]>();
    for (const n of this.nodes) islands.set(n.island, [...(islands.get(n.island) ?? []), n]);
    const splittable = [...islands.values()].filter((ns) => ns.length >= 2);
    if (this.cfg.partitions && splittable.length > 0) kinds.push('split');
    if (this.cfg.partitions && islands.size > 1) kinds.push('heal', 'heal');
    if (kinds.length === 0) return;
    const kind = this.faults.pick(kinds);
    if (kind === 'crash') {
      this.crash(this.faults.pick(live));
    } else if (kind === 'restart') {
      this.start(this.faults.pick(dead));
    } else if (kind === 'split') {
      const ns = this.faults.pick(splittable);
      const island = this.islandSeq++;
      const moved = ns.filter(() => this.faults.chance(0.5));
      if (moved.length === 0 || moved.length === ns.length) moved.splice(0, moved.length, ns[0] as SimNode);
      for (const n of moved) n.island = island;
      this.st.splits++;
      this.log(`SPLIT island ${island} <- [${moved.map((n) => n.node).join(' ')}]`);
      this.regroup('partition');
    } else {
      const ids = [...islands.keys()];
      const a = this.faults.pick(ids);
      const b = this.faults.pick(ids.filter((x) => x !== a));
      for (const n of this.nodes) if (n.island === b) n.island = a;
      this.st.heals++;
      this.log(`HEAL island ${b} -> ${a}`);
      this.regroup('merge');
    }
  }

  /** End of the workload: processes stay, faults stop; merge every island, restart the dead, then drain. */
  private heal(): void {
    this.phase = 'heal';
    for (const n of this.nodes) for (const h of n.procs.values()) h.cancel();
    for (const n of this.nodes) n.island = 0;
    this.log('HEAL all');
    this.regroup('merge');
    for (const n of this.nodes) if (!n.alive) this.start(n);
    if (!this.cfg.drain) return;
    // Let the merge and joins settle (views are instantaneous; statuses take a few broadcast times).
    this.sched.after(this.cfg.bcast * 20, () => {
      for (const n of this.live()) {
        const m = n.member as SlotsMember;
        for (let k = 0; k < this.cfg.total; k++) {
          const req = this.nextReq++;
          this.pending.set(req, m.self);
          m.allocate(req);
        }
      }
    });
  }
}

function bump(h: number[], k: number): void {
  while (h.length <= k) h.push(0);
  h[k] = (h[k] ?? 0) + 1;
}

function sameSet(a: readonly MemberId[], b: readonly MemberId[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}

function fmt(m: MemberId): string {
  if (m === NO_OWNER) return 'none';
  const inc = Math.floor(m / 65536);
  return inc === 0 ? `n${nodeOf(m)}` : `n${nodeOf(m)}.${inc}`;
}

function describe(msg: SlotsMsg): string {
  switch (msg.t) {
    case 'req':
      return `req r${msg.round} need ${msg.needed}${msg.urgent ? ' urgent' : ''}`;
    case 'don':
      return `don r${msg.round} to ${fmt(msg.to)} [${msg.slots.join(',')}]`;
    case 'status':
      return `status v${msg.view} side [${msg.side.map(fmt).join(' ')}]${msg.owners === null ? ' fresh' : ''}`;
  }
}

/** Seeds to run: [SEED] if set, else 1..(SIM_SEEDS or `dflt`). */
export function slotsSeeds(dflt: number): number[] {
  const one = process.env.SEED;
  if (one !== undefined && one !== '') return [Number(one)];
  const n = Number(process.env.SIM_SEEDS ?? dflt);
  return Array.from({ length: Number.isFinite(n) && n > 0 ? n : dflt }, (_, i) => i + 1);
}

/** A failure report naming the seed and how to replay it. */
export function slotsReport(r: SlotsSimResult, file: string): string {
  return [
    `slots simulation seed ${r.seed} violated ${r.violations.length} invariant(s); replay: SEED=${r.seed} node --import tsx --test ${file}`,
    ...r.violations.map((v) => `  - ${v}`),
    '  last trace lines:',
    ...r.tail.slice(-40).map((l) => `    ${l}`),
  ].join('\n');
}
