/**
 * A small single-node KernelApi for exercising the local server and the SDK independently of the real kernel:
 * rendezvous send/receive, sendrec/reply, notify, wakeup, post with per-pair credit windows, grants and a
 * one-chunk local vcopy, cancel and detach. It is deliberately simple (no deadlock detection, no nodes).
 */
import type {
  AttachOptions,
  Call,
  CallId,
  DcConfig,
  DcId,
  Endpoint,
  EndpointInfo,
  KernelApi,
  KernelIO,
  NodeFrame,
  NodeId,
  ProcId,
  Received,
} from '../../../src/kernel/types.js';
import { ANY, NOTIFY_TYPE } from '../../../src/kernel/types.js';
import type { ErrorCode } from '../../../src/protocol/errors.js';
import { DvsError } from '../../../src/protocol/errors.js';

interface Queued {
  src: Endpoint;
  kind: 'send' | 'request' | 'post';
  type: number;
  payload: Uint8Array;
  /** Sender's call for send / request. */
  callId: CallId;
}

interface Ep {
  dc: DcId;
  ep: Endpoint;
  proc: ProcId;
  pid: number;
  inbox: Queued[];
  notify: Map<Endpoint, number>;
  recv: { callId: CallId; src: Endpoint; requestOnly: boolean } | undefined;
  /** Blocked sending (send / request not yet taken). */
  sending: { callId: CallId; dst: Endpoint } | undefined;
  /** Waiting for the reply of `from`. */
  awaitReply: { callId: CallId; from: Endpoint } | undefined;
  wokenUp: boolean;
  grants: Map<number, { size: number; access: string }>;
  /** Unconsumed posts per destination. */
  inFlight: Map<Endpoint, number>;
  /** Consumed posts per destination whose credit was not returned yet. */
  owed: Map<Endpoint, number>;
}

export class FakeKernel implements KernelApi {
  readonly nodeId: NodeId;
  private readonly io: KernelIO;
  private readonly dcs = new Map<DcId, DcConfig>();
  private readonly eps = new Map<Endpoint, Ep>();
  private readonly procs = new Map<ProcId, Ep>();
  private readonly xfers = new Map<number, (data: Uint8Array | ErrorCode | null) => void>();
  private nextXfer = 1;
  /** Calls seen, for assertions. */
  readonly log: string[] = [];

  constructor(opts: { nodeId: NodeId; io: KernelIO }) {
    this.nodeId = opts.nodeId;
    this.io = opts.io;
  }

  createDc(cfg: DcConfig): void {
    this.dcs.set(cfg.id, cfg);
  }
  removeDc(_now: number, dc: DcId): number[] {
    this.dcs.delete(dc);
    return [];
  }
  listDcs(): DcConfig[] {
    return [...this.dcs.values()];
  }
  findDc(idOrName: DcId | string): DcConfig | undefined {
    for (const d of this.dcs.values()) if (d.id === idOrName || d.name === idOrName) return d;
    return undefined;
  }
  reserve(): void {}

  attach(_now: number, proc: ProcId, dc: DcId, ep: Endpoint, opts: AttachOptions): void {
    if (this.eps.has(ep)) throw new DvsError('EBOUND', `endpoint ${ep} is bound`);
    const e: Ep = {
      dc,
      ep,
      proc,
      pid: opts.pid,
      inbox: [],
      notify: new Map(),
      recv: undefined,
      sending: undefined,
      awaitReply: undefined,
      wokenUp: false,
      grants: new Map(),
      inFlight: new Map(),
      owed: new Map(),
    };
    this.eps.set(ep, e);
    this.procs.set(proc, e);
  }

  detach(_now: number, proc: ProcId): void {
    const e = this.procs.get(proc);
    if (!e) return;
    this.procs.delete(proc);
    this.eps.delete(e.ep);
    this.log.push(`detach ${e.ep}`);
    for (const q of e.inbox) {
      const s = this.eps.get(q.src);
      if (s && q.kind !== 'post') {
        s.sending = undefined;
        this.io.complete(s.proc, q.callId, { ok: false, code: 'EDSTDIED' });
      }
    }
    for (const o of this.eps.values()) {
      if (o.awaitReply?.from === e.ep) {
        const c = o.awaitReply.callId;
        o.awaitReply = undefined;
        this.io.complete(o.proc, c, { ok: false, code: 'ESRCDIED' });
      }
    }
  }
  unbind(): void {}

