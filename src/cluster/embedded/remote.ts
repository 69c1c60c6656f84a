/**
 * Remote access to a store hosted by another node: a small request/response protocol over any message
 * channel (the daemon carries it on node links; tests use an in-memory pair).
 *
 * Messages are MessagePack arrays:
 *   request   [id > 0, method, args]           method: get | txn | grant | keepAlive | revoke | watch | unwatch
 *   response  [id, 0, result] | [id, 1, WireError]
 *   push      [0, watchId, 'events', events, revision] | [0, watchId, 'end', why, WireError?]
 *
 * The client re-establishes its watches after a reconnect from the revision after the last one it delivered,
 * and drops anything older, so a watch sees no gap and no duplicate across channel drops. Calls in flight
 * when the channel drops fail with ENOTCONN; for writes `details.ambiguous` is true (the host may have
 * applied them), so recipes use txn guards rather than blind retries.
 */
import { pack, unpack } from 'msgpackr';
import type { Logger } from 'pino';
import { DvsError, dvsError } from '../../protocol/errors.js';
import {
  type ClusterStore,
  type Compare,
  deleteViaTxn,
  type KeyValue,
  putViaTxn,
  type StoreCallOptions,
  type TxnOp,
  type TxnResult,
  type Watch,
  type WatchEnd,
  type WatchEvent,
} from '../store.js';

/** A bidirectional, message-preserving channel (one send = one message at the other end). */
export interface StoreChannel {
  send(bytes: Uint8Array): void;
  onMessage(cb: (bytes: Uint8Array) => void): void;
  /** Called once when the channel is gone (either side closed it, or the link died). */
  onClose(cb: (err?: Error) => void): void;
  /** Close from this side (optional: some carriers are closed by their owner). */
  close?(): void;
}

type Method = 'get' | 'txn' | 'grant' | 'keepAlive' | 'revoke' | 'watch' | 'unwatch';

// ------------------------------------------------------------------------------------------------- server

/** One client's session on the host: its watches live and die with it. */
export interface StoreSession {
  /** Handle one request; resolves with the response bytes (null for one-way requests). */
  handle(request: Uint8Array): Promise<Uint8Array | null>;
  /** The client is gone: cancel its watches. */
  close(): void;
}

/** Serves a ClusterStore (normally the EmbeddedStore of the hosting node) to remote clients. */
export class StoreServer {
  private readonly store: ClusterStore;
  private readonly log: Logger;
  private readonly sessions = new Set<StoreSession>();

  constructor(opts: { store: ClusterStore; logger: Logger }) {
    this.store = opts.store;
    this.log = opts.logger;
  }

  start(): void {}

  /** Close every session (their watches are cancelled). The store itself belongs to the caller. */
  stop(): void {
    for (const s of [...this.sessions]) s.close();
  }

  /** A session whose watch events and ends are pushed through `push`. */
  session(push: (bytes: Uint8Array) => void): StoreSession {
    const watches = new Map<number, Watch>();
    let closed = false;
    const session: StoreSession = {
      handle: async (request) => {
        let id = 0;
        try {
          const msg = unpack(request) as unknown;
          if (!Array.isArray(msg) || typeof msg[0] !== 'number' || typeof msg[1] !== 'string') {
            throw dvsError('EPROTO', 'malformed store request');
          }
          id = msg[0];
          const args = (Array.isArray(msg[2]) ? msg[2] : []) as unknown[];
          const method = msg[1] as Method;
          if (method === 'unwatch') {
            watches.get(args[0] as number)?.cancel();
            watches.delete(args[0] as number);
            return null;
          }
          if (method === 'watch') {
            const [wid, prefix, from] = args as [number, string, number];
            watches.get(wid)?.cancel();
            const w = this.store.watch(
              prefix,
              from,
              (events, revision) => {
                if (!closed) push(pack([0, wid, 'events', events, revision]));
              },
              (why, err) => {
                watches.delete(wid);
                if (!closed) push(pack([0, wid, 'end', why, err ? DvsError.from(err).toWire() : null]));
              },
            );
            watches.set(wid, w);
            return pack([id, 0, null]);
          }
          return pack([id, 0, await this.call(method, args)]);
        } catch (e) {
          const err = DvsError.from(e);
          if (err.code === 'EINTERNAL') this.log.warn({ err: e }, 'store request failed');
          return pack([id, 1, err.toWire()]);
        }
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.sessions.delete(session);
        for (const w of watches.values()) w.cancel();
        watches.clear();
      },
    };
    this.sessions.add(session);
    return session;
  }

