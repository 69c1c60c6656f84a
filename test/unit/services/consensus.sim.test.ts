/**
 * Consensus safety in simulation: the real ConsensusService (src/services/consensus.ts) of 3-7 proposers
 * against a simulated cluster store with lost requests and replies, store outages, proposer crashes and
 * restarts (test/sim/consensus-sim.ts says what is checked). A failure names the seed; replay it alone with
 *   SEED=<n> node --import tsx --test test/unit/services/consensus.sim.test.ts
 * and run more seeds with SIM_SEEDS=<n>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ConsensusSimConfig,
  type ConsensusSimResult,
  type ConsensusSimStats,
  reportConsensus,
  simulateConsensus,
} from '../../sim/consensus-sim.js';
import { seeds } from '../../sim/scenarios.js';

const FILE = 'test/unit/services/consensus.sim.test.ts';
const replaying = process.env.SEED !== undefined && process.env.SEED !== '';

async function runMany(
  count: number,
  extra: Omit<ConsensusSimConfig, 'seed'> = {},
): Promise<{ runs: ConsensusSimResult[]; failed: ConsensusSimResult[]; total: ConsensusSimStats }> {
  const runs: ConsensusSimResult[] = [];
  for (const seed of seeds(count)) runs.push(await simulateConsensus({ ...extra, seed }));
  const total = {} as ConsensusSimStats;
  for (const r of runs) {
    for (const [k, v] of Object.entries(r.stats) as [keyof ConsensusSimStats, number][])
      total[k] = (total[k] ?? 0) + v;
  }
  return { runs, failed: runs.filter((r) => r.violations.length > 0), total };
}

function assertAllPass(
  name: string,
  res: { runs: ConsensusSimResult[]; failed: ConsensusSimResult[] },
): void {
  const first = res.failed[0];
  if (first === undefined) return;
  assert.fail(
    `${name}: ${res.failed.length} of ${res.runs.length} seeds failed (seeds ${res.failed
      .map((r) => r.seed)
      .slice(0, 20)
      .join(', ')})\n${reportConsensus(first, FILE)}`,
  );
}

describe('consensus under simulation', () => {
  it('the same seed replays exactly', async () => {
    const a = await simulateConsensus({ seed: 11 });
    const b = await simulateConsensus({ seed: 11 });
    assert.equal(a.traceHash, b.traceHash);
    assert.deepEqual(a.stats, b.stats);
    const c = await simulateConsensus({ seed: 12 });
    assert.notEqual(a.traceHash, c.traceHash, 'different seeds, different runs');
  });

  it('virtual time does not leak: setTimeout and Date.now are restored after a run', async () => {
    const before = { setTimeout: globalThis.setTimeout, now: Date.now };
    await simulateConsensus({ seed: 5 });
    assert.equal(globalThis.setTimeout, before.setTimeout);
    assert.equal(Date.now, before.now);
  });

  it('fault-free: every proposer decides at once, exactly one proposal wins per instance', async (t) => {
    const res = await runMany(50, { faults: false });
    assertAllPass('fault-free', res);
    for (const r of res.runs) {
      assert.equal(r.stats.unavailable, 0, `seed ${r.seed}: no call may fail without faults`);
      assert.equal(r.stats.readBacks, 0, `seed ${r.seed}: nobody needs to read back`);
      assert.ok(r.stats.decided >= r.stats.proposers * r.stats.instances, `seed ${r.seed}: everyone decided`);
    }
    t.diagnostic(`fault-free: ${JSON.stringify(res.total)}`);
  });

  it('agreement, validity, exact `mine`, lost replies learnt, one write per instance, under faults', async (t) => {
    const res = await runMany(200);
    t.diagnostic(`faults (${res.runs.length} seeds): ${JSON.stringify(res.total)}`);
    assertAllPass('faults', res);
    if (replaying) return;
    // The run must have exercised what it claims to check (else it could not fail for those reasons).
    const sizes = new Set(res.runs.map((r) => r.stats.proposers));
    assert.deepEqual([...sizes].sort(), [3, 4, 5, 6, 7], 'every number of proposers 3..7');
    const { total } = res;
    assert.ok(total.lostRepliesLanded > 0, 'writes whose reply was lost');
    assert.ok(total.learnedAfterLostReply > 0, 'a proposer learnt its own lost-reply write by reading back');
    assert.ok(total.crashes > 0 && total.restarts > 0, 'crashes and restarts');
    assert.ok(total.ghostWins > 0, "a crashed proposer's in-flight write decided an instance");
    assert.ok(total.unavailable > 0, 'calls that gave up (EUNAVAIL)');
    assert.ok(total.readBacks > 0, 'decisions learnt by reading back after the heal');
    assert.ok(total.outages > 0 && total.lostRequests > 0, 'store outages and lost requests');
  });

  it('a store whose compare reads stale state breaks agreement, and the check says so (replayably)', async () => {
    // The recipe relies on the compare and the put being one linearizable step: evaluate the guard on the
    // state the request saw when it was sent and two proposers both "win".
    const res = await runMany(replaying ? 1 : 40, { broken: 'stale-compare' });
    if (replaying) return;
    const bad = res.failed[0];
    assert.ok(bad !== undefined, 'some seed must violate agreement with a stale compare');
    assert.ok(
      bad.violations.some((v) => v.includes('agreement violated') || v.includes('invariant 5')),
      reportConsensus(bad, FILE),
    );
    const again = await simulateConsensus({ seed: bad.seed, broken: 'stale-compare' });
    assert.deepEqual(again.violations, bad.violations, 'the failing seed replays');
    assert.equal(again.traceHash, bad.traceHash);
    assert.match(reportConsensus(bad, FILE), new RegExp(`SEED=${bad.seed} node --import tsx --test`));
  });

  it('a store that ignores compares is caught too', async () => {
    const r = await simulateConsensus({ seed: 3, faults: false, broken: 'no-compare' });
    assert.ok(
      r.violations.some((v) => v.includes('invariant 5')),
      `rewrites must be reported: ${r.violations.join('; ')}`,
    );
  });
});
