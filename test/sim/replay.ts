/**
 * Replay one seed and print its whole trace (or the lines matching a pattern), for debugging a failure:
 *   node --import tsx test/sim/replay.ts <seed> [scenario] [regexp]
 * Runs the real kernel (src/kernel); scenario names are those of test/sim/scenarios.ts.
 */
import { Kernel } from '../../src/kernel/index.js';
import { nodesFor, SCENARIOS } from './scenarios.js';
import { simulate } from './world.js';

// Piping into head closes stdout early: that is not an error.
process.stdout.on('error', () => process.exit(0));
const [seedArg, scenarioArg = 'faultFree', pattern] = process.argv.slice(2);
const seed = Number(seedArg);
const scenario = SCENARIOS[scenarioArg as keyof typeof SCENARIOS];
if (!Number.isInteger(seed) || scenario === undefined) {
  console.error(`usage: replay.ts <seed> [${Object.keys(SCENARIOS).join('|')}] [regexp]`);
  process.exit(2);
}
const r = simulate({
  ...scenario,
  seed,
  nodes: nodesFor(seed),
  makeKernel: (nodeId, io) => new Kernel({ nodeId, io }),
  traceKeep: 1_000_000,
});
const re = pattern === undefined ? undefined : new RegExp(pattern);
for (const line of r.traceTail) if (re === undefined || re.test(line)) console.log(line);
console.log(JSON.stringify({ seed, hash: r.traceHash, steps: r.steps, ...r.stats }));
for (const v of r.violations) console.log(`VIOLATION ${v}`);
