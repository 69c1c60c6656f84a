/**
 * A small reference kernel for checking the simulator itself (not the product): one DC, send / sendrec /
 * receive / receiveRequest / reply / notify / post across nodes with the cancel protocol and node-down
 * handling. It follows the KernelApi contract closely enough that a correct harness finds no violation
 * with it, and a broken link (e.g. no dedup) makes it misbehave visibly.
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
  MsgKind,
  NodeFrame,
  NodeId,
  ProcId,
  Received,
} from '../../src/kernel/types.js';
import { ANY, NOTIFY_TYPE } from '../../src/kernel/types.js';
import { dvsError, type ErrorCode } from '../../src/protocol/errors.js';

interface Item {
  src: Endpoint;
  kind: 'send' | 'request' | 'post';
  type: number;
  payload: Uint8Array;
  /** Local sender (proc + call) or remote sender (node + op). */
  proc?: ProcId;
  callId?: CallId;
  node?: NodeId;
  op: number;
}

interface Pending {
  callId: CallId;
  call: Call;
  /** 'queued': message waiting to be taken; 'reply': request taken, waiting for the reply; 'cancelling'. */
  phase: 'recv' | 'queued' | 'reply' | 'cancelling';
  /** Node of the destination for remote operations. */
  node: NodeId | undefined;
}

interface LocalEp {
  ep: Endpoint;
  proc: ProcId;
  inbox: Item[];
  notes: Map<Endpoint, number>;
  pending: Pending | undefined;
  /** Remote clients whose request this endpoint took: client ep -> {node, op}. */
  serving: Map<Endpoint, { node: NodeId; op: number }>;
  /** Posts outstanding per destination. */
  postOut: Map<Endpoint, number>;
  /** wakeup() arrived while not in receive(ANY): the next one fails with EWOKENUP. */
  woken: boolean;
}

export class FakeKernel implements KernelApi {
  readonly nodeId: NodeId;
  private readonly io: KernelIO;
  private dc: DcConfig | undefined;
  /** Where every known endpoint lives. */
  private readonly where = new Map<Endpoint, NodeId>();
  private readonly local = new Map<Endpoint, LocalEp>();
  private readonly byProc = new Map<ProcId, LocalEp>();
  private readonly up = new Set<NodeId>();

  constructor(opts: { nodeId: NodeId; io: KernelIO }) {
    this.nodeId = opts.nodeId;
    this.io = opts.io;
  }

  createDc(cfg: DcConfig): void {
    if (this.dc !== undefined) throw dvsError('EEXIST');
    this.dc = cfg;
  }
  removeDc(): number[] {
    throw dvsError('ENOTSUP');
  }
  listDcs(): DcConfig[] {
    return this.dc ? [this.dc] : [];
  }
  findDc(idOrName: DcId | string): DcConfig | undefined {
    return this.dc && (this.dc.id === idOrName || this.dc.name === idOrName) ? this.dc : undefined;
  }
  reserve(): void {
    throw dvsError('ENOTSUP');
  }
  unbind(): void {
    throw dvsError('ENOTSUP');
  }
  /** The reference kernel has no receive-ahead fast path: posts are taken one receive at a time. */
  receiveAhead(): Received[] {
    return [];
  }
  grantData(): void {}
  grantWritten(): void {}
  endpoints(): EndpointInfo[] {
    return [];
  }
  procEndpoint(proc: ProcId): { dc: DcId; ep: Endpoint } | undefined {
    const l = this.byProc.get(proc);
    return l && this.dc ? { dc: this.dc.id, ep: l.ep } : undefined;
  }

  private get dcId(): DcId {
    return this.dc?.id ?? 0;
  }

  private broadcast(frame: NodeFrame): void {
    for (const n of this.up) this.io.toNode(n, frame);
  }

