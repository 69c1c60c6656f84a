/**
 * What the simulator records about every message and call, and the invariants checked on it.
 *
 * The contract checked (DESIGN.md §4, §5):
 * 1. No message is delivered twice (identity: sender incarnation uid + sender sequence number).
 * 2. Per (sender, receiver) pair, messages are delivered in send order (send, request and post alike).
 * 3. A send that completed OK was delivered exactly once. A send that completed with an error was NOT
 *    delivered (the cancel protocol waits for the receiver's side before failing the sender), with one
 *    documented exception: ENOTCONN after the node pair was declared dead during the call; then the
 *    receiver may have taken it just before the link died. A sendrec that completed OK had its request
 *    delivered exactly once; one that failed may have had its request taken (the server died or the
 *    client timed out while waiting for the reply), but at most once.
 * 4. Posts: none is delivered twice; per (sender, destination) the kernel accounts for every post:
 *    delivered + reported failed (postFailed n) == posted while the node pair was never declared dead and
 *    the sender lived to the end; >= posted (nothing silently lost) otherwise.
 * 5. Every call completes exactly once (never twice, never for an unknown call id); calls of processes
 *    alive at the end complete (receives excepted: they legitimately wait for traffic).
 * 6. Without faults: every message is delivered, every call completes OK, every notify is followed by a
 *    notification delivered to its destination.
 */

import type { CallResult, Endpoint, NodeId, ProcId } from '../../src/kernel/types.js';
import type { ErrorCode } from '../../src/protocol/errors.js';

export type MsgOp = 'send' | 'sendrec' | 'post';

/** One message a simulated process sent (a send, the request of a sendrec, or a post). */
export interface MsgRecord {
  uid: number;
  seq: number;
  op: MsgOp;
  srcEp: Endpoint;
  srcNode: NodeId;
  dstEp: Endpoint;
  /** Node of the destination when it was sent (per the simulator's oracle). */
  dstNode: NodeId;
  sentAt: number;
  /** undefined while pending; 'ok'; or the error code. Posts: 'ok' = accepted by kernel.post. */
  outcome: 'ok' | ErrorCode | undefined;
  completedAt: number;
  deliveries: { receiverUid: number; at: number }[];
}

/** One call a simulated process made. */
export interface CallRecord {
  uid: number;
  node: NodeId;
  proc: ProcId;
  callId: number;
  op: string;
  issuedAt: number;
  completions: number;
  msg: MsgRecord | undefined;
}

export interface ActorInfo {
  uid: number;
  node: NodeId;
  ep: Endpoint;
  role: string;
  alive: boolean;
}

export class Checker {
  readonly violations: string[] = [];
  readonly msgs = new Map<string, MsgRecord>();
  readonly calls = new Map<string, CallRecord>();
  /** Actors by uid (kept after death). */
  readonly actors = new Map<number, ActorInfo>();
  /** Last delivered seq per `${senderUid}>${receiverUid}`. */
  private readonly lastSeq = new Map<string, number>();
  /** Times at which a node pair (unordered, `${min}-${max}`) was declared dead by either side. */
  private readonly deaths = new Map<string, number[]>();
  /** postFailed n per `${senderUid}>${dstEp}`. */
  private readonly postFailed = new Map<string, number>();
  /** Notify calls per `${srcEp}>${dstEp}`: issue times. */
  private readonly notifies = new Map<string, number[]>();
  /** Notifications delivered per `${srcEp}>${dstEp}`: delivery times. */
  private readonly notified = new Map<string, number[]>();
  /** wakeup() calls per destination endpoint: issue times. */
  private readonly wakeups = new Map<Endpoint, number[]>();
  /** receive() calls that failed with EWOKENUP, per endpoint: times. */
  private readonly woken = new Map<Endpoint, number[]>();
  /** Counters for reports. */
  readonly stats = {
    delivered: 0,
    duplicatesDropped: 0,
    completions: 0,
    failures: new Map<string, number>(),
  };

  /** Record a violation (the message gets the seed prefix from the caller of `assertOk`). */
  fail(msg: string): void {
    if (this.violations.length < 50) this.violations.push(msg);
  }

  static msgKey(uid: number, seq: number): string {
    return `${uid}#${seq}`;
  }

