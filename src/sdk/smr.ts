/**
 * State-machine replication in the SDK (docs/replication.md, "State-machine replication"). `dvs run
 * --replicas N --mode state-machine` starts the same program on N nodes, each bound to the same endpoint as
 * a `replica`; each calls {@link onStateMachine} and then {@link StateMachine.serve}.
 *
 * Every replica is a member of one process group of its DC (`dvs.smr.<ep>`, src/sdk/groups.ts). A client's
 * request reaches one replica, its *contact* (the kernel routes it: the replica on the client's node, else
 * one the daemons chose); the contact multicasts it in agreed (total) order; every replica applies every
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
 * Request message (group payload), little-endian:
 * ```
 *   0     1     2         6          10       14       18
 *   | 'R' | 1   | client  | session  | seq    | type   | body ...     client: the client's endpoint,
 *   +-----+-----+---------+----------+--------+--------+-----         session 0: no request id (plain sendrec)
 * ```
 * State chunk: MessagePack `{t: 'S', v: ViewId, to: NodeId[], i: chunk, n: chunks, d: bytes}`; the chunks
 * concatenated are MessagePack `{app, applied, hash, cache: [[client, session, seq, type, payload]], synced}`.
 */
import { createHash } from 'node:crypto';
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
const ZERO_HASH = new Uint8Array(32);
/** Errors of a reply that only mean the client is gone (it gave up, exited, or its node died). */
const CLIENT_GONE = new Set(['ENOTWAITING', 'ESRCDIED', 'EDSTDIED', 'ENOTCONN', 'ENOTBOUND']);

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
  /** Unsynced: requests delivered since the current view, and the transfer being assembled. */
  private kept: SmrRequest[] = [];
  private keptContact: boolean[] = [];
  private chunks: Uint8Array[] = [];
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
          this.answer(req.source, { type: hit.type, payload: hit.payload });
          continue;
        }
      }
      const msg = encodeSmrRequest({
        client: req.source,
        session: id?.session ?? 0,
        seq: id?.seq ?? 0,
        type: req.type,
        body: id?.body ?? req.payload,
      });
      await g.multicast(msg, { order: 'agreed' });
    }
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
    const b = ev.payload;
    if (b[0] === SMR_REQUEST_TAG) {
      const r = decodeSmrRequest(b);
      if (r === undefined) return;
      const contact = ev.sender.node === this.node;
      if (!this.synced) {
        this.kept.push(r);
        this.keptContact.push(contact);
        return;
      }
      await this.applyOne(r, b, contact);
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
    const first = this.firstView;
    this.firstView = false;
    this.view = v;
    const members = v.members.map((m) => m.node);
    if (!this.synced) {
      if (first && this.boot && members.length === 1 && members[0] === this.node) {
        // The first replica of a new group: the empty state is the group's state.
        this.syncedSet = new Set([this.node]);
        this.markSynced();
        return;
      }
      // A transfer, if any, is taken at this view: what was kept before it is in the snapshot.
      this.kept = [];
      this.keptContact = [];
      this.chunks = [];
      return;
    }
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
        await g.multicast(packr.pack(m), { order: 'agreed' });
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
    const contact = this.keptContact;
    this.kept = [];
    this.keptContact = [];
    this.markSynced();
    for (let i = 0; i < kept.length; i++) {
      const r = kept[i]!;
      await this.applyOne(r, encodeSmrRequest(r), contact[i]!);
    }
  }

  private markSynced(): void {
    this.synced = true;
    const ws = this.syncWaiters;
    this.syncWaiters = [];
    for (const w of ws) w();
  }

  /** Apply ordered request `r` (its message bytes `raw`) unless it is a duplicate; reply if the contact. */
  private async applyOne(r: SmrRequest, raw: Uint8Array, contact: boolean): Promise<void> {
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
    const got = (await dvk.service('smr.hooks', { sub }, opts)) as { boot?: unknown };
    sm = new StateMachine(dvk, hooks, got.boot === true);
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