  call(_now: number, proc: ProcId, callId: CallId, call: Call): void {
    const me = this.procs.get(proc);
    if (!me) throw new DvsError('ENOTBOUND', 'not attached');
    if (call.op !== 'receive') this.log.push(`${call.op} ${callId}`);
    const done = (code?: ErrorCode, msg?: Received) =>
      this.io.complete(proc, callId, code ? { ok: false, code } : msg ? { ok: true, msg } : { ok: true });
    switch (call.op) {
      case 'send':
      case 'sendrec': {
        const dst = this.eps.get(call.dst);
        if (!dst) {
          done('ENOTBOUND');
          return;
        }
        const kind = call.op === 'send' ? 'send' : 'request';
        const m: Received = { source: me.ep, type: call.type, payload: call.payload, kind };
        if (call.op === 'sendrec') me.awaitReply = { callId, from: dst.ep };
        if (
          dst.recv &&
          (dst.recv.src === ANY || dst.recv.src === me.ep) &&
          (!dst.recv.requestOnly || kind === 'request')
        ) {
          const r = dst.recv;
          dst.recv = undefined;
          this.io.complete(dst.proc, r.callId, { ok: true, msg: m });
          if (kind === 'send') done();
          return;
        }
        dst.inbox.push({ src: me.ep, kind, type: call.type, payload: call.payload, callId });
        if (kind === 'send') me.sending = { callId, dst: dst.ep };
        return;
      }
      case 'receive':
      case 'receiveRequest': {
        const src = call.op === 'receive' ? call.src : ANY;
        const requestOnly = call.op === 'receiveRequest';
        if (!requestOnly && src === ANY && me.wokenUp) {
          me.wokenUp = false;
          done('EWOKENUP');
          return;
        }
        const got = this.take(me, src, requestOnly);
        if (got) {
          done(undefined, got);
          return;
        }
        if (call.nowait) {
          done('ETIMEDOUT');
          return;
        }
        me.recv = { callId, src, requestOnly };
        return;
      }
      case 'reply':
      case 'replyRecv': {
        const dst = this.eps.get(call.dst);
        if (!dst?.awaitReply || dst.awaitReply.from !== me.ep) {
          done('ENOTWAITING');
          return;
        }
        const c = dst.awaitReply.callId;
        dst.awaitReply = undefined;
        this.io.complete(dst.proc, c, {
          ok: true,
          msg: { source: me.ep, type: call.type, payload: call.payload, kind: 'send' },
        });
        if (call.op === 'reply') {
          done();
          return;
        }
        const got = this.take(me, ANY, true);
        if (got) done(undefined, got);
        else if (call.nowait) done('ETIMEDOUT');
        else me.recv = { callId, src: ANY, requestOnly: true };
        return;
      }
      case 'notify': {
        const dst = this.eps.get(call.dst);
        if (!dst) {
          done('ENOTBOUND');
          return;
        }
        if (dst.recv && !dst.recv.requestOnly && (dst.recv.src === ANY || dst.recv.src === me.ep)) {
          const r = dst.recv;
          dst.recv = undefined;
          const msg: Received = {
            source: me.ep,
            type: NOTIFY_TYPE,
            payload: new Uint8Array(0),
            kind: 'notify',
            timestamp: _now,
          };
          this.io.complete(dst.proc, r.callId, { ok: true, msg });
        } else if (!dst.notify.has(me.ep)) dst.notify.set(me.ep, _now);
        done();
        return;
      }
      case 'wakeup': {
        const dst = this.eps.get(call.dst);
        if (!dst) {
          done('ENOTBOUND');
          return;
        }
        if (dst.recv && dst.recv.src === ANY && !dst.recv.requestOnly) {
          const r = dst.recv;
          dst.recv = undefined;
          this.io.complete(dst.proc, r.callId, { ok: false, code: 'EWOKENUP' });
        } else dst.wokenUp = true;
        done();
        return;
      }
      case 'grant':
        me.grants.set(call.grant, { size: call.size, access: call.access });
        done();
        return;
      case 'revoke':
        me.grants.delete(call.grant);
        done();
        return;
      case 'vcopy': {
        const s = this.eps.get(call.src.ep);
        const d = this.eps.get(call.dst.ep);
        if (!s || !d) {
          done('ENOTBOUND');
          return;
        }
        const sg = s.grants.get(call.src.grant);
        const dg = d.grants.get(call.dst.grant);
        if (!sg || !dg || !sg.access.includes('r') || !dg.access.includes('w')) {
          done('EFAULT');
          return;
        }
        if (call.src.offset + call.bytes > sg.size || call.dst.offset + call.bytes > dg.size) {
          done('EFAULT');
          return;
        }
        const rx = this.nextXfer++;
        this.xfers.set(rx, (data) => {
          if (!(data instanceof Uint8Array)) return done(data ?? 'EFAULT');
          const wx = this.nextXfer++;
          this.xfers.set(wx, (code) => done((code as ErrorCode | null) ?? undefined));
          this.io.toProc(d.proc, {
            ev: 'grantWrite',
            xfer: wx,
            grant: call.dst.grant,
            offset: call.dst.offset,
            data,
          });
        });
        this.io.toProc(s.proc, {
          ev: 'grantRead',
          xfer: rx,
          grant: call.src.grant,
          offset: call.src.offset,
          length: call.bytes,
        });
        return;
      }
    }
  }