  attach(_now: number, proc: ProcId, _dc: DcId, ep: Endpoint, _opts: AttachOptions): void {
    if (this.where.has(ep)) throw dvsError('EBOUND');
    const l: LocalEp = {
      ep,
      proc,
      inbox: [],
      notes: new Map(),
      pending: undefined,
      serving: new Map(),
      postOut: new Map(),
      woken: false,
    };
    this.local.set(ep, l);
    this.byProc.set(proc, l);
    this.where.set(ep, this.nodeId);
    this.broadcast({ t: 'bind', dc: this.dcId, ep, node: this.nodeId });
  }

  detach(_now: number, proc: ProcId): void {
    const l = this.byProc.get(proc);
    if (l === undefined) return;
    this.byProc.delete(proc);
    this.local.delete(l.ep);
    this.where.delete(l.ep);
    if (l.pending !== undefined) {
      const p = l.pending;
      l.pending = undefined;
      if (
        p.node !== undefined &&
        (p.phase === 'queued' || p.phase === 'cancelling') &&
        p.call.op !== 'receive'
      ) {
        this.io.toNode(p.node, { t: 'cancel', dc: this.dcId, src: l.ep, dst: dstOf(p.call), op: p.callId });
      }
      this.io.complete(proc, p.callId, { ok: false, code: 'EABORTED' });
    }
    for (const it of l.inbox) this.refuse(l.ep, it, 'EDSTDIED');
    for (const [client, s] of l.serving)
      this.io.toNode(s.node, { t: 'ack', dc: this.dcId, src: l.ep, dst: client, op: s.op, code: 'ESRCDIED' });
    // Local clients waiting for our reply.
    for (const o of this.local.values()) {
      const p = o.pending;
      if (p?.call.op === 'sendrec' && p.call.dst === l.ep && p.node === undefined) {
        o.pending = undefined;
        this.io.complete(o.proc, p.callId, {
          ok: false,
          code: p.phase === 'reply' ? 'ESRCDIED' : 'EDSTDIED',
        });
      }
    }
    this.broadcast({ t: 'unbind', dc: this.dcId, ep: l.ep, node: this.nodeId });
  }

  /** A queued item can never be taken: fail its sender. */
  private refuse(dst: Endpoint, it: Item, code: ErrorCode): void {
    if (it.node !== undefined) {
      this.io.toNode(it.node, { t: 'ack', dc: this.dcId, src: dst, dst: it.src, op: it.op, code });
      return;
    }
    const s = this.local.get(it.src);
    if (s === undefined) return;
    if (it.kind === 'post') {
      this.postDone(s, dst, 'failed', code);
      return;
    }
    if (s.pending?.callId === it.callId) {
      s.pending = undefined;
      this.io.complete(s.proc, it.callId ?? 0, { ok: false, code });
    }
  }

  private postDone(s: LocalEp, dst: Endpoint, how: 'credit' | 'failed', code: ErrorCode = 'EDSTDIED'): void {
    s.postOut.set(dst, (s.postOut.get(dst) ?? 1) - 1);
    if (how === 'credit') this.io.toProc(s.proc, { ev: 'credit', dst, n: 1 });
    else this.io.toProc(s.proc, { ev: 'postFailed', dst, code, n: 1 });
  }

