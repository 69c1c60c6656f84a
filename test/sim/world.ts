/**
 * The deterministic multi-node simulator: N kernels, links built on the real LinkSession, simulated
 * processes, and fault injection, all driven by one seeded PRNG and one virtual-time scheduler.
 * See docs/simulation.md.
 */

import {
  ANY,
  type Call,
  type CallResult,
  type DcConfig,
  type Endpoint,
  type KernelApi,
  type KernelIO,
  type NodeFrame,
  type NodeId,
  type ProcEvent,
  type ProcId,
  type Received,
} from '../../src/kernel/types.js';
import { DvsError, type ErrorCode } from '../../src/protocol/errors.js';
import { LinkSession } from '../../src/proxy/session.js';
import {
  type ActorInfo,
  type CallRecord,
  Checker,
  encodePayload,
  type MsgOp,
  type MsgRecord,
} from './checker.js';
import { Prng } from './prng.js';
import { Scheduler } from './scheduler.js';
import { Trace } from './trace.js';

/** Builds the kernel of one node incarnation. */
export type KernelFactory = (nodeId: NodeId, io: KernelIO) => KernelApi;

export interface SimConfig {
  seed: number;
  /** Number of nodes (3..5 typical). */
  nodes: number;
  makeKernel: KernelFactory;
  /** One side of a link; override to inject a broken session (the checker must catch it). */
  makeSession?: () => LinkSession<NodeFrame>;
  /** Virtual ms of workload before healing and draining. */
  workloadMs: number;
  /** Safety bound on executed events (the drain must reach quiescence before it). */
  maxSteps: number;
  actorsPerNode: { sinks: number; servers: number; senders: number; notifiers: number };
  /** Random timeouts (kernel.cancel) of blocking calls. */
  cancels: boolean;
  /** Processes exit at random times (kernel.detach) and are replaced by new ones on new endpoints. */
  exits: boolean;
  /** Connections drop and reconnect (the sessions resume). */
  drops: boolean;
  /** Some disconnections outlast deadAfterMs: both sides declare the other dead, nodeUp on reconnect. */
  longOutages: boolean;
  /** Nodes crash (kernel and processes gone), peers declare them dead; they may restart. */
  crashes: boolean;
  /** A disconnection longer than this is a declared death, virtual ms. */
  deadAfterMs: number;
  /** Trace lines kept for the report (the hash covers all of them regardless). */
  traceKeep?: number;
  /** The DC's post() window: small, so that credit-based flow control is exercised. */
  postWindow: number;
}

export const DEFAULT_CONFIG: Omit<SimConfig, 'seed' | 'makeKernel'> = {
  nodes: 3,
  workloadMs: 300,
  maxSteps: 400_000,
  actorsPerNode: { sinks: 1, servers: 1, senders: 1, notifiers: 1 },
  cancels: false,
  exits: false,
  drops: false,
  longOutages: false,
  crashes: false,
  deadAfterMs: 150,
  postWindow: 8,
};

/** Result of one run. */
export interface SimResult {
  seed: number;
  violations: string[];
  traceHash: string;
  traceTail: string[];
  steps: number;
  endTime: number;
  stats: {
    delivered: number;
    messages: number;
    completions: number;
    duplicatesDropped: number;
    failures: Record<string, number>;
  };
}

const EPOCH = 1_700_000_000_000;
const DC: DcConfig['id'] = 7;
const FIRST_EP = 100;
const T_SEND = 1;
const T_REQUEST = 2;
const T_POST = 3;
const T_REPLY = 10;

type Role = 'sink' | 'server' | 'sender' | 'notifier';

interface Actor extends ActorInfo {
  role: Role;
  inc: number;
  proc: ProcId;
  callSeq: number;
  seq: number;
  /** The blocking call in progress, until the actor has seen its completion. */
  pending: { callId: number; op: string } | undefined;
  /** The pending receive names a source (it may then fail with ENOTBOUND, ESRCDIED, ENOTCONN). */
  recvFrom: boolean;
  credits: Map<Endpoint, number>;
}

interface PeerState {
  session: LinkSession<NodeFrame>;
  /** nodeUp was called and no nodeDown since. */
  up: boolean;
  /** Incarnation of the peer this session talks to. */
  peerInc: number;
}

interface SimNode {
  id: NodeId;
  alive: boolean;
  inc: number;
  kernel: KernelApi | undefined;
  peers: Map<NodeId, PeerState>;
  actors: Actor[];
}

