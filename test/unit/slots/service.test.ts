/**
 * SlotsService: the async wrapper over the member (allocate with timeout and AbortSignal, free, stop, metrics),
 * on an in-memory group with one global order (no sockets).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { SlotsService } from '../../../src/services/slots/service.js';
import {
  type MemberId,
  memberId,
  type SlotsGroup,
  type SlotsMsg,
  type SlotsView,
} from '../../../src/services/slots/types.js';

type Handlers = Parameters<SlotsGroup['subscribe']>[0];

/** One agreed order for everybody: a FIFO drained on the next macrotask. */
class Bus {
  readonly handlers = new Map<MemberId, Handlers>();
  private readonly queue: { from: MemberId; msg: SlotsMsg }[] = [];
  private scheduled = false;
  paused = false;

  group(self: MemberId): SlotsGroup {
    return {
      self,
      multicast: (msg) => {
        this.queue.push({ from: self, msg });
        this.kick();
      },
      subscribe: (h) => {
        this.handlers.set(self, h);
        return () => this.handlers.delete(self);
      },
    };
  }

  view(v: Omit<SlotsView, 'transitional'>, sides: MemberId[][]): void {
    for (const side of sides) for (const m of side) this.handlers.get(m)?.view({ ...v, transitional: side });
  }

  /** Resume delivery (after `paused`). */
  resume(): void {
    this.paused = false;
    this.kick();
  }

  private kick(): void {
    if (this.scheduled || this.paused) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      while (!this.paused && this.queue.length > 0) {
        const { from, msg } = this.queue.shift() as { from: MemberId; msg: SlotsMsg };
        for (const h of [...this.handlers.values()]) h.deliver(from, msg);
      }
    });
  }
}

const logger = pino({ level: 'silent' });
const a = memberId(1, 0);
const b = memberId(2, 0);

async function pair(
  total: number,
  registry?: Registry,
): Promise<{ bus: Bus; sa: SlotsService; sb: SlotsService }> {
  const bus = new Bus();
  const config = { nodes: [1, 2], firstSlot: 64, total };
  const sa = new SlotsService({
    group: bus.group(a),
    config,
    dc: 1,
    logger,
    ...(registry ? { registry } : {}),
  });
  const sb = new SlotsService({ group: bus.group(b), config, dc: 1, logger });
  sa.start();
  sb.start();
  bus.view({ id: 1, members: [a, b], reason: 'join' }, [[a], [b]]);
  await new Promise((r) => setImmediate(r));
  return { bus, sa, sb };
}

describe('SlotsService', () => {
  it('allocates across donations until the DC is exhausted, then ENOSPC', async () => {
    const registry = new Registry();
    const { sa, sb } = await pair(8, registry);
    try {
      const got: number[] = [];
      for (let k = 0; k < 8; k++) got.push(await sa.allocate({ timeout: 2000 }));
      assert.deepEqual(
        [...got].sort((x, y) => x - y),
        [64, 65, 66, 67, 68, 69, 70, 71],
      );
      await assert.rejects(sa.allocate({ timeout: 2000 }), { code: 'ENOSPC' });
      sa.free(got[0] as number);
      assert.equal(await sa.allocate({ timeout: 2000 }), got[0]);
      const text = await registry.metrics();
      assert.match(text, /dvs_slots_allocations_total\{dc="1",result="ok"\} 9/);
      assert.match(text, /dvs_slots_allocations_total\{dc="1",result="enospc"\} 1/);
      assert.match(text, /dvs_slots_owned_slots\{dc="1",state="used"\} 8/);
    } finally {
      sa.stop();
      sb.stop();
    }
  });

  it('a waiting allocation times out or aborts, and a slot granted later is given back', async () => {
    const { bus, sa, sb } = await pair(4, undefined);
    try {
      await sa.allocate({ timeout: 1000 });
      await sa.allocate({ timeout: 1000 });
      bus.paused = true; // the group stops delivering: the donation round cannot finish
      await assert.rejects(sa.allocate({ timeout: 20 }), { code: 'ETIMEDOUT' });
      const ac = new AbortController();
      const p = sa.allocate({ signal: ac.signal, timeout: 5000 });
      ac.abort();
      await assert.rejects(p, { code: 'EABORTED' });
      assert.equal(sa.member.waitingCount, 0);
      bus.resume();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(sa.member.usedCount, 2, 'nothing leaked to a caller that gave up');
      await assert.rejects(sa.allocate({ signal: AbortSignal.abort() }), { code: 'EABORTED' });
    } finally {
      sa.stop();
      sb.stop();
    }
  });

  it('stop() fails pending allocations with EUNAVAIL; allocate before start is EUNAVAIL', async () => {
    const { bus, sa, sb } = await pair(2, undefined);
    await sa.allocate({ timeout: 1000 });
    bus.paused = true;
    const p = sa.allocate({ timeout: 5000 });
    sa.stop();
    sb.stop();
    await assert.rejects(p, { code: 'EUNAVAIL' });
    await assert.rejects(sa.allocate(), { code: 'EUNAVAIL' });
  });
});
