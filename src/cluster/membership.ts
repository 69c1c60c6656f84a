/**
 * Cluster membership: which nodes exist and which are alive, agreed through the cluster store.
 *
 * Registration. A node puts `/dvs/nodes/<id>` (a {@link NodeRecord}) bound to a lease of `ttlSeconds` and
 * renews the lease every TTL/3. The put is a txn guarded on `createRevision == 0`, so two daemons can never
 * hold one id at once.
 *
 * Id reuse rule. An id belongs to the incarnation (a random string per daemon start) whose record is in the
 * store. A new incarnation may take the id only once the old record is gone: revoked by a clean stop, or
 * expired one TTL after its holder stopped renewing (crashed). Until then start() refuses with EEXIST and a
 * one-line message naming the holder; with `takeoverWaitMs` >= the TTL it waits for the old lease to expire
 * first, and then the only way to still be refused is a second live daemon with the same id. The same
 * incarnation finding its own record (a write whose answer was lost, or a re-registration) takes it over.
 *
 * Keepalive. A renewal that fails (store unreachable, etcd electing a leader) is retried every few hundred
 * ms; the node declares itself degraded only once the lease is really lost: the store answered that the lease
 * is gone, or no renewal has succeeded for a whole TTL. Then it registers again (new lease, same incarnation;
 * `onRegistered(lease, true)` tells the directory to re-assert the node's endpoints), retrying until the store
 * answers. Meanwhile the node keeps serving what it knows.
 *
 * Liveness of the other nodes (rule): a node is
 * - `down` if its registration is gone from the store (lease expired or revoked), OR its node link has been
 *   reported down for `linkDownAfterMs` (the link layer reports down only after its own heartbeat detection
 *   time, so the default grace is 0);
 * - `suspect` if registered but its link is down for less than `linkDownAfterMs`;
 * - `up` if registered and its link is up (or was never reported: a node we have no link to yet is judged by
 *   the lease alone).
 * A node whose record changes incarnation (it restarted) is reported down, then up. Detection time is the
 * smaller of the link's dead-after time and the lease TTL.
 */
import type { Logger } from 'pino';
import type { NodeId } from '../kernel/types.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import {
  decodeNodeRecord,
  encodeValue,
  NODES_PREFIX,
  type NodeRecord,
  nodeKey,
  parseNodeKey,
} from './keys.js';
import { type MirrorEvent, PrefixMirror } from './mirror.js';
import type { ClusterStore } from './store.js';

/** Liveness of a node; see the module comment for the rule. */
export type NodeState = 'up' | 'suspect' | 'down';
/** What the link layer last said about a node. */
export type LinkState = 'up' | 'down' | 'unknown';

/** One row of the membership view. */
export interface NodeInfo {
  id: NodeId;
  name: string;
  address: string;
  incarnation: string;
  /** When this incarnation registered (its clock), ms since the epoch. */
  startedAt: number;
  state: NodeState;
  /** When the node entered `state` (our clock), ms since the epoch. */
  since: number;
  link: LinkState;
  /** True for this node's own row. */
  self: boolean;
}

/** A change of a node's state. */
export interface NodeChange {
  node: NodeId;
  /** undefined the first time the node is seen. */
  prev: NodeState | undefined;
  state: NodeState;
  info: NodeInfo;
  /** Set on the `down` event of a restart (the record changed incarnation). */
  restarted?: boolean;
}

/** Whether this node can trust its registration and its view. */
export interface MembershipHealth {
  degraded: boolean;
  /** Why degraded (one line). */
  reason?: string;
  /** Since when (ms since the epoch) the current health holds. */
  since: number;
}

/** Options of {@link Membership}. */
export interface MembershipOptions {
  store: ClusterStore;
  nodeId: NodeId;
  name: string;
  /** Node-link address, host:port. */
  address: string;
  /** Random per daemon start (the link layer's incarnation). */
  incarnation: string;
  /** Lease TTL, s (default 3: a dead node is seen down within 3 s even without a link to it). */
  ttlSeconds?: number;
  logger: Logger;
  /** Every node state change, including this node's own row. */
  onChange?: (ev: NodeChange) => void;
  /** Registered with `lease`; `again` = after the previous lease was lost (re-assert leased state). */
  onRegistered?: (lease: string, again: boolean) => void;
  /** Health changed (degraded or recovered). */
  onHealth?: (health: MembershipHealth) => void;
  /** How long a reported link-down must last before the node counts as down, ms (default 0). */
  linkDownAfterMs?: number;
  /** start(): how long to wait for another incarnation's record to expire before refusing, ms (default 0). */
  takeoverWaitMs?: number;
  /** Timeout of one store call, ms (default 5000). */
  callTimeoutMs?: number;
  /** Clock, ms since the epoch (default Date.now). */
  now?: () => number;
}