  call(_now: number, proc: ProcId, callId: CallId, call: Call): void {
    const l = this.byProc.get(proc);
    if (l === undefined) throw dvsError('ENOTBOUND');
    if (l.pending !== undefined && call.op !== 'notify') throw dvsError('EBUSY');
    switch (call.op) {
      case 'send':
      case 'sendrec': {
        const node = this.where.get(call.dst);
        if (node === undefined) {
          this.io.complete(proc, callId, { ok: false, code: 'ENOTBOUND' });
          return;
        }
        const kind = call.op === 'send' ? 'send' : 'request';
        if (node === this.nodeId) {
          l.pending = { callId, call, phase: 'queued', node: undefined };
          this.enqueue(call.dst, {
            src: l.ep,
            kind,
            type: call.type,
            payload: call.payload,
            proc,
            callId,
            op: callId,
          });
        } else {
          l.pending = { callId, call, phase: 'queued', node };
          this.io.toNode(node, {
            t: 'msg',
            dc: this.dcId,
            src: l.ep,
            dst: call.dst,
            kind,
            op: callId,
            type: call.type,
            payload: call.payload,
          });
        }
        return;
      }
      case 'receive':
      case 'receiveRequest':
        if (call.op === 'receive' && call.src === ANY && l.woken) {
          l.woken = false;
          this.io.complete(proc, callId, { ok: false, code: 'EWOKENUP' });
          return;
        }
        l.pending = { callId, call, phase: 'recv', node: undefined };
        this.match(l);
        if (l.pending?.callId === callId && call.nowait) {
          l.pending = undefined;
          this.io.complete(proc, callId, { ok: false, code: 'ETIMEDOUT' });
        }
        return;
      case 'reply': {
        const c = this.local.get(call.dst);
        const msg: Received = { source: l.ep, type: call.type, payload: call.payload, kind: 'send' };
        if (c?.pending?.call.op === 'sendrec' && c.pending.call.dst === l.ep && c.pending.phase === 'reply') {
          const p = c.pending;
          c.pending = undefined;
          this.io.complete(c.proc, p.callId, { ok: true, msg });
          this.io.complete(proc, callId, { ok: true });
          return;
        }
        const s = l.serving.get(call.dst);
        if (s === undefined) {
          this.io.complete(proc, callId, { ok: false, code: 'ENOTWAITING' });
          return;
        }
        l.serving.delete(call.dst);
        this.io.toNode(s.node, {
          t: 'reply',
          dc: this.dcId,
          src: l.ep,
          dst: call.dst,
          op: s.op,
          type: call.type,
          payload: call.payload,
        });
        this.io.complete(proc, callId, { ok: true });
        return;
      }
      case 'notify': {
        const node = this.where.get(call.dst);
        if (node === undefined) {
          this.io.complete(proc, callId, { ok: false, code: 'ENOTBOUND' });
          return;
        }
        if (node === this.nodeId) this.note(call.dst, l.ep, _now);
        else this.io.toNode(node, { t: 'notify', dc: this.dcId, src: l.ep, dst: call.dst, ts: _now });
        this.io.complete(proc, callId, { ok: true });
        return;
      }
      case 'wakeup': {
        const node = this.where.get(call.dst);
        if (node === undefined) {
          this.io.complete(proc, callId, { ok: false, code: 'ENOTBOUND' });
          return;
        }
        if (node === this.nodeId) this.wake(call.dst);
        else this.io.toNode(node, { t: 'wakeup', dc: this.dcId, src: l.ep, dst: call.dst });
        this.io.complete(proc, callId, { ok: true });
        return;
      }
      default: {
        this.io.complete(proc, callId, { ok: false, code: 'ENOTSUP' });
        return;
      }
    }
  }

  private wake(dst: Endpoint): void {
    const d = this.local.get(dst);
    if (d === undefined) return;
    const p = d.pending;
    if (p?.phase === 'recv' && p.call.op === 'receive' && p.call.src === ANY) {
      d.pending = undefined;
      this.io.complete(d.proc, p.callId, { ok: false, code: 'EWOKENUP' });
    } else d.woken = true;
  }

  cancel(_now: number, proc: ProcId, callId: CallId, reason: 'ETIMEDOUT' | 'EABORTED'): void {
    const l = this.byProc.get(proc);
    const p = l?.pending;
    if (l === undefined || p === undefined || p.callId !== callId) return;
    if (p.phase === 'recv' || p.phase === 'reply') {
      l.pending = undefined;
      this.io.complete(proc, callId, { ok: false, code: reason });
      return;
    }
    if (p.phase === 'cancelling') return;
    const dst = dstOf(p.call);
    if (p.node === undefined) {
      const d = this.local.get(dst);
      if (d !== undefined) d.inbox = d.inbox.filter((it) => !(it.proc === proc && it.callId === callId));
      l.pending = undefined;
      this.io.complete(proc, callId, { ok: false, code: reason });
      return;
    }
    // Remote: only the receiver's node knows whether it was taken; its ack decides the outcome.
    p.phase = 'cancelling';
    this.io.toNode(p.node, { t: 'cancel', dc: this.dcId, src: l.ep, dst, op: callId, reason });
  }

