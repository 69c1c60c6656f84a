/**
 * The DVK kernel: DCs, the endpoint table and the IPC semantics of DESIGN.md §4, as a pure state machine
 * (events in through {@link KernelApi}, effects out through {@link KernelIO}; no clock, no I/O, no random).
 *
 * Local IPC: every local endpoint has one FIFO inbox holding sends, requests and posts alike (so per-pair
 * order holds across kinds), plus a map of pending notifications. A sender to an endpoint blocked in a
 * matching receive hands over at once; otherwise its message is queued and (send/request) the sender stays
 * blocked until the receiver takes it.
 *
 * Remote IPC (one `msg` frame per message; `op` ids from a per-kernel counter identify the sender's call):
 * ```
 *   send      A ──msg{send,op}──▶ queued in B's inbox like a local sender ... B takes it ──ack{op,null}──▶ A ok
 *   sendrec   A ──msg{request,op}──▶ B takes it (B NOMIGRATE) ... reply ──reply{op}──▶ A ok(msg) ──replyAck──▶ B ok
 *   post      A ──msg{post,0}──▶ queued ... consumed: credits batched back ──credit{n}──▶ A's window
 *   errors    ack{op,code} for send/request (EMOVED carries the new node: A re-points and resends the same op),
 *             postFail{code,n} for posts.
 *   cancel    A ──cancel{op}──▶ B's kernel withdraws the message if still queued (or forgets a taken request)
 *             and answers ack{op,reason}; an ack{op,null} or a reply sent before it wins (exactly once).
 * ```
 * Directory: local binds/unbinds are broadcast (`bind`/`unbind`) to the DC's other nodes that are up; on
 * nodeUp a `sync` lists every local endpoint per shared DC and replaces what the peer knew of us. Every frame
 * is re-checked here (DC membership of the sending node, source location, payload size, destination).
 */
import { dvsError, type ErrorCode, isErrorCode } from '../protocol/errors.js';
import { reachesCaller } from './deadlock.js';
import { type EpDesc, epDesc, isCodeOrNull, isCount, isEp, isInt } from './frames.js';
import { DcState, EMPTY, Ep, Msg, NONE, PendingCall, PostIn, Proc, St } from './state.js';
import {
  ANY,
  type AttachOptions,
  type Call,
  type CallId,
  type CallResult,
  type ControlFrame,
  type DcConfig,
  type DcId,
  type Endpoint,
  type EndpointInfo,
  type KernelApi,
  type KernelClusterApi,
  type KernelIO,
  type KernelMigrationApi,
  type KernelReplicationApi,
  MAX_ENDPOINT,
  MAX_PAYLOAD_LIMIT,
  type MigrationCarry,
  NOTIFY_TYPE,
  type NodeFrame,
  type NodeId,
  type ProcId,
  type Received,
  type RemoteBinding,
} from './types.js';
import { CopyEngine } from './vcopy.js';

/** Options of {@link Kernel}. */
export interface KernelOptions {
  /** This node's id. */
  nodeId: NodeId;
  /** Where completions, process events, frames and diagnostics go. */
  io: KernelIO;
}

/** EMOVED bounces one operation may take before it fails (a guard against stale directory loops). */
const MAX_BOUNCES = 8;

const OK: CallResult = Object.freeze({ ok: true });

/**
 * `n` posts from local sender `s` to `dst` are settled (consumed or failed): shrink the outstanding count,
 * forgetting the destination when none is left. False if `s` had none outstanding to `dst`.
 */
function settlePosts(s: Ep, dst: Endpoint, n: number): boolean {
  const out = s.postOut?.get(dst);
  if (out === undefined) return false;
  if (out > n) s.postOut!.set(dst, out - n);
  else {
    s.postOut!.delete(dst);
    s.postAt?.delete(dst);
  }
  return true;
}

function fail(code: ErrorCode, message?: string): CallResult {
  return message === undefined ? { ok: false, code } : { ok: false, code, message };
}

/**
 * The DVK kernel of one node.
 *
 * @example
 * const k = new Kernel({ nodeId: 1, io });
 * k.createDc({ id: 1, name: 'web', nodes: [1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 });
 * k.attach(now, proc, 1, 100, { pid: 4242 });
 * k.call(now, proc, 1, { op: 'receive', src: ANY, nowait: false });
 */
export class Kernel implements KernelApi, KernelClusterApi, KernelMigrationApi, KernelReplicationApi {
  readonly nodeId: NodeId;
  private readonly io: KernelIO;
  private readonly dcs = new Map<DcId, DcState>();
  private readonly procs = new Map<ProcId, Proc>();
  /** Nodes whose link is up (nodeUp and no nodeDown since). */
  private readonly up = new Set<NodeId>();
  /** Nodes declared down (until nodeUp). */
  private readonly down = new Set<NodeId>();
  /** Remote send/request operations of local callers, by op id. */
  private readonly ops = new Map<number, PendingCall>();
  /** reply() calls waiting for a replyAck, by client node and the client's op id. */
  private readonly replies = new Map<NodeId, Map<number, PendingCall>>();
  private nextOp = 1;
  private readonly copy: CopyEngine;
  /**
   * Node-wide counters (monotonic) for metrics: operations bounced with EMOVED (to a stale sender, or
   * forwarded out of a migrating endpoint's inbox), operations replayed after an EMOVED, migrations.
   */
  readonly stats = { emovedBounces: 0, emovedReplays: 0, migrationsOut: 0, migrationsIn: 0 };

  constructor(opts: KernelOptions) {
    this.nodeId = opts.nodeId;
    this.io = opts.io;
    this.copy = new CopyEngine({
      nodeId: this.nodeId,
      io: this.io,
      dc: (id) => this.dcs.get(id),
      checkSrc: (dc, node, ep) => this.checkSrc(dc, node, ep),
      isDown: (node) => this.down.has(node),
      isUp: (node) => this.up.has(node),
      finish: (call, result) => this.finish(call, result),
    });
  }

  // ───────────────────────────── DCs ─────────────────────────────

  createDc(cfg: DcConfig): void {
    this.checkDcConfig(cfg);
    if (this.dcs.has(cfg.id)) throw dvsError('EEXIST', `DC ${cfg.id} exists`, { dc: cfg.id });
    if (this.findDc(cfg.name) !== undefined)
      throw dvsError('EEXIST', `DC ${cfg.name} exists`, { dc: cfg.id });
    this.dcs.set(cfg.id, new DcState({ ...cfg, nodes: [...cfg.nodes] }));
    // Peers already linked learned nothing of this DC from us at nodeUp, nor we from them: ask for their lists.
    for (const n of cfg.nodes) {
      if (n !== this.nodeId && this.up.has(n)) this.io.toNode(n, { t: 'syncReq', dc: cfg.id });
    }
  }

  updateDc(now: number, cfg: DcConfig): void {
    const dc = this.needDc(cfg.id);
    this.checkDcConfig(cfg);
    if (cfg.name !== dc.cfg.name) {
      throw dvsError('EINVAL', `DC ${cfg.id} is named ${dc.cfg.name}, not ${cfg.name}`, { dc: cfg.id });
    }
    const before = dc.nodes;
    dc.cfg = { ...cfg, nodes: [...cfg.nodes] };
    dc.nodes = new Set(cfg.nodes);
    for (const n of before) {
      if (!dc.nodes.has(n)) this.dropNodeFromDc(now, dc, n);
    }
    // Nodes that joined and are linked: ask for their lists (as createDc does); they ask us from their side.
    for (const n of dc.nodes) {
      if (n !== this.nodeId && !before.has(n) && this.up.has(n))
        this.io.toNode(n, { t: 'syncReq', dc: cfg.id });
    }
  }

  /** `node` left `dc`: what we knew of its endpoints is unbound, posts towards it are reported failed. */
  private dropNodeFromDc(_now: number, dc: DcState, node: NodeId): void {
    const why = `node ${node} left DC ${dc.cfg.name}`;
    for (const e of [...dc.eps.values()]) {
      if (e.isLocal) {
        this.failPostsTo(e, node, 'EDSTDIED');
        continue;
      }
      if (e.node !== node) continue;
      if (e.kind === 'backup') {
        this.backupLostPrimary(e);
        continue;
      }
      this.unbindRemote(e);
    }
    // Remote operations of local callers towards that node that no endpoint entry covered any more.
    for (const c of [...this.ops.values()]) {
      if (c.ep.dc === dc && c.node === node)
        this.finish(c, fail(c.kind === 'request' ? 'ESRCDIED' : 'EDSTDIED', why));
    }
    const rs = this.replies.get(node);
    if (rs !== undefined) {
      for (const c of [...rs.values()]) if (c.ep.dc === dc) this.finish(c, fail('EDSTDIED', why));
    }
  }

  /**
   * Report as failed (`code`) the posts local sender `e` still has outstanding towards `node`. By the node the
   * posts went to: the destination may have been unbound since (its postFail answers died with the node), and
   * those posts must still be reported.
   */
  private failPostsTo(e: Ep, node: NodeId, code: ErrorCode): void {
    if (e.postOut === null || e.postAt === null || e.proc === null) return;
    for (const [dst, n] of [...e.postOut]) {
      if (e.postAt.get(dst) !== node) continue;
      settlePosts(e, dst, n);
      if (n > 0) this.io.toProc(e.proc.id, { ev: 'postFailed', dst, code, n });
    }
  }

  /** EINVAL unless `cfg` is a well-formed DC config that includes this node. */
  private checkDcConfig(cfg: DcConfig): void {
    const okId = Number.isInteger(cfg.id) && cfg.id >= 1 && cfg.id <= 65535;
    const okNodes =
      Array.isArray(cfg.nodes) && cfg.nodes.every((n) => Number.isInteger(n) && n >= 0 && n <= 65535);
    if (
      !okId ||
      typeof cfg.name !== 'string' ||
      cfg.name === '' ||
      !okNodes ||
      !cfg.nodes.includes(this.nodeId) ||
      !Number.isInteger(cfg.maxPayload) ||
      cfg.maxPayload < 1 ||
      cfg.maxPayload > MAX_PAYLOAD_LIMIT ||
      !Number.isInteger(cfg.sysEndpoints) ||
      cfg.sysEndpoints < 0 ||
      cfg.sysEndpoints > MAX_ENDPOINT + 1 ||
      !Number.isInteger(cfg.postWindow) ||
      cfg.postWindow < 1
    ) {
      throw dvsError('EINVAL', `bad DC config for ${String(cfg.name)}`, { dc: cfg.id });
    }
  }

  removeDc(now: number, id: DcId): number[] {
    const dc = this.needDc(id);
    const pids: number[] = [];
    for (const e of [...dc.eps.values()]) {
      if (!e.isLocal && e.kind !== 'backup') continue;
      if (e.pid >= 0) pids.push(e.pid);
      this.unbindLocal(now, e, 'ENOTBOUND');
    }
    for (const e of [...dc.eps.values()]) this.releaseRemote(e);
    this.dcs.delete(id);
    return pids;
  }