interface SimLink {
  a: NodeId;
  b: NodeId;
  up: boolean;
  /** Connection number: everything on the wire from an older connection is lost. */
  conn: number;
  /** Incremented on every drop; the declare-dead timer checks it did not change. */
  downCount: number;
  /** Incremented when both sessions start over (reset): nothing older may be delivered after that. */
  gen: number;
  /**
   * Old connections whose in-flight data is still read after they dropped (the receiver had not noticed the
   * drop yet: half-open). Their frames may arrive after the new connection resent them: duplicates.
   */
  draining: Set<number>;
  /** Per direction ('a>b' / 'b>a'): last arrival time (a connection is FIFO) and flush scheduled. */
  lastArrival: Map<string, number>;
  flushPending: Set<string>;
}

/** One simulation run. Build it, call run(), read the result. */
export class SimWorld {
  readonly cfg: SimConfig;
  readonly sched = new Scheduler();
  readonly trace: Trace;
  readonly checker = new Checker();
  private readonly rng: Prng;
  private readonly faultRng: Prng;
  private readonly nodes: SimNode[] = [];
  private readonly links = new Map<string, SimLink>();
  private readonly dcConfig: DcConfig;
  private nextUid = 1;
  private nextProc = 1;
  private nextEp = FIRST_EP;
  private draining = false;
  private readonly actorsByProc = new Map<string, Actor>();

  constructor(cfg: SimConfig) {
    this.cfg = cfg;
    this.trace = new Trace(cfg.traceKeep ?? 200);
    const root = new Prng(cfg.seed);
    this.rng = root.fork();
    this.faultRng = root.fork();
    this.dcConfig = {
      id: DC,
      name: 'simdc',
      nodes: Array.from({ length: cfg.nodes }, (_, i) => i + 1),
      maxPayload: 4096,
      sysEndpoints: 64,
      postWindow: cfg.postWindow,
    };
  }

  private get now(): number {
    return EPOCH + this.sched.now;
  }

  private log(line: string): void {
    this.trace.add(`${this.sched.now} ${line}`);
  }

