/**
 * Tests of the simulator itself, run against the small reference kernel in test/sim/fake-kernel.ts: the
 * same seed replays exactly, a correct kernel passes every scenario, and broken links are caught.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NoDedupSession, NoResendSession } from '../../sim/broken.js';
import { FakeKernel } from '../../sim/fake-kernel.js';
import { nodesFor, SCENARIOS } from '../../sim/scenarios.js';
import type { KernelFactory } from '../../sim/world.js';
import { report, simulate } from '../../sim/world.js';

const FILE = 'test/unit/sim/harness.test.ts';
const fake: KernelFactory = (nodeId, io) => new FakeKernel({ nodeId, io });

describe('simulator harness (reference kernel)', () => {
  it('the same seed replays the same run exactly; another seed does not', () => {
    const cfg = { ...SCENARIOS.crashes, nodes: 4, makeKernel: fake };
    const a = simulate({ ...cfg, seed: 11 });
    const b = simulate({ ...cfg, seed: 11 });
    const c = simulate({ ...cfg, seed: 12 });
    assert.ok(a.steps > 500, `run too small to mean anything: ${a.steps} steps`);
    assert.equal(a.traceHash, b.traceHash);
    assert.deepEqual(a.stats, b.stats);
    assert.deepEqual(a.violations, b.violations);
    assert.notEqual(a.traceHash, c.traceHash);
  });

  for (const [name, scenario] of Object.entries(SCENARIOS)) {
    it(`a correct kernel passes: ${name}`, () => {
      let delivered = 0;
      for (let seed = 1; seed <= 15; seed++) {
        const r = simulate({ ...scenario, seed, nodes: nodesFor(seed), makeKernel: fake });
        assert.deepEqual(r.violations, [], report(r, FILE));
        delivered += r.stats.delivered;
      }
      assert.ok(delivered > 1000, `too little traffic: ${delivered}`);
    });
  }

  it('faults actually happen in fault scenarios (duplicates dropped, failures reported)', () => {
    let dups = 0;
    let notconn = 0;
    for (let seed = 1; seed <= 30; seed++) {
      dups += simulate({ ...SCENARIOS.drops, seed, makeKernel: fake }).stats.duplicatesDropped;
      const r = simulate({ ...SCENARIOS.crashes, seed, makeKernel: fake });
      notconn += Object.entries(r.stats.failures)
        .filter(([k]) => k.endsWith('ENOTCONN'))
        .reduce((sum, [, v]) => sum + v, 0);
    }
    assert.ok(dups > 0, 'no resend was ever deduplicated: the drop model is too gentle');
    assert.ok(notconn > 0, 'no operation ever failed with ENOTCONN: no declared death happened');
  });

  it('catches a link that does not deduplicate resent frames (invariant 1)', () => {
    const caught: string[] = [];
    for (let seed = 1; seed <= 40 && caught.length === 0; seed++) {
      const r = simulate({
        ...SCENARIOS.drops,
        seed,
        makeKernel: fake,
        makeSession: () => new NoDedupSession(),
      });
      caught.push(...r.violations);
    }
    assert.ok(caught.length > 0, 'a link without dedup went unnoticed');
    assert.match(caught.join('\n'), /delivered 2 times|order/);
  });

  it('catches a link that does not resend after a reconnect', () => {
    const caught: string[] = [];
    for (let seed = 1; seed <= 10 && caught.length === 0; seed++) {
      const r = simulate({
        ...SCENARIOS.drops,
        seed,
        makeKernel: fake,
        makeSession: () => new NoResendSession(),
      });
      caught.push(...r.violations);
    }
    assert.ok(caught.length > 0, 'a link without resend went unnoticed');
  });
});
