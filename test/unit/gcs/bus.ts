/**
 * A tiny deterministic bus for GcsNode unit tests: frames go through MessagePack (as on a real link) into
 * one FIFO queue, delivered when the test calls `run()`. Links can be cut (frames in flight dropped).
 */
import { pack, unpack } from 'msgpackr';
import { GcsNode, type GcsNodeOptions } from '../../../src/gcs/node.js';
import type { GcsEvent, Member, NodeId } from '../../../src/gcs/types.js';

export interface Delivery {
  member: string;
  ev: GcsEvent;
}

export class Bus {
  readonly nodes = new Map<NodeId, GcsNode>();
  readonly delivered: Delivery[] = [];
  readonly expelled: string[] = [];
  readonly logs: string[] = [];
  private queue: { from: NodeId; to: NodeId; bytes: Uint8Array; gen: number }[] = [];
  private readonly cut = new Set<string>();
  private gen = 0;
  now = 1000;

  constructor(ids: NodeId[], opts: Partial<GcsNodeOptions> = {}) {
    for (const id of ids)
      this.nodes.set(
        id,
        new GcsNode({
          nodeId: id,
          incarnation: 1,
          ...opts,
          io: {
            sendTo: (to, f) => {
              this.wire.push({ from: id, to, t: f.t, ops: 'ops' in f ? f.ops.length : 0 });
              if (!this.cut.has(this.key(id, to)))
                this.queue.push({ from: id, to, bytes: pack(f), gen: this.gen });
            },
            deliver: (m, ev) => {
              this.delivered.push({ member: `${m.node}.${m.ep}`, ev });
            },
            expelled: (m) => {
              this.expelled.push(`${m.node}.${m.ep}`);
            },
            log: (level, msg) => {
              this.logs.push(`${level} ${msg}`);
            },
          },
        }),
      );
  }

  node(id: NodeId): GcsNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  private key(a: NodeId, b: NodeId): string {
    return a < b ? `${a}-${b}` : `${b}-${a}`;
  }

  /** Tell every node what it can reach given the cut links. */
  announce(): void {
    for (const [id, n] of this.nodes) {
      const r = new Set([...this.nodes.keys()].filter((o) => o !== id && !this.cut.has(this.key(id, o))));
      n.reachable(this.now, r);
    }
  }

  /** Cut the links between the two sides (frames in flight between them are lost). */
  partition(a: NodeId[], b: NodeId[]): void {
    for (const x of a) for (const y of b) this.cut.add(this.key(x, y));
    this.queue = this.queue.filter((f) => !this.cut.has(this.key(f.from, f.to)));
    this.announce();
  }

  heal(): void {
    this.cut.clear();
    this.announce();
  }

  /** Every frame sent, as `{from, to, frame}` (decoded), for tests that look at the wire. */
  readonly wire: { from: NodeId; to: NodeId; t: string; ops: number }[] = [];

  /** Deliver one queued frame; false if none was queued. */
  step(): boolean {
    const f = this.queue.shift();
    if (f === undefined) return false;
    this.now += 1;
    this.node(f.to).receive(this.now, f.from, unpack(f.bytes));
    return true;
  }

  /** Deliver frames (and tick every node now and then) until nothing is left. */
  run(maxSteps = 100_000): void {
    for (let i = 0; i < maxSteps; i++) {
      const f = this.queue.shift();
      if (f === undefined) {
        if (![...this.nodes.values()].every((n) => n.settled())) {
          this.now += 10;
          for (const n of this.nodes.values()) n.tick(this.now);
          if (this.queue.length === 0) return;
          continue;
        }
        return;
      }
      this.now += 1;
      this.node(f.to).receive(this.now, f.from, unpack(f.bytes));
    }
    throw new Error('bus did not quiesce');
  }

  /** Events delivered to `m` (as `node.ep`). */
  of(m: Member | string): GcsEvent[] {
    const k = typeof m === 'string' ? m : `${m.node}.${m.ep}`;
    return this.delivered.filter((d) => d.member === k).map((d) => d.ev);
  }
}