  post(_now: number, proc: ProcId, dst: Endpoint, type: number, payload: Uint8Array): void {
    const l = this.byProc.get(proc);
    if (l === undefined) throw dvsError('ENOTBOUND');
    const node = this.where.get(dst);
    if (node === undefined) {
      this.io.toProc(proc, { ev: 'postFailed', dst, code: 'ENOTBOUND', n: 1 });
      return;
    }
    l.postOut.set(dst, (l.postOut.get(dst) ?? 0) + 1);
    if (node === this.nodeId) this.enqueue(dst, { src: l.ep, kind: 'post', type, payload, proc, op: 0 });
    else
      this.io.toNode(node, { t: 'msg', dc: this.dcId, src: l.ep, dst, kind: 'post', op: 0, type, payload });
  }

  nodeUp(_now: number, node: NodeId): void {
    this.up.add(node);
    this.io.toNode(node, { t: 'sync', dc: this.dcId, eps: [...this.local.keys()] });
  }

  nodeDown(_now: number, node: NodeId): void {
    this.up.delete(node);
    for (const [ep, n] of this.where) if (n === node) this.where.delete(ep);
    for (const l of this.local.values()) {
      l.inbox = l.inbox.filter((it) => it.node !== node);
      for (const [c, s] of l.serving) if (s.node === node) l.serving.delete(c);
      const p = l.pending;
      if (p !== undefined && p.node === node) {
        l.pending = undefined;
        this.io.complete(l.proc, p.callId, { ok: false, code: 'ENOTCONN' });
      }
    }
    // Posts outstanding to endpoints we no longer know: fail them (they may have been delivered).
    for (const l of this.local.values()) {
      for (const [dst, n] of l.postOut) {
        if (n > 0 && !this.where.has(dst)) {
          l.postOut.set(dst, 0);
          this.io.toProc(l.proc, { ev: 'postFailed', dst, code: 'ENOTCONN', n });
        }
      }
    }
  }

  fromNode(now: number, node: NodeId, frame: NodeFrame): void {
    const f = frame as NodeFrame & Record<string, unknown>;
    switch (frame.t) {
      case 'bind':
        this.where.set(f.ep as Endpoint, node);
        return;
      case 'unbind':
        if (this.where.get(f.ep as Endpoint) === node) this.where.delete(f.ep as Endpoint);
        return;
      case 'sync':
        for (const ep of f.eps as Endpoint[]) this.where.set(ep, node);
        return;
      case 'msg': {
        const it: Item = {
          src: frame.src,
          kind: frame.kind,
          type: frame.type,
          payload: frame.payload,
          node,
          op: frame.op,
        };
        if (!this.local.has(frame.dst)) {
          this.refuse(frame.dst, it, 'ENOTBOUND');
          return;
        }
        this.enqueue(frame.dst, it);
        return;
      }
      case 'ack': {
        const l = this.local.get(frame.dst);
        if (l === undefined) return;
        if (frame.op === 0) {
          if ((l.postOut.get(frame.src) ?? 0) > 0)
            this.postDone(l, frame.src, 'failed', frame.code ?? 'EDSTDIED');
          return;
        }
        const p = l.pending;
        if (p === undefined || p.callId !== frame.op) return;
        if (frame.code === null && p.call.op === 'sendrec') {
          if (p.phase === 'cancelling') {
            l.pending = undefined;
            this.io.complete(l.proc, p.callId, { ok: false, code: 'ETIMEDOUT' });
            return;
          }
          p.phase = 'reply';
          return;
        }
        l.pending = undefined;
        this.io.complete(
          l.proc,
          p.callId,
          frame.code === null ? { ok: true } : { ok: false, code: frame.code },
        );
        return;
      }
      case 'reply': {
        const l = this.local.get(frame.dst);
        const p = l?.pending;
        if (l === undefined || p === undefined || p.callId !== frame.op || p.phase !== 'reply') return;
        l.pending = undefined;
        this.io.complete(l.proc, p.callId, {
          ok: true,
          msg: { source: frame.src, type: frame.type, payload: frame.payload, kind: 'send' },
        });
        return;
      }
      case 'wakeup':
        this.wake(f.dst as Endpoint);
        return;
      case 'notify':
        if (this.local.has(frame.dst)) this.note(frame.dst, frame.src, frame.ts);
        return;
      case 'credit': {
        const l = this.local.get(frame.dst);
        if (l !== undefined && (l.postOut.get(frame.src) ?? 0) > 0) this.postDone(l, frame.src, 'credit');
        return;
      }
      case 'cancel': {
        const d = this.local.get(f.dst as Endpoint);
        if (d === undefined) return;
        const i = d.inbox.findIndex((it) => it.node === node && it.op === f.op && it.src === f.src);
        if (i < 0) return; // already taken: the ack with code null is on its way
        d.inbox.splice(i, 1);
        this.io.toNode(node, {
          t: 'ack',
          dc: this.dcId,
          src: d.ep,
          dst: f.src as Endpoint,
          op: f.op as number,
          code: (f.reason as ErrorCode) ?? 'ETIMEDOUT',
        });
        return;
      }
      default:
        this.io.log('warn', `fake kernel ignores ${frame.t}`, { now });
    }
  }

