/**
 * Failure detection as a DVK service (`fd.*`): processes and the CLI follow which nodes are up and whether an
 * endpoint of their DC is alive, from what the daemon already knows, with no extra probing:
 *
 * - nodes: the node links' verdicts (heartbeats every `heartbeatMs`; a peer silent for `deadAfterMs` is
 *   declared down, so the detection time is the daemon's `--dead-after-ms`). The daemon forwards its link
 *   layer's nodeUp / nodeDown here.
 * - endpoints: the kernel's endpoint table of the caller's DC. An endpoint is `up` while it is bound (on
 *   this node or, as the kernel learnt from its peers, on another) and its node is up; `down` with reason
 *   `unbound` once it is gone (its process exited: the owning kernel unbinds it and tells the others) or
 *   `node-down` when its node is declared dead. A move (migration, failover) is an `up` with the new node.
 *   The table is read on every node event and every `pollMs` while someone watches, since the kernel has no
 *   hook for remote unbinds.
 *
 * False suspicions: a node declared down that comes back with the same incarnation (it was slow or cut off,
 * not dead) counts in `dvs_fd_false_suspicions_total`. The incarnation is asked of the peer itself over the
 * node link when its link comes up (a restarted daemon has a new one).
 *
 * Methods: `fd.nodes` (a snapshot), `fd.watchNodes {sub}` and `fd.watchEndpoint {ep, sub}` (streams: one
 * call pending while it lives, its events pushed under `sub`, the current state first; cancelling the call
 * ends it).
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { DcId, Endpoint, EndpointInfo, NodeId } from '../kernel/types.js';
import { MAX_ENDPOINT } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';
import type { AdminContext } from './local-server.js';
import { callerDc, type ServiceRegistry } from './services.js';

/** A node's state as `fd.watchNodes` reports it. */
export interface NodeEvent {
  node: NodeId;
  state: 'up' | 'down';
  /** ms since the epoch when this node saw the change. */
  at: number;
  /** On an `up` after a `down`: the node had not died (same incarnation). Known only when it could be asked. */
  falseSuspicion?: boolean;
  /** The node's daemon incarnation, when known. */
  incarnation?: string;
}

/** An endpoint's state as `fd.watchEndpoint` reports it. */
export interface EndpointEvent {
  ep: Endpoint;
  state: 'up' | 'down';
  /** Where it lives (null once unbound). */
  node: NodeId | null;
  /** Why it is down. */
  reason?: 'unbound' | 'node-down';
  at: number;
}

/** What the failure detector needs from the daemon. */
export interface FailureDetectorOptions {
  nodeId: NodeId;
  /** The configured peers (not this node). */
  peers: () => NodeId[];
  /** Whether the link layer reports `node` up now. */
  linkUp: (node: NodeId) => boolean;
  /** The kernel's endpoint table of DC `dc` (throws ENOENT if this node does not host it). */
  endpoints: (dc: DcId) => EndpointInfo[];
  resolveDc: (ref: DcId | string) => DcId;
  /** Ask `node` for its daemon incarnation (over the node link). */
  peerIncarnation: (node: NodeId, signal: AbortSignal) => Promise<string>;
  /** The detection time (the links' dead-after), ms: reported to callers. */
  deadAfterMs: number;
  /** How often endpoint watches re-read the endpoint table, ms. */
  pollMs: number;
  logger: Logger;
  registry?: Registry;
}

interface NodeRow {
  state: 'up' | 'down';
  since: number;
  /** Incarnation seen at the last up. */
  incarnation?: string;
  /** Incarnation it had when it was declared down (undefined: unknown). */
  suspected?: string;
}

interface EndpointWatch {
  dc: DcId;
  ep: Endpoint;
  last: string;
  push: (ev: EndpointEvent) => boolean;
}

/** Endpoint and node failure detection for processes and the CLI. */
export class FailureDetector {
  private readonly o: FailureDetectorOptions;
  private readonly log: Logger;
  private readonly rows = new Map<NodeId, NodeRow>();
  private readonly nodeWatchers = new Set<(ev: NodeEvent) => void>();
  private readonly epWatches = new Set<EndpointWatch>();
  private readonly falseSuspicions: Counter | undefined;
  private falseCount = 0;
  private poll: NodeJS.Timeout | undefined;
  private readonly life = new AbortController();
  private running = false;