  listDcs(): DcConfig[] {
    return [...this.dcs.values()].map((d) => ({ ...d.cfg, nodes: [...d.cfg.nodes] }));
  }

  findDc(idOrName: DcId | string): DcConfig | undefined {
    if (typeof idOrName === 'number') return this.dcs.get(idOrName)?.cfg;
    for (const d of this.dcs.values()) if (d.cfg.name === idOrName) return d.cfg;
    return undefined;
  }

  // ─────────────────────────── binding ───────────────────────────

  reserve(_now: number, dcId: DcId, ep: Endpoint, pid: number, name?: string): void {
    const dc = this.needDc(dcId);
    if (!isEp(ep) || !isInt(pid)) throw dvsError('EINVAL', `bad endpoint ${ep} or pid ${pid}`);
    if (dc.eps.has(ep)) throw dvsError('EBOUND', `endpoint ${ep} is bound`, { dc: dcId, ep });
    const e = new Ep(dc, ep, name ?? `ep${ep}`, 'local', this.nodeId, pid);
    e.waitBind = true;
    dc.eps.set(ep, e);
    this.broadcastBind(e);
  }

  attach(_now: number, procId: ProcId, dcId: DcId, ep: Endpoint, opts: AttachOptions): void {
    const old = this.procs.get(procId);
    if (old?.ep) throw dvsError('EINVAL', `session ${procId} is already attached`);
    const dc = this.needDc(dcId);
    if (!isEp(ep) || !isInt(opts.pid)) throw dvsError('EINVAL', `bad endpoint ${ep} or pid ${opts.pid}`);
    const existing = dc.eps.get(ep);
    const p = old ?? new Proc(procId);
    let e: Ep;
    if (opts.kind === 'backup') {
      const primary = opts.primaryNode;
      if (primary === undefined || primary === this.nodeId || !dc.nodes.has(primary)) {
        throw dvsError('EINVAL', 'a backup needs the primary node (another node of the DC)');
      }
      if (existing !== undefined && existing.kind !== 'remote') {
        throw dvsError('EBOUND', `endpoint ${ep} is bound`, { dc: dcId, ep });
      }
      // A backup routes like a remote entry (traffic goes to the primary); it is not announced.
      e = existing ?? new Ep(dc, ep, opts.name ?? `ep${ep}`, 'backup', primary, opts.pid);
      this.releaseRemote(e);
      e.kind = 'backup';
      e.node = primary;
      e.pid = opts.pid;
      e.nodeDown = this.down.has(primary);
      e.primaryGone = false;
      if (opts.name !== undefined) e.name = opts.name;
    } else if (existing?.kind === 'local' && existing.waitBind) {
      if (existing.pid !== opts.pid) {
        throw dvsError('EBOUND', `endpoint ${ep} is reserved for pid ${existing.pid}`, { dc: dcId, ep });
      }
      e = existing;
      e.waitBind = false;
      if (opts.name !== undefined && opts.name !== e.name) {
        e.name = opts.name;
        if (!e.migrating) this.broadcastBind(e);
      }
    } else if (existing !== undefined) {
      if (opts.kind !== 'replica' || existing.kind !== 'remote') {
        throw dvsError('EBOUND', `endpoint ${ep} is bound`, { dc: dcId, ep });
      }
      // A local replica takes over from what we knew of a replica elsewhere.
      e = existing;
      this.releaseRemote(e);
      e.kind = 'replica';
      e.node = this.nodeId;
      e.pid = opts.pid;
      e.nodeDown = false;
      if (opts.name !== undefined) e.name = opts.name;
      this.broadcastBind(e);
    } else {
      e = new Ep(dc, ep, opts.name ?? `ep${ep}`, opts.kind ?? 'self', this.nodeId, opts.pid);
      this.broadcastBind(e);
    }
    dc.eps.set(ep, e);
    e.proc = p;
    p.ep = e;
    this.procs.set(procId, p);
  }

  detach(now: number, procId: ProcId): void {
    const p = this.procs.get(procId);
    if (p === undefined) return;
    this.procs.delete(procId);
    for (const c of [...p.calls.values()]) this.unlink(c);
    if (p.ep !== null) this.unbindLocal(now, p.ep, null);
  }

  unbind(now: number, dcId: DcId, ep: Endpoint): void {
    const dc = this.needDc(dcId);
    const e = dc.eps.get(ep);
    if (e === undefined || (!e.isLocal && e.kind !== 'backup')) {
      throw dvsError('ENOTBOUND', `endpoint ${ep} is not bound here`, { dc: dcId, ep });
    }
    this.unbindLocal(now, e, 'ENOTBOUND');
  }

  // ──────────────────────────── calls ────────────────────────────

  call(now: number, procId: ProcId, callId: CallId, c: Call): void {
    const p = this.procs.get(procId);
    const e = p?.ep;
    if (p === undefined || e === undefined || e === null) {
      this.io.complete(procId, callId, fail('ENOTBOUND', 'session not attached'));
      return;
    }
    if (p.calls.has(callId)) {
      this.io.log('warn', 'call id reused while pending', { proc: procId, callId });
      this.io.complete(procId, callId, fail('EINVAL', 'call id in use'));
      return;
    }
    if (e.kind === 'backup' && c.op !== 'grant' && c.op !== 'revoke') {
      this.io.complete(procId, callId, fail('EPERM', 'a backup cannot do IPC until promoted'));
      return;
    }
    switch (c.op) {
      case 'send': {
        this.doSend(now, p, e, callId, 'send', c.dst, c.type, c.payload);
        return;
      }
      case 'sendrec': {
        this.doSend(now, p, e, callId, 'request', c.dst, c.type, c.payload);
        return;
      }
      case 'receive': {
        this.doReceive(p, e, callId, c.src, c.nowait, false);
        return;
      }
      case 'receiveRequest': {
        this.doReceive(p, e, callId, ANY, c.nowait, true);
        return;
      }
      case 'reply': {
        this.doReply(p, e, callId, c.dst, c.type, c.payload, false);
        return;
      }
      case 'replyRecv': {
        if (p.blocked !== null) {
          this.io.complete(procId, callId, fail('EBUSY', 'another blocking call is pending'));
          return;
        }
        if (this.doReply(p, e, callId, c.dst, c.type, c.payload, true)) {
          this.doReceive(p, e, callId, ANY, c.nowait, true);
        }
        return;
      }
      case 'notify': {
        this.doNotify(now, p, e, callId, c.dst);
        return;
      }
      case 'wakeup': {
        this.doWakeup(p, e, callId, c.dst);
        return;
      }
      case 'grant':
        if (
          !isInt(c.grant) ||
          !isCount(c.size) ||
          (c.access !== 'r' && c.access !== 'w' && c.access !== 'rw')
        ) {
          this.io.complete(procId, callId, fail('EINVAL', 'bad grant'));
          return;
        }
        p.grants.set(c.grant, { size: c.size, access: c.access });
        this.io.complete(procId, callId, OK);
        return;
      case 'revoke': {
        this.io.complete(procId, callId, p.grants.delete(c.grant) ? OK : fail('ENOENT', 'no such grant'));
        return;
      }
      case 'vcopy': {
        const call = new PendingCall(p, callId, e, 'vcopy', St.Copy, NONE);
        p.calls.set(callId, call);
        this.copy.start(call, c.src, c.dst, c.bytes);
        return;
      }
      default: {
        this.io.complete(procId, callId, fail('EINVAL', 'unknown call'));
        return;
      }
    }
  }

  cancel(_now: number, procId: ProcId, callId: CallId, reason: 'ETIMEDOUT' | 'EABORTED'): void {
    const call = this.procs.get(procId)?.calls.get(callId);
    if (call === undefined) return;
    if (call.state === St.Cancelling) return;
    if (call.state === St.Remote) {
      // The remote kernel decides: withdrawn (ack reason) or already taken (ack null / reply first).
      call.state = St.Cancelling;
      call.reason = reason;
      this.io.toNode(call.node, {
        t: 'cancel',
        dc: call.ep.dc.cfg.id,
        src: call.ep.ep,
        dst: call.peer,
        op: call.rop,
        reason,
      });
      return;
    }
    this.finish(call, fail(reason));
  }

  post(_now: number, procId: ProcId, dst: Endpoint, type: number, payload: Uint8Array): void {
    const p = this.procs.get(procId);
    const e = p?.ep;
    if (p === undefined) {
      return;
    }
    if (e === undefined || e === null || e.kind === 'backup') {
      this.postFailed(p, dst, 'EPERM', 1);
      return;
    }
    const dc = e.dc;
    if (payload.length > dc.cfg.maxPayload) {
      this.postFailed(p, dst, 'EMSGSIZE', 1);
      return;
    }
    if (dst === e.ep || !isEp(dst)) {
      this.postFailed(p, dst, 'EINVAL', 1);
      return;
    }
    const d = dc.eps.get(dst);
    if (d === undefined) {
      this.postFailed(p, dst, 'ENOTBOUND', 1);
      return;
    }
    const remote = !d.isLocal;
    if (remote && (d.nodeDown || this.down.has(d.node))) {
      this.postFailed(p, dst, 'ENOTCONN', 1);
      return;
    }
    e.postOut ??= new Map();
    const out = e.postOut.get(dst) ?? 0;
    if (out >= dc.cfg.postWindow) {
      this.io.log('warn', 'post window exceeded at the source', { dc: dc.cfg.id, src: e.ep, dst });
      this.postFailed(p, dst, 'ENOSPC', 1);
      return;
    }
    e.postOut.set(dst, out + 1);
    if (remote) {
      e.postAt ??= new Map();
      e.postAt.set(dst, d.node);
      e.counters.rmtSent++;
      this.io.toNode(d.node, { t: 'msg', dc: dc.cfg.id, src: e.ep, dst, kind: 'post', op: 0, type, payload });
      return;
    }
    e.counters.lclSent++;
    if (!this.enqueuePost(d, new Msg(e.ep, 'post', type, payload, null, NONE, 0))) {
      settlePosts(e, dst, 1);
      this.postFailed(p, dst, 'ENOSPC', 1);
    }
  }

  grantData(_now: number, proc: ProcId, xfer: number, data: Uint8Array | ErrorCode): void {
    this.copy.grantData(proc, xfer, data);
  }

  grantWritten(_now: number, proc: ProcId, xfer: number, code: ErrorCode | null): void {
    this.copy.grantWritten(proc, xfer, code);
  }

  // ───────────────────────────── links ─────────────────────────────

