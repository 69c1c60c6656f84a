/**
 * Deterministic simulation of the consensus recipe (src/services/consensus.ts) under faults: N proposers
 * (3-7), each a real {@link ConsensusService}, against a simulated {@link ClusterStore} with exactly the
 * semantics the recipe relies on (one linearizable transaction with a create-only compare), in virtual
 * time, with everything random drawn from one seeded PRNG.
 *
 * ```
 *   proposer p (incarnation k): ConsensusService --txn/get--> SimStore
 *                                                    |  request: lost, or applied atomically d1 ms later
 *                                                    |  reply:   lost (ENOTCONN / ETIMEDOUT, ambiguous), or d2 ms later
 *                                                    |  outages: requests arriving are dropped (an etcd election)
 *   faults: proposers crash (their in-flight requests may still land: "ghost" writes), restart with a new
 *           incarnation and propose again; calls time out (EUNAVAIL) and are retried later.
 *   heal:   no more faults; every live proposer that has not learnt a decision reads it back (read(), then
 *           propose() again if nothing was decided at all).
 * ```
 *
 * The real service code runs unchanged: its retries sleep with the global `setTimeout` and compute deadlines
 * with `Date.now()`, so while a simulation runs both are replaced by the simulator's virtual clock (restored
 * afterwards). Promise continuations are drained (one real `setImmediate`) after every virtual event, so
 * the interleaving is a function of the seed alone: the same seed gives the same trace hash.
 *
 * Invariants checked after every run, per instance:
 * 1. agreement: every decision learnt (propose results, read-backs, of every incarnation) has one value and
 *    one revision;
 * 2. validity: that value was proposed (by some call, possibly of a proposer that crashed);
 * 3. `mine` is exact: true iff the decided value is the call's own proposal (values are unique per
 *    proposer; half the calls re-propose the proposer's previous value, as a client retrying after EUNAVAIL
 *    or a restarted process does);
 * 4. lost replies: a call whose own write landed but whose reply was lost, and that returned, learnt its own
 *    value as decided (`mine: true`) by reading back in its retry;
 * 5. the key was written exactly once by the store (the recipe never rewrites a decision);
 * 6. after the heal every live proposer knows the decision (termination once the store answers).
 */
import { setImmediate as realSetImmediate } from 'node:timers';
import { pino } from 'pino';
import type {
  ClusterStore,
  Compare,
  KeyValue,
  StoreCallOptions,
  TxnOp,
  TxnResult,
  Watch,
} from '../../src/cluster/store.js';
import { DvsError, dvsError } from '../../src/protocol/errors.js';
import { ConsensusService, type Decision } from '../../src/services/consensus.js';
import { DcScope } from '../../src/services/scope.js';
import { Prng } from './prng.js';
import { type EventHandle, Scheduler } from './scheduler.js';
import { Trace } from './trace.js';

/** A deliberately broken store, to show the invariants catch what the recipe must not rely on. */
export type BrokenStore =
  /** Compares are evaluated against the state when the request was sent (a stale follower read), not applied. */
  | 'stale-compare'
  /** Compares are ignored: the success branch always runs. */
  | 'no-compare';

/** One simulation's settings (all but `seed` default from the seed). */
export interface ConsensusSimConfig {
  seed: number;
  /** Proposers, 3..7 (default by seed). */
  proposers?: number;
  /** Consensus instances every proposer proposes to, 1..3 (default by seed). */
  instances?: number;
  /** Virtual ms of the faulty phase (default 2000). */
  workloadMs?: number;
  /** Inject faults (lost requests/replies, outages, crashes); default true. */
  faults?: boolean;
  broken?: BrokenStore;
}

/** What happened in one run (for coverage assertions and reports). */
export interface ConsensusSimStats {
  proposers: number;
  instances: number;
  /** propose() calls made. */
  proposals: number;
  /** Decisions learnt from propose() results. */
  decided: number;
  /** Decisions learnt by read() after the heal. */
  readBacks: number;
  /** propose() calls that failed (EUNAVAIL: store unreachable within the call's timeout). */
  unavailable: number;
  /** Store requests lost before being applied. */
  lostRequests: number;
  /** Writes applied whose reply was lost (the ambiguous case the recipe must resolve). */
  lostRepliesLanded: number;
  /** Calls with such a lost-reply write that then returned mine=true by reading back in a retry. */
  learnedAfterLostReply: number;
  crashes: number;
  restarts: number;
  /** Instances decided by the write of a proposer incarnation that crashed before learning it. */
  ghostWins: number;
  outages: number;
  /** Virtual events run. */
  steps: number;
  /** Virtual ms at the end. */
  endMs: number;
}

