/**
 * The real kernel (src/kernel) under the deterministic simulator: 3-5 nodes, real LinkSessions, simulated
 * processes, faults. A failure names the seed; replay it alone with
 *   SEED=<n> node --import tsx --test test/unit/sim/kernel.sim.test.ts
 * and run more seeds with SIM_SEEDS=<n>. docs/simulation.md says what is checked.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kernel } from '../../../src/kernel/index.js';
import { nodesFor, SCENARIOS, type Scenario, seeds } from '../../sim/scenarios.js';
import { type KernelFactory, report, type SimResult, simulate } from '../../sim/world.js';

const FILE = 'test/unit/sim/kernel.sim.test.ts';
const real: KernelFactory = (nodeId, io) => new Kernel({ nodeId, io });

function runMany(scenario: Scenario, count: number): { runs: SimResult[]; failed: SimResult[] } {
  const runs: SimResult[] = [];
  for (const seed of seeds(count))
    runs.push(simulate({ ...scenario, seed, nodes: nodesFor(seed), makeKernel: real }));
  return { runs, failed: runs.filter((r) => r.violations.length > 0) };
}

function assertAllPass(name: string, res: { runs: SimResult[]; failed: SimResult[] }): void {
  const first = res.failed[0];
  if (first === undefined) return;
  assert.fail(
    `${name}: ${res.failed.length} of ${res.runs.length} seeds failed (seeds ${res.failed
      .map((r) => r.seed)
      .slice(0, 20)
      .join(', ')})\n${report(first, FILE)}`,
  );
}

describe('kernel under simulation', () => {
  it('the same seed replays exactly with the real kernel', () => {
    const a = simulate({ ...SCENARIOS.crashes, seed: 3, nodes: 4, makeKernel: real });
    const b = simulate({ ...SCENARIOS.crashes, seed: 3, nodes: 4, makeKernel: real });
    assert.equal(a.traceHash, b.traceHash);
    assert.deepEqual(a.stats, b.stats);
  });

  it('fault-free: everything delivered once, in order, every call completes OK', () => {
    const res = runMany(SCENARIOS.faultFree, 200);
    assertAllPass('fault-free', res);
    assert.ok(
      res.runs.every((r) => r.stats.delivered > 0),
      'a run delivered nothing',
    );
  });

  it('cancels and process exits on perfect links', () => {
    assertAllPass('churn', runMany(SCENARIOS.churn, 100));
  });

  it('connection drops only: zero loss, zero duplicates', () => {
    const res = runMany(SCENARIOS.drops, 100);
    assertAllPass('drops', res);
  });

  it('node crashes, restarts and declarations of death', () => {
    assertAllPass('crashes', runMany(SCENARIOS.crashes, 100));
  });

  it('heavy: more processes, post window 2, quick declarations of death, every fault', () => {
    assertAllPass('heavy', runMany(SCENARIOS.heavy, 40));
  });
});