  nodeUp(_now: number, node: NodeId): void {
    // A repeat (membership and the link layer both report it) just sends the sync again: the peer applies a
    // sync as a replacement of what it knew of us, so the outcome is the same.
    if (node === this.nodeId) return;
    this.down.delete(node);
    this.up.add(node);
    this.sendSync(node);
    // Ask for the peer's list too. Its own link-up already sent one, but when our nodeDown came late (the
    // membership saw the node down after the link was back), that sync was applied before the nodeDown
    // marked its endpoints down, and the peer has no reason to send another: without this request they would
    // stay "node down" here for good. One syncReq in any shared DC gets the whole list.
    for (const dc of this.dcs.values()) {
      if (!dc.nodes.has(node)) continue;
      this.io.toNode(node, { t: 'syncReq', dc: dc.cfg.id });
      break;
    }
  }

  /** Tell `node` every local endpoint of every DC it shares with us (it replaces what it knew of us). */
  private sendSync(node: NodeId): void {
    const dcs: { dc: DcId; eps: EpDesc[] }[] = [];
    for (const dc of this.dcs.values()) {
      if (!dc.nodes.has(node)) continue;
      const eps: EpDesc[] = [];
      for (const e of dc.eps.values()) {
        if (e.isLocal) eps.push({ ep: e.ep, kind: e.kind, name: e.name, pid: e.pid });
      }
      dcs.push({ dc: dc.cfg.id, eps });
    }
    this.io.toNode(node, { t: 'sync', dc: 0, dcs });
  }

  nodeDown(_now: number, node: NodeId): void {
    // Already down (membership and the link layer both report it): everything waiting on it has failed.
    if (node === this.nodeId || (this.down.has(node) && !this.up.has(node))) {
      return;
    }
    this.up.delete(node);
    this.down.add(node);
    const why = `node ${node} is down`;
    for (const c of [...this.ops.values()]) {
      if (c.node !== node) continue;
      // A replicated destination's callers wait for its new primary instead of failing.
      if (c.state === St.Remote && c.ep.dc.replicated.has(c.peer)) this.failoverCall(c, node);
      else this.finish(c, fail('ENOTCONN', why));
    }
    const rs = this.replies.get(node);
    if (rs !== undefined) for (const c of rs.values()) this.finish(c, fail('ENOTCONN', why));
    this.replies.delete(node);
    for (const dc of this.dcs.values()) {
      if (!dc.nodes.has(node)) continue;
      for (const e of [...dc.eps.values()]) {
        if (!e.isLocal) {
          if (e.node !== node) continue;
          if (e.forgotten && e.kind === 'remote') {
            // The directory already said it is gone; only the live link kept it.
            this.unbindRemote(e);
            continue;
          }
          e.nodeDown = true;
          // Its queued sends here are dropped (posts stay: they were accepted) and its requests forgotten.
          this.releaseRemote(e);
          if (dc.replicated.has(e.ep)) this.startFailover(dc, e.ep);
          continue;
        }
        const r = e.recv;
        if (r !== null && !r.reqOnly && r.peer !== ANY) {
          const s = dc.eps.get(r.peer);
          if (s !== undefined && !s.isLocal && s.node === node) this.finish(r, fail('ENOTCONN', why));
        }
        this.failPostsTo(e, node, 'ENOTCONN');
      }
    }
    this.copy.nodeDown(node);
  }

  // ───────────────────────────── migration ─────────────────────────────

  migrateIn(_now: number, dcId: DcId, ep: Endpoint, pid: number, carry: MigrationCarry, name?: string): void {
    const dc = this.needDc(dcId);
    if (!isEp(ep) || !isInt(pid)) throw dvsError('EINVAL', `bad endpoint ${ep} or pid ${pid}`);
    const old = dc.eps.get(ep);
    if (old?.migrating && old.waitBind) {
      // The daemon reserves before it spawns the new process, then gives its pid.
      old.pid = pid;
      return;
    }
    if (old?.isLocal || old?.kind === 'backup') {
      throw dvsError('EBOUND', `endpoint ${ep} is bound here already`, { dc: dcId, ep });
    }
    // What this node held on behalf of the old location (a queued remote send, a pending reply) no longer
    // applies; local callers' operations to the old location stay: S bounces them back here.
    if (old !== undefined) this.releaseRemote(old);
    const e = new Ep(dc, ep, name ?? old?.name ?? `ep${ep}`, 'local', this.nodeId, pid);
    e.waitBind = true;
    e.migrating = true;
    dc.eps.set(ep, e);
    for (const [src, ts] of carry.notes) {
      if (isEp(src) && typeof ts === 'number') this.raiseNote(e, src, ts);
    }
    e.wokenUp = carry.wokenUp === true;
  }

  migrateOut(_now: number, dcId: DcId, ep: Endpoint, to: NodeId): MigrationCarry {
    const dc = this.needDc(dcId);
    const e = dc.eps.get(ep);
    if (e === undefined || !e.isLocal) {
      throw dvsError('ENOTBOUND', `endpoint ${ep} is not bound here`, { dc: dcId, ep });
    }
    if (e.kind === 'replica')
      throw dvsError('EINVAL', `endpoint ${ep} is a replica: replicas do not migrate`);
    if (e.migrating) throw dvsError('EBUSY', `endpoint ${ep} is arriving here by migration`);
    if (to === this.nodeId || !dc.nodes.has(to)) {
      throw dvsError('EINVAL', `node ${to} is not another node of DC ${dc.cfg.name}`);
    }
    if (!this.up.has(to)) throw dvsError('ENOTCONN', `node ${to} is not reachable`);
    const p = e.proc;
    const blocked = p?.blocked ?? null;
    if (blocked !== null && blocked.state !== St.Recv) {
      throw dvsError('EBUSY', `endpoint ${ep} is inside a ${blocked.op}: a call in progress is never split`);
    }
    if (e.serving !== null && e.serving.size > 0) {
      throw dvsError('EBUSY', `endpoint ${ep} took requests it has not answered yet`, {
        clients: [...e.serving],
      });
    }
    if (e.copies > 0) throw dvsError('EBUSY', `endpoint ${ep} takes part in a vcopy`);
    const carry: MigrationCarry = { notes: [...(e.notes ?? [])], wokenUp: e.wokenUp };
    this.evacuate(e, to);
    this.stats.migrationsOut++;
    return carry;
  }

  migrateActivate(_now: number, dcId: DcId, ep: Endpoint, carry?: MigrationCarry): void {
    const dc = this.needDc(dcId);
    const e = dc.eps.get(ep);
    if (e === undefined || !e.isLocal || !e.migrating) {
      throw dvsError('EINVAL', `endpoint ${ep} is not arriving here by migration`, { dc: dcId, ep });
    }
    e.migrating = false;
    this.stats.migrationsIn++;
    if (carry !== undefined) {
      for (const [src, ts] of carry.notes) {
        if (isEp(src) && typeof ts === 'number') this.raiseNote(e, src, ts);
      }
      if (carry.wokenUp === true) this.wake(e);
    }
    // Announced to the peers only: the directory entry is moved by the daemon (Directory.move), not bound
    // anew (it exists, at the source).
    this.broadcast(dc, { t: 'bind', dc: dc.cfg.id, ep: e.ep, kind: e.kind, name: e.name, pid: e.pid });
  }

  migrateAbort(_now: number, dcId: DcId, ep: Endpoint, back: NodeId): void {
    const dc = this.needDc(dcId);
    const e = dc.eps.get(ep);
    if (e === undefined || !e.isLocal || !e.migrating) return;
    e.migrating = false;
    this.evacuate(e, back);
  }

  /**
   * Local endpoint `e` now lives at node `to`: its session is let go without a word (its process is frozen
   * and stopped by the daemon), it becomes a remote entry at `to`, and everything queued for it goes there:
   * local senders' calls are re-sent as remote operations, remote senders get EMOVED with `to` and replay
   * there themselves, credits it owes go back. Nothing is failed, nothing announced.
   */
  private evacuate(e: Ep, to: NodeId): void {
    const dc = e.dc;
    const id = dc.cfg.id;
    const p = e.proc;
    if (p !== null) {
      for (const c of [...p.calls.values()]) this.unlink(c);
      p.ep = null;
      e.proc = null;
    }
    const queued = e.inbox.list();
    for (const m of queued) e.inbox.remove(m);
    const owed = e.postIn;
    e.postIn = null;
    e.kind = 'remote';
    e.node = to;
    e.pid = -1;
    e.waitBind = false;
    e.migrating = false;
    e.notes = null;
    e.wokenUp = false;
    e.recv = null;
    e.sendTo = NONE;
    e.replyFrom = NONE;
    e.serving = null;
    e.postOut = null;
    e.postAt = null;
    for (const m of queued) {
      if (m.node === NONE) {
        // A local sender's message goes to the new location: a post as is (its window slot stays taken), a
        // queued send or request as a remote operation of its call.
        let op = 0;
        if (m.kind === 'post') {
          const s = dc.eps.get(m.src);
          if (s?.isLocal) {
            s.postAt ??= new Map();
            s.postAt.set(e.ep, to);
          }
        } else {
          const c = m.call;
          if (c === null) continue;
          c.msg = null;
          c.target = null;
          c.state = St.Remote;
          c.type = m.type;
          c.payload = m.payload;
          c.rop = this.nextOp++;
          c.node = to;
          this.ops.set(c.rop, c);
          op = c.rop;
        }
        this.io.toNode(to, {
          t: 'msg',
          dc: id,
          src: m.src,
          dst: e.ep,
          kind: m.kind,
          op,
          type: m.type,
          payload: m.payload,
        });
      } else if (m.kind === 'post') {
        this.stats.emovedBounces++;
        this.io.toNode(m.node, {
          t: 'postFail',
          dc: id,
          src: e.ep,
          dst: m.src,
          code: 'EMOVED',
          n: 1,
          node: to,
          type: m.type,
          payload: m.payload,
        });
      } else {
        const s = dc.eps.get(m.src);
        if (s !== undefined && !s.isLocal) s.sendTo = NONE;
        this.stats.emovedBounces++;
        this.io.toNode(m.node, {
          t: 'ack',
          dc: id,
          src: e.ep,
          dst: m.src,
          op: m.op,
          code: 'EMOVED',
          node: to,
        });
      }
    }
    if (owed !== null) {
      for (const [src, pin] of owed) {
        if (pin.owed > 0) this.credit(e, src, this.srcNode(dc, src), pin.owed);
      }
    }
  }

  // ───────────────────────────── replication ─────────────────────────────

  setReplicated(_now: number, dcId: DcId, ep: Endpoint, on: boolean): void {
    const dc = this.needDc(dcId);
    if (!isEp(ep)) throw dvsError('EINVAL', `bad endpoint ${ep}`);
    if (on) {
      dc.replicated.add(ep);
      return;
    }
    dc.replicated.delete(ep);
    const held = dc.failover.get(ep);
    dc.failover.delete(ep);
    // No successor will come: the callers learn that their destination died.
    for (const c of held ?? []) this.finish(c, fail('EDSTDIED', `endpoint ${ep} lost its primary`));
  }

