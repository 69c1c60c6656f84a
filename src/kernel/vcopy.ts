/**
 * vcopy: bulk copy between grants of two processes, on any placement of requester (R), source (S) and
 * destination (D) over one, two or three nodes.
 *
 * Flow (every hop is a frame between kernels, or a direct call when both ends are the same node, so the
 * 1-, 2- and 3-node placements run the same code):
 * ```
 *   R's node                    S's node                          D's node
 *   vcopy call ──copyReq──────▶ check rq privilege, S's grant
 *                               ('r'/'rw', range) and D's location
 *                               pump: grantRead to S (≤ COPY_WINDOW chunks
 *                               of COPY_CHUNK in flight)
 *                               S answers grantData ──copyData──▶ check rq privilege, D's grant
 *                                                                 ('w'/'rw', range): grantWrite
 *                               next chunk ◀───────────copyAck─── D answers grantWritten
 *   complete ◀─────copyDone──── all bytes acked (or first error)
 *   (cancel/death) ─copyAbort─▶ pump stops
 * ```
 * Grants are checked by the kernel that owns them, on every chunk (a revoke takes effect at once). The
 * requester must be S or D, or a system endpoint (privileged third party); the requester's node checks it
 * and so do S's and D's nodes, which never trust the frame. The data flows S -> D directly; it never passes
 * through R's node unless R shares it. Parties need not be blocked: the SDK answers grantRead/grantWrite in
 * the background. A copy whose S or D moved fails (EMOVED/ENOTBOUND); it is not replayed.
 */
import { type ErrorCode, isErrorCode } from '../protocol/errors.js';
import { isCodeOrNull, isCount, isEp, isGrantRef, isInt } from './frames.js';
import { type DcState, type Ep, type PendingCall, type Proc, St } from './state.js';
import type { CallResult, ControlFrame, GrantRef, KernelIO, NodeId } from './types.js';

/** Chunk size of a copy. */
export const COPY_CHUNK = 256 * 1024;
/** Chunks in flight per copy (read requested and not yet acked by the destination). */
export const COPY_WINDOW = 8;

/** What the copy engine needs from the kernel. */
export interface CopyHost {
  readonly nodeId: NodeId;
  readonly io: KernelIO;
  dc(id: number): DcState | undefined;
  /** The sending node's claim that `ep` lives there, checked (and learned if unknown); null if refused. */
  checkSrc(dc: DcState, node: NodeId, ep: number): Ep | null;
  /** The node is declared down. */
  isDown(node: NodeId): boolean;
  /** A frame may be sent to the node (link up). */
  isUp(node: NodeId): boolean;
  finish(call: PendingCall, result: CallResult): void;
}

/** Requester side of one copy. */
interface Xfer {
  id: number;
  call: PendingCall;
  srcNode: NodeId;
  dstNode: NodeId;
}

/** Source side: reads chunks from S and pushes them to D's node. */
class Pump {
  next = 0;
  acked = 0;
  inflight = 0;
  done = false;
  constructor(
    readonly id: number,
    readonly dc: DcState,
    readonly reqNode: NodeId,
    readonly rx: number,
    readonly rq: number,
    readonly src: Ep,
    readonly srcRef: GrantRef,
    readonly dstRef: GrantRef,
    readonly dstNode: NodeId,
    readonly bytes: number,
  ) {}
}

type IoWait =
  | { kind: 'read'; proc: Proc; pump: Pump; rel: number; n: number }
  | { kind: 'write'; proc: Proc; ep: Ep; node: NodeId; x: number; offset: number; n: number };

const OK: CallResult = Object.freeze({ ok: true });

function fail(code: ErrorCode, message?: string): CallResult {
  return message === undefined ? { ok: false, code } : { ok: false, code, message };
}

function allows(access: string, want: 'r' | 'w'): boolean {
  return access === 'rw' || access === want;
}

export class CopyEngine {
  private readonly host: CopyHost;
  private readonly xfers = new Map<number, Xfer>();
  private readonly pumps = new Map<number, Pump>();
  /** Pumps by requester node and requester xfer id (for copyAbort). */
  private readonly byReq = new Map<string, Pump>();
  /** Outstanding grantRead/grantWrite events by their xfer number. */
  private readonly waits = new Map<number, IoWait>();
  private nextId = 1;

  constructor(host: CopyHost) {
    this.host = host;
  }

