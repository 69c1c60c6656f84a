/**
 * The process-side SDK: one connection to the node daemon per {@link connect}, bound to one endpoint.
 *
 * - Calls are matched to RESULT frames by callId. A timeout or an AbortSignal sends CANCEL and then waits
 *   for the daemon's answer: the kernel is authoritative, so a receive that raced with its timeout settles
 *   with the message (nothing is lost) and otherwise with ETIMEDOUT / EABORTED.
 * - Frames produced in one event-loop turn leave in one socket write.
 * - post() keeps a credit window per destination (size from the DC's postWindow); with credit it costs no
 *   promise allocation (a shared resolved promise is returned) and its bytes go straight into the batch.
 * - Receive-ahead: when a receive gets a post, the daemon sends along further POSTS already queued for us
 *   (up to {@link RECEIVE_AHEAD}; it stops at the first send, request or pending notification, which only a
 *   real receive may take); later receives are served from them without a round trip. Those posts count as
 *   consumed (their senders got credit back): a process that exits with some of them unread loses them, as
 *   it would lose posts still queued in the kernel. Notifications raised after a receive-ahead are delivered
 *   after the posts it already brought, and receiveRequest() does not wait for buffered posts to be read.
 * - A send() or sendrec() to a destination with posts still waiting for credit here waits until they are
 *   written, so per-pair FIFO holds across kinds.
 * - Grants stay in this process; the daemon reads and writes them through GRANT_READ / GRANT_WRITE frames,
 *   served here in the background.
 */
import type { Endpoint, GrantAccess, GrantRef, NodeId, Received } from '../kernel/types.js';
import { ANY, MAX_ENDPOINT } from '../kernel/types.js';
import type { ErrorCode } from '../protocol/errors.js';
import { DvsError } from '../protocol/errors.js';
import type { HelloOkFrame, ProcFrame, ResultFrame } from '../protocol/proc-frames.js';
import { FLAG_NOWAIT, PROC_OPS } from '../protocol/proc-frames.js';
import type { ConnectTimeoutOptions } from './conn.js';
import { ProcConnection } from './conn.js';
import { openSegment, type Segment } from './dsm.js';
import { type Group, type JoinOptions, joinGroup } from './groups.js';
import { onReplica, type Replica, type ReplicaHooks, replicaOf, sendrecOnce } from './replication.js';
import { RpcChannel } from './rpc.js';
import {
  campaign,
  type Decision,
  type EndpointEvent,
  KvClient,
  type LeaderState,
  type Leadership,
  type Lock,
  lock,
  type NodeEvent,
  observe,
  propose,
  type Stream,
  type StreamOptions,
  unlock,
  type WaitOptions,
  watchEndpoint,
  watchNodes,
} from './services.js';
import { onStateMachine, type StateMachine, type StateMachineHooks } from './smr.js';
import {
  isMarker,
  type RestoredState,
  SNAPSHOT_MARKER_TYPE,
  SnapshotAgent,
  type SnapshotHooks,
} from './snapshot.js';

/** Options of a blocking call. */
export interface CallOptions {
  /** ms; when it passes the call is cancelled (settles ETIMEDOUT unless the daemon completed it first). */
  timeout?: number;
  signal?: AbortSignal;
}

/** Options of {@link connect}. Missing values come from DVS_SOCKET, DVS_DC, DVS_ENDPOINT (set by `dvs run`). */
export interface ConnectOptions extends ConnectTimeoutOptions {
  socket?: string;
  /** DC id or name. */
  dc?: string | number;
  endpoint?: number;
  /** Name to register for the endpoint. */
  name?: string;
  /**
   * Bind as a backup of the primary on this node (primary-backup replication, docs/replication.md). Default:
   * DVS_REPLICA_PRIMARY when `dvs run --replicas` started this process as a backup (DVS_REPLICA_ROLE=backup)
   * and it binds the endpoint it was started for.
   */
  backupOf?: NodeId;
  /**
   * Bind as a `replica` (state-machine replication, docs/replication.md: the same endpoint on several nodes).
   * Default: DVS_REPLICA_ROLE=replica (set by `dvs run --mode state-machine`) for the endpoint it was started for.
   */
  replica?: boolean;
}

/** A message to send: `payload` defaults to empty. */
export interface OutMessage {
  type: number;
  payload?: Uint8Array;
}

/** A granted buffer (see {@link Dvk.grant}). */
export interface Grant {
  readonly id: number;
  readonly size: number;
  /** Withdraw the grant; vcopy through it fails with EFAULT afterwards. */
  revoke(opts?: CallOptions): Promise<void>;
}

/** Most messages a receive asks the daemon to send ahead. */
export const RECEIVE_AHEAD = 512;

const RESOLVED: Promise<void> = Promise.resolve();
const EMPTY = new Uint8Array(0);

interface Pending {
  resolve(r: ResultFrame): void;
  reject(e: DvsError): void;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  cancelled: boolean;
  /** Writes the frame that issues the call again after a migration freeze parked it. */
  write: (callId: number) => void;
  /** receive, receiveRequest or replyReceive: may be parked by a freeze. */
  recv: boolean;
  /** Cancelled by a migration freeze rather than by its caller: EABORTED parks it instead of failing it. */
  parked: boolean;
}

/** State moved by a live migration (see {@link Dvk.onMigrate}). */
export interface MigrationHooks {
  /** Called at the source once the process is quiescent (no call in progress): the state to move. */
  export(): Uint8Array | Promise<Uint8Array>;
  /** Called at the destination, before onMigrate resolves, with what export() returned at the source. */
  import?(state: Uint8Array): void | Promise<void>;
}

/** A migration freeze in progress at the source. */
interface Freeze {
  id: number;
  /** Calls made while frozen: run on thaw (never at the source if the migration commits). */
  held: (() => void)[];
  /** Receives parked by the freeze, issued again on thaw. */
  parked: { p: Pending; write: (callId: number) => void }[];
}

