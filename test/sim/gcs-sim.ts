/**
 * Deterministic simulation of the group communication system: N GcsNodes (src/gcs) in one process under a
 * seeded scheduler, with random joins, leaves, multicasts in every order, process deaths, slow readers,
 * node crashes (a crashed node loses all state; it may restart empty), partitions and heals. Frames travel
 * as MessagePack (as on a real link), FIFO per direction, after 1-3 ms; a cut link drops what is in
 * flight. After the run every guarantee of docs/gcs.md is checked. A failing seed replays with SEED=n.
 */
import { pack, unpack } from 'msgpackr';
import { GcsNode } from '../../src/gcs/node.js';
import {
  compareViewIds,
  type GcsEvent,
  type GcsFrame,
  type GroupId,
  groupKey,
  type Member,
  memberKey,
  type NodeId,
  ORDERS,
  type Order,
  type ViewId,
} from '../../src/gcs/types.js';
import { DvsError } from '../../src/protocol/errors.js';
import { Prng } from './prng.js';
import { Scheduler } from './scheduler.js';
import { Trace } from './trace.js';

export interface GcsSimConfig {
  seed: number;
  /** 3..7 nodes. */
  nodes: number;
  /** Virtual ms of workload and faults before the network heals. */
  workloadMs: number;
  /** Virtual ms after the heal for views to converge (ticks keep running), before draining. */
  settleMs: number;
  partitions: boolean;
  crashes: boolean;
  /** Some processes never consume their deliveries (they must be expelled). */
  slowReaders: boolean;
  maxBacklog: number;
  maxPayload: number;
  flushTimeoutMs: number;
  tickMs: number;
  traceKeep?: number;
  /** Break delivery on purpose (the checker must notice): repeat or swallow every 25th message delivery. */
  broken?: 'duplicate' | 'drop';
  /**
   * Links come back one by one, each after its own delay of up to this many virtual ms (0: all at once).
   * Reachability is then intransitive for a while, as in a real heal: nodes see different coordinators.
   */
  staggerMs?: number;
}

export const GCS_SIM_DEFAULTS: Omit<GcsSimConfig, 'seed' | 'nodes'> = {
  workloadMs: 400,
  settleMs: 800,
  partitions: true,
  crashes: true,
  slowReaders: true,
  maxBacklog: 40,
  maxPayload: 256,
  flushTimeoutMs: 40,
  tickMs: 10,
};

export interface GcsSimResult {
  seed: number;
  violations: string[];
  traceHash: string;
  traceTail: string[];
  stats: {
    multicasts: number;
    deliveries: number;
    views: Record<string, number>;
    transitional: number;
    expelled: number;
    crashes: number;
    partitions: number;
    badInputs: number;
  };
}

/** Groups of the run: the same name in two DCs (they must never mix). */
const GROUPS: GroupId[] = [
  { dc: 1, name: 'alpha' },
  { dc: 1, name: 'beta' },
  { dc: 2, name: 'alpha' },
];

interface MsgRec {
  id: string;
  uid: number;
  counter: number;
  order: Order;
  group: string;
  /** The sender's causal past: highest counter seen per sender uid. */
  vc: Map<number, number>;
}

type Rec =
  /** The process called leave (or was expelled): it must get nothing more in the group until a new view. */
  | { kind: 'leave'; group: string }
  | { kind: 'view'; group: string; id: ViewId; key: string; members: string[]; reason: string }
  | {
      kind: 'msg';
      group: string;
      id: string;
      order: Order;
      seq: number;
      view: string;
      transitional: boolean;
      sender: string;
    };

interface Proc {
  uid: number;
  node: NodeId;
  inc: number;
  ep: number;
  dc: number;
  slow: boolean;
  /** Groups it believes it is in (joined or joining), with the time of the join call. */
  groups: Map<string, number>;
  /** Groups it ever left. */
  left: Set<string>;
  counter: number;
  vc: Map<number, number>;
  recs: Rec[];
  alive: boolean;
  expelled: boolean;
  /** Messages it multicast: id, group, time sent. */
  sent: { id: string; group: string; at: number }[];
}