  /** A vcopy call of `call.ep`. Validates, then starts the flow (or completes the call with an error). */
  start(call: PendingCall, src: GrantRef, dst: GrantRef, bytes: number): void {
    const h = this.host;
    const e = call.ep;
    const dc = e.dc;
    if (!isGrantRef(src) || !isGrantRef(dst) || !isCount(bytes)) {
      h.finish(call, fail('EINVAL'));
      return;
    }
    if (e.ep !== src.ep && e.ep !== dst.ep && e.ep >= dc.cfg.sysEndpoints) {
      h.finish(call, fail('EPERM', 'vcopy between other endpoints needs a system endpoint'));
      return;
    }
    const srcNode = this.where(dc, src.ep);
    if (typeof srcNode === 'string') {
      h.finish(call, fail(srcNode));
      return;
    }
    const dstNode = this.where(dc, dst.ep);
    if (typeof dstNode === 'string') {
      h.finish(call, fail(dstNode));
      return;
    }
    if (bytes === 0) {
      h.finish(call, OK);
      return;
    }
    const x: Xfer = { id: this.nextId++, call, srcNode, dstNode };
    this.xfers.set(x.id, x);
    call.state = St.Copy;
    call.rop = x.id;
    e.copies++;
    this.send(srcNode, { t: 'copyReq', dc: dc.cfg.id, x: x.id, rq: e.ep, src, dst, bytes });
  }

  /** A copy frame from `node` (this node for local hops). The DC was checked by the caller. */
  frame(node: NodeId, dc: DcState, f: ControlFrame): void {
    switch (f.t) {
      case 'copyReq': {
        this.onReq(node, dc, f);
        return;
      }
      case 'copyData': {
        this.onData(node, dc, f);
        return;
      }
      case 'copyAck': {
        this.onAck(node, f);
        return;
      }
      case 'copyDone': {
        this.onDone(node, f);
        return;
      }
      case 'copyAbort': {
        this.onAbort(node, f);
        return;
      }
      default:
        return;
    }
  }

  /** The process answered a grantRead. */
  grantData(proc: number, xfer: number, data: Uint8Array | ErrorCode): void {
    const w = this.waits.get(xfer);
    if (w === undefined || w.kind !== 'read' || w.proc.id !== proc) {
      this.host.io.log('debug', 'grantData for no pending read', { proc, xfer });
      return;
    }
    this.waits.delete(xfer);
    const p = w.pump;
    if (p.done) {
      return;
    }
    if (typeof data === 'string') {
      this.end(p, isErrorCode(data) ? data : 'EFAULT');
      return;
    }
    if (!(data instanceof Uint8Array) || data.length !== w.n) {
      this.end(p, 'EPROTO');
      return;
    }
    p.src.counters.copyBytes += w.n;
    this.send(p.dstNode, {
      t: 'copyData',
      dc: p.dc.cfg.id,
      x: p.id,
      rq: p.rq,
      src: p.srcRef.ep,
      dst: p.dstRef.ep,
      grant: p.dstRef.grant,
      offset: p.dstRef.offset + w.rel,
      end: p.dstRef.offset + p.bytes,
      data,
    });
  }

  /** The process answered a grantWrite. */
  grantWritten(proc: number, xfer: number, code: ErrorCode | null): void {
    const w = this.waits.get(xfer);
    if (w === undefined || w.kind !== 'write' || w.proc.id !== proc) {
      this.host.io.log('debug', 'grantWritten for no pending write', { proc, xfer });
      return;
    }
    this.waits.delete(xfer);
    w.ep.copies--;
    this.ack(w, isCodeOrNull(code) ? code : 'EPROTO');
  }

  /** The call was cancelled, or its process left: stop the copy without completing anything. */
  dropCall(call: PendingCall): void {
    const x = this.xfers.get(call.rop);
    if (x === undefined || x.call !== call) return;
    this.xfers.delete(x.id);
    call.ep.copies--;
    if (this.reachable(x.srcNode)) {
      this.send(x.srcNode, { t: 'copyAbort', dc: call.ep.dc.cfg.id, x: x.id });
    }
  }

