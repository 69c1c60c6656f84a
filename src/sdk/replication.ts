/**
 * Primary-backup replication in the SDK (docs/replication.md). `dvs run --replicas N --mode primary-backup`
 * starts the same program as the primary on one node and as backups on others; each calls
 * {@link onReplica}. The primary ships its state after every change ({@link Replica.replicate}, or the
 * {@link Replica.serve} loop, which also ships the reply cache); backups apply it; when the primary dies the
 * lowest live backup is promoted and its {@link Replica.whenPrimary} resolves.
 *
 * Exactly-once requests across a failover: the kernel replays a client's pending sendrec at the new primary,
 * including one the old primary had taken (and maybe served). So clients call {@link sendrecOnce}, which puts
 * a request id in front of the payload, and the server keeps, per client endpoint, the id and reply of its
 * last request — replicated with the state before the reply goes out. A replayed request finds its reply
 * there and gets it again without being processed twice. (A client has at most one sendrec outstanding, so
 * one entry per client suffices.)
 *
 * Request header (in front of the sendrec payload), little-endian:
 * ```
 *   0        4          8        12
 *   | magic  | session  | seq    | body ...      magic = 0x31525644 ('DVR1'), session: random per client
 *   +--------+----------+--------+-----          process (never 0), seq: 1, 2, ... per request
 * ```
 * Reply-cache entry (what the primary ships with the state, opaque to the daemons):
 * ```
 *   0          4        8        12
 *   | session  | seq    | type   | reply payload ...     type: the reply's message type (i32)
 * ```
 */
import type { Endpoint, NodeId, Received } from '../kernel/types.js';
import type { ReplicaGroupInfo } from '../protocol/admin.js';
import { DvsError } from '../protocol/errors.js';
import type { CallOptions, Dvk, OutMessage } from './client.js';

/** First word of a request carrying an id ('DVR1' in ASCII, read little-endian). */
export const REQUEST_MAGIC = 0x31525644;
/** Bytes {@link sendrecOnce} puts in front of a payload (the DC's maxPayload counts them). */
export const REQUEST_HEADER_BYTES = 12;

const EMPTY = new Uint8Array(0);

/** A request id: the client process's session and its request number. */
export interface RequestId {
  session: number;
  seq: number;
}

/** `body` prefixed with the header of request `id`. */
export function encodeRequest(id: RequestId, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(REQUEST_HEADER_BYTES + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, REQUEST_MAGIC, true);
  v.setUint32(4, id.session, true);
  v.setUint32(8, id.seq, true);
  out.set(body, REQUEST_HEADER_BYTES);
  return out;
}

/** The id and body of a request payload, or undefined if it carries no id (a plain sendrec). */
export function decodeRequest(payload: Uint8Array): (RequestId & { body: Uint8Array }) | undefined {
  if (payload.length < REQUEST_HEADER_BYTES) return undefined;
  const v = new DataView(payload.buffer, payload.byteOffset, payload.length);
  if (v.getUint32(0, true) !== REQUEST_MAGIC) return undefined;
  const session = v.getUint32(4, true);
  if (session === 0) return undefined;
  return { session, seq: v.getUint32(8, true), body: payload.subarray(REQUEST_HEADER_BYTES) };
}

/** A cached reply: the request it answered and the reply itself. */
export interface CachedReply extends RequestId {
  type: number;
  payload: Uint8Array;
}

export function encodeEntry(e: CachedReply): Uint8Array {
  const out = new Uint8Array(12 + e.payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, e.session, true);
  v.setUint32(4, e.seq, true);
  v.setInt32(8, e.type, true);
  out.set(e.payload, 12);
  return out;
}

export function decodeEntry(b: Uint8Array): CachedReply | undefined {
  if (b.length < 12) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  return {
    session: v.getUint32(0, true),
    seq: v.getUint32(4, true),
    type: v.getInt32(8, true),
    payload: b.slice(12),
  };
}

/** Per client process: its session and last request number. */
const sessions = new WeakMap<Dvk, RequestId>();

/**
 * sendrec with a request id, so that a replicated server processes it exactly once even when its primary
 * fails over while the request is in flight (the kernel replays it at the new primary). The reply is what
 * the server's {@link Replica.serve} handler answered. Against a server that does not use serve(), the
 * header reaches it as part of the payload.
 */
export function sendrecOnce(dvk: Dvk, dst: Endpoint, msg: OutMessage, opts?: CallOptions): Promise<Received> {
  let s = sessions.get(dvk);
  if (s === undefined) {
    const r = new Uint32Array(1);
    do crypto.getRandomValues(r);
    while (r[0] === 0);
    s = { session: r[0]!, seq: 0 };
    sessions.set(dvk, s);
  }
  s.seq = s.seq === 0xffffffff ? 1 : s.seq + 1;
  const payload = encodeRequest({ session: s.session, seq: s.seq }, msg.payload ?? EMPTY);
  return dvk.sendrec(dst, { type: msg.type, payload }, opts);
}

