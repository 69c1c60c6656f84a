/**
 * Test harness for the kernel: N kernels wired by a fake KernelIO that records completions, process
 * events and logs, and carries frames between kernels through one FIFO (so per-pair order holds). Frames
 * are delivered only when the test calls run()/step(), which lets tests hold, inspect or race them.
 * Processes' granted memory is simulated: grantRead/grantWrite events are answered (asynchronously,
 * through the same queue) from per-process buffers registered with `memory()`.
 */

import {
  type Call,
  type CallResult,
  type DcConfig,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_POST_WINDOW,
  DEFAULT_SYS_ENDPOINTS,
  Kernel,
  type KernelIO,
  type NodeFrame,
  type NodeId,
  type ProcEvent,
  type ProcId,
} from '../../../src/kernel/index.js';
import type { ErrorCode } from '../../../src/protocol/errors.js';

export interface Done {
  proc: ProcId;
  callId: number;
  result: CallResult;
}

export interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

type Task = { kind: 'frame'; from: NodeId; to: NodeId; frame: NodeFrame } | { kind: 'io'; run: () => void };

/** One node of the test cluster: its kernel and everything it emitted. */
export class TestNode {
  readonly id: NodeId;
  readonly kernel: Kernel;
  readonly done: Done[] = [];
  readonly events: { proc: ProcId; ev: ProcEvent }[] = [];
  readonly logs: LogLine[] = [];
  /** Frames this node sent, in order (whether delivered yet or not). */
  readonly sent: { to: NodeId; frame: NodeFrame }[] = [];
  /** Simulated process memory: proc -> grant -> bytes. */
  readonly mem = new Map<ProcId, Map<number, Uint8Array>>();
  /** Answer grantRead/grantWrite automatically from `mem` (else tests answer by hand). */
  autoGrants = true;
  private readonly net: Net;
  private nextCall = 1;

  constructor(net: Net, id: NodeId) {
    this.net = net;
    this.id = id;
    const io: KernelIO = {
      complete: (proc, callId, result) => {
        if (this.done.some((d) => d.proc === proc && d.callId === callId)) {
          net.violations.push(`node ${id}: call ${proc}/${callId} completed twice`);
        }
        this.done.push({ proc, callId, result });
      },
      toProc: (proc, ev) => {
        this.events.push({ proc, ev });
        if (this.autoGrants) this.answerGrant(proc, ev);
      },
      toNode: (to, frame) => {
        this.sent.push({ to, frame });
        if (to === id) net.violations.push(`node ${id} sent a frame to itself`);
        net.queue.push({ kind: 'frame', from: id, to, frame });
      },
      log: (level, msg, fields) => {
        this.logs.push(fields === undefined ? { level, msg } : { level, msg, fields });
      },
    };
    this.kernel = new Kernel({ nodeId: id, io });
  }

  /** Attach session `proc` to `ep` of `dc` (pid = proc unless given). */
  attach(proc: ProcId, dc: number, ep: number, pid = proc): void {
    this.kernel.attach(this.net.now, proc, dc, ep, { pid });
  }

  /** Issue a call; returns its id. */
  call(proc: ProcId, call: Call): number {
    const id = this.nextCall++;
    this.kernel.call(this.net.now, proc, id, call);
    return id;
  }

  post(proc: ProcId, dst: number, type = 1, payload: Uint8Array = new Uint8Array([type & 0xff])): void {
    this.kernel.post(this.net.now, proc, dst, type, payload);
  }

  /** The result of call `callId` of `proc`, if it completed. */
  result(proc: ProcId, callId: number): CallResult | undefined {
    return this.done.find((d) => d.proc === proc && d.callId === callId)?.result;
  }

  /** Error code of a completed call ('ok' if it succeeded, undefined if pending). */
  code(proc: ProcId, callId: number): ErrorCode | 'ok' | undefined {
    const r = this.result(proc, callId);
    if (r === undefined) return undefined;
    return r.ok ? 'ok' : r.code;
  }

  /** Events for `proc` of one kind. */
  eventsOf<K extends ProcEvent['ev']>(proc: ProcId, ev: K): Extract<ProcEvent, { ev: K }>[] {
    return this.events.filter((e) => e.proc === proc && e.ev.ev === ev).map((e) => e.ev) as Extract<
      ProcEvent,
      { ev: K }
    >[];
  }

