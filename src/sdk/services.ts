/**
 * Typed wrappers over the DVK service channel (src/node/svc-store.ts, src/node/svc-fd.ts): key/value, locks
 * with fencing tokens, leader election, consensus and failure detection. A process reaches them as
 * `dvk.kv`, `dvk.lock()`, `dvk.campaign()`, `dvk.observe()`, `dvk.propose()`, `dvk.watchNodes()`,
 * `dvk.watchEndpoint()`, always on its own DC; the CLI builds the same wrappers over an AdminClient with the
 * DC it names (`scope = {dc}`).
 *
 * Streams (kv watch, observe, watchNodes, watchEndpoint) are async iterators over EVENT frames: one service
 * call stays pending while the stream lives, and `return()` (a `break` out of `for await`), `close()` or the
 * signal cancels it. An iterator buffers what its consumer has not read yet: up to 10 000 kv events (then it
 * fails with ENOSPC rather than skip one), or the latest 1 000 states of the other streams (the oldest are
 * dropped: only the current state matters).
 *
 * @example
 * const l = await dvk.lock('db-migration', { timeout: 10_000 });
 * try {
 *   await dvk.kv.put('schema', bytes, { fence: { lock: l.name, token: l.token } });
 * } finally {
 *   await l.unlock();
 * }
 */
import { randomBytes } from 'node:crypto';
import type { EndpointEvent, NodeEvent } from '../node/svc-fd.js';
import { DvsError } from '../protocol/errors.js';
import type { Decision } from '../services/consensus.js';
import type { CasResult, KvEntry, KvEvent, KvFence } from '../services/kv.js';
import { AsyncQueue, type QueueOverflow } from '../services/queue.js';
import type { CallOptions } from './client.js';

export type { EndpointEvent, NodeEvent } from '../node/svc-fd.js';
// The results the daemon's services answer with are the services' own types, as they cross the channel.
export type { Decision } from '../services/consensus.js';
export type { CasResult, KvEntry, KvEvent, KvFence } from '../services/kv.js';

/** What the wrappers need of a connection (a Dvk, or an AdminClient for the CLI). */
export interface ServiceCaller {
  service(method: string, params: Record<string, unknown>, opts?: CallOptions): Promise<unknown>;
  subscribe(fn: (data: unknown) => void): number;
  unsubscribe(sub: number): void;
}

/** Extra params of every call: the CLI names the DC (`{dc}`); a process leaves it empty. */
export type ServiceScope = Record<string, unknown>;

/** Options of the kv writes. */
export interface KvWriteOptions extends CallOptions {
  fence?: KvFence;
}

/** A live stream: an async iterator, plus close(). */
export interface Stream<T> extends AsyncIterableIterator<T> {
  /** End the stream (the iteration finishes; the daemon stops it). */
  close(): void;
}

/** A kv watch: its events, in revision order, from `fromRevision` on. */
export interface KvWatch extends Stream<KvEvent> {
  /** The first revision this watch reports. */
  readonly fromRevision: number;
}

/** A held lock. */
export interface Lock {
  name: string;
  /** Fencing token: strictly increasing across the holders of this lock. */
  token: number;
  /** Who holds it, `ep<E>@node<N>`. */
  owner: string;
  /** Release it (ENOTOWNER if it was lost meanwhile, e.g. its lease expired while the node was cut off). */
  unlock(opts?: CallOptions): Promise<void>;
  /** Resolve if this token is still the holder's; ESTALE if not. */
  check(opts?: CallOptions): Promise<void>;
}

/** Leadership won by a campaign. */
export interface Leadership {
  name: string;
  /** Strictly increasing across the leaders of this election. */
  term: number;
  /** This candidate's id, `ep<E>@node<N>`. */
  leader: string;
  /** Step down (ENOTOWNER if leadership was already lost). */
  resign(opts?: CallOptions): Promise<void>;
  /** Resolve if this term is still the current one; ESTALE if not. */
  check(opts?: CallOptions): Promise<void>;
}

/** Who leads an election, as observe() reports it. */
export interface LeaderState {
  /** The leader's candidate id (`ep<E>@node<N>`), null when nobody campaigns. */
  leader: string | null;
  /** 0 when there is no leader. */
  term: number;
  /** The leader's endpoint and node, parsed from its id (null without a leader). */
  ep: number | null;
  node: number | null;
  revision: number;
}