  private enqueue(dst: Endpoint, it: Item): void {
    const d = this.local.get(dst);
    if (d === undefined) {
      this.refuse(dst, it, 'EDSTDIED');
      return;
    }
    d.inbox.push(it);
    this.match(d);
  }

  private note(dst: Endpoint, src: Endpoint, ts: number): void {
    const d = this.local.get(dst);
    if (d === undefined) return;
    if (!d.notes.has(src)) d.notes.set(src, ts);
    this.match(d);
  }

  /** If `d` is receiving and something matches, hand it over. */
  private match(d: LocalEp): void {
    const p = d.pending;
    if (p === undefined || p.phase !== 'recv') return;
    const call = p.call;
    if (call.op === 'receive') {
      for (const [src, ts] of d.notes) {
        if (call.src !== ANY && call.src !== src) continue;
        d.notes.delete(src);
        d.pending = undefined;
        this.io.complete(d.proc, p.callId, {
          ok: true,
          msg: { source: src, type: NOTIFY_TYPE, payload: new Uint8Array(0), kind: 'notify', timestamp: ts },
        });
        return;
      }
    }
    const i = d.inbox.findIndex((it) =>
      call.op === 'receiveRequest'
        ? it.kind === 'request'
        : call.op === 'receive' && (call.src === ANY || call.src === it.src),
    );
    if (i < 0) return;
    const it = d.inbox.splice(i, 1)[0] as Item;
    d.pending = undefined;
    this.taken(d, it);
    this.io.complete(d.proc, p.callId, {
      ok: true,
      msg: { source: it.src, type: it.type, payload: it.payload, kind: it.kind as MsgKind },
    });
  }

  private taken(d: LocalEp, it: Item): void {
    if (it.node !== undefined) {
      if (it.kind === 'post')
        this.io.toNode(it.node, { t: 'credit', dc: this.dcId, src: d.ep, dst: it.src, n: 1 });
      else
        this.io.toNode(it.node, { t: 'ack', dc: this.dcId, src: d.ep, dst: it.src, op: it.op, code: null });
      if (it.kind === 'request') d.serving.set(it.src, { node: it.node, op: it.op });
      return;
    }
    const s = this.local.get(it.src);
    if (s === undefined) return;
    if (it.kind === 'post') {
      this.postDone(s, d.ep, 'credit');
      return;
    }
    const p = s.pending;
    if (p === undefined || p.callId !== it.callId) return;
    if (it.kind === 'send') {
      s.pending = undefined;
      this.io.complete(s.proc, p.callId, { ok: true });
    } else p.phase = 'reply';
  }
}

function dstOf(c: Call): Endpoint {
  return 'dst' in c && typeof c.dst === 'number' ? c.dst : -1;
}