  pairDeath(a: NodeId, b: NodeId, at: number): void {
    const k = a < b ? `${a}-${b}` : `${b}-${a}`;
    let l = this.deaths.get(k);
    if (l === undefined) {
      l = [];
      this.deaths.set(k, l);
    }
    l.push(at);
  }

  /** True if the pair {a, b} was declared dead at some time in [from, to]. */
  diedBetween(a: NodeId, b: NodeId, from: number, to: number): boolean {
    if (a === b) return false;
    const l = this.deaths.get(a < b ? `${a}-${b}` : `${b}-${a}`);
    return l?.some((t) => t >= from && t <= to) ?? false;
  }

  addMsg(r: MsgRecord): void {
    this.msgs.set(Checker.msgKey(r.uid, r.seq), r);
  }

  addCall(c: CallRecord): void {
    const k = `${c.node}:${c.proc}:${c.callId}`;
    if (this.calls.has(k)) this.fail(`harness reused call id ${k}`);
    this.calls.set(k, c);
  }

  addNotifyCall(srcEp: Endpoint, dstEp: Endpoint, at: number): void {
    const k = `${srcEp}>${dstEp}`;
    let l = this.notifies.get(k);
    if (l === undefined) {
      l = [];
      this.notifies.set(k, l);
    }
    l.push(at);
  }

  addWakeupCall(dstEp: Endpoint, at: number): void {
    let l = this.wakeups.get(dstEp);
    if (l === undefined) {
      l = [];
      this.wakeups.set(dstEp, l);
    }
    l.push(at);
  }

  onPostFailed(uid: number, dst: Endpoint, n: number, code: ErrorCode): void {
    const k = `${uid}>${dst}`;
    this.postFailed.set(k, (this.postFailed.get(k) ?? 0) + n);
    this.stats.failures.set(`postFailed:${code}`, (this.stats.failures.get(`postFailed:${code}`) ?? 0) + n);
  }

  /**
   * io.complete(proc, callId, result) on node `node`. Returns the call record (undefined if unknown).
   * `receiver` is the actor that owns `proc`.
   */
  onComplete(
    node: NodeId,
    proc: ProcId,
    callId: number,
    result: CallResult,
    now: number,
    receiver: ActorInfo | undefined,
  ): CallRecord | undefined {
    this.stats.completions++;
    const c = this.calls.get(`${node}:${proc}:${callId}`);
    if (c === undefined) {
      this.fail(`complete for unknown call ${callId} of proc ${proc} on node ${node}`);
      return undefined;
    }
    c.completions++;
    if (c.completions > 1) {
      this.fail(`call ${c.op} #${callId} of actor ${c.uid} completed ${c.completions} times (invariant 5)`);
      return c;
    }
    if (!result.ok && result.code === 'EWOKENUP' && receiver !== undefined) {
      // No spurious wake-ups: at least as many wakeup() calls to this endpoint so far as EWOKENUPs.
      let l = this.woken.get(receiver.ep);
      if (l === undefined) {
        l = [];
        this.woken.set(receiver.ep, l);
      }
      l.push(now);
      const issued = this.wakeups.get(receiver.ep)?.length ?? 0;
      if (c.op !== 'receive')
        this.fail(`${c.op} of ep ${receiver.ep} failed with EWOKENUP (only receive may)`);
      if (l.length > issued)
        this.fail(`ep ${receiver.ep} woken up ${l.length} times by ${issued} wakeup() calls`);
    }
    if (!result.ok) {
      const k = `${c.op}:${result.code}`;
      this.stats.failures.set(k, (this.stats.failures.get(k) ?? 0) + 1);
    }
    const m = c.msg;
    // A process that exited never sees the outcome of its last call; its message stays "unknown" (<= 1 delivery).
    if (m !== undefined && this.actors.get(c.uid)?.alive === true) {
      m.outcome = result.ok ? 'ok' : result.code;
      m.completedAt = now;
      if (m.op === 'sendrec' && result.ok) {
        const r = result.msg;
        const id = r === undefined ? undefined : decodePayload(r.payload);
        if (r === undefined || r.source !== m.dstEp || id?.uid !== m.uid || id.seq !== m.seq) {
          this.fail(`sendrec ${m.uid}#${m.seq} to ep ${m.dstEp} got a wrong reply: ${describe(r)}`);
        }
      }
    }
    if (result.ok && result.msg !== undefined && (c.op === 'receive' || c.op === 'receiveRequest')) {
      if (receiver === undefined) this.fail(`delivery to unknown proc ${proc} on node ${node}`);
      else this.deliver(receiver, result.msg, c.op, now);
    }
    return c;
  }

