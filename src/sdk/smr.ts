/**
 * State-machine replication in the SDK (docs/replication.md, "State-machine replication"). `dvs run
 * --replicas N --mode state-machine` starts the same program on N nodes, each bound to the same endpoint as
 * a `replica`; each calls {@link onStateMachine} and then {@link StateMachine.serve}.
 *
 * Every replica is a member of one process group of its DC (`dvs.smr.<ep>`, src/sdk/groups.ts). A client's
 * request reaches one replica, its *contact* (the kernel routes it: the replica on the client's node, else
 * one the daemons chose); the contact multicasts it in safe (total, stable) order; every replica applies every
 * request in that order; the contact replies. Duplicates (a request replayed at another contact after its
 * first contact died) are recognised at apply time by their {@link sendrecOnce} id, identically at every
 * replica, and answered from the reply cache without being applied twice.
 *
 * A replica that joins later (a replacement) is *unsynced*: it keeps the requests delivered after its join
 * view and waits for a state transfer. The lowest synced member of the view takes a snapshot exactly at the
 * view (virtual synchrony: every member moving into the view delivered the same requests before it) and
 * multicasts it in chunks; the joiner restores it, applies what it kept, and is synced. A transfer delivered
 * in another view than the one it was taken at is ignored by everyone (the next view starts a new one).
 *
 * Partitions (the primary-component rule): the group has a fixed size N (`--replicas`, from the daemon).
 * A view is *primary* iff it has more than N/2 members ({@link isPrimaryView}); every member decides the
 * same from the same view. Only primary views apply and reply. A replica in a non-primary view becomes
 * unsynced (the other side may go on without it) and gets a transfer in its next primary view. Requests are
 * multicast in `safe` order: one delivered in the regular part of a view is held by every node of the
 * configuration, so the members on the far side of a cut deliver it too; the `transitional` ones (a view
 * closing after a loss) are held back and applied only if the next view is primary as well: at most one
 * side's next view is. A contact keeps each client's request pending until it answers it, and multicasts
 * again the ones not yet answered whenever it is synced in a new primary view ({@link resendable}).
 *
 * Request message (group payload), little-endian:
 * ```
 *   0     1     2         6          10       14       18
 *   | 'R' | 1   | client  | session  | seq    | type   | body ...     client: the client's endpoint,
 *   +-----+-----+---------+----------+--------+--------+-----         session, seq: the request id
 * ```
 * A plain `sendrec` has no id of its own: its contact gives it one (a random session per replica process, a
 * counter), so its own re-sends are applied once too; session 0 (no id) is still accepted.
 * State chunk: MessagePack `{t: 'S', v: ViewId, to: NodeId[], i: chunk, n: chunks, d: bytes}`; the chunks
 * concatenated are MessagePack `{app, applied, hash, cache: [[client, session, seq, type, payload]], synced}`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import type { ViewId } from '../gcs/types.js';
import type { Endpoint, NodeId, Received } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import type { CallOptions, Dvk, OutMessage } from './client.js';
import type { Group, GroupEvent, GroupView } from './groups.js';
import { joinGroup } from './groups.js';
import { decodeRequest } from './replication.js';

/** First byte of a request message. */
export const SMR_REQUEST_TAG = 0x52; // 'R'
/** Bytes of a request message before the body. */
export const SMR_REQUEST_HEADER_BYTES = 18;
/** Largest state chunk in one group message (the daemon's group payload limit is 64 KiB). */
export const SMR_CHUNK_BYTES = 48 * 1024;
/** Message type of the reply when `apply` threw (payload: the error text). */
export const SMR_APPLY_ERROR_TYPE = -2;

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const EMPTY = new Uint8Array(0);
/** A message every member ignores: multicast to learn that a closing configuration is over. */
const NOOP = new Uint8Array([0x4e]); // 'N'
const ZERO_HASH = new Uint8Array(32);
/** Errors of a reply that only mean the client is gone (it gave up, exited, or its node died). */
const CLIENT_GONE = new Set(['ENOTWAITING', 'ESRCDIED', 'EDSTDIED', 'ENOTCONN', 'ENOTBOUND']);