interface QueuedPost {
  type: number;
  payload: Uint8Array;
  resolve(): void;
  reject(e: DvsError): void;
}

interface PostWindow {
  credit: number;
  /** Posts waiting for credit, in order (head index avoids O(n) shifts). */
  queue: QueuedPost[];
  head: number;
  /** A failure to report to the next post() to this destination. */
  error: DvsError | undefined;
}

interface FlushWaiter {
  resolve(): void;
  reject(e: DvsError): void;
  cleanup(): void;
}

interface GrantEntry {
  buf: Uint8Array;
  read: boolean;
  write: boolean;
}

/** Resolve the defaults of {@link connect} from the options and the environment. */
function resolveTarget(opts: ConnectOptions): { socket: string; dc: string | number; endpoint: number } {
  const env = process.env;
  const socket = opts.socket ?? env.DVS_SOCKET;
  if (!socket) throw new DvsError('EINVAL', 'no daemon socket: pass { socket } or set DVS_SOCKET');
  let dc: string | number | undefined = opts.dc ?? env.DVS_DC;
  if (dc === undefined || dc === '') throw new DvsError('EINVAL', 'no DC: pass { dc } or set DVS_DC');
  if (typeof dc === 'string' && /^\d+$/.test(dc)) dc = Number(dc);
  let endpoint: number | undefined = opts.endpoint;
  if (endpoint === undefined && env.DVS_ENDPOINT !== undefined && /^\d+$/.test(env.DVS_ENDPOINT))
    endpoint = Number(env.DVS_ENDPOINT);
  if (endpoint === undefined)
    throw new DvsError('EINVAL', 'no endpoint: pass { endpoint } or set DVS_ENDPOINT');
  checkEndpoint(endpoint, 'endpoint');
  return { socket, dc, endpoint };
}

/** The primary's node when `dvs run --replicas` started this process as a backup of `endpoint`. */
function backupFromEnv(endpoint: number): NodeId | undefined {
  const env = process.env;
  if (env.DVS_REPLICA_ROLE !== 'backup' || env.DVS_ENDPOINT !== String(endpoint)) return undefined;
  const p = env.DVS_REPLICA_PRIMARY;
  return p !== undefined && /^\d+$/.test(p) ? Number(p) : undefined;
}

function checkEndpoint(ep: number, what: string): void {
  if (!Number.isInteger(ep) || ep < 0 || ep > MAX_ENDPOINT) throw new DvsError('EINVAL', `bad ${what} ${ep}`);
}

/**
 * Connect to the node daemon and bind an endpoint.
 *
 * @example
 * const dvk = await connect({ dc: 'web', endpoint: 70 });
 * const m = await dvk.receive(ANY, { timeout: 1000 });
 */
export async function connect(opts: ConnectOptions = {}): Promise<Dvk> {
  const target = resolveTarget(opts);
  const timeout = opts.timeout ?? 5000;
  const deadline = Date.now() + timeout;
  const conn = await ProcConnection.open(target.socket, {
    timeout,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  try {
    const early: ProcFrame[] = [];
    const ok = await hello(conn, target, opts, Math.max(1, deadline - Date.now()), early);
    const dvk = new Dvk(conn, ok);
    for (const f of early) dvk.onFrame(f);
    return dvk;
  } catch (e) {
    await conn.close();
    throw e;
  }
}

function hello(
  conn: ProcConnection,
  target: { dc: string | number; endpoint: number },
  opts: ConnectOptions,
  timeout: number,
  early: ProcFrame[],
): Promise<HelloOkFrame> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new DvsError('ETIMEDOUT', 'no answer to HELLO')), timeout);
    const onAbort = () => done(new DvsError('EABORTED', 'connect aborted'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const done = (err: DvsError | undefined, ok?: HelloOkFrame) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(ok!);
    };
    let bound = false;
    conn.bind({
      frame: (f) => {
        // Frames after HELLO_OK but before the Dvk takes over the connection are kept for it.
        if (bound) early.push(f);
        else if (f.op === 'helloOk' && f.callId === 1) {
          bound = true;
          done(undefined, f);
        } else if (f.op === 'result' && f.callId === 1 && f.code !== null)
          done(new DvsError(f.code, f.message));
        else throw new DvsError('EPROTO', `unexpected ${f.op} before HELLO_OK`);
      },
      closed: (err) => done(err),
    });
    const f: ProcFrame = {
      op: 'hello',
      callId: 1,
      dc: target.dc,
      endpoint: target.endpoint,
      pid: process.pid,
    };
    if (opts.name !== undefined) f.name = opts.name;
    const backupOf = opts.backupOf ?? backupFromEnv(target.endpoint);
    if (backupOf !== undefined) {
      f.kind = 'backup';
      f.primaryNode = backupOf;
    } else if (
      opts.replica ??
      (process.env.DVS_REPLICA_ROLE === 'replica' && process.env.DVS_ENDPOINT === String(target.endpoint))
    ) {
      f.kind = 'replica';
    }
    conn.out.frame(f);
    conn.flushNow();
  });
}

/** A process bound to an endpoint of a DC. Create it with {@link connect}. */
export class Dvk {
  /** DC id, DC name, endpoint and node we are bound at. */
  readonly dc: number;
  readonly dcName: string;
  readonly endpoint: Endpoint;
  readonly node: NodeId;
  /** The DC's largest message payload, bytes. */
  readonly maxPayload: number;
  /** The DC's post() window per destination. */
  readonly postWindow: number;