  /** Run the whole scenario: setup, workload with faults, heal, drain, checks. */
  run(): SimResult {
    try {
      this.setup();
      if (this.cfg.drops || this.cfg.crashes || this.cfg.longOutages) this.scheduleFault();
      if (this.cfg.exits) this.scheduleExit();
      const r1 = this.sched.run(this.cfg.workloadMs, this.cfg.maxSteps);
      if (r1 === 'steps') this.checker.fail(`workload did not finish within ${this.cfg.maxSteps} events`);
      this.heal();
      const r2 = this.sched.run(Number.POSITIVE_INFINITY, this.cfg.maxSteps);
      if (r2 !== 'empty')
        this.checker.fail(`no quiescence after healing within ${this.cfg.maxSteps} events (livelock?)`);
      this.checker.finish(this.sched.now, this.faultFree());
    } catch (e) {
      this.checker.fail(
        `harness or kernel threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
      );
    }
    const failures: Record<string, number> = {};
    for (const [k, v] of [...this.checker.stats.failures].sort()) failures[k] = v;
    return {
      seed: this.cfg.seed,
      violations: this.checker.violations,
      traceHash: this.trace.hash(),
      traceTail: this.trace.tail(),
      steps: this.sched.steps,
      endTime: this.sched.now,
      stats: {
        delivered: this.checker.stats.delivered,
        messages: this.checker.msgs.size,
        completions: this.checker.stats.completions,
        duplicatesDropped: this.checker.stats.duplicatesDropped,
        failures,
      },
    };
  }

  private faultFree(): boolean {
    const c = this.cfg;
    return !c.cancels && !c.exits && !c.drops && !c.crashes && !c.longOutages;
  }

  // ---------------------------------------------------------------- nodes and kernels

  private setup(): void {
    for (let id = 1; id <= this.cfg.nodes; id++) {
      const n: SimNode = { id, alive: false, inc: 0, kernel: undefined, peers: new Map(), actors: [] };
      this.nodes.push(n);
    }
    for (const a of this.nodes) {
      for (const b of this.nodes) {
        if (a.id < b.id) {
          this.links.set(`${a.id}-${b.id}`, {
            a: a.id,
            b: b.id,
            up: false,
            conn: 0,
            downCount: 0,
            gen: 0,
            draining: new Set(),
            lastArrival: new Map(),
            flushPending: new Set(),
          });
        }
      }
    }
    for (const n of this.nodes) this.boot(n);
    for (const l of this.links.values()) this.connect(l);
    for (const n of this.nodes) this.spawnActors(n);
  }

  private node(id: NodeId): SimNode {
    const n = this.nodes[id - 1];
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  private link(a: NodeId, b: NodeId): SimLink {
    const l = this.links.get(a < b ? `${a}-${b}` : `${b}-${a}`);
    if (l === undefined) throw new Error(`no link ${a}-${b}`);
    return l;
  }

  /** Start (or restart) a node: a fresh kernel, a fresh session towards every peer, the DC created. */
  private boot(n: SimNode): void {
    n.inc++;
    n.alive = true;
    const inc = n.inc;
    const io: KernelIO = {
      complete: (proc, callId, result) => this.onComplete(n, inc, proc, callId, result),
      toProc: (proc, ev) => this.onProcEvent(n, inc, proc, ev),
      toNode: (peer, frame) => this.onToNode(n, inc, peer, frame),
      log: (level, msg, fields) => {
        if (level !== 'debug') this.log(`n${n.id} kernel-${level} ${msg} ${JSON.stringify(fields ?? {})}`);
        // In a simulated cluster every frame comes from a correct peer: an error is a kernel bug.
        if (level === 'error')
          this.checker.fail(`kernel of node ${n.id} logged an error: ${msg} ${JSON.stringify(fields ?? {})}`);
      },
    };
    n.kernel = this.cfg.makeKernel(n.id, io);
    n.peers.clear();
    for (const p of this.nodes) {
      if (p.id === n.id) continue;
      n.peers.set(p.id, {
        session: this.cfg.makeSession?.() ?? new LinkSession<NodeFrame>(),
        up: false,
        peerInc: 0,
      });
    }
    n.kernel.createDc({ ...this.dcConfig, nodes: [...this.dcConfig.nodes] });
    this.log(`n${n.id} boot inc ${inc}`);
  }

  private crash(n: SimNode): void {
    if (!n.alive) return;
    this.log(`n${n.id} CRASH`);
    n.alive = false;
    n.kernel = undefined;
    for (const a of n.actors) this.actorGone(a);
    n.actors = [];
    for (const p of this.nodes) if (p.id !== n.id) this.drop(this.link(n.id, p.id), false);
  }

  private restart(n: SimNode): void {
    if (n.alive) return;
    this.boot(n);
    for (const p of this.nodes) {
      if (p.id === n.id || !p.alive) continue;
      const l = this.link(n.id, p.id);
      this.sched.after(this.rng.int(1, 10), () => this.connect(l));
    }
    this.spawnActors(n);
  }

  private kernelCall(n: SimNode, what: string, fn: (k: KernelApi) => void): void {
    const k = n.kernel;
    if (k === undefined) return;
    try {
      fn(k);
    } catch (e) {
      this.checker.fail(
        `kernel of node ${n.id} threw in ${what}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
      );
    }
  }

  // ---------------------------------------------------------------- links

  private onToNode(n: SimNode, inc: number, peer: NodeId, frame: NodeFrame): void {
    if (!n.alive || n.inc !== inc) return;
    const ps = n.peers.get(peer);
    if (ps === undefined) {
      this.checker.fail(`node ${n.id} sent a frame to unknown node ${peer}`);
      return;
    }
    this.log(`n${n.id}>n${peer} enqueue ${frameSummary(frame)}${ps.up ? '' : ' (peer down: dropped)'}`);
    // A real driver discards frames for a peer declared dead (there is no session to carry them).
    if (!ps.up) return;
    ps.session.enqueue(cloneFrame(frame));
    this.scheduleFlush(this.link(n.id, peer), n.id, peer);
  }

  private scheduleFlush(l: SimLink, from: NodeId, to: NodeId): void {
    const dir = `${from}>${to}`;
    if (!l.up || l.flushPending.has(dir)) return;
    l.flushPending.add(dir);
    // Everything a node produces in one turn goes out in one batch (cork/uncork).
    this.sched.after(0, () => {
      l.flushPending.delete(dir);
      this.flush(l, from, to);
    });
  }

  private flush(l: SimLink, from: NodeId, to: NodeId): void {
    const src = this.node(from);
    const ps = src.peers.get(to);
    if (!l.up || !src.alive || ps === undefined) return;
    const { firstSeq, frames } = ps.session.takeUnsent();
    if (frames.length === 0) return;
    const conn = l.conn;
    const gen = l.gen;
    this.wire(l, from, to, () => this.deliverBatch(l, conn, gen, from, to, firstSeq, frames));
  }