/**
 * The primary-component rule: a view of `members` replicas is primary iff they are more than half of the
 * group's fixed size. Two disjoint views can never both be primary. `size` 0 (a daemon that does not say):
 * every view is primary, as before the rule.
 */
export function isPrimaryView(members: number, size: number): boolean {
  return size <= 0 || members * 2 > size;
}

/** A request this replica took as contact and has not answered yet. */
export interface PendingRequest {
  session: number;
  seq: number;
  /** The request message (as multicast). */
  msg: Uint8Array;
  /** Key of the view it was last multicast in (undefined: never). */
  sentIn: string | undefined;
}

/**
 * The pending requests to multicast (again) in view `view`: every one not multicast in it yet. A request
 * multicast in an earlier view may have been delivered in a non-primary one (not applied), or ordered on
 * the far side of a cut only; the copy is harmless (its id makes it a duplicate at apply time).
 */
export function resendable(pending: Iterable<PendingRequest>, view: string): PendingRequest[] {
  return [...pending].filter((p) => p.sentIn !== view);
}

/** The process group of the replicas of endpoint `ep`. */
export function smrGroupName(ep: Endpoint): string {
  return `dvs.smr.${ep}`;
}

/** A client request as ordered among the replicas. */
export interface SmrRequest {
  client: Endpoint;
  /** 0: no request id (a plain sendrec; not protected against duplicates). */
  session: number;
  seq: number;
  type: number;
  body: Uint8Array;
}

export function encodeSmrRequest(r: SmrRequest): Uint8Array {
  const out = new Uint8Array(SMR_REQUEST_HEADER_BYTES + r.body.length);
  const v = new DataView(out.buffer);
  out[0] = SMR_REQUEST_TAG;
  out[1] = 1;
  v.setUint32(2, r.client, true);
  v.setUint32(6, r.session, true);
  v.setUint32(10, r.seq, true);
  v.setInt32(14, r.type, true);
  out.set(r.body, SMR_REQUEST_HEADER_BYTES);
  return out;
}

export function decodeSmrRequest(b: Uint8Array): SmrRequest | undefined {
  if (b.length < SMR_REQUEST_HEADER_BYTES || b[0] !== SMR_REQUEST_TAG || b[1] !== 1) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  return {
    client: v.getUint32(2, true),
    session: v.getUint32(6, true),
    seq: v.getUint32(10, true),
    type: v.getInt32(14, true),
    body: b.subarray(SMR_REQUEST_HEADER_BYTES),
  };
}

/** What the application gives {@link onStateMachine}. Deterministic: same requests, same state. */
export interface StateMachineHooks {
  /** Apply one request (every replica, same order); the result is the reply the client gets. */
  apply(req: Received): OutMessage | Promise<OutMessage>;
  /** The application state, for a joining replica (taken exactly at a view change). */
  snapshot(): Uint8Array | Promise<Uint8Array>;
  /** Replace the application state with a snapshot of another replica (before any request is applied). */
  restore(state: Uint8Array): void | Promise<void>;
}

/** A replica's progress, as `smr.status` reports it. */
export interface SmrStatus {
  node: NodeId;
  synced: boolean;
  /** The current view is primary (more than half of {@link size} members): requests are applied. */
  primary: boolean;
  /** The group's fixed size N (0: unknown, every view primary). */
  size: number;
  /** Client requests taken here and not answered yet. */
  pending: number;
  /** Requests applied since the group started (duplicates not counted). */
  applied: number;
  /** SHA-256 chain over every applied request message, hex: equal at two replicas = same sequence. */
  hash: string;
  /** Replicas (nodes) of the current view, and those known synced. */
  members: NodeId[];
  syncedMembers: NodeId[];
}

interface Cached {
  session: number;
  seq: number;
  type: number;
  payload: Uint8Array;
}

interface StateMsg {
  t: 'S';
  v: ViewId;
  to: NodeId[];
  i: number;
  n: number;
  d: Uint8Array;
}

