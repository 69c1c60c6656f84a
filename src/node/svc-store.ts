/**
 * The DVK services over the cluster store (src/services/: kv, locks, election, consensus) as service methods
 * of the daemon (src/node/services.ts), for the processes of each DC (SDK) and for the CLI.
 *
 * ```
 *   process ──ADMIN kv.get {key}──────────▶ daemon: callerDc = the process's DC ──▶ DcServices(dc).kv
 *   CLI ─────ADMIN lock.ls {dc: 'demo'}───▶ daemon: the CLI names the DC ────────▶ DcServices(dc).lock
 *   ◀── EVENT {sub, data} (kv.watch, election.observe: one long call per stream; $cancel ends it)
 * ```
 *
 * Scoping: every method acts on {@link callerDc}: a process always on its own DC (naming another one is
 * EPERM), the CLI on the DC it names. One {@link DcServices} per DC, made on first use.
 *
 * Leases, and why locks die with their holder: a lock or a candidacy is taken with a lease this daemon grants
 * for it and renews (TTL = the daemon's detection time, `deadAfterMs` rounded up to seconds). When the holder's
 * process exits its session closes and the daemon releases what it held (unlock / resign: the lease is
 * revoked); when the holder's node dies nobody renews the lease and the store expires it within the TTL, so
 * the next waiter takes the lock (or the next candidate leads) within the detection time. One lease per hold
 * (rather than one per process) lets two processes of one node queue for the same lock, which the queue
 * recipe (one key per lease) would otherwise refuse with EBUSY.
 *
 * Abandoned waits: a client that gives up on `lock.acquire` (timeout, abort) sends `$cancel`, which aborts the
 * call's signal, and the waiter leaves the queue. Because the lock may have been granted in the instant before
 * the `$cancel` arrived, the SDK also sends `lock.abandon {ref}` with the reference it chose for the call: a
 * hold that completes after being abandoned is released at once, never leaked.
 *
 * Streams (`kv.watch`, `election.observe`) are one call that stays pending while the stream lives: its events
 * go out as EVENT frames under the subscription id the client allocated (`params.sub`); the client ends the
 * stream by cancelling the call (or closing the session); the call resolves `{end}` if the stream ends on the
 * daemon's side (compaction, store lost, daemon stopping). No per-session bookkeeping is needed for them.
 *
 * Without a cluster store (`--store` not given) every method answers EUNAVAIL saying so.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ClusterStore } from '../cluster/store.js';
import type { DcId, NodeId, ProcId } from '../kernel/types.js';
import { type DvsError, dvsError } from '../protocol/errors.js';
import { DcServices, type KvExpect, type KvFence } from '../services/index.js';
import type { AdminContext } from './local-server.js';
import { callerDc, type ServiceHandler, type ServiceRegistry } from './services.js';

/** What the store services need from the daemon. */
export interface StoreServicesOptions {
  /** The open cluster store, or undefined (no `--store`, or not started yet). */
  store: () => ClusterStore | undefined;
  /** A DC id or name to its id (ENOENT if unknown). */
  resolveDc: (ref: DcId | string) => DcId;
  nodeId: NodeId;
  /** TTL of the leases that bind locks and candidacies to their holder, s (the detection time). */
  leaseTtlSeconds: number;
  logger: Logger;
  registry?: Registry;
}

/** One lock or candidacy a process session asked for. */
interface Hold {
  kind: 'lock' | 'election';
  dc: DcId;
  name: string;
  ref: string;
  /** Token / term once held. */
  token?: number;
  state: 'waiting' | 'held' | 'abandoned';
}

/** What one process session holds, released when it closes. */
interface SessionHolds {
  holds: Map<string, Hold>;
  closed: boolean;
}

/** Largest number of holds (held or waiting) of one process session. */
const MAX_HOLDS_PER_SESSION = 1024;

const NO_STORE =
  'DVK services need a cluster store: start the nodes with --store (dvs up starts one by default)';

/** Owner / candidate id of a process: `ep<E>@node<N>` (the SDK parses it back for observe). */
export function ownerId(ep: number, node: NodeId): string {
  return `ep${ep}@node${node}`;
}

/** The kv, lock, election and consensus methods of one daemon. */
export class StoreServices {
  private readonly o: StoreServicesOptions;
  private readonly log: Logger;
  private readonly dcs = new Map<DcId, { services: DcServices; started: Promise<void> }>();
  private readonly sessions = new Map<ProcId, SessionHolds>();
  private stopped = false;

