/**
 * What every DVK service over the cluster store shares: the per-DC key scope, name validation, the mapping of
 * store failures to service errors, and the services' metrics.
 *
 * Key layout (docs/services.md): every key of a DC's services lives under `/dvs/svc/<dc>/`, so one DC never
 * sees another's keys, locks, elections or consensus instances; a service only ever builds keys from its
 * {@link DcScope}, and every prefix ends in '/' (`/dvs/svc/1/` never matches `/dvs/svc/12/`).
 *
 * ```
 * /dvs/svc/<dc>/
 *   kv/<key>                       user bytes              durable, or bound to a lease the caller names
 *   locks/<name>/<lease>           {owner, nonce} JSON     leased: the holder's or waiter's lease
 *   elections/<name>/<lease>       {owner, nonce} JSON     leased: the candidate's lease
 *   consensus/<instance>           the decided bytes       durable, written once
 * ```
 *
 * Errors the services raise (all DvsError): EINVAL (bad name, key, value, option), ENOENT (unknown key,
 * instance, or a lease that is gone), ENOTOWNER, ESTALE, ETIMEDOUT (a wait for a lock or leadership ran out),
 * EABORTED (the caller's signal), EUNAVAIL (the store could not answer in time: `details.ambiguous` says
 * whether a write may have been applied anyway).
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { ClusterStore, StoreCallOptions } from '../cluster/store.js';
import type { DcId } from '../kernel/types.js';
import { DvsError, dvsError } from '../protocol/errors.js';

/** Root of every service key. */
export const SVC_PREFIX = '/dvs/svc/';

/** The keys of one DC's services. */
export class DcScope {
  /** `/dvs/svc/<dc>/`. */
  readonly root: string;

  constructor(readonly dc: DcId) {
    if (!Number.isInteger(dc) || dc < 1 || dc > 65535) throw dvsError('EINVAL', `bad DC id: ${String(dc)}`);
    this.root = `${SVC_PREFIX}${dc}/`;
  }

  /** Prefix of the DC's key/value space. */
  get kvRoot(): string {
    return `${this.root}kv/`;
  }
  /** Prefix of the DC's lock queues (a root for src/cluster/lock.ts). */
  get locksRoot(): string {
    return `${this.root}locks/`;
  }
  /** Prefix of the DC's election queues (same recipe as the locks). */
  get electionsRoot(): string {
    return `${this.root}elections/`;
  }
  /** Prefix of the DC's consensus instances. */
  get consensusRoot(): string {
    return `${this.root}consensus/`;
  }
}

/** Options every service call takes. */
export interface CallOptions {
  signal?: AbortSignal;
  /** ms; default the service's `timeoutMs`. */
  timeout?: number;
}

/** What every service is constructed with. */
export interface ServiceOptions {
  store: ClusterStore;
  /** The DC whose keys this instance serves (the daemon makes one set of services per DC). */
  dc: DcId;
  logger: Logger;
  /** Metrics go here (`dvs_services_calls_total`); none without a registry. */
  registry?: Registry;
  /** Default timeout of one call, ms (default 5000). */
  timeoutMs?: number;
}

const NAME = /^[A-Za-z0-9._:-]{1,128}$/;
/** Whether `s` has a control character (U+0000..U+001F, U+007F): never in keys or ids (logs, terminals). */
export function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** Validate a lock, election or consensus instance name: 1..128 of `A-Z a-z 0-9 . _ : -`. */
export function validateName(kind: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw dvsError('EINVAL', `${kind} name must be 1..128 characters of A-Z a-z 0-9 . _ : -`, {
      name: typeof name === 'string' ? name.slice(0, 200) : String(name),
    });
  }
}

/** Validate a kv key (1..1024 characters, no control characters) or a prefix (0..1024). */
export function validateKey(key: unknown, allowEmpty = false): asserts key is string {
  if (typeof key !== 'string' || key.length > 1024 || (key.length === 0 && !allowEmpty) || hasControl(key)) {
    throw dvsError(
      'EINVAL',
      `key must be ${allowEmpty ? 0 : 1}..1024 characters without control characters`,
      {
        key: typeof key === 'string' ? key.slice(0, 200) : String(key),
      },
    );
  }
}

/** Largest value a service stores (etcd's default request limit is 1.5 MiB; leave room for the txn). */
export const MAX_VALUE_BYTES = 1 << 20;

/** Validate a value: bytes, at most {@link MAX_VALUE_BYTES}. */
export function validateValue(value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw dvsError('EINVAL', 'value must be bytes (Uint8Array)');
  if (value.length > MAX_VALUE_BYTES) {
    throw dvsError('EINVAL', `value of ${value.length} bytes is over ${MAX_VALUE_BYTES}`, {
      size: value.length,
      limit: MAX_VALUE_BYTES,
    });
  }
}

/** Validate an optional timeout. */
export function validateTimeout(timeout: unknown): void {
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 0)) {
    throw dvsError('EINVAL', `timeout must be a number of ms >= 0: ${String(timeout)}`);
  }
}

/** Store errors that mean "the store did not answer", as opposed to a refusal (EINVAL, ENOENT...). */
export function storeUnreachable(e: unknown): e is DvsError {
  return e instanceof DvsError && (e.code === 'ENOTCONN' || e.code === 'ETIMEDOUT');
}

/** Whether a store error says a write may have been applied. */
export function ambiguous(e: unknown): boolean {
  return e instanceof DvsError && e.details?.ambiguous === true;
}

