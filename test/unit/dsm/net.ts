/**
 * An in-memory network of DsmNodes for unit tests: one FIFO channel per ordered node pair (like a node link:
 * requests and replies from A to B share A→B, in order), delivered in random batches after random delays
 * from a seeded PRNG. Delivering a batch synchronously is what reproduces the race the DSM protocol must
 * handle: a grant's reply and a later invalidation handled in one turn, before the reply's continuation.
 */
import { pino } from 'pino';
import type { NodeId } from '../../../src/kernel/types.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { DsmNode } from '../../../src/services/dsm/index.js';
import { Prng } from '../../sim/prng.js';

interface Channel {
  queue: (() => void)[];
  scheduled: boolean;
}

export class DsmNet {
  readonly nodes = new Map<NodeId, DsmNode>();
  private readonly channels = new Map<string, Channel>();
  private readonly down = new Set<NodeId>();
  private readonly timers = new Set<NodeJS.Timeout>();
  readonly rng: Prng;

  constructor(
    ids: NodeId[],
    seed: number,
    private readonly maxDelayMs = 2,
  ) {
    this.rng = new Prng(seed);
    const logger = pino({ level: 'silent' });
    for (const id of ids) {
      this.nodes.set(
        id,
        new DsmNode({
          nodeId: id,
          logger,
          dcNodes: (dc) => (dc === 1 ? ids : undefined),
          rpcTimeoutMs: 2_000,
          transport: {
            call: (to, method, params, opts) => this.call(id, to, method, params, opts.signal),
          },
        }),
      );
    }
  }

  node(id: NodeId): DsmNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  async start(): Promise<void> {
    for (const n of this.nodes.values()) await n.start();
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const n of this.nodes.values()) await n.stop();
  }

  /** Declare `id` dead: its messages are dropped and every other node gets nodeDown (as a link would). */
  kill(id: NodeId): void {
    this.down.add(id);
    for (const [other, n] of this.nodes) if (other !== id) n.nodeDown(id);
  }

  private call(
    from: NodeId,
    to: NodeId,
    method: string,
    params: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<unknown> {
    if (this.down.has(to) || this.down.has(from)) {
      return Promise.reject(new DvsError('ENOTCONN', `node ${to} is down`));
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(new DvsError('EABORTED', 'aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.send(from, to, () => {
        // Messages are copied, as a codec would.
        this.node(to)
          .handle(method, structuredClone(params), from)
          .then(
            (r) =>
              this.send(to, from, () => {
                done();
                resolve(structuredClone(r));
              }),
            (e: unknown) =>
              this.send(to, from, () => {
                done();
                reject(DvsError.from(e));
              }),
          );
      });
    });
  }

  private send(from: NodeId, to: NodeId, deliver: () => void): void {
    if (this.down.has(from) || this.down.has(to)) return;
    const k = `${from}>${to}`;
    let ch = this.channels.get(k);
    if (ch === undefined) {
      ch = { queue: [], scheduled: false };
      this.channels.set(k, ch);
    }
    ch.queue.push(deliver);
    this.schedule(ch, to);
  }

  private schedule(ch: Channel, to: NodeId): void {
    if (ch.scheduled) return;
    ch.scheduled = true;
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        ch.scheduled = false;
        // A batch in one turn, as a link decoding several frames from one read.
        const batch = ch.queue.splice(0, this.rng.int(1, 4));
        for (const f of batch) if (!this.down.has(to)) f();
        if (ch.queue.length > 0) this.schedule(ch, to);
      },
      this.rng.int(0, this.maxDelayMs),
    );
    this.timers.add(t);
  }
}
