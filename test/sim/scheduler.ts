/**
 * Discrete-event scheduler in virtual time. Events run in (time, insertion order): two events at the same
 * virtual time run in the order they were scheduled, so a run is a pure function of the seed.
 */

/** Handle of a scheduled event; `cancel()` makes it a no-op. */
export interface EventHandle {
  cancel(): void;
}

interface Entry {
  time: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class Scheduler {
  private heap: Entry[] = [];
  private seq = 0;
  private nowMs = 0;
  /** Number of events executed so far. */
  steps = 0;

  /** Current virtual time, ms since the start of the run. */
  get now(): number {
    return this.nowMs;
  }

  /** Number of events waiting (cancelled ones included until they are popped). */
  get size(): number {
    return this.heap.length;
  }

  /** Run `fn` after `delay` ms of virtual time (0 = after everything already due now). */
  after(delay: number, fn: () => void): EventHandle {
    if (!(delay >= 0)) throw new Error(`Scheduler.after: bad delay ${delay}`);
    const e: Entry = { time: this.nowMs + delay, seq: this.seq++, fn, cancelled: false };
    this.push(e);
    return {
      cancel: () => {
        e.cancelled = true;
      },
    };
  }

  /** Run `fn` at absolute virtual time `time` (not before now). */
  at(time: number, fn: () => void): EventHandle {
    return this.after(Math.max(0, time - this.nowMs), fn);
  }

  /**
   * Run events until the queue is empty, virtual time would pass `until`, or `maxSteps` events ran.
   * Returns why it stopped.
   */
  run(until: number, maxSteps: number): 'empty' | 'time' | 'steps' {
    for (;;) {
      const top = this.heap[0];
      if (top === undefined) return 'empty';
      if (top.time > until) {
        this.nowMs = until;
        return 'time';
      }
      if (this.steps >= maxSteps) return 'steps';
      this.pop();
      if (top.cancelled) continue;
      this.nowMs = top.time;
      this.steps++;
      top.fn();
    }
  }

  private less(a: Entry, b: Entry): boolean {
    return a.time < b.time || (a.time === b.time && a.seq < b.seq);
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as Entry;
      if (!this.less(e, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = e;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && this.less(h[r] as Entry, h[l] as Entry) ? r : l;
      if (!this.less(h[c] as Entry, last)) break;
      h[i] = h[c] as Entry;
      i = c;
    }
    h[i] = last;
  }
}
