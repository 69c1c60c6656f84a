/**
 * SLOTS as a service of the node daemon: one {@link SlotsMember} bound to a {@link SlotsGroup} (an adapter over
 * the GCS), with an async allocate that honours AbortSignal and timeouts, a pino logger and prom-client
 * metrics on an injected registry.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { DvsError } from '../../protocol/errors.js';
import { SlotsMember } from './member.js';
import type { SlotsConfig, SlotsGroup } from './types.js';

export interface SlotsServiceOptions {
  group: SlotsGroup;
  config: SlotsConfig;
  /** DC id, used as the metrics label. */
  dc: number;
  logger: Logger;
  registry?: Registry;
}

/** Options of {@link SlotsService.allocate}. */
export interface SlotsAllocateOptions {
  signal?: AbortSignal;
  /** Milliseconds; default 5000. */
  timeout?: number;
}

interface Waiter {
  resolve(slot: number): void;
  reject(err: DvsError): void;
  cleanup(): void;
}

/**
 * @example
 * const slots = new SlotsService({ group, config: { nodes: [1, 2], firstSlot: 64, total: 960 }, dc: 1, logger });
 * slots.start();
 * const ep = await slots.allocate({ timeout: 2000 }); // an endpoint number no other node will hand out
 * slots.free(ep);
 * slots.stop();
 */
export class SlotsService {
  readonly member: SlotsMember;
  private readonly waiters = new Map<number, Waiter>();
  private nextReq = 1;
  private unsubscribe: (() => void) | null = null;
  private readonly log: Logger;
  private readonly allocations: Counter<'dc' | 'result'> | undefined;

  constructor(private readonly opts: SlotsServiceOptions) {
    this.log = opts.logger.child({ component: 'slots', dc: opts.dc });
    this.member = new SlotsMember(opts.group.self, opts.config, {
      multicast: (msg) => opts.group.multicast(msg),
      allocated: (req, slot) => this.onAllocated(req, slot),
      failed: (req, err) => this.onFailed(req, err),
      log: (level, msg, fields) => this.log[level](fields ?? {}, msg),
    });
    const reg = opts.registry;
    if (reg !== undefined) {
      const labels = { dc: String(opts.dc) };
      this.allocations = metric(
        reg,
        'dvs_slots_allocations_total',
        () =>
          new Counter({
            name: 'dvs_slots_allocations_total',
            help: 'Slot allocations by result (ok, enospc, timeout, aborted)',
            labelNames: ['dc', 'result'] as const,
            registers: [reg],
          }),
      );
      const owned = metric(
        reg,
        'dvs_slots_owned_slots',
        () =>
          new Gauge({
            name: 'dvs_slots_owned_slots',
            help: 'Slots this member owns, by state (free, used)',
            labelNames: ['dc', 'state'] as const,
            registers: [reg],
          }),
      );
      const donated = metric(
        reg,
        'dvs_slots_donated_slots_total',
        () =>
          new Gauge({
            name: 'dvs_slots_donated_slots_total',
            help: 'Slots given away and received by donation',
            labelNames: ['dc', 'direction'] as const,
            registers: [reg],
          }),
      );
      const m = this.member;
      this.refresh = () => {
        owned.set({ ...labels, state: 'free' }, m.freeCount);
        owned.set({ ...labels, state: 'used' }, m.usedCount);
        donated.set({ ...labels, direction: 'out' }, m.stats.slotsDonated);
        donated.set({ ...labels, direction: 'in' }, m.stats.slotsReceived);
      };
    }
  }

  /** Update the gauges after an event (a no-op without a registry). */
  private refresh: () => void = () => {};

  /** Join the group's callbacks. */
  start(): void {
    if (this.unsubscribe !== null) return;
    this.unsubscribe = this.opts.group.subscribe({
      deliver: (sender, msg) => {
        this.member.deliver(sender, msg);
        this.refresh();
      },
      view: (v) => {
        this.log.info({ view: v.id, members: v.members, reason: v.reason }, 'slots view');
        this.member.onView(v);
        this.refresh();
      },
    });
  }

  /** Leave the group's callbacks; pending allocations fail with EUNAVAIL. */
  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    for (const [req, w] of [...this.waiters]) {
      this.member.cancel(req);
      this.waiters.delete(req);
      w.cleanup();
      w.reject(new DvsError('EUNAVAIL', 'slots service stopped'));
    }
  }

  /** Allocate a slot (endpoint number). Rejects with ENOSPC, ETIMEDOUT, EABORTED or EUNAVAIL (stopped). */
  allocate(options: SlotsAllocateOptions = {}): Promise<number> {
    if (this.unsubscribe === null)
      return Promise.reject(new DvsError('EUNAVAIL', 'slots service not started'));
    const { signal, timeout = 5000 } = options;
    if (signal?.aborted) return Promise.reject(new DvsError('EABORTED'));
    const req = this.nextReq++;
    return new Promise<number>((resolve, reject) => {
      const give = (code: 'ETIMEDOUT' | 'EABORTED'): void => {
        if (!this.waiters.has(req)) return;
        this.waiters.delete(req);
        this.member.cancel(req);
        cleanup();
        this.count(code === 'ETIMEDOUT' ? 'timeout' : 'aborted');
        reject(new DvsError(code));
      };
      const timer = setTimeout(() => give('ETIMEDOUT'), timeout);
      const onAbort = (): void => give('EABORTED');
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      this.waiters.set(req, { resolve, reject, cleanup });
      this.member.allocate(req);
      this.refresh();
    });
  }

  /** Release a slot allocated here. */
  free(slot: number): void {
    this.member.free(slot);
    this.refresh();
  }

  private onAllocated(req: number, slot: number): void {
    const w = this.waiters.get(req);
    if (w === undefined) {
      // Its caller gave up after the member had already granted it: give the slot back.
      this.member.free(slot);
      return;
    }
    this.waiters.delete(req);
    w.cleanup();
    this.count('ok');
    w.resolve(slot);
  }

  private onFailed(req: number, err: DvsError): void {
    const w = this.waiters.get(req);
    if (w === undefined) return;
    this.waiters.delete(req);
    w.cleanup();
    this.count('enospc');
    w.reject(err);
  }

  private count(result: string): void {
    this.allocations?.inc({ dc: String(this.opts.dc), result });
  }
}

function metric<T>(reg: Registry, name: string, make: () => T): T {
  return (reg.getSingleMetric(name) as T | undefined) ?? make();
}