  private readonly conn: ProcConnection;
  /** Service calls (kv, locks, groups...) and their pushed events. */
  private readonly rpc: RpcChannel;
  /** Set while a migration freezes this process (see onMigrate). */
  private freeze: Freeze | undefined;
  /** Resolves when the freeze reaches quiescence (no call of the user in progress). */
  private quiet: (() => void) | undefined;
  /** Clients whose request this process took and has not answered yet (a freeze waits for the replies). */
  private readonly owed = new Set<Endpoint>();
  private readonly calls = new Map<number, Pending>();
  private nextCallId = 2;
  private closedErr: DvsError | undefined;
  /** Receive-ahead messages not yet handed out (head index into the array). */
  private ahead: Received[] = [];
  private aheadHead = 0;
  private readonly windows = new Map<Endpoint, PostWindow>();
  /** Posts written or queued and not yet credited back. */
  private outstanding = 0;
  /** First post failure since the last flush(). */
  private postError: DvsError | undefined;
  private flushWaiters: FlushWaiter[] = [];
  private readonly grants = new Map<number, GrantEntry>();
  private nextGrant = 1;
  private kvClient: KvClient | undefined;
  /** Set by onSnapshot: records this process's part of DC snapshots (src/sdk/snapshot.ts). */
  private snapAgent: SnapshotAgent | undefined;

  /** @internal use {@link connect}. */
  constructor(conn: ProcConnection, ok: HelloOkFrame) {
    this.conn = conn;
    this.dc = ok.dc;
    this.dcName = ok.dcName;
    this.endpoint = ok.endpoint;
    this.node = ok.node;
    this.maxPayload = ok.maxPayload;
    this.postWindow = ok.postWindow;
    this.rpc = new RpcChannel(conn);
    conn.bind({ frame: (f) => this.onFrame(f), closed: (err) => this.onClosed(err) });
  }

  /** Rendezvous send: resolves when `dst` has taken the message. */
  async send(dst: Endpoint, msg: OutMessage, opts?: CallOptions): Promise<void> {
    const payload = this.checkMsg(dst, msg);
    await this.postsWritten(dst);
    await this.call((id) => this.conn.out.raw(PROC_OPS.send, 0, 0, id, dst, msg.type, 0, payload), opts);
  }

  /**
   * Next message from `src` (or anyone). Pending notifications come first. `timeout: 0` does not wait
   * (ETIMEDOUT when nothing is there).
   */
  async receive(src: Endpoint = ANY, opts?: CallOptions): Promise<Received> {
    if (src !== ANY) checkEndpoint(src, 'source');
    const t0 = this.snapAgent === undefined ? 0 : Date.now();
    const buffered = this.takeAhead(src, false);
    if (buffered !== undefined) {
      if (this.snapAgent === undefined && buffered.type !== SNAPSHOT_MARKER_TYPE) return buffered;
      return this.snapshotSeen(buffered, src, opts, t0);
    }
    const nowait = opts?.timeout === 0;
    const r = await this.call(
      (id) =>
        this.conn.out.raw(PROC_OPS.receive, nowait ? FLAG_NOWAIT : 0, 0, id, src, 0, RECEIVE_AHEAD, EMPTY),
      nowait ? { ...opts, timeout: undefined } : opts,
      !nowait,
    );
    const m = this.took(msgOf(r));
    if (this.snapAgent === undefined && m.type !== SNAPSHOT_MARKER_TYPE) return m;
    return this.snapshotSeen(m, src, opts, t0);
  }

  /**
   * Slow path of receive() (snapshot hooks declared, or a marker): the message passes the snapshot agent;
   * a marker is consumed and the receive goes on with what is left of its timeout.
   */
  private snapshotSeen(
    m: Received,
    src: Endpoint,
    opts: CallOptions | undefined,
    t0: number,
  ): Promise<Received> | Received {
    const consumed = this.snapAgent !== undefined ? this.snapAgent.filter(m) : isMarker(m);
    if (!consumed) return m;
    const timeout = opts?.timeout;
    if (timeout === undefined || timeout === 0) return this.receive(src, opts);
    return this.receive(src, { ...opts, timeout: Math.max(0, timeout - (Date.now() - (t0 || Date.now()))) });
  }

  /** Send a request and wait for the reply from `dst`. */
  async sendrec(dst: Endpoint, msg: OutMessage, opts?: CallOptions): Promise<Received> {
    const payload = this.checkMsg(dst, msg);
    await this.postsWritten(dst);
    const m = msgOf(
      await this.call((id) => this.conn.out.raw(PROC_OPS.sendrec, 0, 0, id, dst, msg.type, 0, payload), opts),
    );
    this.snapAgent?.filter(m);
    return m;
  }

  /** Next request (a message sent with sendrec) from anyone. */
  async receiveRequest(opts?: CallOptions): Promise<Received> {
    const buffered = this.takeAhead(ANY, true);
    if (buffered !== undefined) {
      this.snapAgent?.filter(buffered);
      return buffered;
    }
    const nowait = opts?.timeout === 0;
    const r = await this.call(
      (id) => this.conn.out.raw(PROC_OPS.receiveRequest, nowait ? FLAG_NOWAIT : 0, 0, id, 0, 0, 0, EMPTY),
      nowait ? { ...opts, timeout: undefined } : opts,
      !nowait,
    );
    const m = this.took(msgOf(r));
    this.snapAgent?.filter(m);
    return m;
  }