  constructor(o: FailureDetectorOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'fd' });
    if (o.registry) {
      const name = 'dvs_fd_false_suspicions_total';
      this.falseSuspicions =
        (o.registry.getSingleMetric(name) as Counter | undefined) ??
        new Counter({
          name,
          help: 'Nodes declared down that came back with the same incarnation (they had not died)',
          registers: [o.registry],
        });
    }
  }

  /** Register `fd.nodes`, `fd.watchNodes`, `fd.watchEndpoint`. */
  register(registry: ServiceRegistry): void {
    registry.registerAll('fd', {
      nodes: () => this.snapshot(),
      watchNodes: (p, ctx) => this.watchNodes(p, ctx),
      watchEndpoint: (p, ctx) => this.watchEndpoint(p, ctx),
    });
  }

  async start(): Promise<void> {
    this.running = true;
    const now = Date.now();
    for (const n of this.o.peers()) {
      if (!this.rows.has(n)) this.rows.set(n, { state: this.o.linkUp(n) ? 'up' : 'down', since: now });
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.life.abort();
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
    this.epWatches.clear();
    this.nodeWatchers.clear();
  }

  /** The link to `node` came up (first time, after a down, or after a restart). */
  nodeUp(node: NodeId): void {
    const prev = this.rows.get(node);
    const row: NodeRow = { state: 'up', since: Date.now() };
    if (prev?.suspected !== undefined) row.suspected = prev.suspected;
    const wasDown = prev?.state === 'down' && prev.suspected !== undefined;
    this.rows.set(node, row);
    this.emitNode({ node, state: 'up', at: row.since });
    this.checkEndpoints();
    if (this.life.signal.aborted) return;
    // Who came back: the same daemon (a false suspicion) or a new one. Asked, not awaited by the event.
    this.o.peerIncarnation(node, AbortSignal.any([this.life.signal, AbortSignal.timeout(5_000)])).then(
      (inc) => {
        if (this.rows.get(node) !== row) return;
        row.incarnation = inc;
        if (wasDown && row.suspected === inc) {
          this.falseCount++;
          this.falseSuspicions?.inc();
          this.log.warn({ peer: node, incarnation: inc }, 'false suspicion: node declared down came back');
        }
        delete row.suspected;
      },
      (e: unknown) => this.log.debug({ err: e, peer: node }, 'could not ask the peer for its incarnation'),
    );
  }

  /** The link to `node` was declared dead (or the peer restarted: an up follows at once). */
  nodeDown(node: NodeId): void {
    const prev = this.rows.get(node);
    const row: NodeRow = { state: 'down', since: Date.now() };
    if (prev?.incarnation !== undefined) row.suspected = prev.incarnation;
    this.rows.set(node, row);
    this.emitNode({ node, state: 'down', at: row.since });
    this.checkEndpoints();
  }

  /** Nodes declared down that came back with the same incarnation, since start. */
  get falseSuspicionCount(): number {
    return this.falseCount;
  }

  // ---------------------------------------------------------------------------------------------- internals

  private snapshot() {
    return {
      self: this.o.nodeId,
      detectionMs: this.o.deadAfterMs,
      falseSuspicions: this.falseCount,
      nodes: this.nodeStates(),
    };
  }

  private nodeStates(): NodeEvent[] {
    const out: NodeEvent[] = [{ node: this.o.nodeId, state: 'up', at: Date.now() }];
    for (const [node, r] of [...this.rows].sort(([a], [b]) => a - b)) {
      const ev: NodeEvent = { node, state: r.state, at: r.since };
      if (r.incarnation !== undefined) ev.incarnation = r.incarnation;
      out.push(ev);
    }
    return out.sort((a, b) => a.node - b.node);
  }

  private emitNode(ev: NodeEvent): void {
    for (const w of this.nodeWatchers) w(ev);
  }

  /** fd.watchNodes: every node's state now, then each change, until the call is cancelled. */
  private watchNodes(p: Record<string, unknown>, ctx: AdminContext): Promise<unknown> {
    const sub = subParam(p.sub);
    if (!this.running) throw dvsError('EUNAVAIL', 'failure detector not running');
    return this.stream(ctx, 'fd.watchNodes', (end) => {
      const w = (ev: NodeEvent) => {
        if (!ctx.push(sub, ev)) end();
      };
      for (const ev of this.nodeStates()) w(ev);
      this.nodeWatchers.add(w);
      return () => this.nodeWatchers.delete(w);
    });
  }

  /** fd.watchEndpoint: the endpoint's state now, then each change, until the call is cancelled. */
  private watchEndpoint(p: Record<string, unknown>, ctx: AdminContext): Promise<unknown> {
    const sub = subParam(p.sub);
    const ep = p.ep;
    if (typeof ep !== 'number' || !Number.isInteger(ep) || ep < 0 || ep > MAX_ENDPOINT) {
      throw dvsError('EINVAL', `ep must be an integer in 0..${MAX_ENDPOINT}`);
    }
    const dc = callerDc(p, ctx, (ref) => this.o.resolveDc(ref));
    if (!this.running) throw dvsError('EUNAVAIL', 'failure detector not running');
    // Fails with ENOENT here, not later, if this node does not host the DC.
    this.o.endpoints(dc);
    return this.stream(ctx, 'fd.watchEndpoint', (end) => {
      const w: EndpointWatch = {
        dc,
        ep,
        last: '',
        push: (ev) => {
          if (ctx.push(sub, ev)) return true;
          end();
          return false;
        },
      };
      this.epWatches.add(w);
      this.checkEndpoint(w);
      this.ensurePoll();
      return () => {
        this.epWatches.delete(w);
        if (this.epWatches.size === 0 && this.poll) {
          clearInterval(this.poll);
          this.poll = undefined;
        }
      };
    });
  }

  /**
   * A stream as one pending call: `open` starts it and returns its cleanup; the call rejects EABORTED when
   * cancelled (or the session closes) and resolves `{end: 'closed'}` if the daemon stops.
   */
  private stream(ctx: AdminContext, what: string, open: (end: () => void) => () => void): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let done = false;
      let cleanup: (() => void) | undefined;
      const finish = (err?: unknown) => {
        if (done) return;
        done = true;
        ctx.signal.removeEventListener('abort', onAbort);
        this.life.signal.removeEventListener('abort', onStop);
        cleanup?.();
        if (err) reject(err);
        else resolve({ end: 'closed' });
      };
      const onAbort = () => finish(dvsError('EABORTED', `${what} cancelled`));
      const onStop = () => finish();
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      this.life.signal.addEventListener('abort', onStop, { once: true });
      cleanup = open(() => finish());
      if (done) cleanup();
      else if (ctx.signal.aborted) onAbort();
    });
  }

  private ensurePoll(): void {
    if (this.poll !== undefined) return;
    this.poll = setInterval(() => this.checkEndpoints(), this.o.pollMs);
    this.poll.unref();
  }

  private checkEndpoints(): void {
    for (const w of this.epWatches) this.checkEndpoint(w);
  }

  private checkEndpoint(w: EndpointWatch): void {
    let rows: EndpointInfo[];
    try {
      rows = this.o.endpoints(w.dc);
    } catch {
      rows = []; // the DC left this node: everything in it is unbound as far as we can tell
    }
    const row = rows.find((e) => e.ep === w.ep);
    const at = Date.now();
    let ev: EndpointEvent;
    if (row === undefined) ev = { ep: w.ep, state: 'down', node: null, reason: 'unbound', at };
    else if (row.flags.includes('NODEDOWN') || (row.node !== this.o.nodeId && !this.o.linkUp(row.node)))
      ev = { ep: w.ep, state: 'down', node: row.node, reason: 'node-down', at };
    else ev = { ep: w.ep, state: 'up', node: row.node, at };
    const key = `${ev.state}/${ev.node}/${ev.reason ?? ''}`;
    if (key === w.last) return;
    w.last = key;
    w.push(ev);
  }
}

function subParam(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 0xffffffff) {
    throw dvsError('EINVAL', 'sub must be a subscription id (1..2^32-1)');
  }
  return v;
}