  /** Wire a session to a channel: requests in, responses and pushes out, cleanup on close. */
  serve(channel: StoreChannel): StoreSession {
    const s = this.session((bytes) => channel.send(bytes));
    let open = true;
    channel.onMessage((bytes) => {
      s.handle(bytes).then(
        (res) => {
          if (res && open) channel.send(res);
        },
        (e: unknown) => this.log.error({ err: e }, 'store session failed'),
      );
    });
    channel.onClose(() => {
      open = false;
      s.close();
    });
    return s;
  }

  private call(method: Method, a: unknown[]): Promise<unknown> {
    const opts = (a.at(-1) ?? {}) as StoreCallOptions;
    const o: StoreCallOptions = typeof opts.timeout === 'number' ? { timeout: opts.timeout } : {};
    switch (method) {
      case 'get':
        return this.store.get(a[0] as string, { ...o, ...(a[1] as { prefix?: boolean; limit?: number }) });
      case 'txn':
        return this.store.txn(a[0] as Compare[], a[1] as TxnOp[], a[2] as TxnOp[], o);
      case 'grant':
        return this.store.grantLease(a[0] as number, o);
      case 'keepAlive':
        return this.store.keepAlive(a[0] as string, o);
      case 'revoke':
        return this.store.revokeLease(a[0] as string, o).then(() => null);
      default:
        return Promise.reject(dvsError('EPROTO', `unknown store method ${String(method)}`));
    }
  }
}

// ------------------------------------------------------------------------------------------------- client

/** Options of {@link RemoteStore}. */
export interface RemoteStoreOptions {
  /** Open a channel to the hosting node; called again after every drop until stop(). */
  connect: (signal: AbortSignal) => Promise<StoreChannel>;
  logger: Logger;
  /** Default call timeout in ms (default 5000). */
  timeout?: number;
  /** Reconnect backoff in ms (default 50 .. 2000, doubling). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
}

interface Call {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  write: boolean;
}

interface RemoteWatch {
  id: number;
  prefix: string;
  /** The next revision to deliver: re-establishment starts here. */
  next: number;
  done: boolean;
  onEvents: (events: WatchEvent[], revision: number) => void;
  onEnd: (why: WatchEnd, err?: Error) => void;
}

/** A ClusterStore reached over a {@link StoreChannel}. */
export class RemoteStore implements ClusterStore {
  private readonly opts: RemoteStoreOptions;
  private readonly log: Logger;
  private readonly timeout: number;
  private channel: StoreChannel | null = null;
  private nextId = 1;
  private readonly calls = new Map<number, Call>();
  private readonly watches = new Map<number, RemoteWatch>();
  private nextWatch = 1;
  private stopped = false;
  private readonly life = new AbortController();
  /** Resolved (and replaced) whenever a channel comes up. */
  private up!: Promise<void>;
  private signalUp!: () => void;

  constructor(opts: RemoteStoreOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.timeout = opts.timeout ?? 5000;
    this.resetUp();
  }

  async start(): Promise<void> {
    const ch = await this.opts.connect(
      AbortSignal.any([this.life.signal, AbortSignal.timeout(this.timeout)]),
    );
    this.attach(ch);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.life.abort();
    const err = dvsError('ENOTCONN', 'cluster store client stopped');
    for (const [id, c] of this.calls) {
      this.calls.delete(id);
      c.reject(err);
    }
    for (const w of [...this.watches.values()]) this.endWatch(w, 'closed');
    const ch = this.channel;
    this.channel = null;
    ch?.close?.();
  }