/** Options of lock() and campaign(). */
export interface WaitOptions {
  /** ms to wait (ETIMEDOUT after; the caller leaves the queue); default: until the signal. */
  timeout?: number;
  signal?: AbortSignal;
}

/** Options of a stream. */
export interface StreamOptions {
  /** Ends the stream. */
  signal?: AbortSignal;
}

const enc = new TextEncoder();
/** Extra time the client waits beyond a timeout the daemon enforces, so the daemon's answer wins. */
const TIMEOUT_MARGIN_MS = 2_000;
const MAX_KV_BACKLOG = 10_000;
const MAX_STATE_BACKLOG = 1_000;

/** Bytes of a value given as bytes or text (UTF-8). */
export function toBytes(v: Uint8Array | string): Uint8Array {
  return typeof v === 'string' ? enc.encode(v) : v;
}

/** Key/value of one DC (revisioned, linearizable; docs/services.md). */
export class KvClient {
  constructor(
    private readonly c: ServiceCaller,
    private readonly scope: ServiceScope = {},
  ) {}

  /** Read `key` (ENOENT if absent). */
  async get(key: string, opts?: CallOptions): Promise<KvEntry> {
    return (await this.c.service('kv.get', { ...this.scope, key }, opts)) as KvEntry;
  }

  /** Write `key`; resolves with the write's revision. */
  async put(
    key: string,
    value: Uint8Array | string,
    opts: KvWriteOptions = {},
  ): Promise<{ revision: number }> {
    const { fence, ...call } = opts;
    return (await this.c.service(
      'kv.put',
      { ...this.scope, key, value: toBytes(value), ...(fence ? { fence } : {}) },
      call,
    )) as { revision: number };
  }

  /** Delete `key`; `deleted` says whether it existed. */
  async delete(key: string, opts: KvWriteOptions = {}): Promise<{ deleted: boolean; revision: number }> {
    const { fence, ...call } = opts;
    return (await this.c.service('kv.delete', { ...this.scope, key, ...(fence ? { fence } : {}) }, call)) as {
      deleted: boolean;
      revision: number;
    };
  }

  /**
   * Compare-and-swap: if `key` has revision `expect.revision` (0: does not exist) or value `expect.value`,
   * write `value` (null deletes). A failed compare is `{succeeded: false, current}`, not an error.
   */
  async cas(
    key: string,
    expect: { revision: number } | { value: Uint8Array | string },
    value: Uint8Array | string | null,
    opts: KvWriteOptions = {},
  ): Promise<CasResult> {
    const { fence, ...call } = opts;
    const e = 'revision' in expect ? { revision: expect.revision } : { value: toBytes(expect.value) };
    return (await this.c.service(
      'kv.cas',
      {
        ...this.scope,
        key,
        expect: e,
        value: value === null ? null : toBytes(value),
        ...(fence ? { fence } : {}),
      },
      call,
    )) as CasResult;
  }

  /** Keys under `prefix` ('' = all), sorted, with the revision of the read (watch from `revision + 1`). */
  async list(
    prefix = '',
    opts: CallOptions & { limit?: number } = {},
  ): Promise<{ entries: KvEntry[]; revision: number }> {
    const { limit, ...call } = opts;
    return (await this.c.service(
      'kv.list',
      { ...this.scope, prefix, ...(limit !== undefined ? { limit } : {}) },
      call,
    )) as { entries: KvEntry[]; revision: number };
  }

  /**
   * Watch every change under `prefix` from `fromRevision` (default: from now), in order, none skipped.
   * Resolves once the daemon watches, so a write made after it is seen. The iteration fails with ESTALE if
   * the store compacted past the watch's position (list and watch again), EUNAVAIL if the store was lost.
   */
  async watch(
    prefix = '',
    opts: StreamOptions & { fromRevision?: number; timeout?: number } = {},
  ): Promise<KvWatch> {
    const s = openStream<KvEvent>(
      this.c,
      'kv.watch',
      {
        ...this.scope,
        prefix,
        ...(opts.fromRevision !== undefined ? { fromRevision: opts.fromRevision } : {}),
      },
      (data, q) => {
        const d = data as { t?: string; revision?: number; events?: KvEvent[] };
        if (d.t === 'ready') return { ready: d.revision ?? 0 };
        for (const ev of d.events ?? []) q.push(ev);
        return undefined;
      },
      { limit: MAX_KV_BACKLOG, overflow: 'fail', ...(opts.signal ? { signal: opts.signal } : {}) },
    );
    const from = await s.ready(opts.timeout);
    return Object.assign(s.stream, { fromRevision: from });
  }
}