  promote(_now: number, dcId: DcId, ep: Endpoint): void {
    const dc = this.needDc(dcId);
    const e = dc.eps.get(ep);
    if (e === undefined || e.kind !== 'backup' || e.proc === null) {
      throw dvsError('EINVAL', `endpoint ${ep} has no backup process attached here`, { dc: dcId, ep });
    }
    const old = e.node;
    this.releaseRemote(e);
    e.kind = 'local';
    e.node = this.nodeId;
    e.nodeDown = false;
    e.forgotten = false;
    e.waitBind = false;
    e.postOut = null;
    e.postAt = null;
    this.broadcastBind(e);
    // Local callers' operations still addressed to the old primary come here (its death may not have
    // reached us), then everything held.
    for (const c of [...this.ops.values()]) {
      if (c.ep.dc === dc && c.peer === ep && c.node === old && c.state === St.Remote) {
        this.failoverCall(c, old);
      }
    }
    this.endFailover(dc, ep);
  }

  /** Replicated `ep` has no known primary: new calls to it are held (see doSend). */
  private startFailover(dc: DcState, ep: Endpoint): void {
    if (!dc.failover.has(ep)) dc.failover.set(ep, []);
  }

  /** A successor of replicated `ep` is known: replay the held calls there. */
  private endFailover(dc: DcState, ep: Endpoint): void {
    const held = dc.failover.get(ep);
    if (held === undefined) return;
    dc.failover.delete(ep);
    for (const c of held) this.redirect(c, NONE);
  }

  /** Backup entry `e`'s primary is gone: what we held for it goes, and the entry has no primary to fall back to. */
  private backupLostPrimary(e: Ep): void {
    this.releaseRemote(e);
    e.primaryGone = true;
  }

  /**
   * Replicated remote entry `e` lost its primary (unbind frame, missing from a sync, directory, DC change):
   * the entry goes (a backup entry stays, pointing at the dead primary until a successor is learned) and
   * the calls sent to it wait for the successor.
   */
  private primaryGone(e: Ep): void {
    const dc = e.dc;
    const node = e.node;
    if (e.kind === 'backup') this.backupLostPrimary(e);
    else {
      this.releaseRemote(e);
      dc.eps.delete(e.ep);
    }
    this.startFailover(dc, e.ep);
    for (const c of [...this.ops.values()]) {
      if (c.ep.dc === dc && c.peer === e.ep && c.node === node && c.state === St.Remote) {
        this.failoverCall(c, node);
      }
    }
  }

  /**
   * Local caller `c` (a send or request to a replicated endpoint) lost its destination at node `from` (NONE:
   * this node): detach it from where it waited and send it to the current primary, or hold it.
   */
  private failoverCall(c: PendingCall, from: NodeId): void {
    const e = c.ep;
    switch (c.state) {
      case St.Remote:
        this.ops.delete(c.rop);
        break;
      case St.Queued: {
        const m = c.msg;
        if (m !== null) {
          // Replayed with what it carried (the message is dropped from the dead endpoint's inbox).
          c.type = m.type;
          c.payload = m.payload;
          if (!m.gone) c.target?.inbox.remove(m);
        }
        c.msg = null;
        c.target = null;
        break;
      }
      case St.WaitReply:
        e.dc.eps.get(e.replyFrom)?.serving?.delete(e.ep);
        e.replyFrom = NONE;
        break;
      default:
        return;
    }
    this.redirect(c, from);
  }

  /**
   * Send call `c` (detached from any wait) to where its destination lives now (not node `avoid`, which lost
   * it): queued locally, re-sent as a fresh remote operation, or held until a primary is known.
   */
  private redirect(c: PendingCall, avoid: NodeId): void {
    const e = c.ep;
    const dc = e.dc;
    const d = dc.eps.get(c.peer);
    e.sendTo = c.peer;
    if (d?.isLocal && !dc.failover.has(c.peer)) {
      c.state = St.Queued;
      c.node = NONE;
      c.rop = 0;
      const m = new Msg(e.ep, c.kind, c.type, c.payload, c, NONE, 0);
      if (this.canTake(d, m)) {
        e.sendTo = NONE;
        this.handOver(0, d, m);
        return;
      }
      c.msg = m;
      c.target = d;
      d.inbox.push(m);
      return;
    }
    if (
      d !== undefined &&
      !d.isLocal &&
      d.node !== avoid &&
      !d.nodeDown &&
      !this.down.has(d.node) &&
      !dc.failover.has(c.peer)
    ) {
      c.state = St.Remote;
      c.node = d.node;
      c.rop = this.nextOp++;
      this.ops.set(c.rop, c);
      this.io.toNode(d.node, {
        t: 'msg',
        dc: dc.cfg.id,
        src: e.ep,
        dst: c.peer,
        kind: c.kind,
        op: c.rop,
        type: c.type,
        payload: c.payload,
      });
      return;
    }
    c.state = St.Held;
    c.node = NONE;
    c.rop = 0;
    let held = dc.failover.get(c.peer);
    if (held === undefined) {
      held = [];
      dc.failover.set(c.peer, held);
    }
    held.push(c);
  }

  // ───────────────────────────── directory ─────────────────────────────

  learnRemote(_now: number, dcId: DcId, ep: Endpoint, node: NodeId, info: RemoteBinding): void {
    const dc = this.dcs.get(dcId);
    if (dc === undefined || node === this.nodeId || !isEp(ep)) return;
    if (!dc.nodes.has(node)) {
      this.warn('directory names a node outside the DC', node, { dc: dcId, ep });
      return;
    }
    this.learn(dc, node, { ep, kind: info.kind, name: info.name, pid: info.pid });
    // learn() assumes a live sender (a frame just came from it); the directory may speak of a node we
    // consider down, and that must stay visible until its link comes back.
    const e = dc.eps.get(ep);
    if (e !== undefined && !e.isLocal) e.nodeDown = this.down.has(node);
  }

  forgetRemote(_now: number, dcId: DcId, ep: Endpoint, node: NodeId): void {
    // While the link to `node` is up its own bind/unbind/sync frames are authoritative: the store's entry
    // may vanish only because the node lost its lease (a partition) while the endpoint lives on, and the
    // store's view arrives later than the link's after a heal. If the node does go down, the entry goes too.
    if (this.up.has(node)) {
      const e = this.dcs.get(dcId)?.eps.get(ep);
      if (e !== undefined && !e.isLocal && e.node === node) e.forgotten = true;
      return;
    }
    const dc = this.dcs.get(dcId);
    const e = dc?.eps.get(ep);
    if (dc === undefined || e === undefined || e.isLocal || e.node !== node) return;
    if (e.kind === 'backup') {
      this.releaseRemote(e);
      return;
    }
    this.unbindRemote(e);
  }

  fromNode(now: number, node: NodeId, f: NodeFrame): void {
    try {
      if (typeof f !== 'object' || f === null) {
        this.warn('frame is not an object', node);
        return;
      }
      if (f.t === 'sync') {
        this.onSync(now, node, f);
        return;
      }
      const dc = this.frameDc(node, f);
      if (dc === undefined) {
        return;
      }
      switch (f.t) {
        case 'msg': {
          this.onMsg(now, node, dc, f);
          return;
        }
        case 'ack': {
          this.onAck(node, dc, f);
          return;
        }
        case 'reply': {
          this.onReply(node, dc, f);
          return;
        }
        case 'notify': {
          this.onNotify(node, dc, f);
          return;
        }
        case 'credit': {
          this.onCredit(node, dc, f);
          return;
        }
        case 'replyAck': {
          this.onReplyAck(node, f);
          return;
        }
        case 'cancel': {
          this.onCancel(node, dc, f);
          return;
        }
        case 'wakeup': {
          this.onWakeup(node, dc, f);
          return;
        }
        case 'fwdNote': {
          this.onFwdNote(node, dc, f);
          return;
        }
        case 'syncReq': {
          // The sender created a DC we share after our link came up: send it our whole list.
          this.sendSync(node);
          return;
        }
        case 'bind': {
          this.onBind(node, dc, f);
          return;
        }
        case 'unbind': {
          this.onUnbind(now, node, dc, f);
          return;
        }
        case 'postFail': {
          this.onPostFail(node, dc, f);
          return;
        }
        case 'copyReq':
        case 'copyData':
        case 'copyAck':
        case 'copyDone':
        case 'copyAbort': {
          this.copy.frame(node, dc, f);
          return;
        }
        default: {
          this.warn('unknown frame', node, { t: String((f as { t: unknown }).t) });
          return;
        }
      }
    } catch (err) {
      // A frame must never take the daemon down: a throw here is a kernel bug, reported and contained.
      this.io.log('error', 'kernel failed on a frame', {
        node,
        t: (f as { t?: unknown } | null)?.t,
        err: err instanceof Error ? err.message : String(err),
      });
    }
  }

  // ───────────────────────── introspection ─────────────────────────

  endpoints(dcId: DcId): EndpointInfo[] {
    const dc = this.dcs.get(dcId);
    if (dc === undefined) return [];
    const rows: EndpointInfo[] = [];
    for (const e of dc.eps.values()) rows.push(this.info(e));
    return rows.sort((a, b) => a.ep - b.ep);
  }

  procEndpoint(proc: ProcId): { dc: DcId; ep: Endpoint } | undefined {
    const e = this.procs.get(proc)?.ep;
    return e ? { dc: e.dc.cfg.id, ep: e.ep } : undefined;
  }

  // ──────────────────────── call internals ────────────────────────

