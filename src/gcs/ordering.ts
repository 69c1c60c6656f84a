/**
 * Total ordering inside one node configuration: a fixed sequencer (the configuration's coordinator)
 * numbers every submitted op 1, 2, 3, ... and sends the numbered ops to every node of the configuration
 * over FIFO links, so every node receives a prefix of one sequence. Each node acknowledges how far it
 * has received; the minimum over the configuration is the stability point, which the sequencer
 * announces. `safe` ops are delivered only once stable; every other order as soon as received (they all
 * share the one total order, which is stronger than fifo and causal require).
 *
 * A {@link Stream} is one node's view of one configuration's sequence: what it received, delivered and
 * knows stable, and (at the sequencer) the numbering and the acknowledgements. It holds received ops until
 * they are both delivered and stable, because a view change may have to hand them to a node that missed
 * them (see membership.ts).
 */
import type { CfgId, NodeId, Op, OrderedOp, SeqOp } from './types.js';

/** What a node received from the sequencer, relative to what it had. */
export type AcceptResult = 'ok' | 'duplicate' | 'gap';

export class Stream {
  /** Highest op number received contiguously. */
  recv = 0;
  /** Highest op number delivered (processed) locally. */
  delivered = 0;
  /** Every node of the configuration holds every op up to this number. */
  stable = 0;
  /** Highest number this node has acknowledged to the sequencer. */
  acked = 0;
  private readonly held = new Map<number, SeqOp>();
  private trimmed = 0;
  // Sequencer side.
  private nextSeq = 1;
  private readonly acks = new Map<NodeId, number>();
  private announced = 0;

  constructor(
    readonly id: CfgId,
    readonly nodes: readonly NodeId[],
  ) {}

  /** The node that numbers ops in this configuration (its coordinator). */
  get sequencer(): NodeId {
    return this.id[1];
  }

  /** Sequencer: number `ops` submitted by `origin`; returns the first number and the numbered ops. */
  sequence(origin: NodeId, inc: number, ops: readonly Op[]): { first: number; ops: OrderedOp[] } {
    const first = this.nextSeq;
    this.nextSeq += ops.length;
    return { first, ops: ops.map((op) => ({ n: origin, i: inc, op })) };
  }

  /**
   * Receiver: ops numbered `first`, `first + 1`, ... arrived. A batch that does not continue the prefix is
   * a gap (frames were lost on a link that went down): it is refused, so what a node holds stays a prefix,
   * and the caller asks for a view change.
   */
  accept(first: number, ops: readonly OrderedOp[]): AcceptResult {
    if (first + ops.length - 1 <= this.recv) return 'duplicate';
    if (first !== this.recv + 1) return 'gap';
    ops.forEach((e, i) => {
      this.held.set(first + i, { s: first + i, n: e.n, i: e.i, op: e.op });
    });
    this.recv += ops.length;
    return 'ok';
  }

  /** Receiver: the sequencer announced stability up to `seq`. */
  setStable(seq: number): void {
    if (seq > this.stable) this.stable = Math.min(seq, this.recv);
    this.trim();
  }

  /** The next op to deliver, or undefined: nothing received, or a `safe` message not yet stable. */
  next(): SeqOp | undefined {
    const e = this.held.get(this.delivered + 1);
    if (e === undefined) return undefined;
    if (e.op.k === 'msg' && e.op.o === 'safe' && e.s > this.stable) return undefined;
    return e;
  }

  /** The op `next()` returned was delivered. */
  advance(): void {
    this.delivered++;
    this.trim();
  }

  /** A held op by number (for the view change), or undefined if trimmed or never received. */
  get(s: number): SeqOp | undefined {
    return this.held.get(s);
  }

  /** The ops held above the stability point (what a view change needs from this node). */
  unstable(): SeqOp[] {
    const out: SeqOp[] = [];
    for (let s = this.stable + 1; s <= this.recv; s++) {
      const e = this.held.get(s);
      if (e !== undefined) out.push(e);
    }
    return out;
  }

  /** Ops held (for metrics and tests). */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * Sequencer: `from` holds every op up to `seq`. Returns the new stability point if it advanced.
   * Nodes outside the configuration are ignored.
   */
  onAck(from: NodeId, seq: number): number | undefined {
    if (!this.nodes.includes(from)) return undefined;
    if (seq <= (this.acks.get(from) ?? 0) || seq >= this.nextSeq) return undefined;
    this.acks.set(from, seq);
    let min = Number.POSITIVE_INFINITY;
    for (const n of this.nodes) min = Math.min(min, this.acks.get(n) ?? 0);
    if (min <= this.announced) return undefined;
    this.announced = min;
    return min;
  }

  private trim(): void {
    const upTo = Math.min(this.stable, this.delivered);
    while (this.trimmed < upTo) this.held.delete(++this.trimmed);
  }
}