  /** `rcv` took message `msg` (by receive, receiveRequest or receiveAhead) at `now`. */
  deliver(
    rcv: ActorInfo,
    msg: NonNullable<Extract<CallResult, { ok: true }>['msg']>,
    op: string,
    now: number,
  ): void {
    if (msg.kind === 'notify') {
      const k = `${msg.source}>${rcv.ep}`;
      if ((this.notifies.get(k)?.length ?? 0) === 0)
        this.fail(`spurious notification from ep ${msg.source} to ep ${rcv.ep}`);
      let l = this.notified.get(k);
      if (l === undefined) {
        l = [];
        this.notified.set(k, l);
      }
      l.push(now);
      return;
    }
    if (op === 'receiveRequest' && msg.kind !== 'request')
      this.fail(`receiveRequest returned a ${msg.kind} message`);
    const id = decodePayload(msg.payload);
    const m = id === undefined ? undefined : this.msgs.get(Checker.msgKey(id.uid, id.seq));
    if (id === undefined || m === undefined) {
      this.fail(`ep ${rcv.ep} received a message nobody sent: ${describe(msg)}`);
      return;
    }
    this.stats.delivered++;
    const expectKind = m.op === 'sendrec' ? 'request' : m.op;
    if (msg.kind !== expectKind) this.fail(`${m.op} ${id.uid}#${id.seq} delivered as kind ${msg.kind}`);
    if (msg.source !== m.srcEp)
      this.fail(`${m.op} ${id.uid}#${id.seq} delivered with source ${msg.source}, sent by ${m.srcEp}`);
    if (m.dstEp !== rcv.ep)
      this.fail(`${m.op} ${id.uid}#${id.seq} for ep ${m.dstEp} delivered to ep ${rcv.ep}`);
    m.deliveries.push({ receiverUid: rcv.uid, at: now });
    if (m.deliveries.length > 1) {
      this.fail(
        `${m.op} ${id.uid}#${id.seq} (ep ${m.srcEp} -> ep ${m.dstEp}) delivered ${m.deliveries.length} times (invariant 1)`,
      );
    }
    const pk = `${m.uid}>${rcv.uid}`;
    const last = this.lastSeq.get(pk) ?? 0;
    if (id.seq <= last) {
      this.fail(
        `order: ${m.op} seq ${id.seq} from actor ${m.uid} delivered to actor ${rcv.uid} after seq ${last} (invariant 2)`,
      );
    } else this.lastSeq.set(pk, id.seq);
  }