interface Blob {
  app: Uint8Array;
  applied: number;
  hash: Uint8Array;
  cache: [Endpoint, number, number, number, Uint8Array][];
  synced: NodeId[];
}

const viewKey = (v: ViewId) => `${v.epoch}.${v.coord}.${v.inc}.${v.seq}`;
type MessageEvent = Extract<GroupEvent, { kind: 'message' }>;

/** This process's part in a state-machine replicated endpoint. Create it with {@link onStateMachine}. */
export class StateMachine {
  private synced = false;
  private applied = 0;
  private hash: Uint8Array = ZERO_HASH;
  private readonly cache = new Map<Endpoint, Cached>();
  /** Members (nodes) known synced; meaningful at a synced replica. */
  private syncedSet = new Set<NodeId>();
  private view: GroupView | undefined;
  private firstView = true;
  /** The current view is primary ({@link isPrimaryView}). */
  private primary = false;
  /**
   * The first replica of the group, synced with the empty state, not yet in a primary view: nothing was
   * applied anywhere, so a non-primary view does not make it unsynced (the others start after it).
   */
  private pristine = false;
  /** Unsynced: requests delivered since the current view, and the transfer being assembled. */
  private kept: SmrRequest[] = [];
  private chunks: Uint8Array[] = [];
  /** Transitional deliveries of the closing view: applied only if the next view is primary too. */
  private held: MessageEvent[] = [];
  /** Requests taken as contact and not answered yet, by client (one call at a time per client). */
  private readonly pending = new Map<Endpoint, PendingRequest>();
  /** Request ids this contact gives plain sendrec calls. */
  private readonly plainSession = (randomBytes(4).readUInt32LE(0) | 1) >>> 0;
  private plainSeq = 0;
  private resending = false;
  private syncWaiters: (() => void)[] = [];
  private group: Group | undefined;
  private readonly node: NodeId;
  /** Replies that failed for another reason than the client being gone (diagnostics). */
  replyErrors = 0;

  /** @internal use {@link onStateMachine}. */
  constructor(
    private readonly dvk: Dvk,
    private readonly hooks: StateMachineHooks,
    /** The daemon started this replica with the group (the first alone in its first view starts empty). */
    private readonly boot: boolean,
    /** The group's fixed size N (`--replicas`); 0: unknown (every view is primary). */
    private readonly size = 0,
  ) {
    this.node = dvk.node;
  }