/** The outcome of one run. */
export interface ConsensusSimResult {
  seed: number;
  config: Required<Omit<ConsensusSimConfig, 'broken'>> & { broken?: BrokenStore };
  violations: string[];
  stats: ConsensusSimStats;
  /** Hash of the whole trace: equal for equal seeds. */
  traceHash: string;
  /** The last trace lines (virtual ms, event). */
  tail: string[];
}

/** Fixed epoch of the virtual `Date.now()` (2026-01-01), so deadlines are ordinary timestamps. */
const EPOCH = 1_767_225_600_000;
const MAX_STEPS = 2_000_000;
const DC = 7;
const enc = new TextEncoder();
const dec = new TextDecoder();
const silent = pino({ level: 'silent' });

interface Learnt {
  proposer: string;
  via: 'propose' | 'read';
  value: string;
  revision: number;
  mine: boolean;
  /** The call's own proposal (propose only). */
  proposal?: string;
}

/**
 * The store the recipe is written against, reduced to what it uses (get, txn), with injected faults. Keys
 * hold bytes; one global revision; a transaction is applied atomically at one virtual instant.
 */
class SimStore implements ClusterStore {
  private readonly data = new Map<string, KeyValue>();
  private revision = 0;
  /** Successful puts per key (the recipe must write a consensus key once). */
  readonly writes = new Map<string, number>();
  /** Values (decoded) whose put landed but whose reply was lost. */
  readonly landedLost = new Set<string>();
  /** The store drops requests arriving now (a leader election in progress). */
  outage = false;
  faults = true;
  lostRequests = 0;

  constructor(
    private readonly sched: Scheduler,
    private readonly rng: Prng,
    private readonly trace: (line: string) => void,
    private readonly broken: BrokenStore | undefined,
  ) {}

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  get(key: string, opts: StoreCallOptions = {}): Promise<{ kvs: KeyValue[]; revision: number }> {
    return this.call(`get ${key}`, false, opts, () => {
      const kv = this.data.get(key);
      return { kvs: kv ? [kv] : [], revision: this.revision };
    });
  }

  txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
    opts: StoreCallOptions = {},
  ): Promise<TxnResult> {
    // The stale-compare bug: the guard is decided on a copy of the state taken when the request leaves.
    const sentState = this.broken === 'stale-compare' ? new Map(this.data) : undefined;
    const label = success.map((o) => `${o.op} ${o.key}${o.op === 'put' ? `=${dec.decode(o.value)}` : ''}`);
    return this.call(`txn ${label.join(';')}`, true, opts, () => {
      const view = sentState ?? this.data;
      const ok = this.broken === 'no-compare' || compare.every((c) => holds(c, view.get(c.key)));
      const ops = ok ? success : failure;
      const wrote = ops.some((o) => o.op !== 'get');
      if (wrote) this.revision++;
      const results = ops.map((o) => this.apply(o));
      return { succeeded: ok, revision: this.revision, results };
    });
  }

  private apply(o: TxnOp): { kvs: KeyValue[] } {
    switch (o.op) {
      case 'get': {
        const kv = this.data.get(o.key);
        return { kvs: kv ? [kv] : [] };
      }
      case 'put': {
        const old = this.data.get(o.key);
        const kv: KeyValue = {
          key: o.key,
          value: o.value,
          createRevision: old?.createRevision ?? this.revision,
          modRevision: this.revision,
          version: (old?.version ?? 0) + 1,
        };
        this.data.set(o.key, kv);
        this.writes.set(o.key, (this.writes.get(o.key) ?? 0) + 1);
        return { kvs: [] };
      }
      case 'delete': {
        const old = this.data.get(o.key);
        this.data.delete(o.key);
        return { kvs: old ? [old] : [] };
      }
    }
  }

  /**
   * One request's life: fast refusal during an outage (not sent: not ambiguous), else the request may be
   * lost, is applied d1 ms later (dropped if an outage began meanwhile), and its reply may be lost: the
   * client then sees ENOTCONN (connection drop noticed) or ETIMEDOUT (its timeout), ambiguous for a write.
   */
  private call<T>(what: string, write: boolean, opts: StoreCallOptions, run: () => T): Promise<T> {
    const { sched, rng } = this;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const handles: EventHandle[] = [];
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        for (const h of handles) h.cancel();
        opts.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const fail = (code: 'ENOTCONN' | 'ETIMEDOUT' | 'EABORTED', ambiguous: boolean) =>
        settle(() => {
          this.trace(`  ${what}: ${code}${ambiguous ? ' (ambiguous)' : ''}`);
          reject(new DvsError(code, `sim store: ${what}`, { ambiguous }));
        });
      const onAbort = () => fail('EABORTED', write);
      if (opts.signal?.aborted) return fail('EABORTED', false);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      handles.push(sched.after(opts.timeout ?? 5_000, () => fail('ETIMEDOUT', write)));
      if (this.outage) {
        handles.push(sched.after(rng.int(1, 5), () => fail('ENOTCONN', false)));
        return;
      }
      const faulty = this.faults;
      if (faulty && rng.chance(0.08)) {
        this.lostRequests++;
        this.trace(`  ${what}: request lost`);
        if (rng.chance(0.5)) handles.push(sched.after(rng.int(5, 40), () => fail('ENOTCONN', write)));
        return;
      }
      // Not cancelled on settle: a request already sent lands even if its caller gave up (or crashed).
      sched.after(rng.int(1, 15), () => {
        if (this.outage) {
          this.lostRequests++;
          this.trace(`  ${what}: dropped by an outage`);
          return;
        }
        const r = run();
        const landed = write && (r as TxnResult).succeeded;
        this.trace(`  ${what}: applied${write ? ` succeeded=${String(landed)} rev=${this.revision}` : ''}`);
        if (faulty && this.faults && rng.chance(0.12)) {
          this.trace(`  ${what}: reply lost`);
          if (landed) {
            const put = what.match(/=(.*)$/);
            if (put?.[1] !== undefined) this.landedLost.add(put[1]);
          }
          if (rng.chance(0.5)) handles.push(sched.after(rng.int(1, 30), () => fail('ENOTCONN', write)));
          return;
        }
        handles.push(sched.after(rng.int(1, 15), () => settle(() => resolve(r))));
      });
    });
  }

  put(): Promise<number> {
    return Promise.reject(dvsError('ENOTSUP', 'sim store: put (the recipe uses txn)'));
  }
  delete(): Promise<{ deleted: number; revision: number }> {
    return Promise.reject(dvsError('ENOTSUP', 'sim store: delete'));
  }
  grantLease(): Promise<string> {
    return Promise.reject(dvsError('ENOTSUP', 'sim store: leases'));
  }
  keepAlive(): Promise<number> {
    return Promise.reject(dvsError('ENOTSUP', 'sim store: leases'));
  }
  revokeLease(): Promise<void> {
    return Promise.reject(dvsError('ENOTSUP', 'sim store: leases'));
  }
  watch(): Watch {
    throw dvsError('ENOTSUP', 'sim store: watch');
  }

  /** The stored value of `key` (for the final check). */
  peek(key: string): KeyValue | undefined {
    return this.data.get(key);
  }
}

function holds(c: Compare, kv: KeyValue | undefined): boolean {
  let a: number | string;
  let b: number | string;
  if (c.target === 'value') {
    a = kv ? Buffer.from(kv.value).toString('hex') : '';
    b = c.value instanceof Uint8Array ? Buffer.from(c.value).toString('hex') : String(c.value);
  } else if (c.target === 'lease') {
    a = kv?.lease ?? '0';
    b = String(c.value);
  } else {
    a = kv ? kv[c.target] : 0;
    b = Number(c.value);
  }
  switch (c.op) {
    case '==':
      return a === b;
    case '!=':
      return a !== b;
    case '<':
      return a < b;
    case '>':
      return a > b;
  }
}