  private doSend(
    now: number,
    p: Proc,
    e: Ep,
    callId: CallId,
    kind: 'send' | 'request',
    dst: Endpoint,
    type: number,
    payload: Uint8Array,
  ): void {
    if (p.blocked !== null) {
      this.io.complete(p.id, callId, fail('EBUSY', 'another blocking call is pending'));
      return;
    }
    if (!isEp(dst) || dst === e.ep) {
      this.io.complete(p.id, callId, fail('EINVAL', `bad destination ${dst}`));
      return;
    }
    const dc = e.dc;
    if (payload.length > dc.cfg.maxPayload) {
      this.io.complete(p.id, callId, fail('EMSGSIZE'));
      return;
    }
    const d = dc.eps.get(dst);
    if (dc.failover.has(dst) && (d === undefined || !d.isLocal)) {
      // A replicated endpoint between primaries: wait for the new one (released by learn or promote).
      const held = new PendingCall(p, callId, e, kind === 'send' ? 'send' : 'sendrec', St.Held, dst);
      held.kind = kind;
      held.type = type;
      held.payload = payload;
      this.register(held);
      this.redirect(held, NONE);
      return;
    }
    if (d === undefined) {
      this.io.complete(p.id, callId, fail('ENOTBOUND', `endpoint ${dst} not bound`));
      return;
    }
    const remote = !d.isLocal;
    if (remote && (d.nodeDown || this.down.has(d.node))) {
      this.io.complete(p.id, callId, fail('ENOTCONN', `node ${d.node} is down`));
      return;
    }
    const call = new PendingCall(p, callId, e, kind === 'send' ? 'send' : 'sendrec', St.Remote, dst);
    call.kind = kind;
    if (dc.replicated.has(dst)) {
      // Kept for a replay at a new primary (a request the old one took is sent again).
      call.type = type;
      call.payload = payload;
    }
    if (remote) {
      if (reachesCaller(dc, dst, e.ep)) {
        this.io.complete(p.id, callId, fail('EDEADLK'));
        return;
      }
      call.type = type;
      call.payload = payload;
      call.rop = this.nextOp++;
      call.node = d.node;
      this.register(call);
      this.ops.set(call.rop, call);
      e.sendTo = dst;
      e.counters.rmtSent++;
      this.io.toNode(d.node, { t: 'msg', dc: dc.cfg.id, src: e.ep, dst, kind, op: call.rop, type, payload });
      return;
    }
    e.counters.lclSent++;
    const m = new Msg(e.ep, kind, type, payload, call, NONE, 0);
    call.state = St.Queued;
    this.register(call);
    if (this.canTake(d, m)) {
      this.handOver(now, d, m);
      return;
    }
    if (reachesCaller(dc, dst, e.ep)) {
      this.finish(call, fail('EDEADLK'));
      return;
    }
    call.msg = m;
    call.target = d;
    e.sendTo = dst;
    d.inbox.push(m);
  }

  private doReceive(p: Proc, e: Ep, callId: CallId, src: Endpoint, nowait: boolean, reqOnly: boolean): void {
    if (p.blocked !== null) {
      this.io.complete(p.id, callId, fail('EBUSY', 'another blocking call is pending'));
      return;
    }
    if (!reqOnly) {
      if (src !== ANY && (!isEp(src) || src === e.ep)) {
        this.io.complete(p.id, callId, fail('EINVAL', `bad source ${src}`));
        return;
      }
      if (src === ANY && e.wokenUp) {
        e.wokenUp = false;
        this.io.complete(p.id, callId, fail('EWOKENUP'));
        return;
      }
      const note = this.takeNote(e, src);
      if (note !== undefined) {
        this.io.complete(p.id, callId, { ok: true, msg: note });
        return;
      }
      const m = e.inbox.first(src, ANY);
      if (m !== undefined) {
        e.inbox.remove(m);
        this.io.complete(p.id, callId, { ok: true, msg: this.take(e, m) });
        return;
      }
      if (src !== ANY) {
        const s = e.dc.eps.get(src);
        if (s === undefined) {
          this.io.complete(p.id, callId, fail('ENOTBOUND', `endpoint ${src} not bound`));
          return;
        }
        if (!s.isLocal && (s.nodeDown || this.down.has(s.node))) {
          this.io.complete(p.id, callId, fail('ENOTCONN', `node ${s.node} is down`));
          return;
        }
      }
    } else {
      const m = e.inbox.firstRequest();
      if (m !== undefined) {
        e.inbox.remove(m);
        this.io.complete(p.id, callId, { ok: true, msg: this.take(e, m) });
        return;
      }
    }
    if (nowait) {
      this.io.complete(p.id, callId, fail('ETIMEDOUT', 'nothing to receive'));
      return;
    }
    const call = new PendingCall(p, callId, e, reqOnly ? 'receiveRequest' : 'receive', St.Recv, src);
    call.reqOnly = reqOnly;
    this.register(call);
    e.recv = call;
  }

  receiveAhead(_now: number, procId: ProcId, src: Endpoint, limit: number): Received[] {
    const p = this.procs.get(procId);
    const e = p?.ep;
    const out: Received[] = [];
    if (p === undefined || e === undefined || e === null || e.kind === 'backup' || p.blocked !== null)
      return out;
    if (src !== ANY && (!isEp(src) || src === e.ep)) return out;
    while (out.length < limit) {
      // Notifications and wake-ups go first: stop so the next real receive sees them.
      if (e.wokenUp && src === ANY) break;
      if (e.notes !== null && (src === ANY ? e.notes.size > 0 : e.notes.has(src))) break;
      const m = e.inbox.first(src, ANY);
      // Only posts: a send or request taken ahead would complete its sender's rendezvous before the
      // application received it (and be lost if the process died first).
      if (m === undefined || m.kind !== 'post') break;
      e.inbox.remove(m);
      out.push(this.take(e, m));
    }
    return out;
  }

  /**
   * reply(); with `thenReceive` (replyRecv) a successful reply does not complete the call (the caller goes on
   * to receive) and a remote reply is sent without waiting for its acknowledgement. Returns true when the
   * reply went out and the call is still open.
   */
  private doReply(
    p: Proc,
    e: Ep,
    callId: CallId,
    dst: Endpoint,
    type: number,
    payload: Uint8Array,
    thenReceive: boolean,
  ): boolean {
    const dc = e.dc;
    if (!isEp(dst)) {
      this.io.complete(p.id, callId, fail('EINVAL', `bad destination ${dst}`));
      return false;
    }
    if (payload.length > dc.cfg.maxPayload) {
      this.io.complete(p.id, callId, fail('EMSGSIZE'));
      return false;
    }
    const d = dc.eps.get(dst);
    const notWaiting = () =>
      this.io.complete(p.id, callId, fail('ENOTWAITING', `${dst} awaits no reply from us`));
    if (d === undefined || e.serving === null || !e.serving.has(dst) || d.replyFrom !== e.ep) {
      notWaiting();
      return false;
    }
    if (d.isLocal) {
      const client = d.proc?.blocked;
      if (client === undefined || client === null || client.state !== St.WaitReply) {
        notWaiting();
        return false;
      }
      e.counters.lclSent++;
      d.counters.received++;
      this.finish(client, { ok: true, msg: { source: e.ep, type, payload, kind: 'send' } });
      if (thenReceive) return true;
      this.io.complete(p.id, callId, OK);
      return false;
    }
    if (d.nodeDown || this.down.has(d.node)) {
      this.io.complete(p.id, callId, fail('ENOTCONN', `node ${d.node} is down`));
      return false;
    }
    if (thenReceive) {
      // No acknowledgement awaited: the replyAck finds no pending reply and is dropped.
      const op = d.replyOp;
      e.serving.delete(dst);
      d.replyFrom = NONE;
      d.replyOp = 0;
      e.counters.rmtSent++;
      this.io.toNode(d.node, { t: 'reply', dc: dc.cfg.id, src: e.ep, dst, op, type, payload });
      return true;
    }
    const call = new PendingCall(p, callId, e, 'reply', St.ReplyAck, dst);
    call.rop = d.replyOp;
    call.node = d.node;
    e.serving.delete(dst);
    d.replyFrom = NONE;
    d.replyOp = 0;
    this.register(call);
    let byOp = this.replies.get(call.node);
    if (byOp === undefined) {
      byOp = new Map();
      this.replies.set(call.node, byOp);
    }
    byOp.set(call.rop, call);
    e.counters.rmtSent++;
    this.io.toNode(call.node, { t: 'reply', dc: dc.cfg.id, src: e.ep, dst, op: call.rop, type, payload });
    return false;
  }

  private doNotify(now: number, p: Proc, e: Ep, callId: CallId, dst: Endpoint): void {
    if (!isEp(dst)) {
      this.io.complete(p.id, callId, fail('EINVAL', `bad destination ${dst}`));
      return;
    }
    const d = e.dc.eps.get(dst);
    if (d === undefined) {
      this.io.complete(p.id, callId, fail('ENOTBOUND', `endpoint ${dst} not bound`));
      return;
    }
    if (d.isLocal) {
      this.raiseNote(d, e.ep, now);
      this.io.complete(p.id, callId, OK);
      return;
    }
    if (d.nodeDown || this.down.has(d.node)) {
      this.io.complete(p.id, callId, fail('ENOTCONN', `node ${d.node} is down`));
      return;
    }
    this.io.toNode(d.node, { t: 'notify', dc: e.dc.cfg.id, src: e.ep, dst, ts: now });
    this.io.complete(p.id, callId, OK);
  }

  private doWakeup(p: Proc, e: Ep, callId: CallId, dst: Endpoint): void {
    if (!isEp(dst)) {
      this.io.complete(p.id, callId, fail('EINVAL', `bad destination ${dst}`));
      return;
    }
    const d = e.dc.eps.get(dst);
    if (d === undefined) {
      this.io.complete(p.id, callId, fail('ENOTBOUND', `endpoint ${dst} not bound`));
      return;
    }
    if (d.isLocal) {
      this.wake(d);
      this.io.complete(p.id, callId, OK);
      return;
    }
    if (d.nodeDown || this.down.has(d.node)) {
      this.io.complete(p.id, callId, fail('ENOTCONN', `node ${d.node} is down`));
      return;
    }
    this.io.toNode(d.node, { t: 'wakeup', dc: e.dc.cfg.id, src: e.ep, dst });
    this.io.complete(p.id, callId, OK);
  }

  private register(call: PendingCall): void {
    const p = call.proc;
    p.calls.set(call.id, call);
    if (call.state !== St.ReplyAck && call.state !== St.Copy) p.blocked = call;
  }

  /** Complete a pending call (exactly once: it is unlinked from every table first). */
  private finish(call: PendingCall, result: CallResult): void {
    if (!this.unlink(call)) return;
    this.io.complete(call.proc.id, call.id, result);
  }

  /** Remove every reference to a pending call without completing it. False if it was not pending. */
  private unlink(call: PendingCall): boolean {
    const p = call.proc;
    if (p.calls.get(call.id) !== call) return false;
    p.calls.delete(call.id);
    if (p.blocked === call) p.blocked = null;
    const e = call.ep;
    switch (call.state) {
      case St.Queued: {
        const m = call.msg;
        if (m !== null && !m.gone) call.target?.inbox.remove(m);
        call.msg = null;
        call.target = null;
        e.sendTo = NONE;
        break;
      }
      case St.Remote:
      case St.Cancelling:
        this.ops.delete(call.rop);
        e.sendTo = NONE;
        break;
      case St.WaitReply:
        e.dc.eps.get(e.replyFrom)?.serving?.delete(e.ep);
        e.replyFrom = NONE;
        break;
      case St.Recv:
        if (e.recv === call) e.recv = null;
        break;
      case St.ReplyAck:
        this.replies.get(call.node)?.delete(call.rop);
        break;
      case St.Copy:
        this.copy.dropCall(call);
        break;
      case St.Held: {
        const held = e.dc.failover.get(call.peer);
        const i = held === undefined ? -1 : held.indexOf(call);
        if (i >= 0) held!.splice(i, 1);
        e.sendTo = NONE;
        break;
      }
    }
    return true;
  }