  /** Resolves once this replica has a state (at once for the first one; after the transfer for a joiner). */
  whenSynced(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  status(): SmrStatus {
    return {
      node: this.node,
      synced: this.synced,
      primary: this.primary,
      size: this.size,
      pending: this.pending.size,
      applied: this.applied,
      hash: Buffer.from(this.hash).toString('hex'),
      members: (this.view?.members ?? []).map((m) => m.node).sort((a, b) => a - b),
      syncedMembers: [...this.syncedSet].sort((a, b) => a - b),
    };
  }

  /**
   * Join the replicas' group and serve: take client requests (as their contact), order them through the
   * group, apply every ordered request, reply to the clients this replica is the contact of. Returns when
   * `opts.signal` aborts; rejects if the group membership ends (EEXPELLED) or the connection closes.
   */
  async serve(opts: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = opts.signal;
    const g = await joinGroup(this.dvk, smrGroupName(this.dvk.endpoint), signal ? { signal } : {});
    this.group = g;
    const stop = new Promise<void>((resolve) => {
      if (signal?.aborted) resolve();
      signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    const deliveries = this.deliveries(g);
    const requests = this.requests(g, signal);
    try {
      await Promise.race([deliveries, requests, stop]);
    } finally {
      await g.leave().catch(() => undefined);
    }
    if (signal?.aborted) return;
  }

  /** The contact side: every client request taken here goes into the total order. */
  private async requests(g: Group, signal: AbortSignal | undefined): Promise<void> {
    for (;;) {
      let req: Received;
      try {
        req = await this.dvk.receiveRequest(signal ? { signal } : undefined);
      } catch (e) {
        if (signal?.aborted) return;
        throw e;
      }
      const id = decodeRequest(req.payload);
      if (id !== undefined && this.synced) {
        // Replayed after a contact died, and already applied: answer at once.
        const hit = this.cache.get(req.source);
        if (hit !== undefined && hit.session === id.session && hit.seq === id.seq) {
          this.pending.delete(req.source);
          this.answer(req.source, { type: hit.type, payload: hit.payload });
          continue;
        }
      }
      if (id === undefined) this.plainSeq = (this.plainSeq + 1) >>> 0;
      const session = id?.session ?? this.plainSession;
      const seq = id?.seq ?? this.plainSeq;
      const msg = encodeSmrRequest({
        client: req.source,
        session,
        seq,
        type: req.type,
        body: id?.body ?? req.payload,
      });
      // A client has one call at a time: a newer request replaces one it gave up on.
      const p: PendingRequest = { session, seq, msg, sentIn: undefined };
      this.pending.set(req.source, p);
      // In a non-primary view it would not be applied: it waits for a primary one (resend).
      if (!this.primary || this.view === undefined) continue;
      p.sentIn = viewKey(this.view.id);
      await g.multicast(msg, { order: 'safe' });
    }
  }

  /** Synced in a primary view: multicast the pending requests not multicast in it yet. */
  private resend(): void {
    if (this.resending || this.group === undefined) return;
    this.resending = true;
    const g = this.group;
    void (async () => {
      try {
        while (this.synced && this.primary && this.view !== undefined) {
          const v = viewKey(this.view.id);
          const todo = resendable(this.pending.values(), v);
          if (todo.length === 0) return;
          for (const p of todo) {
            p.sentIn = v;
            await g.multicast(p.msg, { order: 'safe' });
          }
        }
      } catch {
        // Leaving, or the view changed under us: the next primary view sends them again.
      } finally {
        this.resending = false;
      }
    })();
  }

  /** The replica side: views and ordered messages, one at a time. */
  private async deliveries(g: Group): Promise<void> {
    for await (const ev of g) await this.onEvent(ev);
  }

  private async onEvent(ev: GroupEvent): Promise<void> {
    if (ev.kind === 'view') {
      await this.onView(ev.view);
      return;
    }
    if (ev.transitional) {
      // The other side of a cut may not have it: it counts only if our next view is primary (onView).
      // The configuration may close without any member of this group lost (no next view): a no-op of
      // ours delivered after it tells us so.
      if (this.held.length === 0) this.group?.multicast(NOOP, { order: 'safe' }).catch(() => undefined);
      this.held.push(ev);
      return;
    }
    if (this.held.length > 0) {
      // A regular delivery after transitional ones, in the same view: every member moved on together.
      const held = this.held;
      this.held = [];
      for (const h of held) await this.onMessage(h);
    }
    await this.onMessage(ev);
  }

  /** A message delivered in the current view (or a transitional one of it, once the next is primary). */
  private async onMessage(ev: MessageEvent): Promise<void> {
    // Nothing delivered in a non-primary view counts: the primary side, if any, goes on without it.
    if (!this.primary) return;
    const b = ev.payload;
    if (b[0] === SMR_REQUEST_TAG) {
      const r = decodeSmrRequest(b);
      if (r === undefined) return;
      if (!this.synced) {
        this.kept.push(r);
        return;
      }
      await this.applyOne(r, b, ev.sender.node === this.node);
      return;
    }
    let m: StateMsg;
    try {
      m = packr.unpack(b) as StateMsg;
    } catch {
      return;
    }
    if (m?.t !== 'S' || viewKey(m.v) !== viewKey(ev.view) || !Array.isArray(m.to)) return;
    if (this.synced) {
      // Every synced replica sees the last chunk at the same position: the targets are synced from here on.
      if (m.i === m.n - 1) for (const n of m.to) this.syncedSet.add(n);
      return;
    }
    if (!m.to.includes(this.node) || this.view === undefined || viewKey(this.view.id) !== viewKey(m.v))
      return;
    if (m.i !== this.chunks.length) return;
    this.chunks.push(m.d);
    if (this.chunks.length < m.n) return;
    await this.install(m.to);
  }

  private async onView(v: GroupView): Promise<void> {
    const members = [...new Set(v.members.map((m) => m.node))];
    const primary = isPrimaryView(members.length, this.size);
    // The closing view's transitional deliveries: every member moving on to this view got the same ones, in
    // the same order, and at most one side of a cut moves on to a primary view.
    const held = this.held;
    this.held = [];
    if (primary) for (const ev of held) await this.onMessage(ev);
    const first = this.firstView;
    this.firstView = false;
    this.view = v;
    this.primary = primary;
    if (!this.synced && first && this.boot && members.length === 1 && members[0] === this.node) {
      // The first replica of a new group: the empty state is the group's state.
      this.pristine = true;
      this.syncedSet = new Set([this.node]);
      this.markSynced();
    }
    if (!primary) {
      if (this.synced && !this.pristine) {
        // The primary side (if any) applies requests without us: our state may fall behind.
        this.synced = false;
      }
      this.syncedSet = this.synced ? new Set([this.node]) : new Set();
      this.kept = [];
      this.chunks = [];
      return;
    }
    this.pristine = false;
    if (!this.synced) {
      // A transfer, if any, is taken at this view: what was kept before it is in the snapshot. A primary
      // view without any synced member (the rule makes it impossible) waits: it never starts empty.
      this.kept = [];
      this.chunks = [];
      return;
    }
    this.resend();
    this.syncedSet = new Set(members.filter((n) => this.syncedSet.has(n)));
    const unsynced = members.filter((n) => !this.syncedSet.has(n)).sort((a, b) => a - b);
    const donor = Math.min(...this.syncedSet);
    if (unsynced.length === 0 || donor !== this.node) return;
    // Taken now, before the next delivery: exactly the state at the view.
    const blob: Blob = {
      app: await this.hooks.snapshot(),
      applied: this.applied,
      hash: this.hash,
      cache: [...this.cache].map(([c, e]) => [c, e.session, e.seq, e.type, e.payload]),
      synced: [...this.syncedSet],
    };
    void this.sendState(v.id, unsynced, packr.pack(blob));
  }

  private async sendState(v: ViewId, to: NodeId[], bytes: Uint8Array): Promise<void> {
    const g = this.group;
    if (g === undefined) return;
    const n = Math.max(1, Math.ceil(bytes.length / SMR_CHUNK_BYTES));
    try {
      for (let i = 0; i < n; i++) {
        const d = bytes.subarray(i * SMR_CHUNK_BYTES, (i + 1) * SMR_CHUNK_BYTES);
        const m: StateMsg = { t: 'S', v, to, i, n, d };
        await g.multicast(packr.pack(m), { order: 'safe' });
      }
    } catch {
      // The view changed under us (or we are leaving): the next view's donor sends a new transfer.
    }
  }

  /** The transfer is complete: restore it, apply what was kept since the view, and go on synced. */
  private async install(to: NodeId[]): Promise<void> {
    const total = this.chunks.reduce((s, c) => s + c.length, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const c of this.chunks) {
      all.set(c, at);
      at += c.length;
    }
    this.chunks = [];
    const blob = packr.unpack(all) as Blob;
    await this.hooks.restore(blob.app instanceof Uint8Array ? blob.app : new Uint8Array(blob.app ?? []));
    this.applied = blob.applied;
    this.hash = new Uint8Array(blob.hash);
    this.cache.clear();
    for (const [c, session, seq, type, payload] of blob.cache) {
      this.cache.set(c, { session, seq, type, payload: new Uint8Array(payload) });
    }
    this.syncedSet = new Set([...blob.synced, ...to]);
    const kept = this.kept;
    this.kept = [];
    this.markSynced();
    for (const r of kept) await this.applyOne(r, encodeSmrRequest(r), false);
    this.resend();
  }

  private markSynced(): void {
    this.synced = true;
    const ws = this.syncWaiters;
    this.syncWaiters = [];
    for (const w of ws) w();
  }

  /**
   * Apply ordered request `r` (its message bytes `raw`) unless it is a duplicate; reply if the client waits
   * on this replica for it (pending here; `sent`: a message of ours with no id, as older replicas sent).
   */
  private async applyOne(r: SmrRequest, raw: Uint8Array, sent: boolean): Promise<void> {
    const p = this.pending.get(r.client);
    // Only the request the client waits for: a late copy of an earlier one must not answer a newer call.
    const contact = r.session === 0 ? sent : p !== undefined && p.session === r.session && p.seq === r.seq;
    if (contact && r.session !== 0) this.pending.delete(r.client);
    if (r.session !== 0) {
      const hit = this.cache.get(r.client);
      if (hit !== undefined && hit.session === r.session) {
        if (hit.seq === r.seq) {
          if (contact) this.answer(r.client, { type: hit.type, payload: hit.payload });
          return;
        }
        // An older request of a client that has moved on (one sendrec at a time): nobody waits for it.
        if (((r.seq - hit.seq) | 0) < 0) return;
      }
    }
    let out: OutMessage;
    try {
      out = await this.hooks.apply({ source: r.client, type: r.type, payload: r.body, kind: 'request' });
    } catch (e) {
      out = { type: SMR_APPLY_ERROR_TYPE, payload: new TextEncoder().encode(String(e)) };
    }
    const payload = out.payload ?? EMPTY;
    this.applied++;
    this.hash = createHash('sha256').update(this.hash).update(raw).digest();
    if (r.session !== 0)
      this.cache.set(r.client, { session: r.session, seq: r.seq, type: out.type, payload });
    if (contact) this.answer(r.client, { type: out.type, payload });
  }

  /**
   * Reply without waiting (the next request must not wait for a remote client's ack). A failed reply means
   * the client is gone or its call moved to another contact (replayed there, answered from the cache).
   */
  private answer(dst: Endpoint, msg: OutMessage): void {
    this.dvk.reply(dst, msg).catch((e: unknown) => {
      if (!(e instanceof DvsError && CLIENT_GONE.has(e.code))) this.replyErrors++;
    });
  }
}

/** State machines of this process's endpoint, by process. */
const machines = new WeakMap<Dvk, StateMachine>();

/**
 * Join the state-machine replication of this process's endpoint (started by `dvs run --replicas N --mode
 * state-machine`). Call {@link StateMachine.serve} next. ENOENT if the endpoint is not replicated that way.
 * The daemon can ask this replica its {@link SmrStatus} at any time (`smr.status`).
 *
 * @example
 * let n = 0;
 * const sm = await onStateMachine(dvk, {
 *   apply: () => ({ type: 1, payload: enc(++n) }),
 *   snapshot: () => enc(n),
 *   restore: (s) => { n = dec(s); },
 * });
 * await sm.serve();
 */
export async function onStateMachine(
  dvk: Dvk,
  hooks: StateMachineHooks,
  opts?: CallOptions,
): Promise<StateMachine> {
  let sm: StateMachine | undefined;
  const sub = dvk.subscribe((d) => {
    const q = (d ?? {}) as { op?: unknown; id?: unknown };
    if (sm === undefined || q.op !== 'query' || typeof q.id !== 'number') return;
    dvk.service('smr.answer', { id: q.id, status: sm.status() }).catch(() => undefined);
  });
  try {
    const got = (await dvk.service('smr.hooks', { sub }, opts)) as { boot?: unknown; size?: unknown };
    const size = typeof got.size === 'number' && Number.isInteger(got.size) && got.size > 0 ? got.size : 0;
    sm = new StateMachine(dvk, hooks, got.boot === true, size);
  } catch (e) {
    dvk.unsubscribe(sub);
    throw e;
  }
  machines.set(dvk, sm);
  return sm;
}

/** The StateMachine {@link onStateMachine} made for `dvk`, if any. */
export function stateMachineOf(dvk: Dvk): StateMachine | undefined {
  return machines.get(dvk);
}
