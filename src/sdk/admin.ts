/**
 * Client of the admin RPC a node daemon serves on its local socket (src/protocol/admin.ts). The CLI uses it;
 * the connection never binds an endpoint.
 */
import type { AdminMethod, AdminMethods } from '../protocol/admin.js';
import { DvsError } from '../protocol/errors.js';
import type { CallOptions } from './client.js';
import type { ConnectTimeoutOptions } from './conn.js';
import { ProcConnection } from './conn.js';
import { RpcChannel } from './rpc.js';

/**
 * @example
 * const admin = await AdminClient.connect('/tmp/dvs/node1/dvk.sock', { timeout: 2000 });
 * const st = await admin.call('status', {}, { timeout: 2000 });
 * await admin.close();
 */
export class AdminClient {
  private readonly conn: ProcConnection;
  private readonly rpc: RpcChannel;

  private constructor(conn: ProcConnection) {
    this.conn = conn;
    this.rpc = new RpcChannel(conn);
    conn.bind({
      frame: (f) => {
        if (!this.rpc.onFrame(f)) throw new DvsError('EPROTO', `unexpected ${f.op} on an admin connection`);
      },
      closed: (err) => this.rpc.closed(err),
    });
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
    return this.rpc.call(method, params, opts) as Promise<AdminMethods[M]['result']>;
  }

  /**
   * Call a DVK service method that is not a fixed admin method (`kv.get`, `lock.ls`...: src/node/services.ts).
   * The CLI names the DC in `params.dc`.
   */
  service(method: string, params: Record<string, unknown>, opts: CallOptions = {}): Promise<unknown> {
    return this.rpc.call(method, params, opts);
  }

  /** Allocate a subscription id for a service that pushes events (pass it as `params.sub`). */
  subscribe(fn: (data: unknown) => void): number {
    return this.rpc.subscribe(fn);
  }

  unsubscribe(sub: number): void {
    this.rpc.unsubscribe(sub);
  }

  /** Close the connection; pending calls reject with ENOTCONN. */
  async close(): Promise<void> {
    await this.conn.close();
  }
}
