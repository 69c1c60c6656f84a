/**
 * Calls between node daemons over their node links: migration steps, admin calls forwarded to another node
 * (`dvs exec --node`, the REST API answering for the cluster). Not on the IPC path.
 *
 * Frames are control frames of type `rpc` with dc 0 (MessagePack, like every control frame):
 * ```
 *   request:  { t: 'rpc', dc: 0, id: u32, m: method, p: params }
 *   response: { t: 'rpc', dc: 0, id: u32, r: result }   or   { t: 'rpc', dc: 0, id: u32, e: WireError }
 * ```
 * `id` is chosen by the caller and unique among its calls in flight. The link delivers frames reliably and
 * in order while the peer lives; when the link layer declares the peer down, every call to it fails with
 * ENOTCONN (it may or may not have run there: callers that care make their methods idempotent).
 */
import type { Logger } from 'pino';
import type { ControlFrame, NodeId } from '../kernel/types.js';
import { DvsError, type WireError } from '../protocol/errors.js';

/** Serves one call from `from`; throws DvsError on failure. */
export type NodeRpcHandler = (
  method: string,
  params: unknown,
  from: NodeId,
  signal: AbortSignal,
) => Promise<unknown>;

export interface NodeRpcOptions {
  /** Send a frame on the link to `node`; false if the link is down (the call fails at once). */
  send: (node: NodeId, frame: ControlFrame) => boolean;
  handler: NodeRpcHandler;
  logger: Logger;
}

interface Pending {
  node: NodeId;
  method: string;
  resolve: (v: unknown) => void;
  reject: (e: DvsError) => void;
  cleanup: () => void;
}

/** Default timeout of a node call, ms. */
export const NODE_RPC_TIMEOUT_MS = 10_000;

export class NodeRpc {
  private readonly pending = new Map<number, Pending>();
  /** Calls being served, so stop() can abort them. */
  private readonly serving = new Set<AbortController>();
  private nextId = 1;
  private stopped = false;

  constructor(private readonly o: NodeRpcOptions) {}

  start(): void {}

  /** Fail pending calls (ENOTCONN) and abort the ones being served. */
  stop(): void {
    this.stopped = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.cleanup();
      p.reject(new DvsError('ENOTCONN', `${p.method} on node ${p.node}: daemon stopping`));
    }
    for (const ac of this.serving) ac.abort(new DvsError('ENOTCONN', 'daemon stopping'));
  }

  /** Call `method` on node `node`. Rejects with the remote DvsError, ETIMEDOUT, EABORTED or ENOTCONN. */
  call(
    node: NodeId,
    method: string,
    params: unknown,
    opts: { timeout?: number; signal?: AbortSignal } = {},
  ): Promise<unknown> {
    if (this.stopped) return Promise.reject(new DvsError('ENOTCONN', 'daemon stopping'));
    if (opts.signal?.aborted) return Promise.reject(new DvsError('EABORTED', `${method} aborted`));
    const id = this.nextId;
    this.nextId = id >= 0xffffffff ? 1 : id + 1;
    return new Promise((resolve, reject) => {
      const timeout = opts.timeout ?? NODE_RPC_TIMEOUT_MS;
      const fail = (e: DvsError) => {
        if (this.pending.get(id) !== p) return;
        this.pending.delete(id);
        p.cleanup();
        reject(e);
      };
      const timer = setTimeout(
        () => fail(new DvsError('ETIMEDOUT', `${method} on node ${node}: no answer in ${timeout} ms`)),
        timeout,
      );
      const onAbort = () => fail(new DvsError('EABORTED', `${method} on node ${node} aborted`));
      const p: Pending = {
        node,
        method,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
        },
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, p);
      if (!this.o.send(node, { t: 'rpc', dc: 0, id, m: method, p: params ?? null })) {
        fail(new DvsError('ENOTCONN', `${method}: node ${node} is not reachable`));
      }
    });
  }

  /** The link to `node` was declared down: its calls fail. */
  nodeDown(node: NodeId): void {
    for (const [id, p] of this.pending) {
      if (p.node !== node) continue;
      this.pending.delete(id);
      p.cleanup();
      p.reject(new DvsError('ENOTCONN', `${p.method}: node ${node} went down`));
    }
  }

  /** An `rpc` frame from `from`. Malformed frames are logged and dropped (a peer is never trusted). */
  onFrame(from: NodeId, f: ControlFrame): void {
    const id = f.id;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      this.o.logger.warn({ peer: from }, 'rpc frame without a valid id');
      return;
    }
    if (typeof f.m === 'string') {
      this.serve(from, id, f.m, f.p);
      return;
    }
    const p = this.pending.get(id);
    if (p === undefined || p.node !== from) return; // timed out meanwhile, or not ours
    this.pending.delete(id);
    p.cleanup();
    if (f.e !== undefined && f.e !== null) p.reject(DvsError.fromWire(f.e));
    else p.resolve(f.r ?? null);
  }

  private serve(from: NodeId, id: number, method: string, params: unknown): void {
    const ac = new AbortController();
    this.serving.add(ac);
    let run: Promise<unknown>;
    try {
      run = this.o.handler(method, params, from, ac.signal);
    } catch (e) {
      run = Promise.reject(e);
    }
    run
      .then(
        (r) => this.o.send(from, { t: 'rpc', dc: 0, id, r: r ?? null }),
        (e: unknown) => {
          const err = DvsError.from(e);
          if (err.code === 'EINTERNAL')
            this.o.logger.error({ err: e, method, peer: from }, 'node rpc failed');
          const wire: WireError = err.toWire();
          this.o.send(from, { t: 'rpc', dc: 0, id, e: wire });
        },
      )
      .finally(() => this.serving.delete(ac));
  }
}
