/**
 * SLOTS under the deterministic simulator (test/sim/slots-sim.ts): fork/exit load, crashes and restarts,
 * partitions and merges over an idealized EVS group. A failure names the seed; replay it alone with
 *   SEED=<n> node --import tsx --test test/unit/slots/slots.sim.test.ts
 * and run more seeds with SIM_SEEDS=<n>. docs/slots.md says what is checked.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type SlotsSimConfig,
  type SlotsSimResult,
  simulateSlots,
  slotsReport,
  slotsSeeds,
} from '../../sim/slots-sim.js';

const FILE = 'test/unit/slots/slots.sim.test.ts';

/** Vary the shape of the run with the seed so every size is covered. */
function shaped(seed: number, extra: Partial<SlotsSimConfig>): Partial<SlotsSimConfig> & { seed: number } {
  return { seed, nodes: 3 + (seed % 4), total: 32 + 16 * (seed % 5), ...extra };
}

function runMany(extra: Partial<SlotsSimConfig>, count: number): SlotsSimResult[] {
  return slotsSeeds(count).map((seed) => simulateSlots(shaped(seed, extra)));
}

function assertAllPass(name: string, runs: SlotsSimResult[]): void {
  const failed = runs.filter((r) => r.violations.length > 0);
  const first = failed[0];
  if (first === undefined) return;
  assert.fail(
    `${name}: ${failed.length} of ${runs.length} seeds failed (seeds ${failed
      .map((r) => r.seed)
      .slice(0, 20)
      .join(', ')})\n${slotsReport(first, FILE)}`,
  );
}

function sum(runs: SlotsSimResult[], f: (r: SlotsSimResult) => number): number {
  return runs.reduce((a, r) => a + f(r), 0);
}

describe('SLOTS under simulation', () => {
  it('the same seed replays exactly', () => {
    const a = simulateSlots({ seed: 7, nodes: 5 });
    const b = simulateSlots({ seed: 7, nodes: 5 });
    assert.equal(a.traceHash, b.traceHash);
    assert.deepEqual(a.stats, b.stats);
    assert.notEqual(simulateSlots({ seed: 8, nodes: 5 }).traceHash, a.traceHash);
  });

  it('no faults: safe, live, nothing lost', () => {
    const runs = runMany({ crashes: false, partitions: false, forkRate: 0.8 }, 30);
    assertAllPass('fault-free', runs);
    assert.ok(sum(runs, (r) => r.stats.donations) > 0, 'no donation happened: the load is too light');
  });

  it('crashes, restarts, partitions and merges: never one slot at two members', () => {
    const runs = runMany({}, 100);
    assertAllPass('faults', runs);
    // The fault model must really produce what the protocol has to survive.
    assert.ok(sum(runs, (r) => r.stats.crashes) > 0);
    assert.ok(sum(runs, (r) => r.stats.splits) > 0);
    assert.ok(sum(runs, (r) => r.stats.heals) > 0);
    assert.ok(sum(runs, (r) => r.stats.cutDeliveries) > 0, 'no message was cut by a partition');
    assert.ok(sum(runs, (r) => r.stats.droppedAtViewChange) > 0);
  });

  it('overload with frequent faults: ENOSPC only when nobody reachable had a free slot', () => {
    const runs = runMany({ forkRate: 2, meanLife: 20, faultEvery: [2, 10], rounds: 200 }, 30);
    assertAllPass('overload', runs);
    assert.ok(sum(runs, (r) => r.stats.failed) > 0, 'the overload never exhausted a member');
    assert.ok(sum(runs, (r) => r.stats.urgentRounds) > 0);
  });

  it('the checker catches a GCS that reports partitions as crashes', () => {
    if (process.env.SEED !== undefined && process.env.SEED !== '') return;
    const runs = [1, 2, 3, 4, 5].map((seed) =>
      simulateSlots({
        seed,
        nodes: 4,
        lie: 'partition-as-crash',
        crashes: false,
        faultEvery: [3, 10],
        forkRate: 1,
        rounds: 150,
        drain: false,
      }),
    );
    const caught = runs.filter((r) => r.violations.some((v) => /owned by both|while held by/.test(v)));
    assert.ok(caught.length > 0, 'double ownership went unnoticed');
  });
});