  /** Would `d`'s blocked receive take `m` right now? */
  private canTake(d: Ep, m: Msg): boolean {
    const r = d.recv;
    if (r === null) return false;
    if (r.reqOnly) {
      // Per-pair FIFO: a request may not overtake the same sender's queued posts.
      return m.kind === 'request' && !((d.postIn?.get(m.src)?.queued ?? 0) > 0);
    }
    return r.peer === ANY || r.peer === m.src;
  }

  /** Hand `m` straight to `d`'s blocked receive (canTake was true). */
  private handOver(_now: number, d: Ep, m: Msg): void {
    const r = d.recv!;
    const msg = this.take(d, m);
    this.finish(r, { ok: true, msg });
  }

  /** `d` takes message `m` (already out of the inbox): settle the sender's side, return what d receives. */
  private take(d: Ep, m: Msg): Received {
    d.counters.received++;
    const src = m.src;
    if (m.kind === 'post') {
      this.consumedPost(d, m);
    } else {
      const c = m.call;
      if (m.kind === 'send') {
        if (c !== null) {
          this.finish(c, OK);
        } else {
          const s = d.dc.eps.get(src);
          if (s !== undefined && !s.isLocal) s.sendTo = NONE;
          this.ack(m.node, d.dc.cfg.id, d.ep, src, m.op, null);
        }
      } else {
        if (c !== null) {
          c.msg = null;
          c.target = null;
          c.state = St.WaitReply;
          c.ep.sendTo = NONE;
          c.ep.replyFrom = d.ep;
        } else {
          const s = d.dc.eps.get(src);
          if (s !== undefined && !s.isLocal) {
            s.sendTo = NONE;
            s.replyFrom = d.ep;
            s.replyOp = m.op;
          }
        }
        d.serving ??= new Set();
        d.serving.add(src);
      }
    }
    return { source: src, type: m.type, payload: m.payload, kind: m.kind };
  }

  /** Queue (or hand over) a post; false if the destination's per-pair window is full. */
  private enqueuePost(d: Ep, m: Msg): boolean {
    if (this.canTake(d, m)) {
      this.handOver(0, d, m);
      return true;
    }
    d.postIn ??= new Map();
    let pin = d.postIn.get(m.src);
    if (pin === undefined) {
      pin = new PostIn();
      d.postIn.set(m.src, pin);
    }
    if (pin.queued >= d.dc.cfg.postWindow) return false;
    pin.queued++;
    d.inbox.push(m);
    return true;
  }

  /**
   * `d` consumed post `m`: credit the sender, batched. Credits go back when max(1, window/4) accumulated or
   * when none of the sender's posts remain queued (a sender waiting for its last credits always gets them).
   */
  private consumedPost(d: Ep, m: Msg): void {
    let n = 1;
    const pin = d.postIn?.get(m.src);
    if (pin !== undefined && pin.queued > 0) {
      pin.queued--;
      pin.owed++;
      if (pin.owed < Math.max(1, Math.floor(d.dc.cfg.postWindow / 4)) && pin.queued > 0) return;
      n = pin.owed;
      pin.owed = 0;
      if (pin.queued === 0) d.postIn!.delete(m.src);
    }
    this.credit(d, m.src, m.node, n);
  }

  private credit(d: Ep, src: Endpoint, node: NodeId, n: number): void {
    if (node === NONE) {
      const s = d.dc.eps.get(src);
      if (s === undefined || s.proc === null || !settlePosts(s, d.ep, n)) return;
      this.io.toProc(s.proc.id, { ev: 'credit', dst: d.ep, n });
    } else if (this.up.has(node)) {
      this.io.toNode(node, { t: 'credit', dc: d.dc.cfg.id, src: d.ep, dst: src, n });
    }
  }

  private postFailed(p: Proc, dst: Endpoint, code: ErrorCode, n: number): void {
    this.io.toProc(p.id, { ev: 'postFailed', dst, code, n });
  }

  /** A notification from `src` to local `d`: delivered to a matching blocked receive, else kept pending. */
  private raiseNote(d: Ep, src: Endpoint, ts: number): void {
    const r = d.recv;
    if (r !== null && !r.reqOnly && (r.peer === ANY || r.peer === src)) {
      d.counters.received++;
      d.counters.notifies++;
      this.finish(r, {
        ok: true,
        msg: { source: src, type: NOTIFY_TYPE, payload: EMPTY, kind: 'notify', timestamp: ts },
      });
      return;
    }
    d.notes ??= new Map();
    // Coalesced: the first uncollected notify's timestamp is kept.
    if (!d.notes.has(src)) d.notes.set(src, ts);
  }

  /** Take a pending notification matching `src` (ANY: the lowest source first). */
  private takeNote(e: Ep, src: Endpoint): Received | undefined {
    const notes = e.notes;
    if (notes === null || notes.size === 0) return undefined;
    let from = src;
    if (src === ANY) {
      from = ANY;
      for (const k of notes.keys()) if (k < from) from = k;
    }
    const ts = notes.get(from);
    if (ts === undefined) return undefined;
    notes.delete(from);
    e.counters.received++;
    e.counters.notifies++;
    return { source: from, type: NOTIFY_TYPE, payload: EMPTY, kind: 'notify', timestamp: ts };
  }

  private wake(d: Ep): void {
    const r = d.recv;
    if (r !== null && !r.reqOnly && r.peer === ANY) this.finish(r, fail('EWOKENUP'));
    else d.wokenUp = true;
  }

  private ack(
    node: NodeId,
    dc: DcId,
    src: Endpoint,
    dst: Endpoint,
    op: number,
    code: ErrorCode | null,
  ): void {
    if (this.up.has(node)) this.io.toNode(node, { t: 'ack', dc, src, dst, op, code });
  }

  // ─────────────────────────── death ───────────────────────────

  /**
   * Unbind local (or backup) endpoint `e`. Its own pending calls complete with `ownCode`, or vanish when
   * null (the session is gone). Everyone blocked on it gets a died error; peers learn it from `unbind`.
   */
  private unbindLocal(_now: number, e: Ep, ownCode: ErrorCode | null): void {
    const dc = e.dc;
    const p = e.proc;
    if (p !== null) {
      for (const c of [...p.calls.values()]) {
        if (ownCode === null) this.unlink(c);
        else this.finish(c, fail(ownCode, `endpoint ${e.ep} was unbound`));
      }
      p.ep = null;
      e.proc = null;
    }
    if (e.kind === 'backup' && e.primaryGone) {
      // Neither the primary nor its backup is left here (a group ended, or lost both): nothing to know.
      dc.eps.delete(e.ep);
      this.copy.epGone(e);
      return;
    }
    if (e.kind === 'backup') {
      // The primary still lives: revert to plain knowledge of it.
      e.kind = 'remote';
      e.pid = -1;
      e.postOut = null;
      e.postAt = null;
      return;
    }
    dc.eps.delete(e.ep);
    this.copy.epGone(e);
    // A replicated primary's local callers wait for its successor; remote ones learn EDSTDIED below and
    // their kernels hold them the same way.
    const replicated = dc.replicated.has(e.ep);
    if (replicated) this.startFailover(dc, e.ep);
    // Messages queued to it: senders learn it died; posts are reported per sender.
    let failedPosts: Map<string, { node: NodeId; src: Endpoint; n: number }> | null = null;
    for (const m of e.inbox.list()) {
      e.inbox.remove(m);
      if (m.kind === 'post') {
        failedPosts ??= new Map();
        const key = `${m.node}/${m.src}`;
        const f = failedPosts.get(key);
        if (f === undefined) failedPosts.set(key, { node: m.node, src: m.src, n: 1 });
        else f.n++;
      } else if (m.call !== null) {
        if (replicated) this.failoverCall(m.call, NONE);
        else this.finish(m.call, fail('EDSTDIED', `endpoint ${e.ep} died`));
      } else {
        const s = dc.eps.get(m.src);
        if (s !== undefined && !s.isLocal) s.sendTo = NONE;
        this.ack(m.node, dc.cfg.id, e.ep, m.src, m.op, 'EDSTDIED');
      }
    }
    // Credits owed for posts it did consume go back first, then the failures.
    if (e.postIn !== null) {
      for (const [src, pin] of e.postIn) {
        if (pin.owed > 0) this.credit(e, src, this.srcNode(dc, src), pin.owed);
      }
      e.postIn = null;
    }
    if (failedPosts !== null) {
      for (const f of failedPosts.values()) {
        if (f.node === NONE) {
          const s = dc.eps.get(f.src);
          if (s === undefined || s.proc === null || !settlePosts(s, e.ep, f.n)) continue;
          this.io.toProc(s.proc.id, { ev: 'postFailed', dst: e.ep, code: 'EDSTDIED', n: f.n });
        } else if (this.up.has(f.node)) {
          this.io.toNode(f.node, {
            t: 'postFail',
            dc: dc.cfg.id,
            src: e.ep,
            dst: f.src,
            code: 'EDSTDIED',
            n: f.n,
          });
        }
      }
    }
    // Clients waiting for its reply.
    if (e.serving !== null) {
      for (const client of e.serving) {
        const c = dc.eps.get(client);
        if (c === undefined) continue;
        if (c.isLocal) {
          const call = c.proc?.blocked;
          if (call && call.state === St.WaitReply) {
            if (replicated) this.failoverCall(call, NONE);
            else this.finish(call, fail('ESRCDIED', `endpoint ${e.ep} died`));
          }
        } else {
          c.replyFrom = NONE;
          c.replyOp = 0;
        }
      }
      e.serving = null;
    }
    // Local receivers waiting for it specifically.
    for (const x of dc.eps.values()) {
      const r = x.recv;
      if (r !== null && !r.reqOnly && r.peer === e.ep)
        this.finish(r, fail('ESRCDIED', `endpoint ${e.ep} died`));
    }
    this.broadcast(dc, { t: 'unbind', dc: dc.cfg.id, ep: e.ep });
    this.io.onLocalUnbind?.(dc.cfg.id, e.ep);
  }

  /** Remote entry `e` is gone (unbind frame, or missing from a sync): wake whoever waited on it. */
  private unbindRemote(e: Ep): void {
    const dc = e.dc;
    if (dc.replicated.has(e.ep)) {
      this.primaryGone(e);
      return;
    }
    dc.eps.delete(e.ep);
    this.releaseRemote(e);
    const why = `endpoint ${e.ep} died`;
    for (const c of this.ops.values()) {
      if (c.ep.dc !== dc || c.peer !== e.ep || c.node !== e.node) continue;
      // Queued sends were acked EDSTDIED before the unbind; what is left is a taken request (or a crossing frame).
      this.finish(c, fail(c.kind === 'request' ? 'ESRCDIED' : 'EDSTDIED', why));
    }
    for (const x of dc.eps.values()) {
      const r = x.recv;
      if (r !== null && !r.reqOnly && r.peer === e.ep) this.finish(r, fail('ESRCDIED', why));
    }
  }