const RETRY_MIN_MS = 25;
const RETRY_MAX_MS = 500;

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** How {@link storeCall} may retry. */
export interface StoreCallSpec {
  /** For messages and error details: `kv.put`, `consensus.propose`. */
  what: string;
  /** The call writes. */
  write: boolean;
  /**
   * Running the call twice is the same as once (reads, guarded create-only writes): then an attempt whose
   * outcome was ambiguous is retried too. A non-idempotent write is never retried after an ambiguous attempt:
   * a blind re-put can land after another client's write and undo it (not linearizable); the caller gets
   * EUNAVAIL with `details.ambiguous = true` instead.
   */
  idempotent: boolean;
}

/**
 * Run one store call for a service, within the caller's timeout and signal: attempts that were not sent, or
 * that are safe to repeat, are retried with backoff while the store is unreachable (an etcd leader election
 * takes 0.4-2 s). Failure modes: EABORTED (the caller's signal), EUNAVAIL (unreachable until the deadline, or
 * an ambiguous non-idempotent write; `details.ambiguous`, `details.cause`), and the store's own refusals
 * (EINVAL, ENOENT, ...) as they are.
 */
export async function storeCall<T>(
  spec: StoreCallSpec,
  opts: CallOptions,
  defaultTimeoutMs: number,
  fn: (call: StoreCallOptions) => Promise<T>,
): Promise<T> {
  validateTimeout(opts.timeout);
  const deadline = Date.now() + (opts.timeout ?? defaultTimeoutMs);
  let maybeApplied = false;
  let retryMs = RETRY_MIN_MS;
  for (;;) {
    if (opts.signal?.aborted) throw aborted(spec, maybeApplied);
    const left = deadline - Date.now();
    try {
      return await fn({ timeout: Math.max(1, left), ...(opts.signal ? { signal: opts.signal } : {}) });
    } catch (e) {
      if (spec.write && ambiguous(e)) maybeApplied = true;
      if (opts.signal?.aborted) throw aborted(spec, maybeApplied && !spec.idempotent);
      if (e instanceof DvsError && e.code === 'EABORTED')
        throw aborted(spec, maybeApplied && !spec.idempotent);
      if (!storeUnreachable(e)) throw DvsError.from(e);
      const unsure = maybeApplied && !spec.idempotent;
      if (unsure || Date.now() + retryMs >= deadline) {
        throw new DvsError(
          'EUNAVAIL',
          `${spec.what}: the cluster store did not answer (${e.code})${unsure ? '; the write may have been applied' : ''}`,
          { cause: e.code, ambiguous: unsure },
          { cause: e },
        );
      }
      await sleep(retryMs, opts.signal);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }
}

function aborted(spec: StoreCallSpec, unsure: boolean): DvsError {
  return dvsError('EABORTED', `${spec.what}: aborted`, { ambiguous: spec.write && unsure });
}

/** The services' metrics on an injected registry (shared by every DC's instances). */
export class ServiceMetrics {
  private readonly calls: Counter<'service' | 'op' | 'result'> | undefined;

  constructor(registry: Registry | undefined) {
    if (registry === undefined) return;
    const name = 'dvs_services_calls_total';
    // One counter per registry: several DCs' service instances share it (prom-client refuses duplicates).
    this.calls =
      (registry.getSingleMetric(name) as Counter<'service' | 'op' | 'result'> | undefined) ??
      new Counter({
        name,
        help: 'Calls of the DVK services over the cluster store, by service, operation and result code',
        labelNames: ['service', 'op', 'result'],
        registers: [registry],
      });
  }

  /** Count `p`'s outcome (ok, or its error code) and pass it through. */
  async track<T>(service: string, op: string, p: Promise<T>): Promise<T> {
    if (this.calls === undefined) return p;
    try {
      const v = await p;
      this.calls.inc({ service, op, result: 'ok' });
      return v;
    } catch (e) {
      this.calls.inc({ service, op, result: e instanceof DvsError ? e.code : 'EINTERNAL' });
      throw e;
    }
  }
}

/**
 * What every DVK service of one DC is built on: its key scope, a logger and metrics labelled with the
 * service, the default call timeout, and whether it runs (calls on a stopped service fail with EUNAVAIL).
 * Subclasses set `running` in their start() / stop().
 */
export abstract class DcService {
  protected readonly scope: DcScope;
  protected readonly log: Logger;
  protected readonly metrics: ServiceMetrics;
  /** Default timeout of one call, ms. */
  protected readonly timeoutMs: number;
  protected running = false;

  /** @param service the service's name in logs and errors (`kv`, `lock`, ...). */
  constructor(
    protected readonly opts: ServiceOptions,
    private readonly service: string,
  ) {
    this.scope = new DcScope(opts.dc);
    this.log = opts.logger.child({ service, dc: opts.dc });
    this.metrics = new ServiceMetrics(opts.registry);
    this.timeoutMs = opts.timeoutMs ?? 5_000;
  }

  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;

  /** EUNAVAIL unless started. */
  protected check(): void {
    if (!this.running) throw dvsError('EUNAVAIL', `${this.service} service is not running`);
  }
}

/** Remaining ms of an optional deadline (undefined = none). */
export function remaining(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : Math.max(0, deadline - Date.now());
}

/** Watch streams exposed as async iterators use the shared queue (also used by the SDK). */
export { AsyncQueue } from './queue.js';