  private take(me: Ep, src: Endpoint, requestOnly: boolean): Received | undefined {
    if (!requestOnly) {
      for (const [from, ts] of me.notify) {
        if (src !== ANY && from !== src) continue;
        me.notify.delete(from);
        return { source: from, type: NOTIFY_TYPE, payload: new Uint8Array(0), kind: 'notify', timestamp: ts };
      }
    }
    const i = me.inbox.findIndex(
      (q) => (src === ANY || q.src === src) && (!requestOnly || q.kind === 'request'),
    );
    if (i < 0) return undefined;
    const q = (i === 0 ? me.inbox.shift() : me.inbox.splice(i, 1)[0])!;
    const s = this.eps.get(q.src);
    if (q.kind === 'send' && s) {
      s.sending = undefined;
      this.io.complete(s.proc, q.callId, { ok: true });
    } else if (q.kind === 'post' && s) {
      // Credits go back in batches, like the real kernel: a quarter window, or when none remain queued.
      const left = (s.inFlight.get(me.ep) ?? 1) - 1;
      s.inFlight.set(me.ep, left);
      const owed = (s.owed.get(me.ep) ?? 0) + 1;
      const window = this.dcs.get(me.dc)?.postWindow ?? 1024;
      if (owed >= Math.max(1, Math.floor(window / 4)) || left === 0) {
        s.owed.set(me.ep, 0);
        this.io.toProc(s.proc, { ev: 'credit', dst: me.ep, n: owed });
      } else s.owed.set(me.ep, owed);
    }
    return { source: q.src, type: q.type, payload: q.payload, kind: q.kind };
  }

  receiveAhead(_now: number, proc: ProcId, src: Endpoint, limit: number): Received[] {
    const me = this.procs.get(proc);
    const out: Received[] = [];
    if (!me || me.recv) return out;
    while (out.length < limit) {
      if ([...me.notify.keys()].some((from) => src === ANY || from === src)) break;
      const q = me.inbox.find((x) => src === ANY || x.src === src);
      if (q?.kind !== 'post') break;
      const m = this.take(me, src, false);
      if (m === undefined) break;
      out.push(m);
    }
    return out;
  }

  cancel(_now: number, proc: ProcId, callId: CallId, reason: 'ETIMEDOUT' | 'EABORTED'): void {
    const me = this.procs.get(proc);
    if (!me) return;
    this.log.push(`cancel ${callId}`);
    if (me.recv?.callId === callId) {
      me.recv = undefined;
      this.io.complete(proc, callId, { ok: false, code: reason });
      return;
    }
    if (me.sending?.callId === callId) {
      const dst = this.eps.get(me.sending.dst);
      me.sending = undefined;
      if (dst) dst.inbox = dst.inbox.filter((q) => !(q.src === me.ep && q.callId === callId));
      this.io.complete(proc, callId, { ok: false, code: reason });
      return;
    }
    if (me.awaitReply?.callId === callId) {
      me.awaitReply = undefined;
      for (const e of this.eps.values())
        e.inbox = e.inbox.filter((q) => !(q.src === me.ep && q.callId === callId));
      this.io.complete(proc, callId, { ok: false, code: reason });
      return;
    }
  }

  post(_now: number, proc: ProcId, dst: Endpoint, type: number, payload: Uint8Array): void {
    const me = this.procs.get(proc);
    if (!me) throw new DvsError('ENOTBOUND', 'not attached');
    const d = this.eps.get(dst);
    if (!d) {
      this.io.toProc(proc, { ev: 'postFailed', dst, code: 'ENOTBOUND', n: 1 });
      return;
    }
    const window = this.dcs.get(me.dc)?.postWindow ?? 1024;
    const n = me.inFlight.get(dst) ?? 0;
    if (n + (me.owed.get(dst) ?? 0) >= window) {
      this.io.toProc(proc, { ev: 'postFailed', dst, code: 'ENOSPC', n: 1 });
      return;
    }
    if (
      d.recv &&
      !d.recv.requestOnly &&
      (d.recv.src === ANY || d.recv.src === me.ep) &&
      d.inbox.length === 0
    ) {
      const r = d.recv;
      d.recv = undefined;
      this.io.complete(d.proc, r.callId, { ok: true, msg: { source: me.ep, type, payload, kind: 'post' } });
      this.io.toProc(proc, { ev: 'credit', dst, n: 1 });
      return;
    }
    me.inFlight.set(dst, n + 1);
    d.inbox.push({ src: me.ep, kind: 'post', type, payload, callId: 0 });
  }

  grantData(_now: number, _proc: ProcId, xfer: number, data: Uint8Array | ErrorCode): void {
    const k = this.xfers.get(xfer);
    this.xfers.delete(xfer);
    k?.(data instanceof Uint8Array ? data.slice() : data);
  }
  grantWritten(_now: number, _proc: ProcId, xfer: number, code: ErrorCode | null): void {
    const k = this.xfers.get(xfer);
    this.xfers.delete(xfer);
    k?.(code);
  }

  nodeUp(): void {}
  nodeDown(): void {}
  fromNode(_now: number, _node: NodeId, _frame: NodeFrame): void {}
  endpoints(): EndpointInfo[] {
    return [];
  }
  /** The session bound to `ep`, if any (for tests that inject events). */
  procOf(ep: Endpoint): ProcId | undefined {
    return this.eps.get(ep)?.proc;
  }
  procEndpoint(proc: ProcId): { dc: DcId; ep: Endpoint } | undefined {
    const e = this.procs.get(proc);
    return e ? { dc: e.dc, ep: e.ep } : undefined;
  }
}