  constructor(o: StoreServicesOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'svc-store' });
  }

  /** Register `kv.*`, `lock.*`, `election.*` and `consensus.*` in `registry`. */
  register(registry: ServiceRegistry): void {
    const h = (fn: (p: Record<string, unknown>, ctx: AdminContext, dc: DcServices) => unknown) =>
      this.handler(fn);
    registry.registerAll('kv', {
      get: h((p, ctx, s) => s.kv.get(str(p.key, 'key'), callOpts(p, ctx))),
      put: h((p, ctx, s) =>
        s.kv.put(str(p.key, 'key'), bytes(p.value, 'value'), { ...callOpts(p, ctx), ...fenceOpt(p) }),
      ),
      delete: h((p, ctx, s) => s.kv.delete(str(p.key, 'key'), { ...callOpts(p, ctx), ...fenceOpt(p) })),
      cas: h((p, ctx, s) =>
        s.kv.cas(
          str(p.key, 'key'),
          expectParam(p.expect),
          p.value === null ? null : bytes(p.value, 'value'),
          { ...callOpts(p, ctx), ...fenceOpt(p) },
        ),
      ),
      list: h((p, ctx, s) => {
        const limit = p.limit === undefined ? {} : { limit: int(p.limit, 'limit', 1, 100_000) };
        return s.kv.list(p.prefix === undefined ? '' : str(p.prefix, 'prefix'), {
          ...callOpts(p, ctx),
          ...limit,
        });
      }),
      watch: h((p, ctx, s) => this.kvWatch(p, ctx, s)),
    });
    registry.registerAll('lock', {
      acquire: h((p, ctx, s) => this.acquire('lock', p, ctx, s)),
      release: h((p, ctx, s) => this.release('lock', p, ctx, s)),
      abandon: h((p, ctx) => this.abandon(p, ctx)),
      check: h(async (p, ctx, s) => {
        await s.lock.checkFence(str(p.name, 'name'), int(p.token, 'token', 1), callOpts(p, ctx));
        return { ok: true };
      }),
      ls: h((p, ctx, s) => s.lock.list(callOpts(p, ctx))),
    });
    registry.registerAll('election', {
      campaign: h((p, ctx, s) => this.acquire('election', p, ctx, s)),
      resign: h((p, ctx, s) => this.release('election', p, ctx, s)),
      abandon: h((p, ctx) => this.abandon(p, ctx)),
      leader: h((p, ctx, s) => s.election.leader(str(p.name, 'name'), callOpts(p, ctx))),
      check: h(async (p, ctx, s) => {
        await s.election.checkTerm(str(p.name, 'name'), int(p.term, 'term', 1), callOpts(p, ctx));
        return { ok: true };
      }),
      observe: h((p, ctx, s) => this.observe(p, ctx, s)),
    });
    registry.registerAll('consensus', {
      propose: h(async (p, ctx, s) => {
        const d = await s.consensus.propose(str(p.instance, 'instance'), bytes(p.value, 'value'), {
          ...callOpts(p, ctx),
        });
        return { instance: d.instance, value: d.value, revision: d.revision, mine: d.mine };
      }),
      read: h(async (p, ctx, s) => {
        const d = await s.consensus.read(str(p.instance, 'instance'), callOpts(p, ctx));
        return { instance: d.instance, value: d.value, revision: d.revision };
      }),
    });
  }

  async start(): Promise<void> {
    this.stopped = false;
  }

  /**
   * Stop every DC's services: waits fail with EUNAVAIL, streams end, locks and leaderships held through this
   * daemon are released (their leases revoked), so the next holders need not wait for an expiry.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const all = [...this.dcs.values()];
    this.dcs.clear();
    this.sessions.clear();
    await Promise.all(
      all.map(async (d) => {
        await d.started.catch(() => {});
        await d.services.stop().catch((e: unknown) => this.log.warn({ err: e }, 'stopping services failed'));
      }),
    );
  }

  // ---------------------------------------------------------------------------------------------- internals

  /** Wrap a method: the DC's services (made on first use) for the caller's DC, or EUNAVAIL without a store. */
  private handler(
    fn: (p: Record<string, unknown>, ctx: AdminContext, dc: DcServices) => unknown,
  ): ServiceHandler {
    return async (p, ctx) => {
      const dc = callerDc(p, ctx, (ref) => this.o.resolveDc(ref));
      return fn(p, ctx, await this.services(dc));
    };
  }

  private async services(dc: DcId): Promise<DcServices> {
    if (this.stopped) throw dvsError('EUNAVAIL', 'the daemon is stopping');
    const store = this.o.store();
    if (store === undefined) throw dvsError('EUNAVAIL', NO_STORE);
    let d = this.dcs.get(dc);
    if (d === undefined) {
      const services = new DcServices({
        store,
        dc,
        logger: this.o.logger,
        ...(this.o.registry ? { registry: this.o.registry } : {}),
      });
      d = { services, started: services.start() };
      this.dcs.set(dc, d);
    }
    await d.started;
    return d.services;
  }

  private session(ctx: AdminContext): SessionHolds {
    const caller = ctx.caller;
    if (caller === undefined) {
      throw dvsError(
        'EINVAL',
        'locks and candidacies are held by processes (SDK); the CLI can list them (dvs lock ls)',
      );
    }
    let s = this.sessions.get(caller.proc);
    if (s === undefined) {
      const fresh: SessionHolds = { holds: new Map(), closed: false };
      s = fresh;
      this.sessions.set(caller.proc, fresh);
      ctx.onClose(() => this.sessionClosed(caller.proc, fresh));
    }
    return s;
  }

  /** The process is gone: release what it held; its waits are aborted by the session's signal. */
  private sessionClosed(proc: ProcId, s: SessionHolds): void {
    s.closed = true;
    if (this.sessions.get(proc) === s) this.sessions.delete(proc);
    for (const hold of s.holds.values()) {
      if (hold.state === 'held') void this.drop(hold, 'session closed');
      hold.state = 'abandoned';
    }
    s.holds.clear();
  }

  /** Release a hold the caller no longer wants (session closed, abandoned); errors are only logged. */
  private async drop(hold: Hold, why: string): Promise<void> {
    const d = this.dcs.get(hold.dc);
    if (d === undefined || hold.token === undefined) return;
    try {
      if (hold.kind === 'lock') await d.services.lock.unlock(hold.name, hold.token, { timeout: 5_000 });
      else await d.services.election.resign(hold.name, hold.token, { timeout: 5_000 });
      this.log.debug({ kind: hold.kind, dc: hold.dc, name: hold.name, token: hold.token, why }, 'released');
    } catch (e) {
      // ENOTOWNER: the lease ended meanwhile, which released it anyway.
      this.log.debug({ err: e, kind: hold.kind, name: hold.name, why }, 'release failed');
    }
  }

  /** lock.acquire / election.campaign: wait in the queue, with a lease of this daemon's, for this session. */
  private async acquire(
    kind: 'lock' | 'election',
    p: Record<string, unknown>,
    ctx: AdminContext,
    s: DcServices,
  ): Promise<unknown> {
    const name = str(p.name, 'name');
    const ref = p.ref === undefined ? randomBytes(8).toString('hex') : str(p.ref, 'ref');
    const timeout = p.timeout === undefined ? undefined : int(p.timeout, 'timeout', 0, 2 ** 31 - 1);
    const session = this.session(ctx);
    if (session.holds.has(ref)) throw dvsError('EEXIST', `${kind} reference ${ref} already in use`);
    if (session.holds.size >= MAX_HOLDS_PER_SESSION) {
      throw dvsError('ENOSPC', `a process may hold or await at most ${MAX_HOLDS_PER_SESSION} locks`);
    }
    const caller = ctx.caller!;
    const owner = ownerId(caller.ep, this.o.nodeId);
    const hold: Hold = { kind, dc: caller.dc, name, ref, state: 'waiting' };
    session.holds.set(ref, hold);
    const opts = {
      ttl: this.o.leaseTtlSeconds,
      signal: ctx.signal,
      ...(timeout !== undefined ? { timeout } : {}),
    };
    let token: number;
    try {
      token =
        kind === 'lock'
          ? (await s.lock.lock(name, { ...opts, owner })).token
          : (await s.election.campaign(name, owner, opts)).term;
    } catch (e) {
      if (session.holds.get(ref) === hold) session.holds.delete(ref);
      throw e;
    }
    hold.token = token;
    // Granted just as the client gave up ($cancel, abandon or session close got here first): release it now.
    if (hold.state === 'abandoned' || session.closed || ctx.signal.aborted) {
      session.holds.delete(ref);
      await this.drop(hold, 'abandoned while waiting');
      throw dvsError('EABORTED', `${kind} ${name}: abandoned by the caller`);
    }
    hold.state = 'held';
    return kind === 'lock' ? { name, token, owner, ref } : { name, term: token, leader: owner, ref };
  }

  /** lock.release / election.resign: only what this process holds (ENOTOWNER otherwise). */
  private async release(
    kind: 'lock' | 'election',
    p: Record<string, unknown>,
    ctx: AdminContext,
    s: DcServices,
  ): Promise<unknown> {
    const name = str(p.name, 'name');
    const token = int(kind === 'lock' ? p.token : p.term, kind === 'lock' ? 'token' : 'term', 1);
    const session = this.session(ctx);
    let found: Hold | undefined;
    for (const h of session.holds.values()) {
      if (h.kind === kind && h.name === name && h.token === token && h.state === 'held') found = h;
    }
    if (found === undefined) {
      throw dvsError('ENOTOWNER', `${kind} ${name}: ${token} is not held by this process`, { name, token });
    }
    session.holds.delete(found.ref);
    if (kind === 'lock') await s.lock.unlock(name, token, callOpts(p, ctx));
    else await s.election.resign(name, token, callOpts(p, ctx));
    return { ok: true };
  }

  /** The client gave up on an acquire/campaign (`ref`): leave the queue, or release what was just granted. */
  private async abandon(p: Record<string, unknown>, ctx: AdminContext): Promise<unknown> {
    const ref = str(p.ref, 'ref');
    const session = this.session(ctx);
    const hold = session.holds.get(ref);
    if (hold === undefined) return { ok: true };
    if (hold.state === 'held') {
      session.holds.delete(ref);
      await this.drop(hold, 'abandoned');
    } else {
      // Still waiting: the $cancel sent before this aborted (or will abort) the wait; a grant that wins the
      // race sees this mark and releases.
      hold.state = 'abandoned';
    }
    return { ok: true };
  }

  /** kv.watch: EVENT {t: 'ready', revision} once watching, then {t: 'events', events, revision} per change. */
  private async kvWatch(p: Record<string, unknown>, ctx: AdminContext, s: DcServices): Promise<unknown> {
    const sub = int(p.sub, 'sub', 1, 0xffffffff);
    const prefix = p.prefix === undefined ? '' : str(p.prefix, 'prefix');
    let from: number;
    if (p.fromRevision === undefined) {
      // From now on: the revision of a read of the prefix, + 1 (every later write is newer).
      const r = await s.kv.list(prefix, { limit: 1, signal: ctx.signal });
      from = r.revision + 1;
    } else {
      from = int(p.fromRevision, 'fromRevision', 1);
    }
    if (ctx.signal.aborted) throw dvsError('EABORTED', 'kv.watch cancelled');
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (end: string, err?: DvsError) => {
        if (done) return;
        done = true;
        ctx.signal.removeEventListener('abort', onAbort);
        w.cancel();
        if (err) reject(err);
        else resolve({ end });
      };
      const w = s.kv.watch(
        prefix,
        from,
        (events, revision) => {
          const ok = ctx.push(sub, {
            t: 'events',
            revision,
            events: events.map((e) => ({ type: e.type, key: e.key, value: e.value, revision: e.revision })),
          });
          if (!ok) finish('closed');
        },
        (why) => finish(why),
      );
      const onAbort = () => finish('cancelled', dvsError('EABORTED', 'kv.watch cancelled'));
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      if (ctx.signal.aborted) onAbort();
      else ctx.push(sub, { t: 'ready', revision: from });
    });
  }

  /** election.observe: EVENT {leader, term, revision} now and on every change of leader. */
  private async observe(p: Record<string, unknown>, ctx: AdminContext, s: DcServices): Promise<unknown> {
    const sub = int(p.sub, 'sub', 1, 0xffffffff);
    const it = s.election.observe(str(p.name, 'name'), { signal: ctx.signal });
    try {
      for await (const st of it) {
        if (!ctx.push(sub, { leader: st.leader, term: st.term, revision: st.revision })) break;
      }
    } catch (e) {
      if (ctx.signal.aborted) throw dvsError('EABORTED', 'election.observe cancelled');
      throw e;
    }
    if (ctx.signal.aborted) throw dvsError('EABORTED', 'election.observe cancelled');
    return { end: 'closed' };
  }
}