/**
 * Take lock `name` of the caller's DC, waiting in FIFO order. The lock is bound to the calling process: it
 * is released when the process exits (its session closes) or its node dies (the lease its daemon renews
 * expires). Rejects with ETIMEDOUT / EABORTED (the caller left the queue), EUNAVAIL (no cluster store).
 */
export async function lock(c: ServiceCaller, name: string, opts: WaitOptions = {}): Promise<Lock> {
  const r = (await acquire(c, 'lock', name, opts)) as { name: string; token: number; owner: string };
  return {
    name: r.name,
    token: r.token,
    owner: r.owner,
    unlock: (o?: CallOptions) => unlock(c, r.name, r.token, o),
    check: async (o?: CallOptions) => {
      await c.service('lock.check', { name: r.name, token: r.token }, o);
    },
  };
}

/** Release lock `name` held with `token` by this process (ENOTOWNER if it does not hold it). */
export async function unlock(
  c: ServiceCaller,
  name: string,
  token: number,
  opts?: CallOptions,
): Promise<void> {
  await c.service('lock.release', { name, token }, opts);
}

/**
 * Campaign in election `name`; resolves once this process leads. Leadership ends when the process resigns,
 * exits, or its node dies (then the next candidate leads with a higher term, within the detection time).
 */
export async function campaign(c: ServiceCaller, name: string, opts: WaitOptions = {}): Promise<Leadership> {
  const r = (await acquire(c, 'election', name, opts)) as { name: string; term: number; leader: string };
  return {
    name: r.name,
    term: r.term,
    leader: r.leader,
    resign: async (o?: CallOptions) => {
      await c.service('election.resign', { name: r.name, term: r.term }, o);
    },
    check: async (o?: CallOptions) => {
      await c.service('election.check', { name: r.name, term: r.term }, o);
    },
  };
}

/** Follow election `name`: the current leader at once, then every change of term. */
export function observe(
  c: ServiceCaller,
  name: string,
  opts: StreamOptions = {},
  scope: ServiceScope = {},
): Stream<LeaderState> {
  return openStream<LeaderState>(
    c,
    'election.observe',
    { ...scope, name },
    (data, q) => {
      const d = data as { leader: string | null; term: number; revision: number };
      const m = d.leader === null ? null : /^ep(\d+)@node(\d+)$/.exec(d.leader);
      q.push({
        leader: d.leader,
        term: d.term,
        revision: d.revision,
        ep: m ? Number(m[1]) : null,
        node: m ? Number(m[2]) : null,
      });
      return undefined;
    },
    { limit: MAX_STATE_BACKLOG, overflow: 'drop', ...(opts.signal ? { signal: opts.signal } : {}) },
  ).stream;
}

/** Propose `value` for consensus instance `instance`; resolves with the one value decided for it. */
export async function propose(
  c: ServiceCaller,
  instance: string,
  value: Uint8Array | string,
  opts?: CallOptions,
  scope: ServiceScope = {},
): Promise<Decision> {
  return (await c.service(
    'consensus.propose',
    { ...scope, instance, value: toBytes(value) },
    opts,
  )) as Decision;
}

/** Every node's state now, then each up/down as this node's links see it. */
export function watchNodes(c: ServiceCaller, opts: StreamOptions = {}): Stream<NodeEvent> {
  return stateStream<NodeEvent>(c, 'fd.watchNodes', {}, opts);
}

/** Endpoint `ep` of the caller's DC: its state now, then each change (up, down: unbound / node-down). */
export function watchEndpoint(
  c: ServiceCaller,
  ep: number,
  opts: StreamOptions = {},
  scope: ServiceScope = {},
): Stream<EndpointEvent> {
  return stateStream<EndpointEvent>(c, 'fd.watchEndpoint', { ...scope, ep }, opts);
}

// ------------------------------------------------------------------------------------------------ internals