  /** Local endpoint `ep` was unbound: copies reading from it fail, writes into it are refused. */
  epGone(ep: Ep): void {
    for (const p of this.pumps.values()) if (p.src === ep) this.end(p, 'ESRCDIED');
    for (const [id, w] of this.waits) {
      if (w.kind === 'read' ? w.pump.src !== ep : w.ep !== ep) continue;
      this.waits.delete(id);
      if (w.kind === 'write') {
        ep.copies--;
        this.ack(w, 'EDSTDIED');
      }
    }
  }

  /** `node` is declared down: copies that need it fail with ENOTCONN. */
  nodeDown(node: NodeId): void {
    for (const x of this.xfers.values()) {
      if (x.srcNode !== node && x.dstNode !== node) continue;
      // finish() -> dropCall() sends copyAbort to the source node when it is still reachable.
      this.host.finish(x.call, fail('ENOTCONN', `node ${node} is down`));
    }
    for (const p of this.pumps.values()) {
      if (p.reqNode === node) this.stop(p);
      else if (p.dstNode === node) this.end(p, 'ENOTCONN');
    }
  }

  /** Copies in progress (requester side), for introspection and tests. */
  get active(): number {
    return this.xfers.size;
  }

  /** Where endpoint `ep` lives, or the error a copy involving it gets. */
  private where(dc: DcState, ep: number): NodeId | ErrorCode {
    const e = dc.eps.get(ep);
    if (e === undefined) return 'ENOTBOUND';
    if (e.isLocal) return this.host.nodeId;
    if (e.nodeDown || this.host.isDown(e.node)) return 'ENOTCONN';
    return e.node;
  }

  private onReq(node: NodeId, dc: DcState, f: ControlFrame): void {
    const { x, rq, src, dst, bytes } = f;
    if (!isCount(x)) {
      this.warn('copyReq without id', node, f);
      return;
    }
    const refuse = (code: ErrorCode) => this.send(node, { t: 'copyDone', dc: dc.cfg.id, x, code });
    if (!isEp(rq) || !isGrantRef(src) || !isGrantRef(dst) || !isCount(bytes) || bytes === 0) {
      this.warn('malformed copyReq', node, f);
      refuse('EPROTO');
      return;
    }
    if (node !== this.host.nodeId && this.host.checkSrc(dc, node, rq) === null) {
      refuse('EPERM');
      return;
    }
    if (rq !== src.ep && rq !== dst.ep && rq >= dc.cfg.sysEndpoints) {
      refuse('EPERM');
      return;
    }
    const s = dc.eps.get(src.ep);
    if (s === undefined || !s.isLocal) {
      refuse('ENOTBOUND');
      return;
    }
    const code = this.checkGrant(s.proc, src.grant, 'r', src.offset, src.offset + bytes);
    if (code !== null) {
      refuse(code);
      return;
    }
    const dstNode = this.where(dc, dst.ep);
    if (typeof dstNode === 'string') {
      refuse(dstNode);
      return;
    }
    const p = new Pump(this.nextId++, dc, node, x, rq, s, src, dst, dstNode, bytes);
    this.pumps.set(p.id, p);
    this.byReq.set(`${node}/${x}`, p);
    s.copies++;
    this.fill(p);
  }

  /** Ask the source for more chunks while the window allows. */
  private fill(p: Pump): void {
    const proc = p.src.proc;
    while (!p.done && p.inflight < COPY_WINDOW && p.next < p.bytes) {
      const off = p.srcRef.offset + p.next;
      const n = Math.min(COPY_CHUNK, p.bytes - p.next);
      // Re-checked per chunk so a revoke stops a copy in progress.
      const code = this.checkGrant(proc, p.srcRef.grant, 'r', off, p.srcRef.offset + p.bytes);
      if (code !== null || proc === null) {
        this.end(p, code ?? 'EFAULT');
        return;
      }
      const xfer = this.nextId++;
      this.waits.set(xfer, { kind: 'read', proc, pump: p, rel: p.next, n });
      p.next += n;
      p.inflight++;
      this.host.io.toProc(proc.id, { ev: 'grantRead', xfer, grant: p.srcRef.grant, offset: off, length: n });
    }
  }

