/**
 * Paper reproduction for SLOTS: runs the simulator (test/sim/slots-sim.ts) under a fork/exit load like the
 * thesis' DAJ evaluation and prints slot utilisation, forks per round and donation latency in broadcast times,
 * as a Markdown section (docs/slots.md quotes its output).
 *
 *   node --import tsx test/sim/slots-report.ts            # full run (about a minute)
 *   node --import tsx test/sim/slots-report.ts --quick    # 5x shorter
 *
 * The paper's exact load parameters are not available (the thesis PDF is missing from the sources); the load
 * here is chosen to match its scale: about 26 fork attempts per round against a capacity of about 26
 * exits per round at full utilisation.
 */
import { type SlotsSimConfig, type SlotsSimResult, simulateSlots } from './slots-sim.js';

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 4000 : 20000;
const WARMUP = quick ? 1000 : 5000;

/** The base load: 8 nodes, 512 slots, mean lifetime 20 rounds (capacity 25.6 exits/round when full). */
const BASE: Omit<SlotsSimConfig, 'seed' | 'forkRate'> = {
  nodes: 8,
  total: 512,
  rounds: ROUNDS,
  bcast: 10,
  jitter: 0.5,
  meanLife: 20,
  crashes: false,
  partitions: false,
  faultEvery: [50, 400],
  startSpread: 0,
  warmup: WARMUP,
  checkEvery: 100,
  drain: false,
  trace: false,
  maxSteps: 200_000_000,
  seqService: 0,
  slots: {},
};

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

/** "share at 1 / 2 / 3 / >3 broadcast times, p99, max" of a histogram indexed by broadcast times. */
function latency(h: number[]): string {
  const total = h.reduce((a, b) => a + b, 0);
  if (total === 0) return 'n/a';
  const at = (k: number): number => (h[k] ?? 0) / total;
  let acc = 0;
  let p99 = 0;
  for (let k = 0; k < h.length; k++) {
    acc += h[k] ?? 0;
    if (acc >= 0.99 * total) {
      p99 = k;
      break;
    }
  }
  const over = Math.max(0, 1 - at(1) - at(2) - at(3));
  return `${pct(at(1))} / ${pct(at(2))} / ${pct(at(3))} / ${pct(over)}; p99 ${p99}; max ${h.length - 1}`;
}

interface Row {
  label: string;
  res: SlotsSimResult;
}

function run(label: string, cfg: Partial<SlotsSimConfig> & { forkRate: number }, seed = 1): Row {
  const t0 = Date.now();
  const res = simulateSlots({ ...BASE, ...cfg, seed });
  if (res.violations.length > 0) throw new Error(`${label}: violations\n${res.violations.join('\n')}`);
  process.stderr.write(`${label}: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  return { label, res };
}

const capacity = BASE.total / BASE.meanLife;
const rows: Row[] = [];
for (const load of [0.6, 0.8, 1.0, 1.1, 1.25]) {
  rows.push(run(`offered ${load.toFixed(2)}x`, { forkRate: (load * capacity) / BASE.nodes }));
}
rows.push(
  run('1.10x, crashes + partitions', {
    forkRate: (1.1 * capacity) / BASE.nodes,
    crashes: true,
    partitions: true,
  }),
);
rows.push(
  run('1.10x, donation cap 1', { forkRate: (1.1 * capacity) / BASE.nodes, slots: { maxDonation: 1 } }),
);
rows.push(run('1.10x, broadcast jitter 0', { forkRate: (1.1 * capacity) / BASE.nodes, jitter: 0 }));
rows.push(
  run('1.10x, sequencer 0.05 bt/message', { forkRate: (1.1 * capacity) / BASE.nodes, seqService: 0.05 }),
);
for (const load of [0.8, 1.0, 1.1, 1.25]) {
  rows.push(
    run(`prototype rules, ${load.toFixed(2)}x`, {
      forkRate: (load * capacity) / BASE.nodes,
      slots: { waitForDonation: false },
    }),
  );
}
// Small per-node shares (16 slots per node, low water 8): the same offered load against 128 slots.
for (const rules of ['this', 'prototype'] as const) {
  rows.push(
    run(`${rules} rules, 1.10x, 128 slots, life 5`, {
      forkRate: (1.1 * capacity) / BASE.nodes,
      total: 128,
      meanLife: 5,
      slots: { waitForDonation: rules === 'this' },
    }),
  );
}

const out: string[] = [];
out.push(
  `Load: ${BASE.nodes} nodes, ${BASE.total} slots, process lifetime exponential with mean ${BASE.meanLife} rounds ` +
    `(capacity ${capacity.toFixed(1)} exits/round at 100% use), ${ROUNDS} rounds of one broadcast time, ` +
    `statistics after ${WARMUP}; delivery latency uniform in [0.5, 1.5] broadcast times behind a sequencer; ` +
    'seed 1.',
  '',
  '| run | forks/round offered | ok/round | failed/round | utilisation | first donation at 1 / 2 / 3 / >3 bt | request rounds | urgent |',
  '|---|---|---|---|---|---|---|---|',
);
for (const { label, res } of rows) {
  const s = res.stats;
  const offered = s.allocatedPerRound + s.failedPerRound;
  out.push(
    `| ${label} | ${offered.toFixed(1)} | ${s.allocatedPerRound.toFixed(1)} | ${s.failedPerRound.toFixed(1)} | ` +
      `${pct(s.utilisation)} | ${latency(s.firstReply)} | ${s.rounds} | ${s.urgentRounds} |`,
  );
}
out.push('', 'Round completion (request to the answer that ends the round), same runs:', '');
out.push('| run | round end at 1 / 2 / 3 / >3 bt |', '|---|---|');
for (const { label, res } of rows) out.push(`| ${label} | ${latency(res.stats.roundEnd)} |`);
console.log(out.join('\n'));
