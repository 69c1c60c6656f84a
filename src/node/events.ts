/**
 * The daemon's event log: a bounded, in-memory, structured record of what this node saw happen (nodes
 * going up and down, DCs created and removed, processes started, exiting, killed, migrations, failovers).
 *
 * It is what `dvs events`, `GET /api/v1/events` and the dashboard's event list read. It is deliberately not
 * durable and not cluster-wide: each daemon logs what it observed, with its own clock and its own sequence
 * numbers; a client that wants the cluster's view asks several nodes. When full, the oldest entries go.
 *
 * ```
 *   daemon ──emit(kind, subject, detail)──▶ EventLog ──ring buffer──▶ list({since, limit})
 *                                              └──────────────────▶ subscribe(fn)  (SSE, `dvs events -f`)
 * ```
 */
import type { NodeId } from '../kernel/types.js';
import type { NodeEvent } from '../protocol/admin.js';

export type { NodeEvent } from '../protocol/admin.js';

/** Event kinds the daemon emits; other strings are allowed (services add their own, dotted). */
export type EventKind =
  | 'node.up'
  | 'node.down'
  | 'dc.created'
  | 'dc.removed'
  | 'proc.started'
  | 'proc.exited'
  | 'proc.killed'
  | 'migrate.started'
  | 'migrate.committed'
  | 'migrate.rolledback'
  | 'failover'
  | 'oom'
  | (string & {});

export interface EventLogOptions {
  /** The node this log belongs to (stamped on every event). */
  node: NodeId;
  /** Entries kept; older ones are dropped (default 2000). */
  capacity?: number;
  /** Clock, ms since the epoch (default Date.now; tests pass their own). */
  now?: () => number;
}

/** Default and largest page of {@link EventLog.list}. */
export const DEFAULT_EVENT_PAGE = 1000;

/** A bounded in-memory event log with subscribers. */
export class EventLog {
  readonly capacity: number;
  private readonly node: NodeId;
  private readonly now: () => number;
  /** Ring buffer: `ring[(first + i) % capacity]` for i < size holds seq `lastSeq - size + 1 + i`. */
  private readonly ring: NodeEvent[] = [];
  private first = 0;
  private seq = 0;
  private readonly subscribers = new Set<(e: NodeEvent) => void>();

  constructor(opts: EventLogOptions) {
    this.node = opts.node;
    this.capacity = Math.max(1, opts.capacity ?? 2000);
    this.now = opts.now ?? Date.now;
  }

  /** Seq of the newest event (0 before the first). */
  get last(): number {
    return this.seq;
  }

  /** Log an event and hand it to every subscriber. Returns the entry. */
  emit(kind: EventKind, subject: string, detail: Record<string, unknown> = {}): NodeEvent {
    const e: NodeEvent = { seq: ++this.seq, time: this.now(), kind, subject, node: this.node, detail };
    if (this.ring.length < this.capacity) this.ring.push(e);
    else {
      this.ring[this.first] = e;
      this.first = (this.first + 1) % this.capacity;
    }
    for (const fn of this.subscribers) {
      try {
        fn(e);
      } catch {
        // A broken subscriber (a closed HTTP stream) must not stop the daemon or the other subscribers.
      }
    }
    return e;
  }

  /**
   * Events with `seq > since` (default 0: everything still kept), oldest first, at most `limit`
   * (default and maximum {@link DEFAULT_EVENT_PAGE}). If `since` is older than the oldest kept entry the
   * page starts at the oldest kept one: a gap a client can see from the seq numbers.
   */
  list(opts: { since?: number; limit?: number } = {}): NodeEvent[] {
    const since = Math.max(0, Math.floor(opts.since ?? 0));
    const limit = Math.min(DEFAULT_EVENT_PAGE, Math.max(0, Math.floor(opts.limit ?? DEFAULT_EVENT_PAGE)));
    const size = this.ring.length;
    const oldest = this.seq - size + 1;
    const start = Math.max(0, since + 1 - oldest);
    const out: NodeEvent[] = [];
    for (let i = start; i < size && out.length < limit; i++) {
      out.push(this.ring[(this.first + i) % size]!);
    }
    return out;
  }

  /** Call `fn` for every event emitted from now on; returns the unsubscribe function. */
  subscribe(fn: (e: NodeEvent) => void): () => void {
    this.subscribers.add(fn);
    return () => {
      this.subscribers.delete(fn);
    };
  }

  /** Number of current subscribers (for metrics and tests). */
  get subscriberCount(): number {
    return this.subscribers.size;
  }
}
