/**
 * The daemon's local Unix socket: processes (through the SDK) and the CLI connect here and speak the
 * process protocol of src/protocol/proc-frames.ts.
 *
 * Each accepted connection is a session with its own ProcId. A session either sends HELLO (the kernel
 * attaches it to an endpoint, then IPC ops flow to the kernel) or only ADMIN frames (the CLI: never attached).
 * The daemon's KernelIO forwards `complete` and `toProc` here; they are encoded into the session's frame
 * writer and everything produced in one event-loop turn leaves in ONE socket write per session (credits are
 * coalesced per destination).
 *
 * Peer identity: Node cannot read SO_PEERCRED on a Unix socket without a native addon, so the pid a process
 * reports in HELLO is taken as given. The socket's file permissions are what keeps other users out.
 *
 * A malformed or oversized frame closes THAT connection (logged at warn), never the daemon or other sessions.
 */
import { existsSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import type { Server, Socket } from 'node:net';
import { createConnection, createServer } from 'node:net';
import type { Logger } from 'pino';
import type {
  CallId,
  CallResult,
  DcId,
  Endpoint,
  KernelApi,
  ProcEvent,
  ProcId,
  Received,
} from '../kernel/types.js';
import { CANCEL_METHOD } from '../protocol/admin.js';
import type { ErrorCode } from '../protocol/errors.js';
import { DvsError } from '../protocol/errors.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder } from '../protocol/frame.js';
import type { PostSink, ProcFrame } from '../protocol/proc-frames.js';
import { decodeProcFrame, ProcFrameWriter, readPost } from '../protocol/proc-frames.js';

/** The process behind a session that did HELLO: services scope what it may touch by its DC. */
export interface AdminCaller {
  dc: DcId;
  ep: Endpoint;
  pid: number;
  /** Local session id (unique in this daemon run). */
  proc: ProcId;
}

/**
 * What an admin handler knows about the call besides its params. The CLI's sessions never attach, so
 * `caller` is undefined for them; SDK connections attach, and the services they call (kv, locks, groups)
 * are scoped to `caller.dc`.
 */
export interface AdminContext {
  /** Aborted when the session closes (or the daemon stops). */
  signal: AbortSignal;
  caller: AdminCaller | undefined;
  /**
   * Push an EVENT frame to this session under subscription id `sub` (ids are chosen by the service and
   * returned to the caller in its result). Returns false once the session is closed.
   */
  push(sub: number, data: unknown): boolean;
  /** Run `fn` once when the session closes: release what the session held (locks, group membership, watches). */
  onClose(fn: () => void): void;
  /**
   * The session came in on a DC's own socket (a container's /run/dvs): it may call DVK services for its
   * own DC only, never the admin methods (the daemon refuses them with EPERM).
   */
  restricted?: boolean;
}

/** Serves one admin RPC; throws DvsError (or anything: it becomes EINTERNAL) on failure. */
export type AdminHandler = (method: string, params: unknown, ctx: AdminContext) => Promise<unknown>;

export interface LocalServerOptions {
  /** Unix socket path. A stale socket file (nobody listening) is replaced. */
  path: string;
  kernel: KernelApi;
  admin: AdminHandler;
  logger: Logger;
  /** Largest accepted frame body (default DEFAULT_MAX_FRAME_BYTES). */
  maxFrameBytes?: number;
  /** Clock in ms since the epoch (default Date.now). */
  now?: () => number;
  /** Bytes buffered for a session that does not read before the session is closed (default 64 MiB). */
  maxUnreadBytes?: number;
}

/** Bytes the daemon buffers for a session that does not read before it closes the session. */
const DEFAULT_MAX_UNREAD_BYTES = 64 << 20;

/** Upper bound of receive-ahead messages per receive, whatever the SDK asks for. */
const MAX_AHEAD = 4096;

/** A receive-ahead to run for a session at flush time (see proc-frames.ts, flag MORE). */
interface AheadTask {
  callId: CallId;
  src: number;
  limit: number;
}

class Session implements PostSink {
  readonly decoder: FrameDecoder;
  /** Set by the server: what a POST turns into. */
  post: (s: Session, dst: number, type: number, payload: Uint8Array) => void = () => undefined;
  readonly out = new ProcFrameWriter();
  /** Credits per destination accumulated this turn. */
  readonly credits = new Map<number, number>();
  /** Aborts admin handlers still running when the session goes away. */
  readonly admin = new AbortController();
  attached = false;
  pid = -1;
  /** Set by HELLO. */
  caller: AdminCaller | undefined;
  /** Set for sessions accepted on a DC's own socket (listenForDc): HELLO may only name that DC. */
  dcLock: DcId | undefined;
  /** Admin calls still running, by request id: `$cancel` aborts one. */
  readonly adminCalls = new Map<number, AbortController>();
  /** Cleanups registered by services through AdminContext.onClose. */
  readonly closers: (() => void)[] = [];
  dirty = false;
  closed = false;
  /** The receive (callId) that asked for receive-ahead, while it is pending in the kernel. */
  aheadCall: AheadTask | undefined;
  /** Receive-ahead to run at the next flush. */
  aheadTodo: AheadTask | undefined;

  constructor(
    readonly id: ProcId,
    readonly socket: Socket,
    maxFrameBytes: number,
  ) {
    this.decoder = new FrameDecoder({ maxFrameBytes });
  }

  onPost(dst: number, type: number, payload: Uint8Array): void {
    this.post(this, dst, type, payload);
  }
}

/**
 * The local socket server. `start()` listens, `stop()` closes every session (detaching its endpoint) and the
 * listener. `complete()` and `toProc()` are the KernelIO sinks for process sessions.
 */
export class LocalServer {
  private readonly opts: LocalServerOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxFrameBytes: number;
  private readonly maxUnreadBytes: number;
  private readonly sessions = new Map<ProcId, Session>();
  private readonly dirty: Session[] = [];
  private flushScheduled = false;
  private server: Server | undefined;
  /** Listeners of DCs' own sockets (listenForDc), by DC. */
  private readonly dcServers = new Map<DcId, { server: Server; path: string }>();
  private nextProc: ProcId = 1;

  constructor(opts: LocalServerOptions) {
    this.opts = opts;
    this.log = opts.logger.child({ component: 'local' });
    this.now = opts.now ?? Date.now;
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.maxUnreadBytes = opts.maxUnreadBytes ?? DEFAULT_MAX_UNREAD_BYTES;
  }

  /** Open sessions (processes and CLI connections). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Listen on the socket path. Fails with EBUSY if another daemon is listening there. */
  async start(): Promise<void> {
    if (this.server) return;
    this.server = await this.listen(this.opts.path, undefined);
    this.log.debug({ path: this.opts.path }, 'local socket listening');
  }

  /**
   * Also serve DC `dc`'s processes on `path` (the socket its container sees): sessions accepted there may
   * only bind in that DC (HELLO naming another is EPERM) and their admin calls are marked `restricted`.
   * Replaces an earlier listener of the same DC. Must be called after start().
   */
  async listenForDc(dc: DcId, path: string): Promise<void> {
    await this.closeForDc(dc);
    const server = await this.listen(path, dc);
    this.dcServers.set(dc, { server, path });
    this.log.debug({ path, dc }, 'DC socket listening');
  }

  /** Stop serving DC `dc`'s own socket (its sessions are closed). */
  async closeForDc(dc: DcId): Promise<void> {
    const l = this.dcServers.get(dc);
    if (l === undefined) return;
    this.dcServers.delete(dc);
    const closed = new Promise<void>((resolve) => l.server.close(() => resolve()));
    for (const s of [...this.sessions.values()]) if (s.dcLock === dc) this.drop(s, undefined);
    await closed;
  }

  private async listen(path: string, dcLock: DcId | undefined): Promise<Server> {
    if (existsSync(path)) {
      // Never delete something that is not a socket: the path is probably misconfigured.
      if (!(await lstat(path)).isSocket())
        throw new DvsError('EEXIST', `${path} exists and is not a socket`, { path });
      if (await isListening(path))
        throw new DvsError('EBUSY', `a daemon is already listening on ${path}`, { path });
      await unlink(path).catch(() => undefined);
    }
    const server = createServer({ allowHalfOpen: false }, (s) => this.accept(s, dcLock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err, path }, 'local socket server error'));
    return server;
  }

  /** Close every session (their endpoints are detached) and the listeners; removes the socket files. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closing = [new Promise<void>((resolve) => server.close(() => resolve()))];
    for (const [dc, l] of [...this.dcServers]) {
      this.dcServers.delete(dc);
      closing.push(new Promise<void>((resolve) => l.server.close(() => resolve())));
    }
    for (const s of [...this.sessions.values()]) this.drop(s, undefined);
    await Promise.all(closing);
  }

  /** KernelIO.complete for a session: encode the RESULT (written at the end of the turn). */
  complete(proc: ProcId, callId: CallId, result: CallResult): void {
    const s = this.sessions.get(proc);
    if (s === undefined || s.closed) return;
    const ahead = s.aheadCall;
    if (ahead !== undefined && ahead.callId === callId) {
      s.aheadCall = undefined;
      if (result.ok && result.msg?.kind === 'post') s.aheadTodo = ahead;
    }
    writeResult(this.markDirty(s), callId, result, false);
  }

  /** KernelIO.toProc for a session. Credits are summed per destination until the end of the turn. */
  toProc(proc: ProcId, ev: ProcEvent): void {
    const s = this.sessions.get(proc);
    if (s === undefined || s.closed) return;
    this.markDirty(s);
    switch (ev.ev) {
      case 'credit':
        s.credits.set(ev.dst, (s.credits.get(ev.dst) ?? 0) + ev.n);
        return;
      case 'postFailed':
        s.out.frame({ op: 'postFailed', dst: ev.dst, code: ev.code, n: ev.n });
        return;
      case 'grantRead':
        s.out.frame({
          op: 'grantRead',
          xfer: ev.xfer,
          grant: ev.grant,
          offset: ev.offset,
          length: ev.length,
        });
        return;
      case 'grantWrite':
        s.out.frame({ op: 'grantWrite', xfer: ev.xfer, grant: ev.grant, offset: ev.offset, data: ev.data });
        return;
    }
  }

  private accept(socket: Socket, dcLock: DcId | undefined): void {
    const id = this.nextProc++;
    const s = new Session(id, socket, this.maxFrameBytes);
    s.dcLock = dcLock;
    this.sessions.set(id, s);
    s.post = this.onPost;
    const onFrame = (body: Uint8Array) => {
      if (!readPost(body, s)) this.onFrame(s, decodeProcFrame(body));
    };
    socket.on('data', (chunk: Buffer) => {
      if (s.closed) return;
      try {
        s.decoder.feed(chunk, onFrame);
      } catch (e) {
        const err = DvsError.from(e);
        if (err.code === 'EPROTO') {
          this.log.warn(
            { proc: id, pid: s.pid, reason: err.message },
            'closing local session: protocol error',
          );
        } else {
          this.log.error({ proc: id, err }, 'closing local session: internal error');
        }
        this.drop(s, err);
      }
    });
    socket.on('error', (err) => this.log.debug({ proc: id, err: err.message }, 'local session socket error'));
    socket.on('close', () => this.drop(s, undefined));
  }

  /** Close a session: detach its endpoint, abort its admin calls, destroy the socket. Idempotent. */
  private drop(s: Session, reason: DvsError | undefined): void {
    if (s.closed) return;
    s.closed = true;
    this.sessions.delete(s.id);
    s.admin.abort(reason ?? new DvsError('ENOTCONN', 'session closed'));
    for (const fn of s.closers.splice(0)) {
      try {
        fn();
      } catch (e) {
        this.log.error({ proc: s.id, err: e }, 'session cleanup failed');
      }
    }
    if (s.attached) {
      s.attached = false;
      try {
        this.opts.kernel.detach(this.now(), s.id);
      } catch (e) {
        this.log.error({ proc: s.id, err: e }, 'kernel detach failed');
      }
    }
    s.socket.destroy();
  }

  private onFrame(s: Session, f: ProcFrame): void {
    const k = this.opts.kernel;
    switch (f.op) {
      case 'hello':
        this.hello(s, f);
        return;
      case 'admin':
        this.adminCall(s, f.id, f.method, f.params);
        return;
      case 'cancel':
        if (s.attached) this.guard(s, f.op, () => k.cancel(this.now(), s.id, f.callId, f.reason));
        return;
      case 'post':
        this.onPost(s, f.dst, f.type, f.payload);
        return;
      case 'grantData':
        if (s.attached) this.guard(s, f.op, () => k.grantData(this.now(), s.id, f.xfer, f.code ?? f.data));
        return;
      case 'grantWritten':
        if (s.attached) this.guard(s, f.op, () => k.grantWritten(this.now(), s.id, f.xfer, f.code));
        return;
      case 'send':
      case 'sendrec':
      case 'reply':
        this.call(s, f.callId, { op: f.op, dst: f.dst, type: f.type, payload: f.payload });
        return;
      case 'receive':
        if (f.ahead > 0) s.aheadCall = { callId: f.callId, src: f.src, limit: Math.min(f.ahead, MAX_AHEAD) };
        this.call(s, f.callId, { op: 'receive', src: f.src, nowait: f.nowait });
        return;
      case 'receiveRequest':
        this.call(s, f.callId, { op: 'receiveRequest', nowait: f.nowait });
        return;
      case 'replyReceive':
        this.call(s, f.callId, {
          op: 'replyRecv',
          dst: f.dst,
          type: f.type,
          payload: f.payload,
          nowait: f.nowait,
        });
        return;
      case 'notify':
      case 'wakeup':
        this.call(s, f.callId, { op: f.op, dst: f.dst });
        return;
      case 'grant':
        this.call(s, f.callId, { op: 'grant', grant: f.grant, size: f.size, access: f.access });
        return;
      case 'revoke':
        this.call(s, f.callId, { op: 'revoke', grant: f.grant });
        return;
      case 'vcopy':
        this.call(s, f.callId, { op: 'vcopy', src: f.src, dst: f.dst, bytes: f.bytes });
        return;
      default:
        throw new DvsError('EPROTO', `process sent daemon-only op ${f.op}`);
    }
  }

  private readonly onPost = (s: Session, dst: number, type: number, payload: Uint8Array): void => {
    if (!s.attached) {
      this.postFailed(s, dst, 'ENOTBOUND');
      return;
    }
    try {
      this.opts.kernel.post(this.now(), s.id, dst, type, payload);
    } catch (e) {
      this.postFailed(s, dst, DvsError.from(e).code);
    }
  };

  /** Run a kernel method that has no reply frame: a rejection is logged, the session lives on. */
  private guard(s: Session, op: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      const err = DvsError.from(e);
      if (err.code === 'EINTERNAL') this.log.error({ proc: s.id, op, err: e }, 'kernel failed');
      else
        this.log.warn(
          { proc: s.id, op, code: err.code, reason: err.message },
          'kernel rejected a process frame',
        );
    }
  }

  private hello(s: Session, f: ProcFrame & { op: 'hello' }): void {
    const k = this.opts.kernel;
    try {
      if (s.attached) throw new DvsError('EPROTO', 'session already attached');
      const dc = k.findDc(f.dc);
      if (dc === undefined) throw new DvsError('ENOENT', `no DC ${f.dc} on node ${k.nodeId}`, { dc: f.dc });
      if (s.dcLock !== undefined && dc.id !== s.dcLock) {
        this.log.warn(
          { proc: s.id, pid: f.pid, dc: dc.id, socketOf: s.dcLock },
          'refused a bind in another DC',
        );
        throw new DvsError('EPERM', `this socket serves DC ${s.dcLock} only: cannot bind in DC '${dc.name}'`);
      }
      const opts: Parameters<KernelApi['attach']>[4] = { pid: f.pid };
      if (f.name !== undefined) opts.name = f.name;
      if (f.kind !== undefined) opts.kind = f.kind;
      if (f.primaryNode !== undefined) opts.primaryNode = f.primaryNode;
      k.attach(this.now(), s.id, dc.id, f.endpoint, opts);
      s.attached = true;
      s.pid = f.pid;
      s.caller = { dc: dc.id, ep: f.endpoint, pid: f.pid, proc: s.id };
      this.markDirty(s).out.frame({
        op: 'helloOk',
        callId: f.callId,
        node: k.nodeId,
        dc: dc.id,
        dcName: dc.name,
        endpoint: f.endpoint,
        maxPayload: dc.maxPayload,
        postWindow: dc.postWindow,
      });
      this.log.debug({ proc: s.id, pid: f.pid, dc: dc.id, ep: f.endpoint }, 'process attached');
    } catch (e) {
      const err = DvsError.from(e);
      this.markDirty(s).out.result(f.callId, err.code, err.message, undefined);
    }
  }

  private call(s: Session, callId: CallId, call: Parameters<KernelApi['call']>[3]): void {
    if (!s.attached) {
      this.markDirty(s).out.result(callId, 'ENOTBOUND', 'no HELLO on this connection', undefined);
      return;
    }
    try {
      this.opts.kernel.call(this.now(), s.id, callId, call);
    } catch (e) {
      const err = DvsError.from(e);
      if (err.code === 'EINTERNAL') this.log.error({ proc: s.id, err: e }, 'kernel call failed');
      if (s.aheadCall?.callId === callId) s.aheadCall = undefined;
      this.markDirty(s).out.result(callId, err.code, err.message, undefined);
    }
  }

  private postFailed(s: Session, dst: number, code: ErrorCode): void {
    this.markDirty(s).out.frame({ op: 'postFailed', dst, code, n: 1 });
  }

  private adminCall(s: Session, id: number, method: string, params: unknown): void {
    if (method === CANCEL_METHOD) {
      // The client gave up on call params.id (timeout or abort): stop it. The $cancel itself gets no answer
      // the client waits for.
      const target = (params as { id?: unknown } | null)?.id;
      if (typeof target === 'number') s.adminCalls.get(target)?.abort(new DvsError('EABORTED', 'cancelled'));
      this.markDirty(s).out.frame({ op: 'adminResult', id, result: null });
      return;
    }
    const ac = new AbortController();
    s.adminCalls.set(id, ac);
    const ctx: AdminContext = {
      signal: AbortSignal.any([s.admin.signal, ac.signal]),
      caller: s.caller,
      push: (sub, data) => {
        if (s.closed) return false;
        this.markDirty(s).out.frame({ op: 'event', sub, data });
        return true;
      },
      onClose: (fn) => {
        if (s.closed) fn();
        else s.closers.push(fn);
      },
      ...(s.dcLock !== undefined ? { restricted: true } : {}),
    };
    let p: Promise<unknown>;
    try {
      p = this.opts.admin(method, params, ctx);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (result) => {
        s.adminCalls.delete(id);
        if (!s.closed) this.markDirty(s).out.frame({ op: 'adminResult', id, result: result ?? null });
      },
      (e: unknown) => {
        s.adminCalls.delete(id);
        const err = DvsError.from(e);
        if (err.code === 'EINTERNAL') this.log.error({ method, err: e }, 'admin call failed');
        if (!s.closed) this.markDirty(s).out.frame({ op: 'adminResult', id, error: err.toWire() });
      },
    );
  }

  private markDirty(s: Session): Session {
    if (!s.dirty) {
      s.dirty = true;
      this.dirty.push(s);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flush);
      }
    }
    return s;
  }

  /** End of turn: run receive-aheads, then one write per dirty session. */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    // Receive-aheads may make other sessions dirty (credits to senders): they are appended to `dirty`.
    for (let i = 0; i < this.dirty.length; i++) {
      const s = this.dirty[i]!;
      if (s.aheadTodo !== undefined && !s.closed) this.receiveAhead(s);
    }
    const list = this.dirty.splice(0);
    for (const s of list) {
      s.dirty = false;
      if (s.closed) continue;
      for (const [dst, n] of s.credits) s.out.credit(dst, n);
      s.credits.clear();
      const buf = s.out.take();
      if (buf === undefined) continue;
      s.socket.write(buf);
      // Post windows bound what one sender can queue, but a process that stops reading its socket would
      // make the daemon buffer without limit: cut it off instead.
      if (s.socket.writableLength > this.maxUnreadBytes) {
        this.log.warn(
          { proc: s.id, pid: s.pid, bytes: s.socket.writableLength },
          'closing local session: not reading',
        );
        this.drop(s, new DvsError('ENOSPC', 'process is not reading its socket'));
      }
    }
  };

  /** Take up to `limit` more posts already queued for a receiver whose receive just got a post. */
  private receiveAhead(s: Session): void {
    const task = s.aheadTodo!;
    s.aheadTodo = undefined;
    if (!s.attached) return;
    for (const m of this.opts.kernel.receiveAhead(this.now(), s.id, task.src, task.limit)) {
      s.out.result(task.callId, null, undefined, m, true);
    }
  }
}

function writeResult(s: Session, callId: CallId, result: CallResult, more: boolean): void {
  if (result.ok) s.out.result(callId, null, undefined, result.msg as Received | undefined, more);
  else s.out.result(callId, result.code, result.message, undefined);
}

/** True if something accepts connections on the Unix socket `path`. */
function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    const done = (v: boolean) => {
      c.destroy();
      resolve(v);
    };
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
    c.setTimeout(1000, () => done(false));
  });
}