  /** Register a grant backed by simulated memory. */
  memory(proc: ProcId, grant: number, bytes: Uint8Array, access: 'r' | 'w' | 'rw'): number {
    let m = this.mem.get(proc);
    if (m === undefined) {
      m = new Map();
      this.mem.set(proc, m);
    }
    m.set(grant, bytes);
    return this.call(proc, { op: 'grant', grant, size: bytes.length, access });
  }

  warnings(): LogLine[] {
    return this.logs.filter((l) => l.level === 'warn' || l.level === 'error');
  }

  private answerGrant(proc: ProcId, ev: ProcEvent): void {
    if (ev.ev === 'grantRead') {
      this.net.queue.push({
        kind: 'io',
        run: () => {
          const buf = this.mem.get(proc)?.get(ev.grant);
          const data = buf?.slice(ev.offset, ev.offset + ev.length);
          this.kernel.grantData(this.net.now, proc, ev.xfer, data ?? 'EFAULT');
        },
      });
    } else if (ev.ev === 'grantWrite') {
      this.net.queue.push({
        kind: 'io',
        run: () => {
          const buf = this.mem.get(proc)?.get(ev.grant);
          if (buf !== undefined) buf.set(ev.data, ev.offset);
          this.kernel.grantWritten(this.net.now, proc, ev.xfer, buf === undefined ? 'EFAULT' : null);
        },
      });
    }
  }
}

/** A cluster of kernels in one process. */
export class Net {
  readonly nodes = new Map<NodeId, TestNode>();
  readonly queue: Task[] = [];
  /** Broken expectations noticed by the fake IO (double completion, frame to self). */
  readonly violations: string[] = [];
  now = 1_000_000;

  constructor(ids: NodeId[]) {
    for (const id of ids) this.nodes.set(id, new TestNode(this, id));
  }

  /** Node `id`. */
  n(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** Create DC `id` on every node of `nodes` (default: all). */
  dc(id: number, over: Partial<DcConfig> = {}): DcConfig {
    const cfg: DcConfig = {
      id,
      name: `dc${id}`,
      nodes: [...this.nodes.keys()],
      maxPayload: DEFAULT_MAX_PAYLOAD,
      sysEndpoints: DEFAULT_SYS_ENDPOINTS,
      postWindow: DEFAULT_POST_WINDOW,
      ...over,
    };
    for (const n of cfg.nodes) this.nodes.get(n)?.kernel.createDc(cfg);
    return cfg;
  }

  /** Bring every link up (each side sends its sync) and deliver. */
  connect(): void {
    for (const a of this.nodes.values()) {
      for (const b of this.nodes.keys()) if (b !== a.id) a.kernel.nodeUp(this.now, b);
    }
    this.run();
  }

  /** Deliver one queued frame or I/O answer; false if the queue is empty. */
  step(): boolean {
    const t = this.queue.shift();
    if (t === undefined) return false;
    if (t.kind === 'io') t.run();
    else this.nodes.get(t.to)?.kernel.fromNode(this.now, t.from, t.frame);
    return true;
  }

  /** Deliver until nothing is queued (bounded, so a livelock fails the test instead of hanging). */
  run(limit = 1_000_000): void {
    for (let i = 0; i < limit; i++) if (!this.step()) return;
    throw new Error('network did not quiesce');
  }

  /** Drop queued frames between `a` and `b` (both directions), as a crashed link would. */
  dropBetween(a: NodeId, b: NodeId): number {
    let dropped = 0;
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const t = this.queue[i]!;
      if (t.kind === 'frame' && ((t.from === a && t.to === b) || (t.from === b && t.to === a))) {
        this.queue.splice(i, 1);
        dropped++;
      }
    }
    return dropped;
  }

  /** Declare `down` dead on every other node (and drop frames to and from it). */
  crash(down: NodeId): void {
    for (const n of this.nodes.values()) {
      if (n.id === down) continue;
      this.dropBetween(n.id, down);
      n.kernel.nodeDown(this.now, down);
    }
  }
}

/** Bytes helper. */
export function bytes(...xs: number[]): Uint8Array {
  return new Uint8Array(xs);
}

/** The message of a successful result (throws otherwise, so tests read naturally). */
export function msgOf(r: CallResult | undefined): NonNullable<Extract<CallResult, { ok: true }>['msg']> {
  if (r === undefined || !r.ok || r.msg === undefined) throw new Error(`no message in ${JSON.stringify(r)}`);
  return r.msg;
}
