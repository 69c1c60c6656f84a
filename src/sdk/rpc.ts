/**
 * Request/response calls over a local connection's ADMIN / ADMIN_RESULT frames, plus EVENT frames pushed
 * by the daemon. Shared by {@link AdminClient} (the CLI) and Dvk (processes calling DVK services).
 *
 * A call that times out or is aborted rejects at once; the daemon is told with a `$cancel` call so the
 * service can stop waiting (a queued lock leaves its queue, a watch stops). Its late answer is ignored.
 *
 * Subscriptions (watches, group deliveries) are keyed by an id the client allocates *before* the call that
 * starts them (the service gets it as `params.sub`), so an event can never arrive before its handler.
 */
import { CANCEL_METHOD } from '../protocol/admin.js';
import { DvsError } from '../protocol/errors.js';
import type { ProcFrame } from '../protocol/proc-frames.js';
import type { ProcConnection } from './conn.js';

/** Timeout and cancellation of one call. */
export interface RpcOptions {
  /** ms; the call rejects with ETIMEDOUT after it. */
  timeout?: number;
  /** Rejects the call with EABORTED when aborted. */
  signal?: AbortSignal;
}

interface PendingCall {
  resolve: (v: unknown) => void;
  reject: (e: DvsError) => void;
  cleanup: () => void;
}

export class RpcChannel {
  private readonly pending = new Map<number, PendingCall>();
  private readonly subs = new Map<number, (data: unknown) => void>();
  private nextId = 1;
  private nextSub = 1;
  private closedErr: DvsError | undefined;

  constructor(private readonly conn: ProcConnection) {}

  /**
   * Call `method`. Rejects with the daemon's DvsError, ETIMEDOUT after `timeout` ms, EABORTED on `signal`
   * (the daemon is asked to cancel; it may already have finished), or ENOTCONN if the connection closes.
   */
  call(method: string, params: unknown, opts: RpcOptions = {}): Promise<unknown> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    if (opts.signal?.aborted) return Promise.reject(new DvsError('EABORTED', `${method} aborted`));
    if (opts.timeout !== undefined && (!Number.isFinite(opts.timeout) || opts.timeout < 0))
      return Promise.reject(new DvsError('EINVAL', `bad timeout ${opts.timeout}`));
    const id = this.allocId();
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const fail = (e: DvsError) => {
        if (this.pending.get(id) !== entry) return;
        this.pending.delete(id);
        entry.cleanup();
        reject(e);
        if (!this.closedErr) {
          this.conn.out.frame({ op: 'admin', id: this.allocId(), method: CANCEL_METHOD, params: { id } });
          this.conn.schedule();
        }
      };
      const onAbort = () => fail(new DvsError('EABORTED', `${method} aborted`));
      const entry: PendingCall = {
        resolve,
        reject,
        cleanup: () => {
          if (timer) clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
        },
      };
      if (opts.timeout !== undefined)
        timer = setTimeout(() => fail(new DvsError('ETIMEDOUT', `${method} timed out`)), opts.timeout);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, entry);
      this.conn.out.frame({ op: 'admin', id, method, params });
      this.conn.schedule();
    });
  }

  /** Allocate a subscription id whose EVENT frames go to `fn`, until `unsubscribe(id)`. */
  subscribe(fn: (data: unknown) => void): number {
    const id = this.nextSub;
    this.nextSub = id >= 0xffffffff ? 1 : id + 1;
    this.subs.set(id, fn);
    return id;
  }

  unsubscribe(id: number): void {
    this.subs.delete(id);
  }

  /** Handle an ADMIN_RESULT or EVENT frame; returns false for any other op. */
  onFrame(f: ProcFrame): boolean {
    if (f.op === 'adminResult') {
      const p = this.pending.get(f.id);
      // A call that timed out or was aborted locally may still be answered: ignore it.
      if (p === undefined) return true;
      this.pending.delete(f.id);
      p.cleanup();
      if (f.error !== undefined) p.reject(DvsError.fromWire(f.error));
      else p.resolve(f.result);
      return true;
    }
    if (f.op === 'event') {
      // Events for a subscription already dropped are stale: ignore them.
      this.subs.get(f.sub)?.(f.data);
      return true;
    }
    return false;
  }

  /** The connection closed: every pending call rejects with `err`. */
  closed(err: DvsError): void {
    if (this.closedErr) return;
    this.closedErr = err;
    for (const p of this.pending.values()) {
      p.cleanup();
      p.reject(err);
    }
    this.pending.clear();
    this.subs.clear();
  }

  private allocId(): number {
    const id = this.nextId;
    this.nextId = id >= 0xffffffff ? 1 : id + 1;
    return id;
  }
}
