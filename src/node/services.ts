/**
 * The table of DVK services a daemon offers to processes (and the CLI) beside the fixed admin methods of
 * src/protocol/admin.ts: key/value, locks, election, consensus, groups, ... Each subsystem registers its
 * methods here under a dotted name (`kv.get`, `lock.acquire`); the daemon's admin dispatcher falls through
 * to this table for any method it does not serve itself.
 *
 * Handlers receive the {@link AdminContext} of the call: `caller` (the DC and endpoint of an SDK process;
 * undefined for the CLI), the session's abort signal, `push` for server-sent events (watches, group
 * deliveries) and `onClose` to release what the session held. Scoping by DC is each handler's duty: use
 * {@link callerDc} so that a process can never name another DC.
 */
import type { DcId } from '../kernel/types.js';
import { DvsError } from '../protocol/errors.js';
import type { AdminContext } from './local-server.js';

/** One service method. `params` is whatever the client sent: validate it. */
export type ServiceHandler = (
  params: Record<string, unknown>,
  ctx: AdminContext,
) => Promise<unknown> | unknown;

/** Registered service methods of one daemon. */
export class ServiceRegistry {
  private readonly handlers = new Map<string, ServiceHandler>();

  /** Register `method`; a duplicate name is a programming error. */
  register(method: string, handler: ServiceHandler): void {
    if (this.handlers.has(method)) throw new Error(`service method '${method}' registered twice`);
    this.handlers.set(method, handler);
  }

  /** Register several methods sharing a prefix: `registerAll('kv', {get, put})` gives `kv.get`, `kv.put`. */
  registerAll(prefix: string, handlers: Record<string, ServiceHandler>): void {
    for (const [name, h] of Object.entries(handlers)) this.register(`${prefix}.${name}`, h);
  }

  has(method: string): boolean {
    return this.handlers.has(method);
  }

  /** Names of the registered methods, sorted (for `--help` and errors). */
  methods(): string[] {
    return [...this.handlers.keys()].sort();
  }

  /** Run `method`; EINVAL for an unknown one. */
  async call(method: string, params: unknown, ctx: AdminContext): Promise<unknown> {
    const h = this.handlers.get(method);
    if (h === undefined) throw new DvsError('EINVAL', `unknown method '${method}'`);
    const p =
      typeof params === 'object' && params !== null && !Array.isArray(params)
        ? (params as Record<string, unknown>)
        : {};
    return h(p, ctx);
  }
}

/**
 * The DC a service call acts on. A process (SDK session) always acts on its own DC: naming another one is
 * EPERM. The CLI (no caller) must name the DC, as an id resolved by `resolve` (names allowed).
 */
export function callerDc(
  params: Record<string, unknown>,
  ctx: AdminContext,
  resolve: (ref: DcId | string) => DcId,
): DcId {
  const ref = params.dc;
  if (ctx.caller !== undefined) {
    if (ref !== undefined && ref !== null && resolve(ref as DcId | string) !== ctx.caller.dc) {
      throw new DvsError('EPERM', `a process of DC ${ctx.caller.dc} cannot use another DC's services`);
    }
    return ctx.caller.dc;
  }
  if (typeof ref !== 'number' && typeof ref !== 'string') throw new DvsError('EINVAL', 'missing dc');
  return resolve(ref);
}