  /** Put something on the wire from `from` to `to`: random latency, FIFO per direction. */
  private wire(l: SimLink, from: NodeId, to: NodeId, fn: () => void): void {
    const dir = `${from}>${to}`;
    const at = Math.max(l.lastArrival.get(dir) ?? 0, this.sched.now + this.rng.int(1, 6));
    l.lastArrival.set(dir, at);
    this.sched.at(at, fn);
  }

  private deliverBatch(
    l: SimLink,
    conn: number,
    gen: number,
    from: NodeId,
    to: NodeId,
    firstSeq: number,
    frames: NodeFrame[],
  ): void {
    const late = l.conn !== conn && l.draining.has(conn) && l.gen === gen;
    if ((l.conn !== conn || !l.up) && !late) {
      this.log(`n${from}>n${to} lost batch seq ${firstSeq}+${frames.length}`);
      return;
    }
    const dst = this.node(to);
    const ps = dst.peers.get(from);
    if (!dst.alive || ps === undefined) return;
    for (let i = 0; i < frames.length; i++) {
      const seq = firstSeq + i;
      const frame = frames[i] as NodeFrame;
      const verdict = ps.session.accept(seq);
      this.log(`n${from}>n${to} seq ${seq} ${verdict} ${frameSummary(frame)}`);
      if (verdict === 'duplicate') {
        this.checker.stats.duplicatesDropped++;
        continue;
      }
      if (verdict === 'gap') {
        this.checker.fail(`link ${from}->${to}: sequence gap at ${seq} (received ${ps.session.received})`);
        this.drop(l, true);
        return;
      }
      this.kernelCall(dst, 'fromNode', (k) => k.fromNode(this.now, from, frame));
      // The kernel may have reacted with a declared death or a crash (it cannot, but stay safe).
      if ((l.conn !== conn && !late) || !dst.alive || l.gen !== gen) return;
    }
    // An old connection that is being drained sends no acks any more.
    if (late) return;
    const ack = ps.session.received;
    this.wire(l, to, from, () => {
      if (l.conn !== conn || !l.up) return;
      this.node(from).peers.get(to)?.session.acked(ack);
    });
  }

  /** The connection of link `l` drops: both directions lose what is on the wire. */
  private drop(l: SimLink, reconnect: boolean): void {
    if (!l.up) return;
    l.up = false;
    l.conn++;
    l.downCount++;
    l.flushPending.clear();
    if (this.faultRng.chance(0.5)) l.draining.add(l.conn - 1);
    const down = l.downCount;
    this.log(`link ${l.a}-${l.b} DROP`);
    this.sched.after(this.cfg.deadAfterMs, () => {
      if (!l.up && l.downCount === down) this.declareDead(l);
    });
    if (reconnect) {
      const long = this.cfg.longOutages && this.faultRng.chance(0.3);
      const delay = long
        ? this.faultRng.int(this.cfg.deadAfterMs + 1, this.cfg.deadAfterMs * 2)
        : this.faultRng.chance(0.5)
          ? this.faultRng.int(0, 3)
          : this.faultRng.int(1, 40);
      this.sched.after(delay, () => this.connect(l));
    }
  }

  /** The link stayed down too long: every live side forgets the session and reports the peer dead. */
  private declareDead(l: SimLink): void {
    for (const [x, y] of [
      [l.a, l.b],
      [l.b, l.a],
    ] as const) {
      const n = this.node(x);
      const ps = n.peers.get(y);
      if (!n.alive || ps === undefined || !ps.up) continue;
      this.log(`n${x} declares n${y} DEAD`);
      l.gen++;
      ps.up = false;
      ps.session.reset();
      this.checker.pairDeath(x, y, this.sched.now);
      this.kernelCall(n, 'nodeDown', (k) => k.nodeDown(this.now, y));
    }
  }