/** lock.acquire / election.campaign, with `abandon` if we stop waiting while the daemon may still grant. */
async function acquire(
  c: ServiceCaller,
  kind: 'lock' | 'election',
  name: string,
  opts: WaitOptions,
): Promise<unknown> {
  const ref = randomBytes(8).toString('hex');
  const params: Record<string, unknown> = { name, ref };
  if (opts.timeout !== undefined) params.timeout = opts.timeout;
  const call: CallOptions = {};
  // The daemon enforces the timeout (and answers ETIMEDOUT after leaving the queue); ours is a backstop.
  if (opts.timeout !== undefined) call.timeout = opts.timeout + TIMEOUT_MARGIN_MS;
  if (opts.signal) call.signal = opts.signal;
  try {
    return await c.service(kind === 'lock' ? 'lock.acquire' : 'election.campaign', params, call);
  } catch (e) {
    if (e instanceof DvsError && (e.code === 'ETIMEDOUT' || e.code === 'EABORTED')) {
      // Granted in the instant we gave up? Then the daemon releases it at once.
      c.service(`${kind}.abandon`, { ref }, { timeout: 5_000 }).catch(() => {});
    }
    throw e;
  }
}

function stateStream<T>(
  c: ServiceCaller,
  method: string,
  params: Record<string, unknown>,
  opts: StreamOptions,
): Stream<T> {
  return openStream<T>(
    c,
    method,
    params,
    (data, q) => {
      q.push(data as T);
      return undefined;
    },
    { limit: MAX_STATE_BACKLOG, overflow: 'drop', ...(opts.signal ? { signal: opts.signal } : {}) },
  ).stream;
}

/**
 * Open a stream: allocate the subscription, start the call, route its events through `onData` into the
 * queue (`onData` returns `{ready}` for a "watching from here" marker). The call's end ends the stream.
 */
function openStream<T>(
  c: ServiceCaller,
  method: string,
  params: Record<string, unknown>,
  onData: (data: unknown, q: AsyncQueue<T>) => { ready: number } | undefined,
  opts: { limit: number; overflow: QueueOverflow; signal?: AbortSignal },
): { stream: Stream<T>; ready: (timeout?: number) => Promise<number> } {
  // Returning the iterator (a `break` out of `for await`) closes the stream.
  const q = new AsyncQueue<T>(opts.limit, () => close(), opts.overflow);
  const ac = new AbortController();
  let readyResolve!: (rev: number) => void;
  let readyReject!: (e: unknown) => void;
  const ready = new Promise<number>((res, rej) => {
    readyResolve = res;
    readyReject = rej;
  });
  ready.catch(() => {});
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    opts.signal?.removeEventListener('abort', close);
    c.unsubscribe(sub);
    ac.abort();
    q.end();
    readyReject(new DvsError('EABORTED', `${method} closed`));
  };
  const sub = c.subscribe((data) => {
    if (closed) return;
    const r = onData(data, q);
    if (r !== undefined) readyResolve(r.ready);
    // The consumer fell too far behind (overflow 'fail'): stop the daemon's side too.
    if (q.ended && !closed) {
      closed = true;
      c.unsubscribe(sub);
      ac.abort();
    }
  });
  if (opts.signal?.aborted) close();
  else opts.signal?.addEventListener('abort', close, { once: true });
  c.service(method, { ...params, sub }, { signal: ac.signal }).then(
    (res) => {
      if (closed) return;
      closed = true;
      c.unsubscribe(sub);
      const end = (res as { end?: string } | null)?.end ?? 'closed';
      const err =
        end === 'compacted'
          ? new DvsError('ESTALE', `${method}: the store compacted past this watch; list and watch again`, {
              end,
            })
          : new DvsError('EUNAVAIL', `${method}: stream ended (${end})`, { end });
      readyReject(err);
      q.end(err);
    },
    (e: unknown) => {
      if (closed) return;
      closed = true;
      c.unsubscribe(sub);
      readyReject(e);
      q.end(e);
    },
  );
  const stream: Stream<T> = {
    next: () => q.next(),
    return: () => q.return(),
    close,
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return {
    stream,
    ready: (timeout?: number) => {
      if (timeout === undefined) return ready;
      let t: NodeJS.Timeout | undefined;
      return Promise.race([
        ready,
        new Promise<number>((_, rej) => {
          t = setTimeout(() => {
            close();
            rej(new DvsError('ETIMEDOUT', `${method} did not start within ${timeout} ms`));
          }, timeout);
        }),
      ]).finally(() => clearTimeout(t));
    },
  };
}