// ------------------------------------------------------------------------------------------------ params

/** The call's signal, and a daemon-side timeout if the client sent one. */
function callOpts(p: Record<string, unknown>, ctx: AdminContext): { signal: AbortSignal; timeout?: number } {
  return p.timeout === undefined
    ? { signal: ctx.signal }
    : { signal: ctx.signal, timeout: int(p.timeout, 'timeout', 0, 2 ** 31 - 1) };
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw dvsError('EINVAL', `${what} must be a string`);
  return v;
}

function int(v: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw dvsError('EINVAL', `${what} must be an integer in ${min}..${max} (got ${JSON.stringify(v)})`);
  }
  return v;
}

function bytes(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw dvsError('EINVAL', `${what} must be bytes`);
  return v;
}

function fenceOpt(p: Record<string, unknown>): { fence?: KvFence } {
  if (p.fence === undefined || p.fence === null) return {};
  const f = p.fence as Record<string, unknown>;
  if (typeof f !== 'object') throw dvsError('EINVAL', 'fence must be {lock, token}');
  return { fence: { lock: str(f.lock, 'fence.lock'), token: int(f.token, 'fence.token', 1) } };
}

function expectParam(v: unknown): KvExpect {
  const e = v as Record<string, unknown> | null;
  if (typeof e !== 'object' || e === null) throw dvsError('EINVAL', 'expect must be {revision} or {value}');
  if (e.revision !== undefined) return { revision: int(e.revision, 'expect.revision', 0) };
  if (e.value !== undefined) return { value: bytes(e.value, 'expect.value') };
  throw dvsError('EINVAL', 'expect must be {revision} or {value}');
}