/** What a replica process declares (see {@link onReplica}). */
export interface ReplicaHooks {
  /** At a backup: the primary's latest state (as passed to replicate / returned by a serve handler). */
  apply(state: Uint8Array): void | Promise<void>;
  /** This backup became the primary (every state the old primary shipped was applied before). */
  promoted?(group: ReplicaGroupInfo): void | Promise<void>;
}

/** What a {@link Replica.serve} handler answers: the reply, and the state after the request (if changed). */
export interface ServeResult {
  reply: OutMessage;
  state?: Uint8Array;
}

/** Errors of a reply that only mean the client is gone (it gave up, exited, or its node died). */
const CLIENT_GONE = new Set(['ENOTWAITING', 'ESRCDIED', 'EDSTDIED', 'ENOTCONN', 'ENOTBOUND']);

/** This process's part in a replicated endpoint. Create it with {@link onReplica}. */
export class Replica {
  /** 'backup' until promoted. */
  role: 'primary' | 'backup' = 'backup';
  /** The group as last known here (primary and backups by node). */
  group: ReplicaGroupInfo = { mode: 'primary-backup', primary: -1, backups: [], epoch: 0 };
  /** Last reply per client endpoint (replicated with the state). */
  private readonly cache = new Map<Endpoint, CachedReply>();
  private seq = 0;
  /** Events pushed before the initial state was applied, then the apply chain. */
  private early: unknown[] | null = [];
  private chain: Promise<void> = Promise.resolve();
  private primaryWait: Promise<void>;
  private becamePrimary!: () => void;

  /** @internal use {@link onReplica}. */
  constructor(
    private readonly dvk: Dvk,
    private readonly hooks: ReplicaHooks,
  ) {
    this.primaryWait = new Promise((resolve) => {
      this.becamePrimary = resolve;
    });
  }

  /** Resolves once this process is the primary (at once for the primary, at promotion for a backup). */
  whenPrimary(): Promise<void> {
    return this.primaryWait;
  }

  /**
   * Ship `state` to every live backup; resolves once each applied it (a backup that cannot is dropped from
   * the group and will never be promoted). Primary only (ENOTOWNER otherwise).
   */
  async replicate(state: Uint8Array, opts?: CallOptions): Promise<void> {
    await this.ship(state, undefined, undefined, opts);
  }

  /**
   * Serve requests as the primary, exactly once per {@link sendrecOnce} request across failovers: waits to be
   * primary, then for each request runs `handler`, replicates its state and the reply cache entry, then
   * replies. A repeated request (replayed after a failover) is answered from the cache. Returns when
   * `opts.signal` aborts.
   */
  async serve(
    handler: (req: Received) => ServeResult | Promise<ServeResult>,
    opts: { signal?: AbortSignal } = {},
  ): Promise<void> {
    const signal = opts.signal;
    await this.whenPrimary();
    for (;;) {
      if (signal?.aborted) return;
      let req: Received;
      try {
        req = await this.dvk.receiveRequest(signal ? { signal } : undefined);
      } catch (e) {
        if (signal?.aborted) return;
        throw e;
      }
      const id = decodeRequest(req.payload);
      if (id !== undefined) {
        const hit = this.cache.get(req.source);
        if (hit !== undefined && hit.session === id.session && hit.seq === id.seq) {
          await this.answer(req.source, { type: hit.type, payload: hit.payload });
          continue;
        }
      }
      const out = await handler(id === undefined ? req : { ...req, payload: id.body });
      const payload = out.reply.payload ?? EMPTY;
      let entry: Uint8Array | undefined;
      if (id !== undefined) {
        const cached: CachedReply = { session: id.session, seq: id.seq, type: out.reply.type, payload };
        this.cache.set(req.source, cached);
        entry = encodeEntry(cached);
      }
      if (out.state !== undefined || entry !== undefined) {
        await this.ship(out.state, id === undefined ? undefined : req.source, entry);
      }
      await this.answer(req.source, { type: out.reply.type, payload });
    }
  }

  private async answer(dst: Endpoint, msg: OutMessage): Promise<void> {
    try {
      await this.dvk.reply(dst, msg);
    } catch (e) {
      if (!(e instanceof DvsError && CLIENT_GONE.has(e.code))) throw e;
    }
  }

  private async ship(
    state: Uint8Array | undefined,
    client: Endpoint | undefined,
    entry: Uint8Array | undefined,
    opts?: CallOptions,
  ): Promise<void> {
    if (this.role !== 'primary') throw new DvsError('ENOTOWNER', 'only the primary replicates');
    await this.dvk.service(
      'repl.replicate',
      {
        ...(state !== undefined ? { state } : {}),
        ...(client !== undefined && entry !== undefined ? { client, entry } : {}),
      },
      opts,
    );
  }