/** Run one seeded simulation; never throws for an invariant (they are in `violations`). */
export async function simulateConsensus(cfg: ConsensusSimConfig): Promise<ConsensusSimResult> {
  const config = {
    seed: cfg.seed,
    proposers: cfg.proposers ?? 3 + (cfg.seed % 5),
    instances: cfg.instances ?? 1 + (cfg.seed % 3),
    workloadMs: cfg.workloadMs ?? 2_000,
    faults: cfg.faults ?? true,
    ...(cfg.broken ? { broken: cfg.broken } : {}),
  };
  const sched = new Scheduler();
  const root = new Prng(config.seed);
  const storeRng = root.fork();
  const faultRng = root.fork();
  const procRng = root.fork();
  const trace = new Trace(60);
  const log = (line: string) => trace.add(`${sched.now} ${line}`);
  const store = new SimStore(sched, storeRng, log, config.broken);
  store.faults = config.faults;
  const scope = new DcScope(DC);
  const instances = Array.from({ length: config.instances }, (_, i) => `inst-${i}`);
  const violations: string[] = [];
  const stats: ConsensusSimStats = {
    proposers: config.proposers,
    instances: config.instances,
    proposals: 0,
    decided: 0,
    readBacks: 0,
    unavailable: 0,
    lostRequests: 0,
    lostRepliesLanded: 0,
    learnedAfterLostReply: 0,
    crashes: 0,
    restarts: 0,
    ghostWins: 0,
    outages: 0,
    steps: 0,
    endMs: 0,
  };
  const proposed = new Map<string, Set<string>>(instances.map((i) => [i, new Set()]));
  const learnt = new Map<string, Learnt[]>(instances.map((i) => [i, []]));
  /** Proposal value -> the incarnations that proposed it. */
  const proposalBy = new Map<string, string[]>();
  const crashedBeforeLearning = new Set<string>();

  interface Incarnation {
    id: number;
    name: string;
    svc: ConsensusService;
    ac: AbortController;
    alive: boolean;
    known: Map<string, Decision>;
  }
  const current: (Incarnation | undefined)[] = [];
  let healed = false;
  let seq = 0;

  const delay = (ms: number) => new Promise<void>((r) => sched.after(ms, r));

  const record = (inst: string, l: Learnt) => {
    learnt.get(inst)!.push(l);
    log(`${l.proposer} learnt ${inst}=${l.value} rev ${l.revision} via ${l.via}${l.mine ? ' (mine)' : ''}`);
  };

  /** The last value each proposer (all incarnations) proposed per instance: `${id} ${inst}` -> value. */
  const lastValue = new Map<string, string>();
  const proposeOnce = async (p: Incarnation, inst: string, timeout: number): Promise<boolean> => {
    // Half the calls re-propose the proposer's previous value for the instance (a client retrying after
    // EUNAVAIL, or a restarted process proposing its configured value again), half a fresh one.
    const slot = `${p.id} ${inst}`;
    const prev = lastValue.get(slot);
    const value = prev !== undefined && procRng.chance(0.5) ? prev : `v${++seq}.p${p.id}`;
    lastValue.set(slot, value);
    proposed.get(inst)!.add(value);
    proposalBy.set(value, [...(proposalBy.get(value) ?? []), p.name]);
    stats.proposals++;
    log(`${p.name} propose ${inst}=${value} timeout ${timeout}`);
    try {
      const d = await p.svc.propose(inst, enc.encode(value), { timeout, signal: p.ac.signal });
      if (!p.alive) return true;
      p.known.set(inst, d);
      stats.decided++;
      const got = dec.decode(d.value);
      record(inst, {
        proposer: p.name,
        via: 'propose',
        value: got,
        revision: d.revision,
        mine: d.mine,
        proposal: value,
      });
      if (store.landedLost.has(value)) {
        if (d.mine && got === value) stats.learnedAfterLostReply++;
        else
          violations.push(
            `${p.name}: its write of ${inst}=${value} landed (reply lost) but it learnt ${got} mine=${String(d.mine)} (invariant 4)`,
          );
      }
      return true;
    } catch (e) {
      if (!p.alive) return true;
      const code = e instanceof DvsError ? e.code : String(e);
      log(`${p.name} propose ${inst}=${value} failed ${code}`);
      if (code === 'EUNAVAIL') stats.unavailable++;
      else
        violations.push(
          `${p.name}: propose ${inst} failed with ${code} (only EUNAVAIL is expected): ${String(e)}`,
        );
      return false;
    }
  };

  const runIncarnation = async (p: Incarnation) => {
    const order = [...instances];
    for (let i = order.length - 1; i > 0; i--) {
      const j = procRng.int(0, i);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    await delay(procRng.int(0, 60));
    for (const inst of order) {
      // A failed call is retried later (a client's retry loop), at most 3 calls per instance.
      for (let attempt = 0; attempt < 3 && p.alive && !healed; attempt++) {
        if (await proposeOnce(p, inst, procRng.int(150, 1_500))) break;
        await delay(procRng.int(10, 200));
      }
      if (!p.alive) return;
      await delay(procRng.int(0, 40));
    }
  };

  const spawn = (id: number, inc: number): Incarnation => {
    const svc = new ConsensusService({ store, dc: DC, logger: silent, timeoutMs: 1_000 });
    const p: Incarnation = {
      id,
      name: `p${id}.${inc}`,
      svc,
      ac: new AbortController(),
      alive: true,
      known: new Map(),
    };
    current[id] = p;
    log(`${p.name} start`);
    // start() is synchronous in effect (sets running); awaited inside the task so errors are not lost.
    void svc.start().then(() => runIncarnation(p));
    return p;
  };

  // Virtual clock for the real service code (storeCall's backoff sleeps and deadlines).
  const saved = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout, now: Date.now };
  globalThis.setTimeout = ((fn: () => void, ms?: number) =>
    sched.after(Math.max(0, ms ?? 0), fn)) as unknown as typeof globalThis.setTimeout;
  globalThis.clearTimeout = ((h: EventHandle | undefined) => h?.cancel()) as typeof globalThis.clearTimeout;
  Date.now = () => EPOCH + sched.now;
  const drain = () => new Promise<void>((r) => realSetImmediate(r));
  const runUntilIdle = async (): Promise<boolean> => {
    for (;;) {
      await drain();
      if (sched.steps >= MAX_STEPS) return false;
      if (sched.run(Number.POSITIVE_INFINITY, sched.steps + 1) === 'empty') {
        await drain();
        if (sched.size === 0) return true;
      }
    }
  };

  try {
    for (let id = 0; id < config.proposers; id++) {
      spawn(id, 0);
      if (!config.faults) continue;
      // Crashes: at most two per proposer; a crashed proposer comes back (70%) as a new incarnation.
      let inc = 0;
      let t = 0;
      while (faultRng.chance(0.45) && inc < 2) {
        t += faultRng.int(20, config.workloadMs / 2);
        if (t >= config.workloadMs) break;
        const back = faultRng.chance(0.7) ? faultRng.int(20, 400) : undefined;
        const next = ++inc;
        sched.at(t, () => {
          const p = current[id];
          if (p === undefined || !p.alive) return;
          p.alive = false;
          stats.crashes++;
          for (const inst of instances)
            if (!p.known.has(inst)) crashedBeforeLearning.add(`${p.name} ${inst}`);
          log(`${p.name} CRASH`);
          p.ac.abort();
          void p.svc.stop();
          if (back !== undefined) {
            sched.after(back, () => {
              if (healed) return;
              stats.restarts++;
              spawn(id, next);
            });
          }
        });
        if (back !== undefined) t += back;
      }
    }
    if (config.faults) {
      // Store outages (an etcd leader election): requests arriving meanwhile are dropped, new ones refused.
      let t = faultRng.int(50, 400);
      while (t < config.workloadMs) {
        const len = faultRng.int(30, 350);
        sched.at(t, () => {
          stats.outages++;
          store.outage = true;
          log('store OUTAGE begins');
        });
        sched.at(Math.min(t + len, config.workloadMs), () => {
          store.outage = false;
          log('store outage ends');
        });
        t += len + faultRng.int(100, 800);
      }
    }
    sched.at(config.workloadMs, () => {
      healed = true;
      store.faults = false;
      store.outage = false;
      log('HEAL');
    });
    if (!(await runUntilIdle())) violations.push(`did not settle within ${MAX_STEPS} events`);
    stats.lostRequests = store.lostRequests;
    stats.lostRepliesLanded = store.landedLost.size;

    // After the heal: every live proposer that has not learnt a decision reads it back (propose if none).
    for (const p of current) {
      if (p === undefined || !p.alive) continue;
      for (const inst of instances) {
        if (p.known.has(inst)) continue;
        void (async () => {
          try {
            const d = await p.svc.read(inst, { timeout: 1_000 });
            p.known.set(inst, d);
            stats.readBacks++;
            record(inst, {
              proposer: p.name,
              via: 'read',
              value: dec.decode(d.value),
              revision: d.revision,
              mine: d.mine,
            });
          } catch (e) {
            if (!(e instanceof DvsError && e.code === 'ENOENT')) {
              violations.push(`${p.name}: read ${inst} after the heal failed: ${String(e)} (invariant 6)`);
              return;
            }
            if (!(await proposeOnce(p, inst, 1_000)))
              violations.push(`${p.name}: propose ${inst} after the heal failed (invariant 6)`);
          }
        })();
      }
    }
    if (!(await runUntilIdle())) violations.push(`read-backs did not settle within ${MAX_STEPS} events`);
    for (const p of current) if (p?.alive) await p.svc.stop();
  } finally {
    globalThis.setTimeout = saved.setTimeout;
    globalThis.clearTimeout = saved.clearTimeout;
    Date.now = saved.now;
  }

  for (const inst of instances) {
    const ls = learnt.get(inst)!;
    const values = new Set(ls.map((l) => l.value));
    const revisions = new Set(ls.map((l) => l.revision));
    if (values.size > 1)
      violations.push(
        `${inst}: agreement violated, decisions ${ls.map((l) => `${l.proposer}=${l.value}`).join(', ')} (invariant 1)`,
      );
    if (revisions.size > 1)
      violations.push(`${inst}: decisions at different revisions ${[...revisions].join(', ')} (invariant 1)`);
    for (const v of values)
      if (!proposed.get(inst)!.has(v)) violations.push(`${inst}: decided ${v}, never proposed (invariant 2)`);
    for (const l of ls) {
      if (l.via !== 'propose') continue;
      const own = l.value === l.proposal;
      if (l.mine !== own)
        violations.push(
          `${l.proposer}: ${inst} decided ${l.value}, proposed ${l.proposal}, mine=${String(l.mine)} (invariant 3)`,
        );
    }
    const key = `${scope.consensusRoot}${inst}`;
    const writes = store.writes.get(key) ?? 0;
    if (writes > 1) violations.push(`${inst}: the store wrote the decision ${writes} times (invariant 5)`);
    const stored = store.peek(key);
    const storedValue = stored ? dec.decode(stored.value) : undefined;
    if (storedValue !== undefined && values.size === 1 && !values.has(storedValue))
      violations.push(
        `${inst}: everyone learnt ${[...values][0]}, the store holds ${storedValue} (invariant 1)`,
      );
    for (const p of current) {
      if (p?.alive && !p.known.has(inst))
        violations.push(`${p.name}: never learnt ${inst} after the heal (invariant 6)`);
    }
    const writers = storedValue === undefined ? [] : (proposalBy.get(storedValue) ?? []);
    if (writers.some((w) => crashedBeforeLearning.has(`${w} ${inst}`))) stats.ghostWins++;
  }
  stats.steps = sched.steps;
  stats.endMs = sched.now;
  return { seed: config.seed, config, violations, stats, traceHash: trace.hash(), tail: trace.tail() };
}

/** A failure report: the seed, how to replay it, every violation and the last trace lines. */
export function reportConsensus(r: ConsensusSimResult, file: string): string {
  return [
    `consensus simulation seed ${r.seed} (${r.config.proposers} proposers, ${r.config.instances} instances${
      r.config.broken ? `, broken store ${r.config.broken}` : ''
    }) violated ${r.violations.length} invariant(s); replay: SEED=${r.seed} node --import tsx --test ${file}`,
    ...r.violations.slice(0, 20).map((v) => `  - ${v}`),
    '  last trace lines:',
    ...r.tail.map((l) => `    ${l}`),
  ].join('\n');
}