  /** A connection comes up: handshake (exchange `received`), resume or start over, flush. */
  private connect(l: SimLink): void {
    const a = this.node(l.a);
    const b = this.node(l.b);
    if (l.up || !a.alive || !b.alive) return;
    l.up = true;
    l.conn++;
    const pa = a.peers.get(b.id);
    const pb = b.peers.get(a.id);
    if (pa === undefined || pb === undefined) throw new Error('missing peer state');
    // Start over if either side never saw this peer incarnation or declared it dead.
    const fresh = !pa.up || !pb.up || pa.peerInc !== b.inc || pb.peerInc !== a.inc;
    this.log(`link ${l.a}-${l.b} CONNECT ${fresh ? 'fresh' : 'resume'}`);
    if (fresh) {
      l.gen++;
      for (const [n, ps, peer] of [
        [a, pa, b],
        [b, pb, a],
      ] as const) {
        if (ps.up) {
          // The peer restarted: what waited on its previous incarnation fails.
          ps.up = false;
          this.checker.pairDeath(n.id, peer.id, this.sched.now);
          this.kernelCall(n, 'nodeDown', (k) => k.nodeDown(this.now, peer.id));
        }
        ps.session.reset();
        ps.peerInc = peer.inc;
      }
      pa.up = true;
      pb.up = true;
      this.kernelCall(a, 'nodeUp', (k) => k.nodeUp(this.now, b.id));
      this.kernelCall(b, 'nodeUp', (k) => k.nodeUp(this.now, a.id));
    } else {
      if (pa.session.peerLostState(pb.session.received) || pb.session.peerLostState(pa.session.received)) {
        this.checker.fail(`link ${l.a}-${l.b}: a peer lost session state without a declared death`);
      }
      pa.session.resume(pb.session.received);
      pb.session.resume(pa.session.received);
    }
    this.scheduleFlush(l, a.id, b.id);
    this.scheduleFlush(l, b.id, a.id);
  }

  private heal(): void {
    this.draining = true;
    this.log('HEAL');
    for (const l of this.links.values()) this.connect(l);
  }

  private scheduleFault(): void {
    this.sched.after(this.faultRng.int(10, 60), () => {
      if (this.draining) return;
      this.injectFault();
      this.scheduleFault();
    });
  }

  private injectFault(): void {
    const c = this.cfg;
    const kinds: string[] = [];
    if (c.drops || c.longOutages) kinds.push('drop', 'drop');
    if (c.crashes) kinds.push('crash');
    const kind = this.faultRng.pick(kinds);
    if (kind === 'drop') {
      const live = [...this.links.values()].filter((l) => l.up);
      if (live.length > 0) this.drop(this.faultRng.pick(live), true);
      return;
    }
    // At most one node down at a time keeps a majority of the cluster doing work.
    if (this.nodes.some((n) => !n.alive)) return;
    const n = this.faultRng.pick(this.nodes);
    this.crash(n);
    if (this.faultRng.chance(0.75)) {
      // Restart before or after the peers declared the old incarnation dead.
      this.sched.after(this.faultRng.int(20, this.cfg.deadAfterMs * 2), () => this.restart(n));
    }
  }

  // ---------------------------------------------------------------- processes

  private spawnActors(n: SimNode): void {
    const per = this.cfg.actorsPerNode;
    const roles: Role[] = [
      ...Array<Role>(per.sinks).fill('sink'),
      ...Array<Role>(per.servers).fill('server'),
      ...Array<Role>(per.senders).fill('sender'),
      ...Array<Role>(per.notifiers).fill('notifier'),
    ];
    for (const r of roles) this.spawn(n, r);
  }

  private spawn(n: SimNode, role: Role): void {
    if (!n.alive) return;
    const a: Actor = {
      uid: this.nextUid++,
      node: n.id,
      ep: this.nextEp++,
      role,
      alive: true,
      inc: n.inc,
      proc: this.nextProc++,
      callSeq: 0,
      seq: 0,
      pending: undefined,
      recvFrom: false,
      credits: new Map(),
    };
    let ok = true;
    this.kernelCall(n, 'attach', (k) => {
      try {
        k.attach(this.now, a.proc, DC, a.ep, { pid: 10_000 + a.proc, name: `${role}${a.uid}` });
      } catch (e) {
        if (!(e instanceof DvsError)) throw e;
        this.checker.fail(`attach of ep ${a.ep} on node ${n.id} failed: ${e.code}`);
        ok = false;
      }
    });
    if (!ok) return;
    this.log(`n${n.id} spawn ${role} uid ${a.uid} ep ${a.ep} proc ${a.proc}`);
    n.actors.push(a);
    this.checker.actors.set(a.uid, a);
    this.actorsByProc.set(`${n.id}:${a.proc}`, a);
    // Senders start a little later so that the binds have reached the other nodes.
    const start = role === 'sender' || role === 'notifier' ? this.rng.int(20, 40) : 0;
    this.sched.after(start, () => this.step(a));
  }