interface Row {
  info: NodeInfo;
}

interface Link {
  state: 'up' | 'down';
  since: number;
  timer: NodeJS.Timeout | undefined;
  /** The link has been down for linkDownAfterMs (set by the timer: clocks and timers may disagree by 1 ms). */
  expired: boolean;
}

/** Membership of this node in the cluster, and its view of the others. */
export class Membership {
  private readonly store: ClusterStore;
  private readonly log: Logger;
  private readonly id: NodeId;
  private readonly key: string;
  private readonly ttl: number;
  private readonly ttlMs: number;
  private readonly incarnation: string;
  private readonly linkDownAfterMs: number;
  private readonly takeoverWaitMs: number;
  private readonly callTimeoutMs: number;
  private readonly now: () => number;
  private readonly record: NodeRecord;
  private readonly value: Uint8Array;
  private readonly o: MembershipOptions;

  private readonly mirror: PrefixMirror<NodeRecord>;
  private readonly rows = new Map<NodeId, Row>();
  private readonly links = new Map<NodeId, Link>();
  private currentLease: string | undefined;
  private lastRenew = 0;
  private registeredOnce = false;
  private leaseLostReason: string | undefined;
  private storeReason: string | undefined;
  private lastHealth: MembershipHealth;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private life = new AbortController();
  private ticking: Promise<void> = Promise.resolve();

  constructor(opts: MembershipOptions) {
    this.o = opts;
    this.store = opts.store;
    this.log = opts.logger;
    this.id = opts.nodeId;
    if (!Number.isInteger(this.id) || this.id < 0 || this.id > 65535) {
      throw dvsError('EINVAL', `node id must be an integer in 0..65535 (got ${this.id})`);
    }
    this.key = nodeKey(this.id);
    this.ttl = opts.ttlSeconds ?? 3;
    if (!Number.isInteger(this.ttl) || this.ttl < 1) {
      throw dvsError('EINVAL', `ttlSeconds must be an integer >= 1 (got ${this.ttl})`);
    }
    this.ttlMs = this.ttl * 1000;
    this.incarnation = opts.incarnation;
    this.linkDownAfterMs = opts.linkDownAfterMs ?? 0;
    this.takeoverWaitMs = opts.takeoverWaitMs ?? 0;
    this.callTimeoutMs = opts.callTimeoutMs ?? 5000;
    this.now = opts.now ?? Date.now;
    this.record = {
      id: this.id,
      name: opts.name,
      address: opts.address,
      incarnation: opts.incarnation,
      startedAt: this.now(),
    };
    // Validate our own record with the same decoder the others will use on it.
    this.value = encodeValue(this.record);
    decodeNodeRecord(this.value);
    this.lastHealth = { degraded: false, since: this.now() };
    this.mirror = new PrefixMirror<NodeRecord>({
      store: this.store,
      prefix: NODES_PREFIX,
      logger: this.log,
      callTimeoutMs: this.callTimeoutMs,
      decode: (kv) => {
        const rec = decodeNodeRecord(kv.value);
        if (parseNodeKey(kv.key) !== rec.id)
          throw dvsError('EPROTO', `node record id ${rec.id} under ${kv.key}`);
        return rec;
      },
      onEvents: (evs) => this.onNodeEvents(evs),
      onHealth: (ok, why) => {
        this.storeReason = ok ? undefined : (why ?? 'store unreachable');
        this.updateHealth();
      },
    });
  }

  /** The lease this node's registration (and its directory entries) hang on, while registered. */
  get lease(): string | undefined {
    return this.currentLease;
  }

