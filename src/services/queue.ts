/**
 * A bounded single-consumer async queue: a producer pushes, `for await` pulls. It backs every stream the DVK
 * services expose as an async iterator, on both sides of the service channel: the daemon's election observer
 * (src/services/election.ts) and the SDK's kv watch / observe / failure-detector streams (src/sdk/services.ts).
 * Pure (no I/O, no clock), so processes importing the SDK pull in nothing else.
 */
import { DvsError } from '../protocol/errors.js';

/**
 * What a full queue does with one more item: `drop` the oldest (streams of states, where only the latest
 * matters), or `fail` the iteration with ENOSPC (streams of events, where skipping one would lie).
 */
export type QueueOverflow = 'drop' | 'fail';

/**
 * A single-consumer async queue; `end()` finishes the iteration (rejecting it with `err` if given), and
 * `return()` (a `break` out of `for await`) ends it, drops what is buffered and calls `onReturn` so the
 * producer can stop.
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private isEnded = false;
  private error: unknown;

  /**
   * @param limit most items buffered for a consumer that does not read; beyond it, `overflow` decides.
   * @param onReturn called when the consumer returns the iterator (the producer stops).
   */
  constructor(
    private readonly limit: number,
    private readonly onReturn: () => void,
    private readonly overflow: QueueOverflow = 'drop',
  ) {}

  /** Whether the queue has ended (by `end()`, `return()`, or an overflow in `fail` mode). */
  get ended(): boolean {
    return this.isEnded;
  }

  push(item: T): void {
    if (this.isEnded) return;
    const w = this.waiting;
    if (w !== undefined) {
      this.waiting = undefined;
      w.resolve({ value: item, done: false });
      return;
    }
    // A consumer that stops reading cannot make us hold unbounded memory.
    if (this.items.length >= this.limit) {
      if (this.overflow === 'fail') {
        this.end(new DvsError('ENOSPC', `stream consumer fell ${this.limit} events behind`));
        return;
      }
      this.items.shift();
    }
    this.items.push(item);
  }

  end(err?: unknown): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.error = err;
    const w = this.waiting;
    this.waiting = undefined;
    if (w === undefined) return;
    if (err === undefined) w.resolve({ value: undefined, done: true });
    else w.reject(err);
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.isEnded) {
      if (this.error !== undefined) {
        const e = this.error;
        this.error = undefined;
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.end();
    this.items.length = 0;
    this.onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