  /** @internal the daemon's answer to repl.hooks: role, group, and for a backup what to apply first. */
  async init(got: {
    role: 'primary' | 'backup';
    mode: 'primary-backup';
    primary: NodeId;
    backups: NodeId[];
    epoch: number;
    seq: number;
    state: Uint8Array | null;
    cache: [Endpoint, Uint8Array][];
  }): Promise<void> {
    this.group = { mode: got.mode, primary: got.primary, backups: got.backups, epoch: got.epoch };
    this.role = got.role;
    if (got.state !== null) await this.hooks.apply(got.state);
    for (const [client, bytes] of got.cache) {
      const e = decodeEntry(bytes);
      if (e !== undefined) this.cache.set(client, e);
    }
    this.seq = got.seq;
    if (this.role === 'primary') this.becamePrimary();
    const early = this.early ?? [];
    this.early = null;
    for (const d of early) this.onEvent(d);
  }

  /** @internal an event of the repl.hooks subscription. */
  onEvent(d: unknown): void {
    if (this.early !== null) {
      this.early.push(d);
      return;
    }
    // One at a time, in order: an apply may be async, and promotion must follow every apply before it.
    this.chain = this.chain.then(() => this.handle(d)).catch(() => undefined);
  }

  private async handle(d: unknown): Promise<void> {
    const ev = (d ?? {}) as {
      op?: string;
      seq?: number;
      state?: Uint8Array | null;
      client?: number;
      entry?: Uint8Array;
      cache?: [Endpoint, Uint8Array][];
    } & Partial<ReplicaGroupInfo>;
    if (ev.op === 'sync' && typeof ev.seq === 'number') {
      // A new primary's state and reply cache replace ours (updates of the old primary that it never
      // acknowledged are dropped with them), and its sequence goes on from here.
      if (ev.state instanceof Uint8Array) await this.hooks.apply(ev.state);
      this.cache.clear();
      for (const [client, bytes] of Array.isArray(ev.cache) ? ev.cache : []) {
        const e = bytes instanceof Uint8Array ? decodeEntry(bytes) : undefined;
        if (e !== undefined && typeof client === 'number') this.cache.set(client, e);
      }
      this.seq = ev.seq;
      await this.dvk.service('repl.applied', { seq: ev.seq }).catch(() => undefined);
    } else if (ev.op === 'apply' && typeof ev.seq === 'number') {
      if (ev.seq > this.seq) {
        if (ev.state instanceof Uint8Array) await this.hooks.apply(ev.state);
        if (typeof ev.client === 'number' && ev.entry instanceof Uint8Array) {
          const e = decodeEntry(ev.entry);
          if (e !== undefined) this.cache.set(ev.client, e);
        }
        this.seq = ev.seq;
      }
      await this.dvk.service('repl.applied', { seq: ev.seq }).catch(() => undefined);
    } else if (ev.op === 'promoted') {
      if (typeof ev.primary === 'number' && Array.isArray(ev.backups) && typeof ev.epoch === 'number') {
        this.group = { mode: 'primary-backup', primary: ev.primary, backups: ev.backups, epoch: ev.epoch };
      }
      this.role = 'primary';
      await this.hooks.promoted?.(this.group);
      this.becamePrimary();
    }
  }
}

/** Replicas of this process's endpoint, by process. */
const replicas = new WeakMap<Dvk, Replica>();

/**
 * Join the replication of this process's endpoint (started by `dvs run --replicas`): the primary gets a
 * Replica whose {@link Replica.whenPrimary} is resolved; a backup first applies the state shipped so far,
 * then every later one, until it is promoted. ENOENT if the endpoint is not replicated.
 *
 * @example
 * let count = 0;
 * const rep = await onReplica(dvk, { apply: (s) => { count = decode(s); } });
 * await rep.serve(() => { count++; return { reply: { type: 1, payload: encode(count) }, state: encode(count) }; });
 */
export async function onReplica(dvk: Dvk, hooks: ReplicaHooks, opts?: CallOptions): Promise<Replica> {
  const r = new Replica(dvk, hooks);
  const sub = dvk.subscribe((d) => r.onEvent(d));
  try {
    const got = (await dvk.service('repl.hooks', { sub }, opts)) as Parameters<Replica['init']>[0];
    await r.init(got);
  } catch (e) {
    dvk.unsubscribe(sub);
    throw e;
  }
  replicas.set(dvk, r);
  return r;
}

/** The Replica {@link onReplica} made for `dvk`, if any. */
export function replicaOf(dvk: Dvk): Replica | undefined {
  return replicas.get(dvk);
}