  private onData(node: NodeId, dc: DcState, f: ControlFrame): void {
    const { x, rq, src, dst, grant, offset, end, data } = f;
    if (!isCount(x) || !isCount(offset) || !(data instanceof Uint8Array)) {
      this.warn('malformed copyData', node, f);
      return;
    }
    const reply = (code: ErrorCode) =>
      this.send(node, { t: 'copyAck', dc: dc.cfg.id, x, offset, n: data.length, code });
    if (!isEp(rq) || !isEp(src) || !isEp(dst) || !isInt(grant) || !isCount(end) || data.length > COPY_CHUNK) {
      this.warn('malformed copyData', node, f);
      reply('EPROTO');
      return;
    }
    if (node !== this.host.nodeId && this.host.checkSrc(dc, node, src) === null) {
      reply('EPERM');
      return;
    }
    if (rq !== src && rq !== dst && rq >= dc.cfg.sysEndpoints) {
      reply('EPERM');
      return;
    }
    const d = dc.eps.get(dst);
    if (d === undefined || !d.isLocal) {
      reply('ENOTBOUND');
      return;
    }
    if (offset + data.length > end) {
      reply('EFAULT');
      return;
    }
    const code = this.checkGrant(d.proc, grant, 'w', offset, end);
    if (code !== null || d.proc === null) {
      reply(code ?? 'EFAULT');
      return;
    }
    const xfer = this.nextId++;
    this.waits.set(xfer, { kind: 'write', proc: d.proc, ep: d, node, x, offset, n: data.length });
    d.copies++;
    this.host.io.toProc(d.proc.id, { ev: 'grantWrite', xfer, grant, offset, data });
  }

  private onAck(node: NodeId, f: ControlFrame): void {
    const p = typeof f.x === 'number' ? this.pumps.get(f.x) : undefined;
    if (p === undefined || p.done || p.dstNode !== node) {
      return;
    }
    if (!isCodeOrNull(f.code) || !isCount(f.n)) {
      this.end(p, 'EPROTO');
      return;
    }
    if (f.code !== null) {
      this.end(p, f.code);
      return;
    }
    p.acked += f.n;
    p.inflight--;
    if (p.acked >= p.bytes) this.end(p, null);
    else this.fill(p);
  }

  private onDone(node: NodeId, f: ControlFrame): void {
    const x = typeof f.x === 'number' ? this.xfers.get(f.x) : undefined;
    if (x === undefined || x.srcNode !== node) return;
    this.xfers.delete(x.id);
    x.call.ep.copies--;
    const code = isCodeOrNull(f.code) ? f.code : 'EPROTO';
    this.host.finish(x.call, code === null ? OK : fail(code));
  }

  private onAbort(node: NodeId, f: ControlFrame): void {
    const p = this.byReq.get(`${node}/${String(f.x)}`);
    if (p !== undefined) this.stop(p);
  }

  /** Finish a pump and tell the requester. */
  private end(p: Pump, code: ErrorCode | null): void {
    if (p.done) return;
    this.stop(p);
    if (this.reachable(p.reqNode)) this.send(p.reqNode, { t: 'copyDone', dc: p.dc.cfg.id, x: p.rx, code });
  }

  /** Finish a pump silently (its pending reads are ignored when they come back). */
  private stop(p: Pump): void {
    if (p.done) return;
    p.done = true;
    this.pumps.delete(p.id);
    this.byReq.delete(`${p.reqNode}/${p.rx}`);
    p.src.copies--;
  }

  private ack(w: IoWait & { kind: 'write' }, code: ErrorCode | null): void {
    if (!this.reachable(w.node)) return;
    this.send(w.node, { t: 'copyAck', dc: w.ep.dc.cfg.id, x: w.x, offset: w.offset, n: w.n, code });
  }

  private checkGrant(
    proc: Proc | null,
    grant: number,
    want: 'r' | 'w',
    offset: number,
    end: number,
  ): ErrorCode | null {
    const g = proc?.grants.get(grant);
    if (g === undefined || !allows(g.access, want) || offset < 0 || end > g.size) return 'EFAULT';
    return null;
  }

  private reachable(node: NodeId): boolean {
    return node === this.host.nodeId || this.host.isUp(node);
  }

  /** Hand a frame to `node`, or process it here at once for a local hop. */
  private send(node: NodeId, f: ControlFrame): void {
    if (node === this.host.nodeId) {
      const dc = this.host.dc(f.dc);
      if (dc !== undefined) this.frame(node, dc, f);
    } else {
      this.host.io.toNode(node, f);
    }
  }

  private warn(msg: string, node: NodeId, f: ControlFrame): void {
    this.host.io.log('warn', msg, { node, t: f.t, dc: f.dc });
  }
}