  private actorGone(a: Actor): void {
    a.alive = false;
    this.actorsByProc.delete(`${a.node}:${a.proc}`);
  }

  private actorLive(a: Actor): boolean {
    const n = this.node(a.node);
    return a.alive && n.alive && n.inc === a.inc;
  }

  private scheduleExit(): void {
    this.sched.after(this.rng.int(20, 80), () => {
      if (this.draining) return;
      const live = this.nodes.filter((n) => n.alive && n.actors.length > 0);
      if (live.length > 0) {
        const n = this.rng.pick(live);
        const a = this.rng.pick(n.actors);
        this.log(`n${n.id} EXIT uid ${a.uid} ep ${a.ep}`);
        n.actors = n.actors.filter((x) => x !== a);
        this.actorGone(a);
        this.kernelCall(n, 'detach', (k) => k.detach(this.now, a.proc));
        const role = a.role;
        this.sched.after(this.rng.int(5, 30), () => this.spawn(n, role));
      }
      this.scheduleExit();
    });
  }

  /** Live endpoints of a role (the simulator's oracle plays the directory). */
  private targets(role: Role): Actor[] {
    const out: Actor[] = [];
    for (const n of this.nodes)
      if (n.alive) for (const a of n.actors) if (a.role === role && a.alive) out.push(a);
    return out;
  }

  private issue(a: Actor, call: Call, msg: MsgRecord | undefined, forceCancel = false): void {
    const n = this.node(a.node);
    const callId = ++a.callSeq;
    const rec: CallRecord = {
      uid: a.uid,
      node: n.id,
      proc: a.proc,
      callId,
      op: call.op,
      issuedAt: this.sched.now,
      completions: 0,
      msg,
    };
    this.checker.addCall(rec);
    if (msg !== undefined) this.checker.addMsg(msg);
    a.pending = { callId, op: call.op };
    this.log(`n${n.id} call uid ${a.uid} #${callId} ${callSummary(call)}`);
    let threw: ErrorCode | undefined;
    this.kernelCall(n, 'call', (k) => {
      try {
        k.call(this.now, a.proc, callId, call);
      } catch (e) {
        if (!(e instanceof DvsError)) throw e;
        threw = e.code;
      }
    });
    if (threw !== undefined) {
      // A synchronous refusal counts as the call's completion.
      this.onComplete(n, n.inc, a.proc, callId, { ok: false, code: threw });
      return;
    }
    const blocking =
      call.op === 'send' || call.op === 'sendrec' || call.op === 'receive' || call.op === 'receiveRequest';
    if (forceCancel || (blocking && this.cfg.cancels && this.rng.chance(0.3))) {
      this.sched.after(this.rng.int(1, 40), () => {
        if (!this.actorLive(a) || a.pending?.callId !== callId) return;
        this.log(`n${n.id} cancel uid ${a.uid} #${callId}`);
        this.kernelCall(n, 'cancel', (k) => k.cancel(this.now, a.proc, callId, 'ETIMEDOUT'));
      });
    }
  }

  private onComplete(n: SimNode, inc: number, proc: ProcId, callId: number, result: CallResult): void {
    if (!n.alive || n.inc !== inc) return;
    const a = this.actorsByProc.get(`${n.id}:${proc}`);
    this.log(
      `n${n.id} complete proc ${proc} #${callId} ${result.ok ? `ok${result.msg ? ` ${result.msg.kind} from ${result.msg.source}` : ''}` : result.code}`,
    );
    const c = this.checker.onComplete(n.id, proc, callId, result, this.sched.now, a);
    if (a === undefined || c === undefined || c.completions > 1) return;
    // The process sees the completion a little later (socket + event loop).
    this.sched.after(this.rng.int(0, 2), () => {
      if (!this.actorLive(a) || a.pending?.callId !== callId) return;
      a.pending = undefined;
      this.afterCall(a, c.op, result);
    });
  }

