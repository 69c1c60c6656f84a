/**
 * A FIFO async mutex whose waiters can give up (AbortSignal). Used by the DSM to serialise the requests of
 * one page at its home (the manager) and the operations of one page at a node (the copy holder).
 */
import { DvsError } from '../../protocol/errors.js';

interface Waiter {
  grant: () => void;
  fail: (e: DvsError) => void;
}

export class Mutex {
  private held = false;
  private readonly waiters: Waiter[] = [];

  /** Whether someone holds it (for tests and stats). */
  get locked(): boolean {
    return this.held;
  }

  /** Waiters queued behind the holder. */
  get queued(): number {
    return this.waiters.length;
  }

  /** Resolves with the release function once held; EABORTED if `signal` fires first. */
  lock(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (!this.held) {
      this.held = true;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(abortError(signal));
      };
      const w: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
        fail: reject,
      };
      this.waiters.push(w);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Run `fn` holding the mutex. */
  async run<T>(fn: () => Promise<T> | T, signal?: AbortSignal): Promise<T> {
    const release = await this.lock(signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiters.shift();
      if (next === undefined) this.held = false;
      else next.grant();
    };
  }
}

/** The error a wait cut short by `signal` rejects with: its reason if a DvsError, else EABORTED. */
export function abortError(signal: AbortSignal | undefined): DvsError {
  const r: unknown = signal?.reason;
  return r instanceof DvsError ? r : new DvsError('EABORTED', 'aborted');
}