  /**
   * Register this node and start watching the others. Rejects with EEXIST (a one-line message naming the
   * holder) if another incarnation holds the id, or with the store's error if it cannot be reached.
   */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.running) throw dvsError('EINVAL', 'membership already started');
    this.running = true;
    this.life = new AbortController();
    try {
      await this.register(signal, true);
      await this.mirror.start(signal);
    } catch (e) {
      this.running = false;
      this.mirror.stop();
      if (this.currentLease !== undefined) {
        await this.store.revokeLease(this.currentLease, { timeout: this.callTimeoutMs }).catch(() => {});
        this.currentLease = undefined;
      }
      throw e;
    }
    this.schedule(this.ttlMs / 3);
  }

  /**
   * Stop renewing and watching. `leave` (default true) revokes the lease so the others see this node down at
   * once; `leave: false` lets it expire after the TTL (what a crash looks like, for tests).
   */
  async stop(opts: { leave?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.life.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.mirror.stop();
    for (const l of this.links.values()) if (l.timer) clearTimeout(l.timer);
    this.links.clear();
    await this.ticking;
    const lease = this.currentLease;
    this.currentLease = undefined;
    if ((opts.leave ?? true) && lease !== undefined) {
      await this.store.revokeLease(lease, { timeout: this.callTimeoutMs }).catch((e: unknown) => {
        this.log.warn({ err: e, lease }, 'could not revoke the membership lease; it expires after its TTL');
      });
    }
  }

  /** The view: every node seen since start, with its state (down nodes stay listed). Sorted by id. */
  nodes(): NodeInfo[] {
    return [...this.rows.values()].map((r) => ({ ...r.info })).sort((a, b) => a.id - b.id);
  }

  /** One node's row, if it was ever seen. */
  node(id: NodeId): NodeInfo | undefined {
    const r = this.rows.get(id);
    return r ? { ...r.info } : undefined;
  }

  /** Whether this node can trust its registration and view. */
  health(): MembershipHealth {
    return { ...this.lastHealth };
  }

  /**
   * Link-heartbeat input: the link layer's nodeUp / nodeDown for `node`. Combined with the lease by the rule
   * in the module comment.
   */
  linkState(node: NodeId, state: 'up' | 'down'): void {
    if (node === this.id || !this.running) return;
    const prev = this.links.get(node);
    if (prev?.state === state) return;
    if (prev?.timer) clearTimeout(prev.timer);
    const link: Link = { state, since: this.now(), timer: undefined, expired: this.linkDownAfterMs <= 0 };
    this.links.set(node, link);
    if (state === 'down' && !link.expired) {
      link.timer = setTimeout(() => {
        link.timer = undefined;
        link.expired = true;
        this.recompute(node);
      }, this.linkDownAfterMs);
    }
    this.recompute(node);
  }

  // -------------------------------------------------------------------------------------------- registration

  private async register(signal: AbortSignal | undefined, first: boolean): Promise<void> {
    const lease = await this.claim(signal, first);
    this.currentLease = lease;
    this.lastRenew = this.now();
    this.leaseLostReason = undefined;
    const again = this.registeredOnce;
    this.registeredOnce = true;
    this.log.info({ node: this.id, lease, ttl: this.ttl, again }, 'registered in the cluster');
    this.updateHealth();
    try {
      this.o.onRegistered?.(lease, again);
    } catch (e) {
      this.log.error({ err: e }, 'onRegistered callback threw');
    }
  }

  /**
   * Grant a lease and put our record with it, unless another incarnation holds the id (see the reuse rule).
   * Returns the lease; on failure the lease is revoked.
   */
  private async claim(signal: AbortSignal | undefined, first: boolean): Promise<string> {
    const opts = { timeout: this.callTimeoutMs, signal: this.signal(signal) };
    let lease = await this.store.grantLease(this.ttl, opts);
    try {
      return await this.claimWith(
        () => lease,
        async () => {
          // Waiting for the old holder to expire: keep our own lease alive meanwhile.
          if ((await this.store.keepAlive(lease, opts)) === 0)
            lease = await this.store.grantLease(this.ttl, opts);
        },
        signal,
        first,
      );
    } catch (e) {
      await this.store.revokeLease(lease, { timeout: this.callTimeoutMs }).catch(() => {});
      throw e;
    }
  }

  private async claimWith(
    leaseOf: () => string,
    renew: () => Promise<void>,
    signal: AbortSignal | undefined,
    first: boolean,
  ): Promise<string> {
    const deadline = this.now() + (first ? this.takeoverWaitMs : 0);
    for (;;) {
      const lease = leaseOf();
      const opts = { timeout: this.callTimeoutMs, signal: this.signal(signal) };
      let res: Awaited<ReturnType<ClusterStore['txn']>>;
      try {
        res = await this.store.txn(
          [{ key: this.key, target: 'createRevision', op: '==', value: 0 }],
          [{ op: 'put', key: this.key, value: this.value, lease }],
          [{ op: 'get', key: this.key }],
          opts,
        );
      } catch (e) {
        // An ambiguous write is resolved by the next round: it finds our incarnation (or nothing).
        if (e instanceof DvsError && e.details?.ambiguous === true) continue;
        throw e;
      }
      if (res.succeeded) return lease;
      const kv = res.results[0]?.kvs[0];
      if (kv === undefined) continue;
      let holder: NodeRecord | undefined;
      try {
        holder = decodeNodeRecord(kv.value);
      } catch {
        holder = undefined;
      }
      if (holder === undefined || holder.incarnation === this.incarnation) {
        // Ours (a lost answer, or the record of our previous lease), or garbage: take it over by CAS.
        if (holder === undefined) this.log.warn({ key: this.key }, 'replacing a malformed node record');
        const r2 = await this.store
          .txn(
            [{ key: this.key, target: 'modRevision', op: '==', value: kv.modRevision }],
            [{ op: 'put', key: this.key, value: this.value, lease }],
            [],
            opts,
          )
          .catch((e: unknown) => {
            if (e instanceof DvsError && e.details?.ambiguous === true) return undefined;
            throw e;
          });
        if (r2?.succeeded) return lease;
        continue;
      }
      if (this.now() < deadline) {
        await sleep(Math.min(200, this.ttlMs / 4), this.signal(signal));
        await renew();
        continue;
      }
      const up = Math.max(0, Math.round((this.now() - holder.startedAt) / 1000));
      const msg =
        first && this.takeoverWaitMs >= this.ttlMs
          ? `node id ${this.id} is held by a live daemon (incarnation ${holder.incarnation} at ${holder.address}, ` +
            `up ${up} s) that kept it past a whole lease TTL: two nodes claim this id`
          : `node id ${this.id} is registered by another daemon (incarnation ${holder.incarnation} at ` +
            `${holder.address}, up ${up} s): either a second node uses this id, or a crashed one's lease ` +
            `(TTL ${this.ttl} s) has not expired yet`;
      throw dvsError('EEXIST', msg, {
        node: this.id,
        incarnation: holder.incarnation,
        address: holder.address,
        name: holder.name,
      });
    }
  }

  // ----------------------------------------------------------------------------------------------- keepalive

  private schedule(ms: number): void {
    if (!this.running) return;
    // One loop only: a reschedule replaces the pending tick.
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.ticking = this.tick();
    }, ms);
  }

  private async tick(): Promise<void> {
    const lease = this.currentLease;
    if (lease === undefined) {
      try {
        await this.register(undefined, false);
        this.schedule(this.ttlMs / 3);
      } catch (e) {
        if (!this.running) return;
        this.leaseLostReason = `not registered: ${e instanceof Error ? e.message : String(e)}`;
        this.updateHealth();
        this.log.warn(
          { err: e instanceof Error ? e.message : String(e) },
          're-registration failed; retrying',
        );
        this.schedule(Math.min(1000, this.ttlMs / 3));
      }
      return;
    }
    let remaining: number;
    try {
      remaining = await this.store.keepAlive(lease, {
        timeout: Math.max(500, Math.ceil(this.ttlMs / 3)),
        signal: this.life.signal,
      });
    } catch (e) {
      if (!this.running || this.currentLease !== lease) return;
      // Keep trying through a failover window; the lease is only lost once a whole TTL passed unrenewed.
      if (this.now() - this.lastRenew >= this.ttlMs) {
        this.leaseLost(`no lease renewal for ${this.ttl} s (${e instanceof Error ? e.message : String(e)})`);
      }
      this.schedule(Math.min(250, this.ttlMs / 6));
      return;
    }
    // Stopped, or the registration was replaced meanwhile (that path scheduled its own tick).
    if (!this.running || this.currentLease !== lease) return;
    if (remaining > 0) {
      this.lastRenew = this.now();
      if (this.leaseLostReason !== undefined) {
        // The store came back and still has our lease (etcd renews leases on a leader change).
        this.leaseLostReason = undefined;
        this.updateHealth();
      }
      this.schedule(this.ttlMs / 3);
      return;
    }
    this.leaseLost('the registration lease expired');
    this.currentLease = undefined;
    this.schedule(0);
  }

  private leaseLost(reason: string): void {
    if (this.leaseLostReason === undefined) {
      this.log.error({ node: this.id, reason }, 'membership lease lost; serving what we know, degraded');
    }
    this.leaseLostReason = reason;
    this.updateHealth();
  }

  private updateHealth(): void {
    const reason = this.leaseLostReason ?? this.storeReason;
    const degraded = reason !== undefined;
    if (degraded === this.lastHealth.degraded && reason === this.lastHealth.reason) return;
    this.lastHealth =
      reason === undefined ? { degraded, since: this.now() } : { degraded, reason, since: this.now() };
    try {
      this.o.onHealth?.({ ...this.lastHealth });
    } catch (e) {
      this.log.error({ err: e }, 'onHealth callback threw');
    }
  }

  // -------------------------------------------------------------------------------------------------- view

  private onNodeEvents(evs: MirrorEvent<NodeRecord>[]): void {
    for (const ev of evs) {
      if (ev.type === 'delete') {
        const id = ev.prev.id;
        const row = this.rows.get(id);
        if (row && row.info.incarnation === ev.prev.incarnation) this.recompute(id, true);
        if (id === this.id && this.running && this.currentLease !== undefined) {
          // Our record was deleted while the lease lives (by hand?): put it back on the next tick.
          this.log.warn({ node: id }, 'own node record deleted; re-registering');
          void this.store.revokeLease(this.currentLease, { timeout: this.callTimeoutMs }).catch(() => {});
          this.currentLease = undefined;
          this.schedule(0);
        }
        continue;
      }
      const rec = ev.value;
      const row = this.rows.get(rec.id);
      if (row && row.info.incarnation !== rec.incarnation && row.info.state !== 'down') {
        // Restarted between two of our reads: the old incarnation is dead.
        this.setState(row, 'down', true);
      }
      const info: NodeInfo = {
        id: rec.id,
        name: rec.name,
        address: rec.address,
        incarnation: rec.incarnation,
        startedAt: rec.startedAt,
        state: row?.info.state ?? 'down',
        since: row?.info.since ?? this.now(),
        link: this.links.get(rec.id)?.state ?? 'unknown',
        self: rec.id === this.id,
      };
      if (row) row.info = info;
      else this.rows.set(rec.id, { info });
      this.recompute(rec.id, false, row === undefined);
    }
  }

  /** Apply the liveness rule to `id` and report a change. */
  private recompute(id: NodeId, gone = false, fresh = false): void {
    const row = this.rows.get(id);
    if (!row) return;
    const entry = this.mirror.get(nodeKey(id));
    const registered = !gone && entry !== undefined && entry.value.incarnation === row.info.incarnation;
    const link = this.links.get(id);
    row.info.link = link?.state ?? 'unknown';
    let state: NodeState;
    if (!registered) state = 'down';
    else if (id === this.id || link === undefined || link.state === 'up') state = 'up';
    else state = link.expired ? 'down' : 'suspect';
    if (fresh) {
      row.info.state = state;
      row.info.since = this.now();
      this.emit({ node: id, prev: undefined, state, info: { ...row.info } });
      return;
    }
    if (state !== row.info.state) this.setState(row, state, false);
  }

  private setState(row: Row, state: NodeState, restarted: boolean): void {
    const prev = row.info.state;
    row.info.state = state;
    row.info.since = this.now();
    const ev: NodeChange = { node: row.info.id, prev, state, info: { ...row.info } };
    if (restarted) ev.restarted = true;
    this.log.info({ node: row.info.id, prev, state, restarted }, 'node state changed');
    this.emit(ev);
  }

  private emit(ev: NodeChange): void {
    try {
      this.o.onChange?.(ev);
    } catch (e) {
      this.log.error({ err: e }, 'membership onChange callback threw');
    }
  }

  private signal(extra: AbortSignal | undefined): AbortSignal {
    return extra ? AbortSignal.any([this.life.signal, extra]) : this.life.signal;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new DvsError('EABORTED', 'aborted'));
      return;
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new DvsError('EABORTED', 'aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