  private onProcEvent(n: SimNode, inc: number, proc: ProcId, ev: ProcEvent): void {
    if (!n.alive || n.inc !== inc) return;
    const a = this.actorsByProc.get(`${n.id}:${proc}`);
    this.log(
      `n${n.id} event proc ${proc} ${JSON.stringify(ev, (_k, v) => (v instanceof Uint8Array ? v.byteLength : v))}`,
    );
    if (a === undefined) return;
    if (ev.ev === 'credit' || ev.ev === 'postFailed') {
      if (ev.ev === 'postFailed') this.checker.onPostFailed(a.uid, ev.dst, ev.n, ev.code);
      // Like completions, events reach the process a little later.
      this.sched.after(this.rng.int(0, 2), () => {
        if (this.actorLive(a))
          a.credits.set(ev.dst, (a.credits.get(ev.dst) ?? this.dcConfig.postWindow) + ev.n);
      });
    }
  }

  /** The actor's next action after a call completed (or at start). */
  private afterCall(a: Actor, op: string, result: CallResult): void {
    if (a.role === 'sink' && result.ok && result.msg?.kind === 'request') {
      // receive() may also hand out a sendrec request: answer it like a server would.
      this.issue(
        a,
        { op: 'reply', dst: result.msg.source, type: T_REPLY, payload: result.msg.payload },
        undefined,
      );
      return;
    }
    if (a.role === 'server' && op === 'receiveRequest' && result.ok && result.msg !== undefined) {
      this.issue(
        a,
        { op: 'reply', dst: result.msg.source, type: T_REPLY, payload: result.msg.payload },
        undefined,
      );
      return;
    }
    if (
      !result.ok &&
      (a.role === 'sink' || a.role === 'server') &&
      (op === 'receive' || op === 'receiveRequest')
    ) {
      const named = a.recvFrom && ['ENOTBOUND', 'ESRCDIED', 'ENOTCONN'].includes(result.code);
      const woken = result.code === 'EWOKENUP' && op === 'receive';
      if (result.code !== 'ETIMEDOUT' && result.code !== 'EABORTED' && !named && !woken) {
        this.checker.fail(`${op} of ${a.role} ep ${a.ep} failed with ${result.code}`);
        return;
      }
    }
    if (a.role === 'sink' && result.ok && result.msg?.kind === 'post' && this.rng.chance(0.5))
      this.receiveAhead(a);
    // Notifiers pace themselves: notifications are collected before messages, so a tight notify loop
    // would starve the sinks' message traffic until the drain.
    this.sched.after(a.role === 'notifier' ? this.rng.int(5, 30) : this.rng.int(0, 3), () => this.step(a));
  }

  private step(a: Actor): void {
    if (!this.actorLive(a) || a.pending !== undefined) return;
    switch (a.role) {
      case 'sink': {
        const senders = this.targets('sender');
        a.recvFrom = this.cfg.cancels && senders.length > 0 && this.rng.chance(0.15);
        if (a.recvFrom) {
          // Receive from one named sender, with a timeout (it may never send to us).
          this.issue(a, { op: 'receive', src: this.rng.pick(senders).ep, nowait: false }, undefined, true);
        } else {
          this.issue(
            a,
            { op: 'receive', src: ANY, nowait: this.cfg.cancels && this.rng.chance(0.05) },
            undefined,
          );
        }
        return;
      }
      case 'server':
        this.issue(a, { op: 'receiveRequest', nowait: false }, undefined);
        return;
      case 'notifier': {
        if (this.draining) return;
        const t = this.targets('sink');
        if (t.length === 0) {
          this.sched.after(10, () => this.step(a));
          return;
        }
        const dst = this.rng.pick(t);
        if (this.rng.chance(0.2)) {
          this.checker.addWakeupCall(dst.ep, this.sched.now);
          this.issue(a, { op: 'wakeup', dst: dst.ep }, undefined);
        } else {
          this.checker.addNotifyCall(a.ep, dst.ep, this.sched.now);
          this.issue(a, { op: 'notify', dst: dst.ep }, undefined);
        }
        return;
      }
      case 'sender':
        this.senderStep(a);
        return;
    }
  }

  /** The SDK's post fast path: take queued posts without a call. */
  private receiveAhead(a: Actor): void {
    const n = this.node(a.node);
    const limit = this.rng.int(1, 8);
    let got: Received[] = [];
    this.kernelCall(n, 'receiveAhead', (k) => {
      got = k.receiveAhead(this.now, a.proc, ANY, limit);
    });
    this.log(`n${n.id} receiveAhead uid ${a.uid} limit ${limit}: ${got.length}`);
    if (got.length > limit) this.checker.fail(`receiveAhead(limit ${limit}) returned ${got.length} messages`);
    for (const m of got) {
      if (m.kind !== 'post') this.checker.fail(`receiveAhead returned a ${m.kind} message`);
      this.checker.deliver(a, m, 'receiveAhead', this.sched.now);
    }
  }