  /**
   * Reply to `dst`, then wait for the next request, in one round trip to the daemon (seL4's ReplyRecv): the
   * fast server loop. Rejects with the reply's error (ENOTWAITING, EMSGSIZE...) without receiving anything.
   * A reply to a client on another node is not acknowledged here: if that node dies before it arrives, the
   * loss is not reported to the server (the client gets ENOTCONN).
   *
   * @example
   * let req = await dvk.receiveRequest();
   * for (;;) req = await dvk.replyReceive(req.source, handle(req));
   */
  async replyReceive(dst: Endpoint, msg: OutMessage, opts?: CallOptions): Promise<Received> {
    const payload = this.checkMsg(dst, msg);
    if (this.freeze !== undefined) {
      // Frozen: the reply must go (the client waits for it, and a migration never splits a sendrec); the
      // receive waits for the thaw like any new call.
      await this.reply(dst, msg, opts);
      return this.receiveRequest(opts);
    }
    const nowait = opts?.timeout === 0;
    // The reply half goes out at once: the client is no longer owed one, even while the receive half waits.
    this.owed.delete(dst);
    const r = await this.call(
      (id) =>
        this.conn.out.raw(PROC_OPS.replyReceive, nowait ? FLAG_NOWAIT : 0, 0, id, dst, msg.type, 0, payload),
      nowait ? { ...opts, timeout: undefined } : opts,
      !nowait,
      false,
      // Parked by a freeze, only the receive half is issued again (the reply went out).
      (id) => this.conn.out.raw(PROC_OPS.receiveRequest, 0, 0, id, 0, 0, 0, EMPTY),
    );
    const m = this.took(msgOf(r));
    this.snapAgent?.filter(m);
    return m;
  }

  /** Reply to a client waiting in sendrec (ENOTWAITING if it is not waiting for us). */
  async reply(dst: Endpoint, msg: OutMessage, opts?: CallOptions): Promise<void> {
    const payload = this.checkMsg(dst, msg);
    await this.call(
      (id) => this.conn.out.raw(PROC_OPS.reply, 0, 0, id, dst, msg.type, 0, payload),
      opts,
      false,
      true,
    );
    this.owed.delete(dst);
  }

  /** Raise a notification at `dst` (never blocks; coalesced per source). */
  async notify(dst: Endpoint, opts?: CallOptions): Promise<void> {
    checkEndpoint(dst, 'destination');
    await this.call((id) => this.conn.out.raw(PROC_OPS.notify, 0, 0, id, dst, 0, 0, EMPTY), opts);
  }

  /** Wake `dst` out of receive(ANY) with EWOKENUP. */
  async wakeup(dst: Endpoint, opts?: CallOptions): Promise<void> {
    checkEndpoint(dst, 'destination');
    await this.call((id) => this.conn.out.raw(PROC_OPS.wakeup, 0, 0, id, dst, 0, 0, EMPTY), opts);
  }