  /** Drop what this node holds on behalf of remote entry `e`: its queued send/request, its pending reply. */
  private releaseRemote(e: Ep): void {
    if (e.isLocal) return;
    const dc = e.dc;
    if (e.sendTo !== NONE) {
      const d = dc.eps.get(e.sendTo);
      if (d?.isLocal) {
        for (const m of d.inbox.list()) {
          if (m.src === e.ep && m.node !== NONE && m.kind !== 'post') d.inbox.remove(m);
        }
      }
      e.sendTo = NONE;
    }
    if (e.replyFrom !== NONE) {
      dc.eps.get(e.replyFrom)?.serving?.delete(e.ep);
      e.replyFrom = NONE;
      e.replyOp = 0;
    }
  }

  private srcNode(dc: DcState, src: Endpoint): NodeId {
    const s = dc.eps.get(src);
    return s === undefined || s.isLocal ? NONE : s.node;
  }

  // ──────────────────────── frame handlers ────────────────────────

  /** The frame's DC, if known here and the sending node belongs to it. */
  private frameDc(node: NodeId, f: { t: string; dc: unknown }): DcState | undefined {
    const dc = typeof f.dc === 'number' ? this.dcs.get(f.dc) : undefined;
    if (dc === undefined) {
      this.warn('frame for an unknown DC', node, { t: f.t, dc: f.dc });
      return undefined;
    }
    if (!dc.nodes.has(node)) {
      this.warn('frame from a node outside the DC', node, { t: f.t, dc: f.dc });
      return undefined;
    }
    return dc;
  }

  /**
   * The sending node claims endpoint `ep` lives there. Accepted if we know it there (or it is a backup of
   * a primary there), refused if it is bound here or known elsewhere (spoofed or stale); an unknown source
   * is learned as remote at that node.
   */
  private checkSrc(dc: DcState, node: NodeId, ep: unknown): Ep | null {
    if (!isEp(ep)) return null;
    const e = dc.eps.get(ep);
    if (e === undefined) {
      const learned = new Ep(dc, ep, 'remote', 'remote', node, -1);
      learned.nodeDown = this.down.has(node);
      dc.eps.set(ep, learned);
      return learned;
    }
    if (e.isLocal || e.node !== node) {
      this.warn('frame source is not at the sending node', node, { dc: dc.cfg.id, src: ep, at: e.node });
      return null;
    }
    return e;
  }

  private onMsg(now: number, node: NodeId, dc: DcState, f: NodeFrame & { t: 'msg' }): void {
    const { src, dst, kind, op, type, payload } = f;
    if (
      (kind !== 'send' && kind !== 'request' && kind !== 'post') ||
      !isCount(op) ||
      !isInt(type) ||
      !(payload instanceof Uint8Array) ||
      !isEp(dst)
    ) {
      this.warn('malformed msg frame', node, { dc: dc.cfg.id });
      return;
    }
    const reject = (code: ErrorCode, to?: NodeId) => {
      if (kind === 'post') {
        const back: ControlFrame = { t: 'postFail', dc: dc.cfg.id, src: dst, dst: src, code, n: 1 };
        if (code === 'EMOVED') Object.assign(back, { node: to, type, payload });
        this.io.toNode(node, back);
      } else {
        this.io.toNode(node, {
          t: 'ack',
          dc: dc.cfg.id,
          src: dst,
          dst: src,
          op,
          code,
          ...(to === undefined ? {} : { node: to }),
        });
      }
    };
    if (payload.length > dc.cfg.maxPayload) {
      this.warn('msg payload over the DC limit', node, { dc: dc.cfg.id, src, bytes: payload.length });
      reject('EMSGSIZE');
      return;
    }
    const s = this.checkSrc(dc, node, src);
    if (s === null) {
      reject('EPERM');
      return;
    }
    const d = dc.eps.get(dst);
    if (d === undefined) {
      reject('ENOTBOUND');
      return;
    }
    if (!d.isLocal) {
      // Bounced with where we believe it lives, even when that is the sender's own node: an endpoint that
      // just migrated there is local to the sender now (onAck/onPostFail deliver it there).
      this.stats.emovedBounces++;
      reject('EMOVED', d.node);
      return;
    }
    const m = new Msg(src, kind, type, payload, null, node, op);
    if (kind === 'post') {
      if (!this.enqueuePost(d, m)) {
        this.io.log('warn', 'post window exceeded at the destination', { dc: dc.cfg.id, src, dst, node });
        reject('ENOSPC');
      }
      return;
    }
    if (this.canTake(d, m)) {
      this.handOver(now, d, m);
      return;
    }
    // The sender is now blocked on d; a cycle through d closes here (2-node cycles are caught this way).
    if (reachesCaller(dc, dst, src)) {
      reject('EDEADLK');
      return;
    }
    s.sendTo = dst;
    d.inbox.push(m);
  }

  private onAck(node: NodeId, dc: DcState, f: NodeFrame & { t: 'ack' }): void {
    const c = this.ops.get(f.op);
    if (c === undefined || c.node !== node || c.peer !== f.src || c.ep.ep !== f.dst || c.ep.dc !== dc) {
      this.io.log('debug', 'ack for no pending operation', { node, dc: dc.cfg.id, op: f.op });
      return;
    }
    const code = f.code;
    if (!isCodeOrNull(code)) {
      this.finish(c, fail('EPROTO', 'bad ack code'));
      return;
    }
    if (code === null) {
      // For a request a null ack means nothing (the reply completes it); only sends are acked taken.
      if (c.kind === 'send') this.finish(c, OK);
      return;
    }
    if (code === 'EMOVED' && c.state === St.Remote && f.node === this.nodeId) {
      // The destination migrated here: the operation becomes a local one.
      const d = dc.eps.get(c.peer);
      if (d === undefined || !d.isLocal || c.bounces >= MAX_BOUNCES) {
        this.finish(c, fail('ENOTBOUND', `endpoint ${c.peer} not bound`));
        return;
      }
      this.ops.delete(c.rop);
      this.stats.emovedReplays++;
      c.bounces++;
      c.rop = 0;
      c.node = NONE;
      c.state = St.Queued;
      const m = new Msg(c.ep.ep, c.kind, c.type, c.payload, c, NONE, 0);
      if (this.canTake(d, m)) {
        this.handOver(0, d, m);
        return;
      }
      c.msg = m;
      c.target = d;
      d.inbox.push(m);
      return;
    }
    if (code === 'EMOVED' && c.state === St.Remote) {
      const to = f.node;
      if (isInt(to) && to !== node && to !== this.nodeId && dc.nodes.has(to) && c.bounces < MAX_BOUNCES) {
        if (this.down.has(to)) {
          this.finish(c, fail('ENOTCONN', `node ${to} is down`));
          return;
        }
        // Bounce + replay: learn the new location and resend the same operation there.
        const d = dc.eps.get(c.peer);
        if (d === undefined) {
          dc.eps.set(c.peer, new Ep(dc, c.peer, 'remote', 'remote', to, -1));
        } else if (d.kind === 'remote') {
          this.releaseRemote(d);
          d.node = to;
          d.nodeDown = false;
        }
        c.bounces++;
        this.stats.emovedReplays++;
        c.node = to;
        this.io.toNode(to, {
          t: 'msg',
          dc: dc.cfg.id,
          src: c.ep.ep,
          dst: c.peer,
          kind: c.kind,
          op: c.rop,
          type: c.type,
          payload: c.payload,
        });
        return;
      }
    }
    if (c.state === St.Cancelling && code === 'EMOVED') {
      this.finish(c, fail(c.reason));
      return;
    }
    if (c.state === St.Remote && (code === 'EDSTDIED' || code === 'ENOTBOUND') && dc.replicated.has(c.peer)) {
      // The old primary died with our message queued (or it arrived after): replay at its successor.
      this.failoverCall(c, node);
      return;
    }
    this.finish(c, fail(code));
  }

  private onReply(node: NodeId, dc: DcState, f: NodeFrame & { t: 'reply' }): void {
    const answer = (code: ErrorCode | null) =>
      this.io.toNode(node, { t: 'replyAck', dc: dc.cfg.id, src: f.dst, dst: f.src, op: f.op, code });
    if (!(f.payload instanceof Uint8Array) || !isInt(f.type)) {
      answer('EPROTO');
      return;
    }
    if (f.payload.length > dc.cfg.maxPayload) {
      answer('EMSGSIZE');
      return;
    }
    const c = this.ops.get(f.op);
    if (
      c === undefined ||
      c.kind !== 'request' ||
      c.node !== node ||
      c.peer !== f.src ||
      c.ep.ep !== f.dst ||
      c.ep.dc !== dc
    ) {
      answer('ENOTWAITING');
      return;
    }
    c.ep.counters.received++;
    // A reply that beats a cancel wins: the request was served.
    this.finish(c, { ok: true, msg: { source: f.src, type: f.type, payload: f.payload, kind: 'send' } });
    answer(null);
  }

  private onReplyAck(node: NodeId, f: ControlFrame): void {
    const c = typeof f.op === 'number' ? this.replies.get(node)?.get(f.op) : undefined;
    if (c === undefined || c.peer !== f.src || c.ep.ep !== f.dst) {
      this.io.log('debug', 'replyAck for no pending reply', { node, op: f.op });
      return;
    }
    const code = isCodeOrNull(f.code) ? f.code : 'EPROTO';
    this.finish(c, code === null ? OK : fail(code));
  }

  private onNotify(node: NodeId, dc: DcState, f: NodeFrame & { t: 'notify' }): void {
    if (!isEp(f.dst) || typeof f.ts !== 'number') {
      this.warn('malformed notify', node, { dc: dc.cfg.id });
      return;
    }
    if (this.checkSrc(dc, node, f.src) === null) return;
    const d = dc.eps.get(f.dst);
    if (d !== undefined && !d.isLocal && d.kind === 'remote' && d.node !== node && this.up.has(d.node)) {
      // It migrated away: forward, naming the sender's node (notifications have no ack to bounce).
      this.io.toNode(d.node, { t: 'fwdNote', dc: dc.cfg.id, src: f.src, dst: f.dst, ts: f.ts, from: node });
      return;
    }
    if (d === undefined || !d.isLocal) {
      this.io.log('debug', 'notify for an endpoint not here', { node, dc: dc.cfg.id, dst: f.dst });
      return;
    }
    this.raiseNote(d, f.src, f.ts);
  }