  private newMsg(a: Actor, op: MsgOp, dst: Actor): MsgRecord {
    return {
      uid: a.uid,
      seq: ++a.seq,
      op,
      srcEp: a.ep,
      srcNode: a.node,
      dstEp: dst.ep,
      dstNode: dst.node,
      sentAt: this.sched.now,
      outcome: undefined,
      completedAt: -1,
      deliveries: [],
    };
  }

  private senderStep(a: Actor): void {
    if (this.draining) return;
    const r = this.rng.next();
    const sinks = this.targets('sink');
    const servers = this.targets('server');
    if (r < 0.3 && sinks.length > 0) {
      const dst = this.rng.pick(sinks);
      const m = this.newMsg(a, 'send', dst);
      this.issue(
        a,
        { op: 'send', dst: dst.ep, type: T_SEND, payload: encodePayload(a.uid, m.seq, this.rng.int(0, 24)) },
        m,
      );
      return;
    }
    if (r < 0.55 && servers.length > 0) {
      // Mostly to servers (receiveRequest); sometimes to a sink, whose receive(ANY) must take it too.
      const dst = sinks.length > 0 && this.rng.chance(0.15) ? this.rng.pick(sinks) : this.rng.pick(servers);
      const m = this.newMsg(a, 'sendrec', dst);
      this.issue(
        a,
        {
          op: 'sendrec',
          dst: dst.ep,
          type: T_REQUEST,
          payload: encodePayload(a.uid, m.seq, this.rng.int(0, 24)),
        },
        m,
      );
      return;
    }
    if (sinks.length > 0) {
      // A burst of posts to one destination, then think.
      const dst = this.rng.pick(sinks);
      const burst = this.rng.int(1, 4);
      for (let i = 0; i < burst; i++) this.post(a, dst);
    }
    this.sched.after(this.rng.int(1, 5), () => this.step(a));
  }

  private post(a: Actor, dst: Actor): void {
    const credits = a.credits.get(dst.ep) ?? this.dcConfig.postWindow;
    if (credits <= 0) return;
    a.credits.set(dst.ep, credits - 1);
    const n = this.node(a.node);
    const m = this.newMsg(a, 'post', dst);
    this.checker.addMsg(m);
    this.log(`n${n.id} post uid ${a.uid} seq ${m.seq} -> ep ${dst.ep}`);
    m.outcome = 'ok';
    this.kernelCall(n, 'post', (k) => {
      try {
        k.post(this.now, a.proc, dst.ep, T_POST, encodePayload(a.uid, m.seq, this.rng.int(0, 8)));
      } catch (e) {
        if (!(e instanceof DvsError)) throw e;
        m.outcome = e.code;
      }
    });
    m.completedAt = this.sched.now;
  }
}

/** Run one simulation with defaults filled in. */
export function simulate(cfg: Partial<SimConfig> & Pick<SimConfig, 'seed' | 'makeKernel'>): SimResult {
  return new SimWorld({ ...DEFAULT_CONFIG, ...cfg }).run();
}

/** A human-readable failure report for one run, with the replay command. */
export function report(r: SimResult, testFile: string): string {
  return [
    `simulation seed ${r.seed} violated ${r.violations.length} invariant(s); replay: SEED=${r.seed} node --import tsx --test ${testFile}`,
    ...r.violations.map((v) => `  - ${v}`),
    '  last trace lines:',
    ...r.traceTail.slice(-40).map((l) => `    ${l}`),
  ].join('\n');
}

/** Frames cross a simulated wire: copy byte arrays so no kernel can alias another kernel's buffers. */
function cloneFrame(f: NodeFrame): NodeFrame {
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(f)) o[k] = v instanceof Uint8Array ? v.slice() : v;
  return o as NodeFrame;
}

function frameSummary(f: NodeFrame): string {
  const o = f as Record<string, unknown>;
  const parts: string[] = [f.t];
  for (const k of ['src', 'dst', 'kind', 'op', 'code', 'n'])
    if (o[k] !== undefined) parts.push(`${k}=${String(o[k])}`);
  return parts.join(' ');
}

function callSummary(c: Call): string {
  const o = c as Record<string, unknown>;
  const parts: string[] = [c.op];
  for (const k of ['dst', 'src', 'nowait']) if (o[k] !== undefined) parts.push(`${k}=${String(o[k])}`);
  return parts.join(' ');
}