  /**
   * Asynchronous send. Resolves at once while the destination's window has credit (the payload is copied),
   * else when credit comes back. Rejects with the error of an earlier failed post to `dst` (reported once).
   */
  post(dst: Endpoint, msg: OutMessage): Promise<void> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    if (this.freeze !== undefined) {
      const f = this.freeze;
      return new Promise((resolve, reject) => {
        f.held.push(() => this.post(dst, msg).then(resolve, reject));
        this.quiesced();
      });
    }
    let w = this.windows.get(dst);
    if (w === undefined) {
      checkEndpoint(dst, 'destination');
      w = { credit: this.postWindow, queue: [], head: 0, error: undefined };
      this.windows.set(dst, w);
    }
    if (w.error !== undefined) {
      const e = w.error;
      w.error = undefined;
      return Promise.reject(e);
    }
    const type = msg.type;
    const payload = msg.payload ?? EMPTY;
    if (type !== (type | 0))
      return Promise.reject(new DvsError('EINVAL', `message type ${type} is not an int32`));
    if (payload.length > this.maxPayload)
      return Promise.reject(
        new DvsError('EMSGSIZE', `payload of ${payload.length} bytes > ${this.maxPayload}`),
      );
    this.outstanding++;
    if (w.credit > 0 && w.head === w.queue.length) {
      w.credit--;
      this.conn.out.post(dst, type, payload);
      this.conn.schedule();
      // A snapshot waiting for this process's next SDK call records its state now: this post counts as sent
      // before the cut (it leaves ahead of the markers).
      if (this.snapAgent?.pending) this.snapAgent.fire();
      return RESOLVED;
    }
    const queued = new Promise<void>((resolve, reject) => {
      w.queue.push({ type, payload: payload.slice(), resolve, reject });
    });
    if (this.snapAgent?.pending) this.snapAgent.fire();
    return queued;
  }

  /**
   * Per-pair FIFO: a send or sendrec to `dst` must not overtake posts to `dst` still waiting for credit in
   * this process. Resolves once the last of them is written (or failed); at once when none waits.
   */
  private postsWritten(dst: Endpoint): Promise<void> | undefined {
    const w = this.windows.get(dst);
    if (w === undefined || w.head === w.queue.length) return undefined;
    const last = w.queue[w.queue.length - 1]!;
    return new Promise((resolve) => {
      const { resolve: ok, reject: ko } = last;
      last.resolve = () => {
        ok();
        resolve();
      };
      last.reject = (e) => {
        ko(e);
        resolve();
      };
    });
  }

  /** Resolves when every post so far was consumed (all credits back); rejects with the first post failure. */
  flush(opts?: CallOptions): Promise<void> {
    if (this.postError !== undefined) {
      const e = this.postError;
      this.postError = undefined;
      return Promise.reject(e);
    }
    if (this.closedErr) return Promise.reject(this.closedErr);
    if (this.outstanding === 0) return RESOLVED;
    if (opts?.signal?.aborted) return Promise.reject(new DvsError('EABORTED', 'flush aborted'));
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => settle(new DvsError('EABORTED', 'flush aborted'));
      const waiter: FlushWaiter = {
        resolve,
        reject,
        cleanup: () => {
          if (timer) clearTimeout(timer);
          opts?.signal?.removeEventListener('abort', onAbort);
        },
      };
      const settle = (e: DvsError) => {
        const i = this.flushWaiters.indexOf(waiter);
        if (i < 0) return;
        this.flushWaiters.splice(i, 1);
        waiter.cleanup();
        reject(e);
      };
      if (opts?.timeout !== undefined)
        timer = setTimeout(() => settle(new DvsError('ETIMEDOUT', 'flush timed out')), opts.timeout);
      opts?.signal?.addEventListener('abort', onAbort, { once: true });
      this.flushWaiters.push(waiter);
    });
  }

  /** Grant `buf` for vcopy with the given access. The buffer stays here; the daemon reads/writes it on demand. */
  async grant(buf: Uint8Array, access: GrantAccess, opts?: CallOptions): Promise<Grant> {
    if (access !== 'r' && access !== 'w' && access !== 'rw')
      throw new DvsError('EINVAL', `bad access ${access}`);
    const id = this.nextGrant++;
    const read = access !== 'w';
    const write = access !== 'r';
    this.grants.set(id, { buf, read, write });
    try {
      const flags = (read ? 1 : 0) | (write ? 2 : 0);
      await this.call(
        (cid) => this.conn.out.raw(PROC_OPS.grant, flags, 0, cid, buf.length, 0, id, EMPTY),
        opts,
      );
    } catch (e) {
      this.grants.delete(id);
      throw e;
    }
    return {
      id,
      size: buf.length,
      revoke: async (ropts?: CallOptions) => {
        await this.call((cid) => this.conn.out.raw(PROC_OPS.revoke, 0, 0, cid, 0, 0, id, EMPTY), ropts);
        this.grants.delete(id);
      },
    };
  }

  /** Copy `bytes` from one granted region to another (either may be ours, or a third party's if privileged). */
  async vcopy(src: GrantRef, dst: GrantRef, bytes: number, opts?: CallOptions): Promise<void> {
    checkEndpoint(src.ep, 'vcopy source endpoint');
    checkEndpoint(dst.ep, 'vcopy destination endpoint');
    await this.call((callId) => this.conn.out.frame({ op: 'vcopy', callId, src, dst, bytes }), opts);
  }

  /**
   * Close the connection; the endpoint is unbound. Calls still pending are cancelled first and settle with the
   * daemon's answer: a receive that had already taken a message resolves with it (its sender was told it was
   * delivered), the others reject with EABORTED. After `timeout` ms (default 2000) the socket closes anyway and
   * whatever is still pending rejects with ENOTCONN. Posts received ahead and not read are dropped.
   */
  async close(opts: { timeout?: number } = {}): Promise<void> {
    // Cancel what is still pending and let the daemon answer first: a receive that had already taken a message
    // (its sender was told so) resolves with it instead of losing it with the socket; the rest settle EABORTED.
    if (this.closedErr === undefined && this.calls.size > 0) {
      const settled: Promise<void>[] = [];
      for (const p of this.calls.values()) {
        settled.push(
          new Promise<void>((done) => {
            const { resolve, reject } = p;
            p.resolve = (r) => {
              resolve(r);
              done();
            };
            p.reject = (e) => {
              reject(e);
              done();
            };
          }),
        );
      }
      for (const id of [...this.calls.keys()]) this.cancel(id, 'EABORTED');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(settled),
        new Promise<void>((r) => {
          timer = setTimeout(r, opts.timeout ?? 2000);
        }),
      ]);
      clearTimeout(timer);
    }
    await this.conn.close();
  }

  // ------------------------------------------------------------------------------------------------------

  private checkMsg(dst: Endpoint, msg: OutMessage): Uint8Array {
    checkEndpoint(dst, 'destination');
    if (msg.type !== (msg.type | 0)) throw new DvsError('EINVAL', `message type ${msg.type} is not an int32`);
    const payload = msg.payload ?? EMPTY;
    if (payload.length > this.maxPayload)
      throw new DvsError('EMSGSIZE', `payload of ${payload.length} bytes > ${this.maxPayload}`, {
        limit: this.maxPayload,
      });
    return payload;
  }

  /** Issue a call: `write(callId)` appends its frame. Settles with the daemon's RESULT. */
  private call(
    write: (callId: number) => void,
    opts: CallOptions | undefined,
    recv = false,
    passFreeze = false,
    reissue: (callId: number) => void = write,
  ): Promise<ResultFrame> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    if (this.freeze !== undefined && !passFreeze) {
      // Frozen for a migration: the call runs after a thaw (an aborted migration), never at the source after
      // a commit (the process is stopped; its successor at the destination carries on).
      const f = this.freeze;
      return new Promise((resolve, reject) => {
        f.held.push(() => this.call(write, opts, recv).then(resolve, reject));
        this.quiesced();
      });
    }
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(new DvsError('EABORTED', 'call aborted before it started'));
    const timeout = opts?.timeout;
    if (timeout !== undefined && (!Number.isFinite(timeout) || timeout < 0))
      return Promise.reject(new DvsError('EINVAL', `bad timeout ${timeout}`));
    const callId = this.allocCallId();
    write(callId);
    // A snapshot waiting for this process's next SDK call records its state now, after the call's frame:
    // a message the application hands over counts as sent before the cut (it leaves ahead of the markers).
    if (this.snapAgent?.pending) this.snapAgent.fire();
    this.conn.schedule();
    return new Promise((resolve, reject) => {
      const p: Pending = {
        resolve,
        reject,
        timer: undefined,
        signal,
        onAbort: undefined,
        cancelled: false,
        write: reissue,
        recv,
        parked: false,
      };
      if (timeout !== undefined) p.timer = setTimeout(() => this.cancel(callId, 'ETIMEDOUT'), timeout);
      if (signal) {
        p.onAbort = () => this.cancel(callId, 'EABORTED');
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.calls.set(callId, p);
    });
  }

  private allocCallId(): number {
    for (;;) {
      const id = this.nextCallId;
      this.nextCallId = id >= 0xffffffff ? 2 : id + 1;
      if (!this.calls.has(id)) return id;
    }
  }

  /** Ask the daemon to cancel; the call settles when its RESULT arrives (the kernel decides the outcome). */
  private cancel(callId: number, reason: 'ETIMEDOUT' | 'EABORTED'): void {
    const p = this.calls.get(callId);
    if (p === undefined || p.cancelled || this.closedErr) return;
    p.cancelled = true;
    this.conn.out.frame({ op: 'cancel', callId, reason });
    this.conn.schedule();
  }

  private settle(callId: number): Pending | undefined {
    const p = this.calls.get(callId);
    if (p === undefined) return undefined;
    this.calls.delete(callId);
    if (p.timer) clearTimeout(p.timer);
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    return p;
  }

  /**
   * Call a DVK service of this node (src/node/services.ts: `kv.get`, `lock.acquire`, `group.join`, ...). The
   * service acts on this process's DC only. Prefer the typed wrappers built on it.
   */
  service(method: string, params: Record<string, unknown> = {}, opts?: CallOptions): Promise<unknown> {
    return this.rpc.call(method, params, opts);
  }

  /** Allocate a subscription id for a service that pushes events (pass it as `params.sub`). */
  subscribe(fn: (data: unknown) => void): number {
    return this.rpc.subscribe(fn);
  }

  /** Stop routing events of subscription `sub` (tell the service separately). */
  unsubscribe(sub: number): void {
    this.rpc.unsubscribe(sub);
  }

  /**
   * Distributed shared memory (src/sdk/dsm.ts, docs/dsm.md): segment `name` of this DC, created zeroed with
   * `bytes` bytes by the first caller (omit `bytes` to open an existing one). No cluster store needed.
   */
  shm(name: string, bytes?: number, opts?: CallOptions): Promise<Segment> {
    return openSegment(this, name, bytes, opts);
  }

  // DVK services of this process's DC (src/sdk/services.ts; they need a cluster store, else EUNAVAIL).

  /** This DC's key/value space: get, put, delete, cas, list, watch (revisioned, linearizable). */
  get kv(): KvClient {
    this.kvClient ??= new KvClient(this);
    return this.kvClient;
  }

  /** Take lock `name` (FIFO, fencing token); released on unlock, when this process exits or its node dies. */
  lock(name: string, opts?: WaitOptions): Promise<Lock> {
    return lock(this, name, opts);
  }

  /** Release lock `name` held with `token` (ENOTOWNER if this process does not hold it). */
  unlock(name: string, token: number, opts?: CallOptions): Promise<void> {
    return unlock(this, name, token, opts);
  }

  /** Campaign in election `name`; resolves once this process leads (with its term). */
  campaign(name: string, opts?: WaitOptions): Promise<Leadership> {
    return campaign(this, name, opts);
  }

  /** Follow election `name`: {leader, term} now and at every change. */
  observe(name: string, opts?: StreamOptions): Stream<LeaderState> {
    return observe(this, name, opts);
  }

  /** Propose `value` for consensus instance `instance`; resolves with the value decided. */
  propose(instance: string, value: Uint8Array | string, opts?: CallOptions): Promise<Decision> {
    return propose(this, instance, value, opts);
  }

  /** Up/down of every node as this node's links see them (detection time: the daemon's --dead-after-ms). */
  watchNodes(opts?: StreamOptions): Stream<NodeEvent> {
    return watchNodes(this, opts);
  }

  /** Up/down of endpoint `ep` of this DC (unbound, or its node down). */
  watchEndpoint(ep: Endpoint, opts?: StreamOptions): Stream<EndpointEvent> {
    return watchEndpoint(this, ep, opts);
  }

  /**
   * Join group `name` of this DC (src/sdk/groups.ts): resolves at the first view; multicast with
   * `g.multicast(msg, {order})`, read views and messages with `for await (const ev of g)`.
   */
  join(name: string, opts?: JoinOptions): Promise<Group> {
    return joinGroup(this, name, opts);
  }

  /**
   * Take part in the primary-backup replication of this endpoint (`dvs run --replicas N`; src/sdk/replication.ts,
   * docs/replication.md): a backup gets every state the primary ships through `apply`, then `promoted` when
   * it takes over. Serve with `(await dvk.onReplica(hooks)).serve(handler)`.
   */
  onReplica(hooks: ReplicaHooks, opts?: CallOptions): Promise<Replica> {
    return onReplica(this, hooks, opts);
  }

  /** Primary: ship `state` to the backups; resolves when every live backup applied it (call onReplica first). */
  replicate(state: Uint8Array, opts?: CallOptions): Promise<void> {
    const r = replicaOf(this);
    if (r === undefined) return Promise.reject(new DvsError('EINVAL', 'call onReplica() before replicate()'));
    return r.replicate(state, opts);
  }

  /**
   * Take part in the state-machine replication of this endpoint (`dvs run --replicas N --mode state-machine`;
   * src/sdk/smr.ts): every replica applies every request in the same total order. Then
   * `(await dvk.onStateMachine({apply, snapshot, restore})).serve()`.
   */
  onStateMachine(hooks: StateMachineHooks, opts?: CallOptions): Promise<StateMachine> {
    return onStateMachine(this, hooks, opts);
  }

  /** sendrec with a request id: served exactly once by a replicated server even across its failover. */
  sendrecOnce(dst: Endpoint, msg: OutMessage, opts?: CallOptions): Promise<Received> {
    return sendrecOnce(this, dst, msg, opts);
  }

  /**
   * Declare how this process's state moves when its endpoint migrates (`dvs migrate`). At the source the
   * daemon freezes the process: new calls (and posts) wait, a receive in progress is parked, replies still
   * go out; once the process waits on the SDK with nothing in progress and no request unanswered, `export()`
   * runs and its bytes (with any posts received ahead and not read yet) go to the destination. There the
   * same program is started; its onMigrate runs `import()` before it resolves with `{migrated: true}`. If the
   * migration is rolled back, the source process simply continues. A process that never calls onMigrate is
   * restarted at the destination without state.
   */
  async onMigrate(hooks: MigrationHooks, opts?: CallOptions): Promise<{ migrated: boolean }> {
    const sub = this.rpc.subscribe((d) => void this.onMigrateCommand(d, hooks));
    const r = (await this.service('migrate.hooks', { sub }, opts)) as { incoming?: boolean } | null;
    if (r?.incoming !== true) return { migrated: false };
    const got = (await this.service('migrate.import', {}, opts)) as {
      state: Uint8Array | null;
      ahead: Received[];
    };
    if (got.state !== null && hooks.import) await hooks.import(got.state);
    // Posts the source had received ahead and not read come before anything received here.
    if (got.ahead.length > 0) {
      this.ahead = [...got.ahead, ...this.ahead.slice(this.aheadHead)];
      this.aheadHead = 0;
    }
    return { migrated: true };
  }

  /**
   * Take part in snapshots of this DC (`dvs snapshot create`; docs/snapshots.md). When a snapshot runs, the
   * SDK calls `save()` while the application waits in an SDK call (or right after it hands over its next
   * message or starts its next receive: update the state before sending, a message handed over counts as
   * sent before the cut), and records the messages the application receives afterwards from each other participant until that
   * participant's marker arrives: the messages in flight at the cut. Markers are consumed by the SDK. The
   * process must keep receiving (`receive(ANY)`) for a snapshot to complete; one that does not makes it fail
   * with ETIMEDOUT. A process without hooks is recorded as stateless (restarted fresh by a restore).
   *
   * In a process started again from a snapshot (`dvs snapshot restore|fork`) the daemon holds the answer
   * until every participant has attached, `load()` runs with the recorded state, the messages that were in
   * flight towards it are queued ahead of anything else (as posts from their original sources), and the
   * promise resolves with `{restored: true}`.
   *
   * @example
   * let held = 0;
   * const { restored } = await dvk.onSnapshot({
   *   save: () => Uint8Array.of(held),
   *   load: (s) => { held = s[0] ?? 0; },
   * });
   */
  async onSnapshot(hooks: SnapshotHooks, opts?: CallOptions): Promise<{ restored: boolean }> {
    if (this.snapAgent !== undefined) throw new DvsError('EBUSY', 'onSnapshot hooks already declared');
    const agent = new SnapshotAgent(
      {
        endpoint: this.endpoint,
        post: (dst, msg) => this.post(dst, msg),
        service: (method, params) => this.service(method, params),
        busy: () => this.calls.size > 0,
      },
      hooks,
    );
    this.snapAgent = agent;
    const sub = this.rpc.subscribe((d) => agent.command(d));
    let r: { restore: RestoredState | null } | null;
    try {
      r = (await this.service('snapshot.hooks', { sub }, opts)) as { restore: RestoredState | null } | null;
    } catch (e) {
      this.rpc.unsubscribe(sub);
      this.snapAgent = undefined;
      throw e;
    }
    const restore = r?.restore ?? null;
    if (restore === null) return { restored: false };
    if (restore.state !== null && hooks.load) await hooks.load(restore.state);
    // In-flight messages of the cut come before anything received here (per-pair order with new sends).
    if (restore.channels.length > 0) {
      this.ahead = [...restore.channels, ...this.ahead.slice(this.aheadHead)];
      this.aheadHead = 0;
    }
    return { restored: true };
  }

  /** A command of the daemon's migration (freeze, then thaw on rollback; a commit stops the process). */
  private async onMigrateCommand(d: unknown, hooks: MigrationHooks): Promise<void> {
    const cmd = (d ?? {}) as { op?: string; id?: number };
    if (cmd.op === 'thaw') {
      this.thaw();
      return;
    }
    if (cmd.op !== 'freeze' || typeof cmd.id !== 'number' || this.freeze !== undefined) return;
    const id = cmd.id;
    this.freeze = { id, held: [], parked: [] };
    for (const [callId, p] of this.calls) {
      if (p.recv && !p.cancelled) {
        p.parked = true;
        this.cancel(callId, 'EABORTED');
      }
    }
    try {
      await new Promise<void>((resolve) => {
        this.quiet = resolve;
        this.quiesced();
      });
      const state = await hooks.export();
      if (!(state instanceof Uint8Array))
        throw new DvsError('EINVAL', 'onMigrate export() must return a Uint8Array');
      const ahead = this.ahead.slice(this.aheadHead);
      await this.service('migrate.state', { id, state, ahead });
    } catch (e) {
      const err = DvsError.from(e);
      await this.service('migrate.state', { id, error: err.toWire() }).catch(() => undefined);
      this.thaw();
    }
  }

  /** The freeze reached quiescence: the user waits on the SDK, nothing in progress, nothing owed. */
  private quiesced(): void {
    const f = this.freeze;
    if (f === undefined || this.quiet === undefined) return;
    if (this.calls.size > 0 || this.owed.size > 0 || f.held.length + f.parked.length === 0) return;
    for (const w of this.windows.values()) if (w.head < w.queue.length) return;
    const q = this.quiet;
    this.quiet = undefined;
    q();
  }

  /** End a freeze (the migration was rolled back): parked receives go out again, held calls run. */
  private thaw(): void {
    const f = this.freeze;
    if (f === undefined) return;
    this.freeze = undefined;
    this.quiet = undefined;
    for (const { p, write } of f.parked) {
      const callId = this.allocCallId();
      p.parked = false;
      p.cancelled = false;
      this.calls.set(callId, p);
      write(callId);
    }
    for (const run of f.held) run();
    this.conn.schedule();
  }

  /** Note a request taken (its client waits for our reply). */
  private took(m: Received): Received {
    if (m.kind === 'request') this.owed.add(m.source);
    return m;
  }

  /** @internal a frame from the daemon. */
  onFrame(f: ProcFrame): void {
    if (this.rpc.onFrame(f)) return;
    switch (f.op) {
      case 'result': {
        if (f.more) {
          if (f.msg) this.ahead.push(f.msg);
          return;
        }
        const p = this.settle(f.callId);
        if (p === undefined) throw new DvsError('EPROTO', `RESULT for unknown call ${f.callId}`);
        if (f.code === null) p.resolve(f);
        else if (p.parked && f.code === 'EABORTED' && this.freeze !== undefined) {
          this.freeze.parked.push({ p, write: p.write });
        } else p.reject(new DvsError(f.code, f.message));
        if (this.freeze !== undefined) this.quiesced();
        return;
      }
      case 'credit':
        this.credit(f.dst, f.n, undefined);
        return;
      case 'postFailed':
        this.credit(
          f.dst,
          f.n,
          new DvsError(f.code, `post to ${f.dst} failed`, { dst: f.dst, dropped: f.n }),
        );
        return;
      case 'grantRead':
        this.grantRead(f.xfer, f.grant, f.offset, f.length);
        return;
      case 'grantWrite':
        this.grantWrite(f.xfer, f.grant, f.offset, f.data);
        return;
      default:
        throw new DvsError('EPROTO', `daemon sent process-only op ${f.op}`);
    }
  }

  /** `n` posts to `dst` are no longer outstanding (consumed, or failed with `err`). */
  private credit(dst: Endpoint, n: number, err: DvsError | undefined): void {
    const w = this.windows.get(dst);
    if (w === undefined) return;
    w.credit = Math.min(this.postWindow, w.credit + n);
    this.outstanding = Math.max(0, this.outstanding - n);
    if (err !== undefined) {
      this.postError ??= err;
      // Queued posts never left: they fail with the same error, and it is reported once.
      if (w.head < w.queue.length) {
        const q = w.queue.slice(w.head);
        w.queue = [];
        w.head = 0;
        this.outstanding = Math.max(0, this.outstanding - q.length);
        for (const item of q) item.reject(err);
      } else w.error ??= err;
    }
    while (w.credit > 0 && w.head < w.queue.length) {
      const item = w.queue[w.head]!;
      w.queue[w.head++] = undefined as unknown as QueuedPost;
      w.credit--;
      this.conn.out.post(dst, item.type, item.payload);
      item.resolve();
    }
    if (w.head === w.queue.length) {
      w.queue = [];
      w.head = 0;
    } else if (w.head > 1024) {
      w.queue = w.queue.slice(w.head);
      w.head = 0;
    }
    this.conn.schedule();
    if (this.flushWaiters.length > 0) {
      if (this.postError !== undefined) {
        const e = this.postError;
        this.postError = undefined;
        for (const fw of this.flushWaiters.splice(0)) {
          fw.cleanup();
          fw.reject(e);
        }
      } else if (this.outstanding === 0) {
        for (const fw of this.flushWaiters.splice(0)) {
          fw.cleanup();
          fw.resolve();
        }
      }
    }
  }

  private grantRead(xfer: number, grant: number, offset: number, length: number): void {
    const g = this.grants.get(grant);
    let code: ErrorCode | null = null;
    if (g === undefined) code = 'ENOENT';
    else if (!g.read || offset + length > g.buf.length) code = 'EFAULT';
    if (code !== null || g === undefined) this.conn.out.frame({ op: 'grantData', xfer, code, data: EMPTY });
    else
      this.conn.out.frame({
        op: 'grantData',
        xfer,
        code: null,
        data: g.buf.subarray(offset, offset + length),
      });
    this.conn.schedule();
  }

  private grantWrite(xfer: number, grant: number, offset: number, data: Uint8Array): void {
    const g = this.grants.get(grant);
    let code: ErrorCode | null = null;
    if (g === undefined) code = 'ENOENT';
    else if (!g.write || offset + data.length > g.buf.length) code = 'EFAULT';
    else g.buf.set(data, offset);
    this.conn.out.frame({ op: 'grantWritten', xfer, code });
    this.conn.schedule();
  }

  private takeAhead(src: Endpoint, requestOnly: boolean): Received | undefined {
    const a = this.ahead;
    if (this.aheadHead === a.length) return undefined;
    for (let i = this.aheadHead; i < a.length; i++) {
      const m = a[i]!;
      if (src !== ANY && m.source !== src) continue;
      if (requestOnly) {
        if (m.kind !== 'request') continue;
        // Per-pair FIFO: a request is not eligible behind an earlier message from the same source.
        let blocked = false;
        for (let j = this.aheadHead; j < i; j++) if (a[j]!.source === m.source) blocked = true;
        if (blocked) continue;
      }
      if (i === this.aheadHead) {
        a[i] = undefined as unknown as Received;
        this.aheadHead++;
        if (this.aheadHead === a.length) {
          this.ahead = [];
          this.aheadHead = 0;
        }
      } else a.splice(i, 1);
      return m;
    }
    return undefined;
  }

  private onClosed(err: DvsError): void {
    if (this.closedErr) return;
    this.closedErr = err;
    this.rpc.closed(err);
    for (const id of [...this.calls.keys()]) this.settle(id)?.reject(err);
    for (const w of this.windows.values()) {
      for (let i = w.head; i < w.queue.length; i++) w.queue[i]!.reject(err);
      w.queue = [];
      w.head = 0;
    }
    for (const fw of this.flushWaiters.splice(0)) {
      fw.cleanup();
      fw.reject(err);
    }
  }
}

function msgOf(r: ResultFrame): Received {
  if (r.msg === undefined) throw new DvsError('EPROTO', 'RESULT without the expected message');
  return r.msg;
}
