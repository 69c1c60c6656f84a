/**
 * Client of the admin RPC a node daemon serves on its local socket (src/protocol/admin.ts). The CLI uses it;
 * the connection never binds an endpoint.
 */
import type { AdminMethod, AdminMethods } from '../protocol/admin.js';
import { DvsError } from '../protocol/errors.js';
import type { ProcFrame } from '../protocol/proc-frames.js';
import type { CallOptions } from './client.js';
import type { ConnectTimeoutOptions } from './conn.js';
import { ProcConnection } from './conn.js';

interface PendingAdmin {
  resolve(v: unknown): void;
  reject(e: DvsError): void;
  cleanup(): void;
}

/**
 * @example
 * const admin = await AdminClient.connect('/tmp/dvs/node1/dvk.sock', { timeout: 2000 });
 * const st = await admin.call('status', {}, { timeout: 2000 });
 * await admin.close();
 */
export class AdminClient {
  private readonly conn: ProcConnection;
  private readonly pending = new Map<number, PendingAdmin>();
  private nextId = 1;
  private closedErr: DvsError | undefined;

  private constructor(conn: ProcConnection) {
    this.conn = conn;
    conn.bind({ frame: (f) => this.onFrame(f), closed: (err) => this.onClosed(err) });
  }

  /** Connect to the daemon at `socketPath` (ENOTCONN if nobody listens there). */
  static async connect(socketPath: string, opts: ConnectTimeoutOptions = {}): Promise<AdminClient> {
    return new AdminClient(await ProcConnection.open(socketPath, opts));
  }

  /**
   * Call `method`. Rejects with the daemon's DvsError, ETIMEDOUT after `timeout` ms, EABORTED on `signal`
   * (the daemon may still finish the operation), or ENOTCONN if the connection closes.
   */
  call<M extends AdminMethod>(
    method: M,
    params: AdminMethods[M]['params'],
    opts: CallOptions = {},
  ): Promise<AdminMethods[M]['result']> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    if (opts.signal?.aborted) return Promise.reject(new DvsError('EABORTED', `${method} aborted`));
    const id = this.nextId;
    this.nextId = id >= 0xffffffff ? 1 : id + 1;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => fail(new DvsError('EABORTED', `${method} aborted`));
      const fail = (e: DvsError) => {
        if (this.pending.get(id) !== entry) return;
        this.pending.delete(id);
        entry.cleanup();
        reject(e);
      };
      const entry: PendingAdmin = {
        resolve: resolve as (v: unknown) => void,
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

  /** Close the connection; pending calls reject with ENOTCONN. */
  async close(): Promise<void> {
    await this.conn.close();
  }

  private onFrame(f: ProcFrame): void {
    if (f.op !== 'adminResult') throw new DvsError('EPROTO', `unexpected ${f.op} on an admin connection`);
    const p = this.pending.get(f.id);
    // A call that timed out locally may still be answered: ignore it.
    if (p === undefined) return;
    this.pending.delete(f.id);
    p.cleanup();
    if (f.error !== undefined) p.reject(DvsError.fromWire(f.error));
    else p.resolve(f.result);
  }

  private onClosed(err: DvsError): void {
    this.closedErr = err;
    for (const p of this.pending.values()) {
      p.cleanup();
      p.reject(err);
    }
    this.pending.clear();
  }
}