  /**
   * End-of-run checks. `faultFree`: no cancels, exits, drops or crashes were injected, so everything must
   * have been delivered and must have succeeded.
   */
  finish(end: number, faultFree: boolean): void {
    const posts = new Map<
      string,
      {
        uid: number;
        dst: Endpoint;
        srcNode: NodeId;
        dstNode: NodeId;
        first: number;
        posted: number;
        delivered: number;
      }
    >();
    for (const m of this.msgs.values()) {
      const alive = this.actors.get(m.uid)?.alive ?? false;
      const d = m.deliveries.length;
      const name = `${m.op} ${m.uid}#${m.seq} (node ${m.srcNode} ep ${m.srcEp} -> node ${m.dstNode} ep ${m.dstEp}, sent at ${m.sentAt})`;
      if (m.op === 'post') {
        if (m.outcome !== 'ok') {
          if (d > 0) this.fail(`${name} was refused (${m.outcome}) yet delivered`);
          continue;
        }
        const k = `${m.uid}>${m.dstEp}`;
        let p = posts.get(k);
        if (p === undefined) {
          p = {
            uid: m.uid,
            dst: m.dstEp,
            srcNode: m.srcNode,
            dstNode: m.dstNode,
            first: m.sentAt,
            posted: 0,
            delivered: 0,
          };
          posts.set(k, p);
        }
        p.posted++;
        p.delivered += Math.min(d, 1);
        if (faultFree && d === 0) this.fail(`${name} never delivered in a fault-free run (invariant 6)`);
        continue;
      }
      if (m.outcome === undefined) {
        if (alive) this.fail(`${name} never completed though its process is alive (invariant 5/6)`);
        continue;
      }
      if (m.outcome === 'ok') {
        if (d !== 1) this.fail(`${name} completed OK but was delivered ${d} times (invariant 3)`);
        continue;
      }
      if (faultFree) this.fail(`${name} failed with ${m.outcome} in a fault-free run (invariant 6)`);
      if (m.op === 'send' && d > 0) {
        const excused =
          m.outcome === 'ENOTCONN' && this.diedBetween(m.srcNode, m.dstNode, m.sentAt, m.completedAt);
        if (!excused)
          this.fail(
            `${name} failed with ${m.outcome} at ${m.completedAt} but was delivered at ${m.deliveries[0]?.at} (invariant 3)`,
          );
      }
    }
    for (const p of posts.values()) {
      const failed = this.postFailed.get(`${p.uid}>${p.dst}`) ?? 0;
      const alive = this.actors.get(p.uid)?.alive ?? false;
      const name = `posts of actor ${p.uid} (node ${p.srcNode}) to ep ${p.dst} (node ${p.dstNode})`;
      if (!alive) continue;
      if (p.srcNode === p.dstNode || !this.diedBetween(p.srcNode, p.dstNode, p.first, end)) {
        if (p.delivered + failed !== p.posted) {
          this.fail(
            `${name}: posted ${p.posted}, delivered ${p.delivered}, reported failed ${failed} (invariant 4: exact accounting)`,
          );
        }
      } else if (p.delivered + failed < p.posted) {
        this.fail(
          `${name}: posted ${p.posted}, delivered ${p.delivered}, reported failed ${failed}: lost silently (invariant 4)`,
        );
      }
    }
    for (const c of this.calls.values()) {
      if (c.completions > 0 || c.msg !== undefined) continue;
      if (c.op === 'receive' || c.op === 'receiveRequest') continue;
      if (this.actors.get(c.uid)?.alive)
        this.fail(
          `${c.op} #${c.callId} of actor ${c.uid} issued at ${c.issuedAt} never completed (invariant 5)`,
        );
    }
    if (faultFree) {
      for (const [k, times] of this.notifies) {
        const last = times[times.length - 1] ?? 0;
        const got = this.notified.get(k) ?? [];
        if (!got.some((t) => t >= last))
          this.fail(`notify ${k} issued at ${last} was never followed by a notification (invariant 6)`);
      }
      for (const [ep, times] of this.wakeups) {
        const last = times[times.length - 1] ?? 0;
        if (!(this.woken.get(ep) ?? []).some((t) => t >= last)) {
          this.fail(`wakeup of ep ${ep} issued at ${last} never woke its receive (invariant 6)`);
        }
      }
      for (const [k, n] of this.stats.failures) {
        // EWOKENUP is what wakeup() is for.
        if (k !== 'receive:EWOKENUP') this.fail(`fault-free run had ${n} failures ${k} (invariant 6)`);
      }
    }
  }
}

/** Payload of every simulated message: sender uid (u32), sequence number (u32), then filler bytes. */
export function encodePayload(uid: number, seq: number, filler: number): Uint8Array {
  const b = new Uint8Array(8 + filler);
  const v = new DataView(b.buffer);
  v.setUint32(0, uid);
  v.setUint32(4, seq);
  for (let i = 0; i < filler; i++) b[8 + i] = (seq + i) & 0xff;
  return b;
}

export function decodePayload(p: Uint8Array): { uid: number; seq: number } | undefined {
  if (p.byteLength < 8) return undefined;
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  return { uid: v.getUint32(0), seq: v.getUint32(4) };
}

function describe(m: { source: number; kind?: string; payload: Uint8Array } | undefined): string {
  if (m === undefined) return 'nothing';
  const id = decodePayload(m.payload);
  return `{source ${m.source}, kind ${m.kind}, id ${id === undefined ? '?' : `${id.uid}#${id.seq}`}}`;
}