  /** A notify forwarded by the node `dst` migrated away from (sent there by `from`). Forwarded once only. */
  private onFwdNote(node: NodeId, dc: DcState, f: ControlFrame): void {
    const { src, dst, ts, from } = f;
    if (!isEp(src) || !isEp(dst) || typeof ts !== 'number' || !isInt(from) || !dc.nodes.has(from)) {
      this.warn('malformed fwdNote', node, { dc: dc.cfg.id });
      return;
    }
    if (from !== this.nodeId && this.checkSrc(dc, from, src) === null) return;
    const d = dc.eps.get(dst);
    if (d === undefined || !d.isLocal) {
      this.io.log('debug', 'forwarded notify for an endpoint not here', { node, dc: dc.cfg.id, dst });
      return;
    }
    this.raiseNote(d, src, ts);
  }

  private onCredit(node: NodeId, dc: DcState, f: NodeFrame & { t: 'credit' }): void {
    if (!isCount(f.n) || f.n === 0 || this.checkSrc(dc, node, f.src) === null) return;
    const s = dc.eps.get(f.dst);
    if (s === undefined || !s.isLocal || s.proc === null || !settlePosts(s, f.src, f.n)) return;
    this.io.toProc(s.proc.id, { ev: 'credit', dst: f.src, n: f.n });
  }

  private onPostFail(node: NodeId, dc: DcState, f: ControlFrame): void {
    const { src, dst, code, n } = f;
    if (!isEp(src) || !isEp(dst) || !isErrorCode(code) || !isCount(n) || n === 0) {
      this.warn('malformed postFail', node, { dc: dc.cfg.id });
      return;
    }
    const s = dc.eps.get(dst);
    if (s === undefined || !s.isLocal || s.proc === null) return;
    const to = f.node;
    if (code === 'EMOVED' && to === this.nodeId && f.payload instanceof Uint8Array && isInt(f.type)) {
      // The destination migrated here: deliver the bounced post locally (its window slot stays taken).
      const d = dc.eps.get(src);
      s.postAt?.delete(src);
      if (d?.isLocal && this.enqueuePost(d, new Msg(dst, 'post', f.type, f.payload, null, NONE, 0))) {
        return;
      }
      settlePosts(s, src, 1);
      const why = d?.isLocal ? 'ENOSPC' : 'ENOTBOUND';
      this.io.toProc(s.proc.id, { ev: 'postFailed', dst: src, code: why, n: 1 });
      return;
    }
    if (code === 'EMOVED' && isInt(to) && to !== node && to !== this.nodeId && dc.nodes.has(to)) {
      const payload = f.payload;
      const type = f.type;
      if (payload instanceof Uint8Array && isInt(type) && !this.down.has(to)) {
        // Bounce + replay of a post: the window slot stays taken, the message goes to the new location.
        this.stats.emovedReplays++;
        const d = dc.eps.get(src);
        if (d === undefined) dc.eps.set(src, new Ep(dc, src, 'remote', 'remote', to, -1));
        else if (d.kind === 'remote' && d.node === node) {
          this.releaseRemote(d);
          d.node = to;
          d.nodeDown = false;
        }
        s.postAt?.set(src, to);
        this.io.toNode(to, {
          t: 'msg',
          dc: dc.cfg.id,
          src: dst,
          dst: src,
          kind: 'post',
          op: 0,
          type,
          payload,
        });
        return;
      }
    }
    settlePosts(s, src, n);
    this.io.toProc(s.proc.id, { ev: 'postFailed', dst: src, code, n });
  }

  private onCancel(node: NodeId, dc: DcState, f: ControlFrame): void {
    const { src, dst, op } = f;
    if (!isEp(dst) || !isCount(op)) {
      this.warn('malformed cancel', node, { dc: dc.cfg.id });
      return;
    }
    const s = this.checkSrc(dc, node, src);
    if (s === null) return;
    const reason = f.reason === 'ETIMEDOUT' ? 'ETIMEDOUT' : 'EABORTED';
    const d = dc.eps.get(dst);
    if (d?.isLocal) {
      for (const m of d.inbox.list()) {
        if (m.node === node && m.op === op && m.src === s.ep) {
          d.inbox.remove(m);
          s.sendTo = NONE;
          break;
        }
      }
    }
    if (s.replyFrom === dst && s.replyOp === op) {
      // Taken and not answered: the client gives up; the server's reply will get ENOTWAITING.
      d?.serving?.delete(s.ep);
      s.replyFrom = NONE;
      s.replyOp = 0;
    }
    // Always answered: if the message was taken, the ack/reply sent earlier reaches the sender first.
    this.io.toNode(node, { t: 'ack', dc: dc.cfg.id, src: dst, dst: s.ep, op, code: reason });
  }

  private onWakeup(node: NodeId, dc: DcState, f: ControlFrame): void {
    if (this.checkSrc(dc, node, f.src) === null) {
      return;
    }
    const d = isEp(f.dst) ? dc.eps.get(f.dst) : undefined;
    if (d?.isLocal) this.wake(d);
  }

  private onBind(node: NodeId, dc: DcState, f: ControlFrame): void {
    const desc = epDesc(f);
    if (desc === undefined) {
      this.warn('malformed bind', node, { dc: dc.cfg.id });
      return;
    }
    this.learn(dc, node, desc);
  }

  private onUnbind(_now: number, node: NodeId, dc: DcState, f: ControlFrame): void {
    const e = isEp(f.ep) ? dc.eps.get(f.ep) : undefined;
    if (e === undefined || e.isLocal || e.node !== node) return;
    if (dc.replicated.has(e.ep)) {
      this.primaryGone(e);
      return;
    }
    if (e.kind === 'backup') {
      // The primary died; the backup stays (promotion is a later step).
      this.backupLostPrimary(e);
      return;
    }
    this.unbindRemote(e);
  }

  private onSync(_now: number, node: NodeId, f: ControlFrame): void {
    const listed = new Map<DcId, EpDesc[]>();
    if (Array.isArray(f.dcs)) {
      for (const x of f.dcs as unknown[]) {
        if (typeof x !== 'object' || x === null) continue;
        const o = x as Record<string, unknown>;
        if (typeof o.dc !== 'number' || !Array.isArray(o.eps)) continue;
        const eps: EpDesc[] = [];
        for (const d of o.eps as unknown[]) {
          const desc = epDesc(d);
          if (desc !== undefined) eps.push(desc);
        }
        listed.set(o.dc, eps);
      }
    } else {
      this.warn('malformed sync', node);
      return;
    }
    for (const dc of this.dcs.values()) {
      if (!dc.nodes.has(node)) continue;
      const eps = listed.get(dc.cfg.id) ?? [];
      const present = new Set<Endpoint>();
      for (const desc of eps) {
        present.add(desc.ep);
        this.learn(dc, node, desc);
      }
      for (const e of [...dc.eps.values()]) {
        if (e.isLocal || e.node !== node) continue;
        if (e.kind === 'backup') e.nodeDown = false;
        else if (!present.has(e.ep)) this.unbindRemote(e);
      }
    }
  }

  /** Record that `desc` is bound at `node` (bind or sync). */
  private learn(dc: DcState, node: NodeId, desc: EpDesc): void {
    const e = dc.eps.get(desc.ep);
    if (e === undefined) {
      dc.eps.set(desc.ep, new Ep(dc, desc.ep, desc.name, 'remote', node, -1));
      if (dc.failover.has(desc.ep)) this.endFailover(dc, desc.ep);
      return;
    }
    if (e.isLocal) {
      if (e.kind !== 'replica' || desc.kind !== 'replica') {
        this.warn('peer bound an endpoint bound here', node, { dc: dc.cfg.id, ep: desc.ep });
      }
      return;
    }
    const old = e.node;
    if (old !== node) {
      // It moved (or our knowledge was stale): what we held for the old location no longer applies.
      this.releaseRemote(e);
      e.node = node;
    }
    e.name = desc.name;
    e.nodeDown = false;
    e.forgotten = false;
    e.primaryGone = false;
    if (dc.replicated.has(desc.ep) && old !== node) {
      // A new primary: the old one is gone, whether or not its unbind (or nodeDown) reached us yet.
      for (const c of [...this.ops.values()]) {
        if (c.ep.dc === dc && c.peer === desc.ep && c.node === old && c.state === St.Remote) {
          this.failoverCall(c, old);
        }
      }
    }
    if (dc.failover.has(desc.ep)) this.endFailover(dc, desc.ep);
  }

  private broadcastBind(e: Ep): void {
    this.broadcast(e.dc, { t: 'bind', dc: e.dc.cfg.id, ep: e.ep, kind: e.kind, name: e.name, pid: e.pid });
    this.io.onLocalBind?.(e.dc.cfg.id, e.ep, { kind: e.kind, name: e.name, pid: e.pid });
  }

  private broadcast(dc: DcState, f: ControlFrame): void {
    for (const n of dc.cfg.nodes) if (n !== this.nodeId && this.up.has(n)) this.io.toNode(n, f);
  }

  private needDc(id: DcId): DcState {
    const dc = this.dcs.get(id);
    if (dc === undefined) throw dvsError('ENOENT', `no DC ${id}`, { dc: id });
    return dc;
  }

  private info(e: Ep): EndpointInfo {
    const flags: string[] = [];
    if (!e.isLocal) {
      flags.push('REMOTE');
      if (e.nodeDown || this.down.has(e.node)) flags.push('NODEDOWN');
    }
    if (e.kind === 'backup') flags.push('BACKUP');
    if (e.waitBind) flags.push('WAITBIND');
    if (e.migrating) flags.push('MIGRATING');
    if (e.dc.failover.has(e.ep)) flags.push('FAILOVER');
    if (e.isLocal || e.kind === 'backup') {
      if (e.sendTo !== NONE) flags.push('SENDING');
      if (e.recv !== null) flags.push('RECEIVING');
      if (e.replyFrom !== NONE) flags.push('ATOMIC');
      if (e.serving !== null && e.serving.size > 0) flags.push('NOMIGRATE');
      if (e.copies > 0) flags.push('ONCOPY');
      if (e.wokenUp) flags.push('WOKENUP');
    }
    const c = e.counters;
    return {
      dc: e.dc.cfg.id,
      ep: e.ep,
      name: e.name,
      node: e.node,
      pid: e.isLocal || e.kind === 'backup' ? e.pid : -1,
      kind: e.kind,
      flags,
      sendTo: e.isLocal && e.sendTo !== NONE ? e.sendTo : null,
      getFrom: e.recv !== null ? e.recv.peer : null,
      queued: e.inbox.live,
      pendingNotify: e.notes?.size ?? 0,
      counters: {
        lclSent: c.lclSent,
        rmtSent: c.rmtSent,
        received: c.received,
        notifies: c.notifies,
        copyBytes: c.copyBytes,
      },
    };
  }

  private warn(msg: string, node: NodeId, fields?: Record<string, unknown>): void {
    this.io.log('warn', msg, { node, ...fields });
  }
}