interface SimNode {
  gcs: GcsNode | undefined;
  inc: number;
  alive: boolean;
  block: number;
  reported: Set<NodeId>;
  everCrashed: boolean;
}

const vkey = (v: ViewId): string => `${v.epoch}.${v.coord}.${v.inc}.${v.seq}`;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function simulateGcs(cfg: GcsSimConfig): GcsSimResult {
  const rnd = new Prng(cfg.seed);
  const net = rnd.fork();
  const work = rnd.fork();
  const faults = rnd.fork();
  const sched = new Scheduler();
  const trace = new Trace(cfg.traceKeep ?? 60);
  const violations: string[] = [];
  const violate = (s: string): void => {
    if (violations.length < 30) violations.push(s);
  };
  const log = (s: string): void => trace.add(`${sched.now} ${s}`);
  const stats: GcsSimResult['stats'] = {
    multicasts: 0,
    deliveries: 0,
    views: {},
    transitional: 0,
    expelled: 0,
    crashes: 0,
    partitions: 0,
    badInputs: 0,
  };
  const N = cfg.nodes;
  const nodes: SimNode[] = [];
  const up: boolean[][] = [];
  const gen: number[][] = [];
  const lastArrival: number[][] = [];
  const procs: Proc[] = [];
  const byEp = new Map<number, Proc>();
  const msgs = new Map<string, MsgRec>();
  let nextUid = 1;
  let brokenCount = 0;
  let ticking = true;
  let faultsOn = true;

  for (let a = 0; a < N; a++) {
    up.push(new Array<boolean>(N).fill(false));
    gen.push(new Array<number>(N).fill(0));
    lastArrival.push(new Array<number>(N).fill(0));
    nodes.push({
      gcs: undefined,
      inc: 0,
      alive: false,
      block: 0,
      reported: new Set([a]),
      everCrashed: false,
    });
  }

  const connected = (a: number, b: number): boolean =>
    (nodes[a] as SimNode).alive &&
    (nodes[b] as SimNode).alive &&
    (nodes[a] as SimNode).block === (nodes[b] as SimNode).block;

  const truth = (a: number): Set<NodeId> => {
    const s = new Set<NodeId>([a]);
    for (let b = 0; b < N; b++) if (b !== a && up[a]?.[b]) s.add(b);
    return s;
  };

  const refresh = (a: number): void => {
    sched.after(net.int(0, 5), () => {
      const n = nodes[a] as SimNode;
      if (!n.alive || n.gcs === undefined) return;
      const r = truth(a);
      if (r.size === n.reported.size && [...r].every((x) => n.reported.has(x))) return;
      n.reported = r;
      log(`n${a} reach ${[...r].sort().join(',')}`);
      n.gcs.reachable(sched.now, r);
    });
  };

  const setLink = (a: number, b: number, v: boolean): void => {
    if ((up[a] as boolean[])[b] === v) return;
    (up[a] as boolean[])[b] = v;
    (up[b] as boolean[])[a] = v;
    (gen[a] as number[])[b]! += 1;
    (gen[b] as number[])[a]! += 1;
    log(`link ${a}-${b} ${v ? 'up' : 'down'}`);
    refresh(a);
    refresh(b);
  };

  /** Links scheduled to come up (staggered heals), as a * N + b. */
  const rising = new Set<number>();
  /** Bring up every link that should be up, once both ends have noticed it went down. */
  const reconcile = (): void => {
    let retry = false;
    for (let a = 0; a < N; a++)
      for (let b = a + 1; b < N; b++) {
        const want = connected(a, b);
        if (!want) {
          setLink(a, b, false);
          continue;
        }
        if ((up[a] as boolean[])[b]) continue;
        const na = nodes[a] as SimNode;
        const nb = nodes[b] as SimNode;
        // A link comes back only after both ends noticed it down (the link layer declares the loss).
        if (na.reported.has(b) || nb.reported.has(a)) retry = true;
        else if (!cfg.staggerMs) setLink(a, b, true);
        else {
          const link = a * N + b;
          if (rising.has(link)) continue;
          rising.add(link);
          sched.after(net.int(0, cfg.staggerMs), () => {
            rising.delete(link);
            if (connected(a, b)) setLink(a, b, true);
          });
        }
      }
    if (retry) sched.after(3, reconcile);
  };

  const send = (a: number, inc: number, b: number, frame: GcsFrame): void => {
    const na = nodes[a] as SimNode;
    if (!na.alive || na.inc !== inc) return;
    if (!(up[a] as boolean[])[b] || !na.reported.has(b)) return;
    const bytes = pack(frame);
    const g = (gen[a] as number[])[b] as number;
    const at = Math.max((lastArrival[a] as number[])[b] as number, sched.now + net.int(1, 3));
    (lastArrival[a] as number[])[b] = at;
    sched.at(at, () => {
      if ((gen[a] as number[])[b] !== g) return;
      const nb = nodes[b] as SimNode;
      if (!nb.alive || nb.gcs === undefined) return;
      const f = unpack(bytes) as GcsFrame;
      log(
        `n${a}>n${b} ${f.t}${'cfg' in f ? ` ${f.cfg.join('.')}` : ''}${'id' in f ? ` ${f.id.join('.')}` : ''}`,
      );
      nb.gcs.receive(sched.now, a, f);
    });
  };

  const onDeliver = (a: number, inc: number, m: Member, ev: GcsEvent): void => {
    const p = byEp.get(m.ep);
    if (p === undefined || p.node !== a || p.inc !== inc) {
      violate(`delivery to unknown member ${memberKey(m)} at node ${a}`);
      return;
    }
    if (!p.alive) violate(`delivery to dead process uid ${p.uid}`);
    if (ev.kind === 'view') {
      const v = ev.view;
      const gk = groupKey(v.group);
      stats.views[v.reason] = (stats.views[v.reason] ?? 0) + 1;
      p.recs.push({
        kind: 'view',
        group: gk,
        id: v.id,
        key: vkey(v.id),
        members: v.members.map(memberKey),
        reason: v.reason,
      });
      log(`u${p.uid} view ${gk} ${vkey(v.id)} ${v.reason} [${v.members.map(memberKey).join(' ')}]`);
    } else {
      const id = decoder.decode(ev.payload).split('|')[0] as string;
      const rec = msgs.get(id);
      const gk = groupKey(ev.group);
      if (rec === undefined) violate(`uid ${p.uid} delivered ${id} that nobody sent`);
      else {
        if (rec.group !== gk) violate(`message ${id} of ${rec.group} delivered in ${gk}`);
        if (rec.order !== ev.order)
          violate(`message ${id} delivered with order ${ev.order}, sent ${rec.order}`);
        for (const [u, c] of rec.vc) p.vc.set(u, Math.max(p.vc.get(u) ?? 0, c));
      }
      if (ev.transitional) stats.transitional++;
      log(`u${p.uid} got ${id} s${ev.seq} v${vkey(ev.view)}${ev.transitional ? ' T' : ''}`);
      stats.deliveries++;
      p.recs.push({
        kind: 'msg',
        group: gk,
        id,
        order: ev.order,
        seq: ev.seq,
        view: vkey(ev.view),
        transitional: ev.transitional === true,
        sender: memberKey(ev.sender),
      });
    }
    if (!p.slow)
      sched.after(work.int(0, 4), () => {
        const n = nodes[a] as SimNode;
        if (n.alive && n.inc === inc && p.alive) n.gcs?.consumed(m, 1);
      });
  };

  const spawnProc = (a: number): Proc => {
    const uid = nextUid++;
    const n = nodes[a] as SimNode;
    const p: Proc = {
      uid,
      node: a,
      inc: n.inc,
      ep: 100 + uid,
      dc: work.chance(0.7) ? 1 : 2,
      slow: cfg.slowReaders && work.chance(0.08),
      groups: new Map(),
      left: new Set(),
      counter: 0,
      vc: new Map(),
      recs: [],
      alive: true,
      expelled: false,
      sent: [],
    };
    procs.push(p);
    byEp.set(p.ep, p);
    log(`spawn u${uid} n${a} ep ${p.ep} dc ${p.dc}${p.slow ? ' slow' : ''}`);
    const step = (): void => {
      if (!p.alive || !faultsOn) return;
      act(p);
      sched.after(work.int(3, 20), step);
    };
    sched.after(work.int(0, 10), step);
    return p;
  };

  const expectThrow = (p: Proc, what: string, code: string, fn: () => void): void => {
    stats.badInputs++;
    try {
      fn();
      violate(`uid ${p.uid}: ${what} was accepted (expected ${code})`);
    } catch (e) {
      if (!(e instanceof DvsError) || e.code !== code)
        violate(
          `uid ${p.uid}: ${what} threw ${e instanceof DvsError ? e.code : String(e)}, expected ${code}`,
        );
    }
  };

  const act = (p: Proc): void => {
    const n = nodes[p.node] as SimNode;
    const g = n.gcs;
    if (g === undefined) return;
    const now = sched.now;
    const me: Member = { node: p.node, ep: p.ep };
    const mine = GROUPS.filter((x) => x.dc === p.dc);
    const joined = mine.filter((x) => p.groups.has(groupKey(x)));
    const r = work.next();
    if (p.expelled) {
      expectThrow(p, 'multicast after expel', 'EEXPELLED', () =>
        g.multicast(now, p.dc, work.pick(mine), me, 'agreed', new Uint8Array(1)),
      );
      return;
    }
    if (r < 0.03) {
      const kind = work.int(0, 3);
      const grp = joined[0] ?? (mine[0] as GroupId);
      if (kind === 0)
        expectThrow(p, 'oversized payload', 'EMSGSIZE', () =>
          g.multicast(now, p.dc, grp, me, 'fifo', new Uint8Array(cfg.maxPayload + 1)),
        );
      else if (kind === 1)
        expectThrow(p, 'unknown order', 'EINVAL', () =>
          g.multicast(now, p.dc, grp, me, 'bogus' as Order, new Uint8Array(1)),
        );
      else if (kind === 2) {
        const other = GROUPS.find((x) => x.dc !== p.dc) as GroupId;
        expectThrow(p, "join of another DC's group", 'EPERM', () => g.join(now, p.dc, other, me));
      } else
        expectThrow(p, 'bad group name', 'EINVAL', () =>
          g.join(now, p.dc, { dc: p.dc, name: 'bad name!' }, me),
        );
      return;
    }
    if (r < 0.045) {
      log(`u${p.uid} dies`);
      p.alive = false;
      g.memberGone(now, me);
      spawnProc(p.node);
      return;
    }
    if (joined.length === 0 || (r < 0.2 && joined.length < mine.length)) {
      const grp = work.pick(mine.filter((x) => !p.groups.has(groupKey(x))));
      log(`u${p.uid} join ${groupKey(grp)}`);
      try {
        g.join(now, p.dc, grp, me);
      } catch (e) {
        if (e instanceof DvsError && e.code === 'EBUSY') return; // its leave is not ordered yet
        throw e;
      }
      p.groups.set(groupKey(grp), now);
      return;
    }
    const grp = work.pick(joined);
    if (r < 0.25) {
      log(`u${p.uid} leave ${groupKey(grp)}`);
      g.leave(now, p.dc, grp, me);
      p.recs.push({ kind: 'leave', group: groupKey(grp) });
      p.groups.delete(groupKey(grp));
      p.left.add(groupKey(grp));
      return;
    }
    const order = work.pick(ORDERS);
    p.counter++;
    const id = `${p.uid}:${p.counter}`;
    p.vc.set(p.uid, p.counter);
    msgs.set(id, { id, uid: p.uid, counter: p.counter, order, group: groupKey(grp), vc: new Map(p.vc) });
    p.sent.push({ id, group: groupKey(grp), at: now });
    stats.multicasts++;
    log(`u${p.uid} mcast ${id} ${order} ${groupKey(grp)}`);
    g.multicast(now, p.dc, grp, me, order, encoder.encode(`${id}|${'x'.repeat(work.int(0, 40))}`));
  };

  const boot = (a: number): void => {
    const n = nodes[a] as SimNode;
    n.inc++;
    n.alive = true;
    n.reported = new Set([a]);
    const inc = n.inc;
    n.gcs = new GcsNode({
      nodeId: a,
      incarnation: inc,
      maxBacklog: cfg.maxBacklog,
      maxPayload: cfg.maxPayload,
      flushTimeoutMs: cfg.flushTimeoutMs,
      io: {
        sendTo: (b, f) => send(a, inc, b, f),
        deliver: (m, ev) => {
          if (cfg.broken !== undefined && ev.kind === 'message' && ++brokenCount % 25 === 0) {
            if (cfg.broken === 'drop') return;
            onDeliver(a, inc, m, ev);
          }
          onDeliver(a, inc, m, ev);
        },
        expelled: (m) => {
          const p = byEp.get(m.ep);
          log(`expelled ${memberKey(m)}`);
          stats.expelled++;
          if (p === undefined || !p.slow)
            violate(`member ${memberKey(m)} expelled but it reads its deliveries`);
          if (p !== undefined) {
            p.expelled = true;
            for (const gk of p.groups.keys()) p.recs.push({ kind: 'leave', group: gk });
          }
        },
        log: (level, msg, fields) => {
          if (level === 'error' || level === 'warn')
            violate(`n${a} logged ${level}: ${msg} ${JSON.stringify(fields)}`);
        },
      },
    });
    log(`boot n${a} inc ${inc}`);
    const tick = (): void => {
      if (!ticking || !n.alive || n.inc !== inc) return;
      n.gcs?.tick(sched.now);
      sched.after(cfg.tickMs, tick);
    };
    sched.after(net.int(0, cfg.tickMs), tick);
    const count = work.int(2, 3);
    for (let i = 0; i < count; i++) spawnProc(a);
    reconcile();
  };

  const crash = (a: number): void => {
    const n = nodes[a] as SimNode;
    log(`CRASH n${a}`);
    stats.crashes++;
    n.alive = false;
    n.everCrashed = true;
    n.gcs = undefined;
    for (const p of procs) if (p.node === a && p.alive) p.alive = false;
    reconcile();
    if (faults.chance(0.75)) {
      const waitRestart = (): void => {
        // Restart only once every peer noticed the crash (a restarted node must be reported gone first).
        if (nodes.some((m, b) => b !== a && m.alive && m.reported.has(a))) sched.after(5, waitRestart);
        else boot(a);
      };
      sched.after(faults.int(20, 150), waitRestart);
    }
  };

  const fault = (): void => {
    if (!faultsOn) return;
    const r = faults.next();
    const alive = nodes.map((n, i) => (n.alive ? i : -1)).filter((i) => i >= 0);
    if (cfg.crashes && r < 0.3 && alive.length > Math.max(2, N - 2)) crash(faults.pick(alive));
    else if (cfg.partitions && r < 0.75) {
      stats.partitions++;
      const blocks = faults.int(2, 3);
      for (const n of nodes) n.block = faults.int(0, blocks - 1);
      log(`PARTITION ${nodes.map((n) => n.block).join('')}`);
      reconcile();
    } else if (cfg.partitions) {
      for (const n of nodes) n.block = 0;
      log('HEAL');
      reconcile();
    }
    sched.after(faults.int(20, 80), fault);
  };

  for (let a = 0; a < N; a++) boot(a);
  if (cfg.partitions || cfg.crashes) sched.after(faults.int(20, 60), fault);
  sched.at(cfg.workloadMs, () => {
    faultsOn = false;
    for (const n of nodes) n.block = 0;
    log('FINAL HEAL');
    for (let a = 0; a < N; a++)
      if (!(nodes[a] as SimNode).alive && !(nodes[a] as SimNode).gcs) {
        // Nodes still down stay down: the check covers the live ones.
      }
    reconcile();
  });
  sched.at(cfg.workloadMs + cfg.settleMs, () => {
    ticking = false;
  });
  const why = sched.run(Number.POSITIVE_INFINITY, 2_000_000);
  if (why !== 'empty') violate(`no quiescence (${why})`);

  check(cfg, nodes, procs, msgs, violate);
  return { seed: cfg.seed, violations, traceHash: trace.hash(), traceTail: trace.tail(), stats };
}