  get(
    key: string,
    opts: StoreCallOptions & { prefix?: boolean; limit?: number } = {},
  ): Promise<{ kvs: KeyValue[]; revision: number }> {
    const range: { prefix?: boolean; limit?: number } = {};
    if (opts.prefix !== undefined) range.prefix = opts.prefix;
    if (opts.limit !== undefined) range.limit = opts.limit;
    return this.call('get', [key, range], opts, false) as Promise<{ kvs: KeyValue[]; revision: number }>;
  }

  put(key: string, value: Uint8Array, opts: StoreCallOptions & { lease?: string } = {}): Promise<number> {
    return putViaTxn(this, key, value, opts);
  }

  delete(
    key: string,
    opts: StoreCallOptions & { prefix?: boolean } = {},
  ): Promise<{ deleted: number; revision: number }> {
    return deleteViaTxn(this, key, opts);
  }

  txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
    opts: StoreCallOptions = {},
  ): Promise<TxnResult> {
    const write = [...success, ...failure].some((op) => op.op !== 'get');
    return this.call('txn', [compare, success, failure], opts, write) as Promise<TxnResult>;
  }

  grantLease(ttlSeconds: number, opts: StoreCallOptions = {}): Promise<string> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      return Promise.reject(dvsError('EINVAL', `lease TTL must be an integer >= 1, got ${ttlSeconds}`));
    }
    return this.call('grant', [ttlSeconds], opts, true) as Promise<string>;
  }

  keepAlive(lease: string, opts: StoreCallOptions = {}): Promise<number> {
    return this.call('keepAlive', [lease], opts, false) as Promise<number>;
  }

  async revokeLease(lease: string, opts: StoreCallOptions = {}): Promise<void> {
    await this.call('revoke', [lease], opts, true);
  }

  watch(
    prefix: string,
    fromRevision: number,
    onEvents: (events: WatchEvent[], revision: number) => void,
    onEnd: (why: WatchEnd, err?: Error) => void,
  ): Watch {
    const w: RemoteWatch = { id: this.nextWatch++, prefix, next: fromRevision, done: false, onEvents, onEnd };
    if (this.stopped) {
      setImmediate(() => this.endWatch(w, 'closed'));
      return {
        cancel: () => {
          w.done = true;
        },
      };
    }
    this.watches.set(w.id, w);
    this.sendWatch(w);
    return {
      cancel: () => {
        if (w.done) return;
        w.done = true;
        this.watches.delete(w.id);
        this.sendRaw([this.nextId++, 'unwatch', [w.id]]);
      },
    };
  }

  // ---------------------------------------------------------------------------------------------- internals

  private resetUp(): void {
    this.up = new Promise<void>((r) => {
      this.signalUp = r;
    });
  }

  private attach(ch: StoreChannel): void {
    if (this.stopped) {
      ch.close?.();
      return;
    }
    this.channel = ch;
    ch.onMessage((bytes) => {
      if (this.channel === ch) this.onMessage(bytes);
    });
    ch.onClose((err) => {
      if (this.channel === ch) this.onDrop(err);
    });
    // Re-establish every watch from the revision after the last one delivered.
    for (const w of this.watches.values()) this.sendWatch(w);
    this.signalUp();
  }

  private onDrop(err?: Error): void {
    this.channel = null;
    this.resetUp();
    this.log.warn({ err, inFlight: this.calls.size }, 'cluster store channel lost');
    for (const [id, c] of this.calls) {
      this.calls.delete(id);
      c.reject(
        dvsError('ENOTCONN', 'cluster store channel lost with the call in flight', { ambiguous: c.write }),
      );
    }
    if (!this.stopped) void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    let delay = this.opts.reconnectMinMs ?? 50;
    const max = this.opts.reconnectMaxMs ?? 2000;
    while (!this.stopped) {
      try {
        const ch = await this.opts.connect(
          AbortSignal.any([this.life.signal, AbortSignal.timeout(this.timeout)]),
        );
        this.attach(ch);
        this.log.info('cluster store channel re-established');
        return;
      } catch (e) {
        if (this.stopped) return;
        this.log.debug({ err: e, delay }, 'cluster store reconnect failed');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(max, delay * 2);
      }
    }
  }

  private sendWatch(w: RemoteWatch): void {
    this.sendRaw([this.nextId++, 'watch', [w.id, w.prefix, w.next]]);
  }

  /** Send if connected; watch requests are re-sent on reconnect anyway, so dropping them here is fine. */
  private sendRaw(msg: unknown[]): void {
    try {
      this.channel?.send(pack(msg));
    } catch (e) {
      this.log.debug({ err: e }, 'cluster store send failed');
    }
  }

  private async call(
    method: Method,
    args: unknown[],
    opts: StoreCallOptions,
    write: boolean,
  ): Promise<unknown> {
    if (opts.signal?.aborted) throw dvsError('EABORTED');
    if (this.stopped) throw dvsError('ENOTCONN', 'cluster store client stopped');
    const timeout = opts.timeout ?? this.timeout;
    const deadline = Date.now() + timeout;
    return new Promise<unknown>((resolve, reject) => {
      let id = 0;
      let sent = false;
      let settled = false;
      const finish = (e: Error | null, v?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (id) this.calls.delete(id);
        if (e) reject(e);
        else resolve(v);
      };
      const timer = setTimeout(() => {
        finish(
          sent
            ? dvsError('ETIMEDOUT', `cluster store ${method} timed out after ${timeout} ms`, {
                ambiguous: write,
              })
            : dvsError('ENOTCONN', `cluster store unreachable for ${timeout} ms`, { ambiguous: false }),
        );
      }, timeout);
      const onAbort = () => finish(dvsError('EABORTED', undefined, { ambiguous: sent && write }));
      opts.signal?.addEventListener('abort', onAbort, { once: true });

      const send = () => {
        if (settled) return;
        if (this.stopped) return finish(dvsError('ENOTCONN', 'cluster store client stopped'));
        const ch = this.channel;
        if (!ch) {
          // Wait for the reconnect; the timer bounds the wait.
          void this.up.then(send);
          return;
        }
        id = this.nextId++;
        this.calls.set(id, { resolve: (v) => finish(null, v), reject: (e) => finish(e), write });
        sent = true;
        // The host gets what is left of the timeout, so it gives up about when we do.
        const left = Math.max(1, deadline - Date.now());
        const a = method === 'get' ? [args[0], args[1], { timeout: left }] : [...args, { timeout: left }];
        try {
          ch.send(pack([id, method, a]));
        } catch (e) {
          finish(
            dvsError('ENOTCONN', `cluster store send failed: ${(e as Error).message}`, { ambiguous: false }),
          );
        }
      };
      send();
    });
  }

  private onMessage(bytes: Uint8Array): void {
    let msg: unknown;
    try {
      msg = unpack(bytes);
    } catch (e) {
      this.log.warn({ err: e }, 'undecodable cluster store message');
      return;
    }
    if (!Array.isArray(msg)) return;
    if (msg[0] === 0) {
      this.onPush(msg);
      return;
    }
    const c = this.calls.get(msg[0] as number);
    if (!c) return; // timed out or aborted meanwhile
    if (msg[1] === 0) c.resolve(msg[2]);
    else c.reject(DvsError.fromWire(msg[2]));
  }

  private onPush(msg: unknown[]): void {
    const w = this.watches.get(msg[1] as number);
    if (!w || w.done) return;
    if (msg[2] === 'events') {
      const rev = msg[4] as number;
      // After a re-establishment the host may resend what we already have: drop it.
      if (rev < w.next) return;
      w.next = rev + 1;
      try {
        w.onEvents(msg[3] as WatchEvent[], rev);
      } catch (e) {
        this.log.warn({ err: e }, 'watch callback threw');
      }
    } else if (msg[2] === 'end') {
      const why = msg[3] as WatchEnd;
      const err = msg[4] ? DvsError.fromWire(msg[4]) : undefined;
      // The host's store closing is, from here, a lost connection.
      this.endWatch(w, why === 'compacted' ? 'compacted' : 'disconnected', err);
    }
  }

  private endWatch(w: RemoteWatch, why: WatchEnd, err?: Error): void {
    if (w.done) return;
    w.done = true;
    this.watches.delete(w.id);
    try {
      w.onEnd(why, err);
    } catch (e) {
      this.log.warn({ err: e }, 'watch onEnd threw');
    }
  }
}
