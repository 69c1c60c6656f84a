/**
 * Distributed shared memory (src/services/dsm/) as service methods of the daemon, for the processes of each
 * DC (SDK `dvk.shm()`) and the CLI, and as node methods for the DSM protocol between daemons.
 *
 * ```
 *   process ──ADMIN dsm.read {name, offset, length}──▶ daemon: callerDc ──▶ DsmNode (local copy, or fault to the home)
 *   daemon ───rpc dsm.fault / dsm.inval / dsm.lock ...─▶ peer daemon's DsmNode (src/node/node-rpc.ts)
 * ```
 *
 * Service methods (every one acts on {@link callerDc}: a process on its own DC, the CLI on the DC it names):
 * `dsm.open {name, size?}` → SegmentInfo, `dsm.read {name, offset, length}` → bytes, `dsm.write {name, offset,
 * data}`, `dsm.lock {name, lock, ref, timeout?}` → {token}, `dsm.unlock {name, lock, token}`, `dsm.unlink
 * {name}`, `dsm.ls` → SegmentStat[]. Locks are held by the process session that took them: when it closes, the
 * daemon releases them at their homes (and a home releases the locks of a node whose link died).
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { DcId, NodeId, ProcId } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';
import { DsmNode } from '../services/dsm/index.js';
import type { AdminContext } from './local-server.js';
import type { NodeRpcHandler } from './node-rpc.js';
import { callerDc, type ServiceRegistry } from './services.js';

export interface DsmServicesOptions {
  nodeId: NodeId;
  /** A node call over the links (NodeRpc.call). */
  call: (
    node: NodeId,
    method: string,
    params: unknown,
    opts: { timeout?: number; signal?: AbortSignal },
  ) => Promise<unknown>;
  /** Nodes of a DC hosted here (undefined if not). */
  dcNodes: (dc: DcId) => readonly NodeId[] | undefined;
  /** A DC id or name to its id (ENOENT if unknown). */
  resolveDc: (ref: DcId | string) => DcId;
  logger: Logger;
  registry?: Registry;
}

/** The node-to-node methods of the DSM protocol (src/services/dsm/node.ts header). */
export const DSM_NODE_METHODS = [
  'dsm.create',
  'dsm.fault',
  'dsm.inval',
  'dsm.forget',
  'dsm.unlink',
  'dsm.lock',
  'dsm.unlock',
  'dsm.abandon',
  'dsm.release',
  'dsm.list',
] as const;

/** What one process session holds: the homes where it took locks (released when it closes). */
interface SessionLocks {
  owner: string;
  homes: Set<NodeId>;
}

export class DsmServices {
  readonly dsm: DsmNode;
  private readonly o: DsmServicesOptions;
  private readonly sessions = new Map<ProcId, SessionLocks>();

  constructor(o: DsmServicesOptions) {
    this.o = o;
    this.dsm = new DsmNode({
      nodeId: o.nodeId,
      transport: { call: (node, method, params, opts) => o.call(node, method, params, opts) },
      dcNodes: o.dcNodes,
      logger: o.logger,
      ...(o.registry ? { registry: o.registry } : {}),
    });
  }

  start(): Promise<void> {
    return this.dsm.start();
  }

  async stop(): Promise<void> {
    this.sessions.clear();
    await this.dsm.stop();
  }

  /** The link to `node` was declared dead. */
  nodeDown(node: NodeId): void {
    this.dsm.nodeDown(node);
  }

  /** Handlers for the daemon's node methods table. */
  nodeMethods(): Record<string, NodeRpcHandler> {
    const h: NodeRpcHandler = (method, params, from) =>
      this.dsm.handle(method, (params ?? {}) as Record<string, unknown>, from);
    return Object.fromEntries(DSM_NODE_METHODS.map((m) => [m, h]));
  }

  /** Register the `dsm.*` service methods. */
  register(registry: ServiceRegistry): void {
    const dcOf = (p: Record<string, unknown>, ctx: AdminContext) => callerDc(p, ctx, this.o.resolveDc);
    registry.registerAll('dsm', {
      open: (p, ctx) =>
        this.dsm.open(
          dcOf(p, ctx),
          name(p.name),
          p.size === undefined ? undefined : int(p.size, 'size'),
          opts(p, ctx),
        ),
      read: (p, ctx) =>
        this.dsm.read(dcOf(p, ctx), name(p.name), offset(p.offset), int(p.length, 'length'), opts(p, ctx)),
      write: async (p, ctx) => {
        if (!(p.data instanceof Uint8Array)) throw dvsError('EINVAL', 'data must be bytes');
        await this.dsm.write(dcOf(p, ctx), name(p.name), offset(p.offset), p.data, opts(p, ctx));
        return { ok: true };
      },
      lock: async (p, ctx) => {
        const dc = dcOf(p, ctx);
        const seg = name(p.name);
        const s = this.session(ctx);
        const info = await this.dsm.open(dc, seg, undefined, opts(p, ctx));
        s.homes.add(info.home);
        const token = await this.dsm.lock(dc, seg, lockName(p.lock), s.owner, ref(p.ref), opts(p, ctx));
        return { token };
      },
      unlock: async (p, ctx) => {
        const s = this.session(ctx);
        await this.dsm.unlock(dcOf(p, ctx), name(p.name), lockName(p.lock), s.owner, int(p.token, 'token'), {
          signal: ctx.signal,
        });
        return { ok: true };
      },
      unlink: async (p, ctx) => {
        await this.dsm.unlink(dcOf(p, ctx), name(p.name), opts(p, ctx));
        return { ok: true };
      },
      ls: (p, ctx) => this.dsm.list(dcOf(p, ctx), opts(p, ctx)),
    });
  }

  private session(ctx: AdminContext): SessionLocks {
    const caller = ctx.caller;
    if (caller === undefined) throw dvsError('EINVAL', 'DSM locks are held by processes (SDK), not the CLI');
    let s = this.sessions.get(caller.proc);
    if (s === undefined) {
      const fresh: SessionLocks = { owner: `${this.o.nodeId}/${caller.proc}`, homes: new Set() };
      s = fresh;
      this.sessions.set(caller.proc, fresh);
      ctx.onClose(() => {
        if (this.sessions.get(caller.proc) === fresh) this.sessions.delete(caller.proc);
        void this.dsm.release(fresh.owner, fresh.homes);
      });
    }
    return s;
  }
}

function opts(p: Record<string, unknown>, ctx: AdminContext): { signal: AbortSignal; timeout?: number } {
  return p.timeout === undefined
    ? { signal: ctx.signal }
    : { signal: ctx.signal, timeout: int(p.timeout, 'timeout') };
}

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > Number.MAX_SAFE_INTEGER) {
    throw dvsError('EINVAL', `${what} must be a non-negative integer (got ${JSON.stringify(v)})`);
  }
  return v;
}

/** Any integer: a negative one is out of bounds (EFAULT from the DSM), not malformed. */
function offset(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v))
    throw dvsError('EINVAL', 'offset must be an integer');
  return v;
}

function name(v: unknown): string {
  if (typeof v !== 'string') throw dvsError('EINVAL', 'name must be a string');
  return v;
}

function lockName(v: unknown): string {
  return v === undefined ? 'default' : name(v);
}

function ref(v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 64)
    throw dvsError('EINVAL', 'ref must be 1..64 characters');
  return v;
}