/** Every guarantee of docs/gcs.md, on what was recorded. */
function check(
  cfg: GcsSimConfig,
  nodes: SimNode[],
  procs: Proc[],
  msgs: Map<string, MsgRec>,
  violate: (s: string) => void,
): void {
  const byKey = new Map(procs.map((p) => [`${p.node}.${p.ep}`, p]));
  const delivered = new Map<string, Set<string>>(); // proc key -> msg ids
  for (const p of procs) {
    const key = `${p.node}.${p.ep}`;
    const current = new Map<string, { key: string; members: string[] }>();
    const lastId = new Map<string, ViewId>();
    const seen = new Set<string>();
    const fifo = new Map<number, number>();
    const maxPast = new Map<string, number>(); // group|uid -> highest counter some delivered msg depended on
    for (const r of p.recs) {
      const dc = Number(r.group.split('/')[0]);
      if (dc !== p.dc) violate(`uid ${p.uid} (DC ${p.dc}) got an event of group ${r.group}`);
      if (r.kind === 'leave') {
        current.delete(r.group);
        continue;
      }
      if (r.kind === 'view') {
        const prev = lastId.get(r.group);
        if (prev !== undefined && compareViewIds(prev, r.id) >= 0)
          violate(`uid ${p.uid}: view ${r.key} of ${r.group} not after ${vkey(prev)}`);
        lastId.set(r.group, r.id);
        if (!r.members.includes(key)) violate(`uid ${p.uid}: view ${r.key} of ${r.group} without itself`);
        current.set(r.group, { key: r.key, members: r.members });
        continue;
      }
      const v = current.get(r.group);
      if (v === undefined) {
        violate(`uid ${p.uid}: message ${r.id} of ${r.group} before any view`);
        continue;
      }
      if (v.key !== r.view) violate(`uid ${p.uid}: message ${r.id} tagged view ${r.view}, current ${v.key}`);
      if (!v.members.includes(r.sender))
        violate(`uid ${p.uid}: message ${r.id} from ${r.sender} outside view ${v.key}`);
      if (seen.has(r.id)) violate(`uid ${p.uid}: message ${r.id} delivered twice`);
      seen.add(r.id);
      const m = msgs.get(r.id);
      if (m === undefined) continue;
      if (r.sender !== `${byUid(procs, m.uid)?.node}.${byUid(procs, m.uid)?.ep}`)
        violate(`message ${r.id} delivered with sender ${r.sender}`);
      const last = fifo.get(m.uid) ?? 0;
      if (m.counter <= last) violate(`uid ${p.uid}: fifo: ${r.id} after ${m.uid}:${last}`);
      fifo.set(m.uid, m.counter);
      // m1 -> m2 when m2's sender had seen m1 (or a later message of m1's sender) before sending m2.
      if (m.counter <= (maxPast.get(`${r.group}|${m.uid}`) ?? 0))
        violate(`uid ${p.uid}: causal: ${r.id} delivered after a message that depended on it`);
      for (const [u, c] of m.vc) {
        const k = `${r.group}|${u}`;
        if (c > (maxPast.get(k) ?? 0)) maxPast.set(k, c);
      }
    }
    delivered.set(key, seen);
  }

  // Total order: in each view, agreed and safe messages in the same relative order at every member. As in
  // EVS, a transitional delivery is ordered only with the members that move on together (same next view):
  // members that parted may hold it in different positions.
  type Seq = { uid: number; ids: string[]; trans: Set<string>; next: string };
  const perView = new Map<string, Seq[]>();
  for (const p of procs) {
    const mine = new Map<string, Seq>();
    const open = new Map<string, Seq>();
    for (const r of p.recs) {
      if (r.kind === 'leave') {
        open.delete(r.group);
        continue;
      }
      if (r.kind !== 'msg') {
        const o = open.get(r.group);
        if (o !== undefined) o.next = r.key;
        open.delete(r.group);
        continue;
      }
      if (r.order !== 'agreed' && r.order !== 'safe') continue;
      const k = `${r.group}|${r.view}`;
      let l = mine.get(k);
      if (l === undefined) {
        l = { uid: p.uid, ids: [], trans: new Set(), next: '' };
        mine.set(k, l);
        open.set(r.group, l);
      }
      l.ids.push(r.id);
      if (r.transitional) l.trans.add(r.id);
    }
    for (const [k, seq] of mine) {
      let l = perView.get(k);
      if (l === undefined) {
        l = [];
        perView.set(k, l);
      }
      l.push(seq);
    }
  }
  for (const [k, seqs] of perView)
    for (let i = 0; i < seqs.length; i++)
      for (let j = i + 1; j < seqs.length; j++) {
        const a = seqs[i] as Seq;
        const b = seqs[j] as Seq;
        const together = a.next !== '' && a.next === b.next;
        const skip = (id: string) => !together && (a.trans.has(id) || b.trans.has(id));
        const pos = new Map(b.ids.filter((id) => !skip(id)).map((id, n) => [id, n]));
        let prev = -1;
        for (const id of a.ids) {
          const n = pos.get(id);
          if (n === undefined) continue;
          if (n < prev) {
            violate(`total order in ${k}: uid ${a.uid} and uid ${b.uid} disagree around ${id}`);
            break;
          }
          prev = n;
        }
      }

  // Virtual synchrony: members moving together from V to V' delivered the same messages in V.
  const sets = new Map<string, { uid: number; ids: string }>();
  for (const p of procs) {
    const open = new Map<string, { key: string; ids: string[] }>();
    for (const r of p.recs) {
      if (r.kind === 'leave') {
        open.delete(r.group);
        continue;
      }
      if (r.kind === 'msg') {
        open.get(r.group)?.ids.push(r.id);
        continue;
      }
      const o = open.get(r.group);
      if (o !== undefined) {
        const k = `${r.group}|${o.key}|${r.key}`;
        const ids = o.ids.sort().join(',');
        const other = sets.get(k);
        if (other === undefined) sets.set(k, { uid: p.uid, ids });
        else if (other.ids !== ids)
          violate(
            `virtual synchrony: uid ${p.uid} and uid ${other.uid} moved ${o.key} -> ${r.key} in ${r.group} with different messages`,
          );
      }
      open.set(r.group, { key: r.key, ids: [] });
    }
  }

  // Safe: a non-transitional safe delivery in view V reaches every member of V that stayed.
  const survivor = (p: Proc, g: string): boolean =>
    p.alive && !p.expelled && !p.left.has(g) && !(nodes[p.node] as SimNode).everCrashed && p.groups.has(g);
  for (const p of procs) {
    const views = new Map<string, string[]>();
    for (const r of p.recs) {
      if (r.kind === 'view') {
        views.set(r.group, r.members);
        continue;
      }
      if (r.kind !== 'msg') continue;
      if (r.order !== 'safe' || r.transitional) continue;
      for (const k of views.get(r.group) ?? []) {
        const q = byKey.get(k);
        if (q === undefined || !survivor(q, r.group)) continue;
        if (!delivered.get(k)?.has(r.id))
          violate(`safe: ${r.id} delivered to uid ${p.uid} but never to member uid ${q.uid}`);
      }
    }
  }

  // Convergence: live nodes agree on one configuration and on every group's view, which lists exactly
  // the processes still in the group; every message of a member that stayed reached it.
  const live = nodes.map((n, i) => ({ n, i })).filter((x) => x.n.alive && x.n.gcs !== undefined);
  const first = live[0]?.n.gcs;
  if (first === undefined) return;
  const st0 = first.stats();
  const liveIds = live.map((x) => x.i);
  for (const { n, i } of live) {
    const g = n.gcs as GcsNode;
    const st = g.stats();
    if (!g.settled()) violate(`node ${i} not settled at the end: ${JSON.stringify(st)}`);
    if (st.cfg.join('.') !== st0.cfg.join('.') || st.nodes.join(',') !== liveIds.join(','))
      violate(
        `node ${i} ends in configuration ${st.cfg.join('.')} [${st.nodes}], node ${live[0]?.i} in ${st0.cfg.join('.')} [${st0.nodes}]`,
      );
  }
  const lost = new Map<number, string[]>(); // node -> undelivered messages of members that stayed
  const selfMissed = new Map<number, string[]>(); // node -> own messages its senders never got
  const deliveredAnywhere = new Set<string>();
  for (const ids of delivered.values()) for (const id of ids) deliveredAnywhere.add(id);
  for (const grp of GROUPS) {
    const gk = groupKey(grp);
    const expect = procs
      .filter((p) => p.alive && !p.expelled && p.groups.has(gk) && (nodes[p.node] as SimNode).alive)
      .map((p) => `${p.node}.${p.ep}`)
      .sort();
    for (const { n, i } of live) {
      const v = (n.gcs as GcsNode).view(grp);
      const got = (v?.members ?? []).map(memberKey).sort();
      if (got.join(' ') !== expect.join(' '))
        violate(`node ${i}: final view of ${gk} is [${got.join(' ')}], expected [${expect.join(' ')}]`);
    }
    for (const k of expect) {
      const p = byKey.get(k) as Proc;
      const lastView = [...p.recs].reverse().find((r) => r.kind === 'view' && r.group === gk);
      const v = ((nodes[p.node] as SimNode).gcs as GcsNode).view(grp);
      if (
        lastView === undefined ||
        v === undefined ||
        lastView.kind !== 'view' ||
        lastView.key !== vkey(v.id)
      )
        violate(`uid ${p.uid}: last view of ${gk} is not the group's current view`);
      const since = p.groups.get(gk) ?? 0;
      const own = new Set(p.recs.flatMap((r) => (r.kind === 'msg' && r.group === gk ? [r.id] : [])));
      for (const s of p.sent) {
        if (s.group !== gk || s.at < since) continue;
        if (!deliveredAnywhere.has(s.id)) lost.set(p.node, [...(lost.get(p.node) ?? []), s.id]);
        // Self delivery (EVS): a member that stayed gets its own message, if anybody does.
        else if (!own.has(s.id)) selfMissed.set(p.node, [...(selfMissed.get(p.node) ?? []), s.id]);
      }
    }
  }
  // The one documented loss: a multicast ordered only on the far side of a split, whose members there
  // (possibly none) got it; its node counts those. Anything beyond is a lost message.
  for (const [node, ids] of selfMissed) {
    const elsewhere = ((nodes[node] as SimNode).gcs as GcsNode).stats().orderedElsewhere;
    violate(
      `node ${node}: senders that stayed missed their own messages ${ids.join(' ')} (${elsewhere} ordered elsewhere)`,
    );
  }
  for (const [node, ids] of lost) {
    const elsewhere = ((nodes[node] as SimNode).gcs as GcsNode).stats().orderedElsewhere;
    if (ids.length > elsewhere)
      violate(
        `node ${node}: messages of members that stayed never delivered: ${ids.join(' ')} (${elsewhere} ordered elsewhere)`,
      );
  }
  void cfg;
}

function byUid(procs: Proc[], uid: number): Proc | undefined {
  return procs[uid - 1];
}

/** A failure report: the seed, how to replay it, the violations and the last trace lines. */
export function gcsReport(r: GcsSimResult, file: string): string {
  return [
    `gcs simulation seed ${r.seed} violated ${r.violations.length} invariant(s); replay: SEED=${r.seed} node --import tsx --test ${file}`,
    ...r.violations.map((v) => `  - ${v}`),
    '  last trace lines:',
    ...r.traceTail.map((l) => `    ${l}`),
  ].join('\n');
}
