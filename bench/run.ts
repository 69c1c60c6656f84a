/**
 * `npm run bench`: raw Node baselines, dvs and (later) peers, measured in ONE run with interleaved rounds,
 * so every dvs figure is judged against floors taken on the same machine within the same seconds.
 *
 * Method (reference/perf-limits.md): every case starts its processes once; each case calibrates its work so
 * one measurement takes about the target time, warms up, then the runner takes one measurement of every
 * case per round, rotating the order each round. A case's figure is the median over rounds with min-max;
 * a ratio is computed per round from the two cases of that round, then summarised the same way.
 *
 * Flags: --quick (about a minute), --rounds N, --only name[,name...] (names or dotted prefixes),
 * --thesis (only the thesis' local IPC comparison, which the default run leaves out),
 * --cpu-prof DIR (every process the bench starts, dvs daemons included, writes a V8 CPU profile into DIR;
 * summarise with bench/profile-top.ts), --json PATH (default bench/results/<ISO date>.json), --list.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { baselineCases } from './baselines/cases.js';
import { dvsCases } from './dvs/cases.js';
import { failoverCase } from './dvs/failover.js';
import { migrateCases } from './dvs/migrate.js';
import { gcsCases, spreadTable } from './gcs.js';
import type { BenchCase, CaseContext, Driver } from './lib/case.js';
import { SkipError } from './lib/case.js';
import { killAllSync } from './lib/proc.js';
import type { CaseResult, RatioResult } from './lib/report.js';
import { caseTable, ratioTable, thesisTable } from './lib/report.js';
import { pairedRatios, summarize } from './lib/stats.js';
import { peerCases } from './peers/cases.js';
import { THESIS_F1, thesisCases } from './thesis/cases.js';

/** Cases measured in a second phase, after the IPC cases and their baselines (see main). */
const SERVICE_CASES: ReadonlySet<string> = new Set([
  ...migrateCases.map((c) => c.name),
  failoverCase.name,
  ...gcsCases.map((c) => c.name),
]);

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Ratios reported, with the DESIGN.md §12 goals (cases absent from the run give "n/a"). */
const RATIOS: Array<Omit<RatioResult, 'perRound' | 'summary' | 'met'>> = [
  {
    name: 'local sendrec RTT / relay RTT',
    a: 'dvs.local.sendrec',
    b: 'relay.uds.rtt',
    goal: { op: '<=', value: 1.3 },
  },
  {
    name: 'cross-node sendrec / local sendrec',
    a: 'dvs.cross.sendrec',
    b: 'dvs.local.sendrec',
    goal: { op: '<=', value: 1.5 },
  },
  { name: 'post() local msgs/s', a: 'dvs.local.post', unit: 'msg/s', goal: { op: '>=', value: 1e6 } },
  { name: 'post() cross-node msgs/s', a: 'dvs.cross.post', unit: 'msg/s', goal: { op: '>=', value: 1e6 } },
  {
    name: 'vcopy 1 MiB local / raw UDS bulk',
    a: 'dvs.local.vcopy',
    b: 'raw.uds.bulk',
    goal: { op: '>=', value: 0.5 },
  },
  {
    name: 'vcopy 1 MiB cross / raw UDS bulk',
    a: 'dvs.cross.vcopy',
    b: 'raw.uds.bulk',
    goal: { op: '>=', value: 0.5 },
  },
  {
    name: 'local sendrec RTT / NATS request RTT',
    a: 'dvs.local.sendrec',
    b: 'peer.nats.request',
    goal: { op: '<=', value: 0.5 },
  },
  {
    name: 'post() local / NATS publish',
    a: 'dvs.local.post',
    b: 'peer.nats.publish',
    goal: { op: '>=', value: 1.5 },
  },
  {
    name: 'migration freeze, 1 KiB state',
    a: 'dvs.migrate.1k',
    unit: 'us',
    goal: { op: '<=', value: 50_000 },
  },
  { name: 'migration freeze, 64 KiB state', a: 'dvs.migrate.64k', unit: 'us' },
  { name: 'migration freeze, 1 MiB state', a: 'dvs.migrate.1m', unit: 'us' },
  {
    name: 'failover after the primary died',
    a: 'dvs.failover.process',
    unit: 'us',
    goal: { op: '<=', value: 1_000_000 },
  },
  // Context without goals.
  { name: 'local sendrec RTT / ZeroMQ REQ/REP RTT', a: 'dvs.local.sendrec', b: 'peer.zeromq.reqrep' },
  { name: 'local sendrec RTT / gRPC unary RTT', a: 'dvs.local.sendrec', b: 'peer.grpc.unary' },
  { name: 'cross-node sendrec / NATS request RTT', a: 'dvs.cross.sendrec', b: 'peer.nats.request' },
  { name: 'post() cross-node / NATS publish', a: 'dvs.cross.post', b: 'peer.nats.publish' },
  { name: 'post() local / ZeroMQ PUSH/PULL', a: 'dvs.local.post', b: 'peer.zeromq.pushpull' },
  { name: 'thesis: dvs / Unix socket msg/s', a: 'thesis.dvs', b: 'thesis.uds' },
  { name: 'thesis: dvs / pipe msg/s', a: 'thesis.dvs', b: 'thesis.pipe' },
  { name: 'vcopy 1 MiB cross / raw TCP bulk', a: 'dvs.cross.vcopy', b: 'raw.tcp.bulk' },
  { name: 'post() local / relay stream', a: 'dvs.local.post', b: 'relay.uds.stream' },
  { name: 'local sendrec RTT / raw UDS RTT', a: 'dvs.local.sendrec', b: 'raw.uds.rtt' },
  { name: 'relay RTT / raw UDS RTT (daemon hop)', a: 'relay.uds.rtt', b: 'raw.uds.rtt' },
];

interface Settings {
  rounds: number;
  quick: boolean;
  /** Target duration of one measurement, ms. */
  targetMs: number;
  only: string[] | null;
  json: string;
  list: boolean;
  thesis: boolean;
}

function settings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      only: { type: 'string' },
      json: { type: 'string' },
      list: { type: 'boolean', default: false },
      thesis: { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench -- [--quick] [--thesis] [--rounds N] [--only name,prefix,...] [--cpu-prof DIR] [--json PATH] [--list]\n',
    );
    process.exit(0);
  }
  const quick = values.quick;
  // Read by bench/lib/proc.ts when it starts Node processes (children and `dvs up`).
  if (values['cpu-prof'] !== undefined) {
    mkdirSync(values['cpu-prof'], { recursive: true });
    process.env.DVS_BENCH_CPU_PROF = resolve(values['cpu-prof']);
  }
  const rounds = values.rounds === undefined ? (quick ? 5 : 8) : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000)
    throw new Error(`bad --rounds ${values.rounds}`);
  const stamp = new Date()
    .toISOString()
    .replace(/:/g, '-')
    .replace(/\.\d+Z$/, 'Z');
  return {
    rounds,
    quick,
    targetMs: quick ? 400 : 1000,
    only: values.only
      ? values.only
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '')
      : null,
    json: values.json ?? join(ROOT, 'bench/results', `${stamp}.json`),
    list: values.list,
    thesis: values.thesis,
  };
}

/** --only picks by name; otherwise --thesis picks the thesis group and the default run everything else. */
function selected(c: BenchCase, s: Settings): boolean {
  if (s.only !== null) return s.only.some((o) => c.name === o || c.name.startsWith(`${o}.`));
  return s.thesis === (c.group === 'thesis');
}

function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function main(): Promise<number> {
  const s = settings(process.argv.slice(2));
  const all = [
    ...baselineCases,
    ...dvsCases,
    ...migrateCases,
    failoverCase,
    ...gcsCases,
    ...peerCases,
    ...thesisCases,
  ];
  if (s.list) {
    for (const c of all) process.stdout.write(`${c.name.padEnd(22)} ${c.unit.padEnd(6)} ${c.what}\n`);
    return 0;
  }
  const cases = all.filter((c) => selected(c, s));
  if (cases.length === 0) throw new Error(`--only ${s.only?.join(',')} matches no case (see --list)`);

  const tmp = mkdtempSync(join(os.tmpdir(), 'dvs-bench-'));
  const ac = new AbortController();
  const fixtures = new Map<string, Promise<{ value: unknown; stop: () => Promise<void> }>>();
  const notes: string[] = [];
  const ctx: CaseContext = {
    root: ROOT,
    tmp,
    signal: ac.signal,
    log,
    note: (msg) => {
      notes.push(msg);
      log(`note: ${msg}`);
    },
    fixture<T>(name: string, start: () => Promise<{ value: T; stop: () => Promise<void> }>): Promise<T> {
      let f = fixtures.get(name);
      if (f === undefined) {
        f = start();
        fixtures.set(name, f);
      }
      return f.then((x) => x.value as T);
    },
  };
  const onSignal = () => {
    ac.abort();
    killAllSync();
    rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', killAllSync);

  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  const results = new Map<string, CaseResult>();
  const drivers = new Map<string, Driver>();
  const work = new Map<string, number>();
  const runTimeout = (w: number, c: BenchCase) =>
    Math.max(30_000, (20 * s.targetMs * w) / (work.get(c.name) ?? w));

  // Phases run one after the other, each with its own processes: the service cases (migration, failover, the
  // 5-node GCS cluster) keep daemons busy, and must not load the rounds of the IPC cases and their baselines.
  const phases = [
    cases.filter((c) => !SERVICE_CASES.has(c.name)),
    cases.filter((c) => SERVICE_CASES.has(c.name)),
  ].filter((p) => p.length > 0);
  try {
    for (const phase of phases) await measure(phase);
  } finally {
    killAllSync();
    rmSync(tmp, { recursive: true, force: true });
  }

  /** Set up, calibrate and measure `phaseCases` in interleaved rounds, then stop their processes. */
  async function measure(phaseCases: BenchCase[]): Promise<void> {
    try {
      // Setup and calibration, case by case.
      for (const c of phaseCases) {
        const r: CaseResult = {
          name: c.name,
          group: c.group,
          unit: c.unit,
          what: c.what,
          status: 'ok',
          rounds: [],
          extras: [],
          errors: [],
          summary: null,
        };
        results.set(c.name, r);
        try {
          log(`${c.name}: setup`);
          const d = await c.setup(ctx);
          drivers.set(c.name, d);
          let w = c.fixedWork === undefined ? c.initialWork : s.quick ? c.fixedWork.quick : c.fixedWork.full;
          if (c.fixedWork !== undefined) {
            // Same count in every case and round: one warm-up run at that size, no rescaling.
            work.set(c.name, w);
            await d.run(w, runTimeout(w, c));
            r.work = w;
            continue;
          }
          // Calibrate twice: the first (cold) run is slow, so sizing from it alone undershoots the target;
          // the second run at the new size is also the warm-up.
          const rescale = (elapsedMs: number) =>
            Math.max(
              1,
              Math.round(w * Math.min(64, Math.max(1 / 64, s.targetMs / Math.max(0.1, elapsedMs)))),
            );
          w = rescale((await d.run(w, 60_000)).elapsedMs);
          work.set(c.name, w);
          w = rescale((await d.run(w, runTimeout(w, c))).elapsedMs);
          work.set(c.name, w);
          r.work = w;
        } catch (e) {
          // dvs and peers may legitimately be unavailable (not built, not installed): a skip, never a failure.
          const skip = e instanceof SkipError || c.group === 'dvs' || c.group === 'peer';
          r.status = skip ? 'skipped' : 'failed';
          r.reason = errText(e);
          log(`${c.name}: ${r.status}: ${r.reason}`);
          await drivers.get(c.name)?.stop();
          drivers.delete(c.name);
        }
      }

      // Interleaved rounds.
      const active = phaseCases.filter((c) => drivers.has(c.name));
      for (let round = 0; round < s.rounds; round++) {
        log(`round ${round + 1}/${s.rounds}`);
        for (let k = 0; k < active.length; k++) {
          const c = active[(k + round) % active.length]!;
          const r = results.get(c.name)!;
          const d = drivers.get(c.name);
          if (d === undefined) {
            r.rounds[round] = null;
            continue;
          }
          const w = work.get(c.name)!;
          try {
            const m = await d.run(w, runTimeout(w, c));
            r.rounds[round] = m.value;
            r.extras[round] = { elapsedMs: m.elapsedMs, ...m.extra };
          } catch (e) {
            r.rounds[round] = null;
            r.extras[round] = null;
            r.errors.push(`round ${round + 1}: ${errText(e)}`);
            log(`${c.name}: round ${round + 1}: ${errText(e)}`);
            if (r.errors.length >= 2) {
              r.status = 'failed';
              r.reason = errText(e);
              await d.stop();
              drivers.delete(c.name);
            }
          }
        }
      }
    } finally {
      for (const d of drivers.values()) await d.stop();
      drivers.clear();
      for (const f of fixtures.values()) {
        await f.then(
          (x) => x.stop(),
          () => {},
        );
      }
      fixtures.clear();
      killAllSync();
    }
  }

  for (const r of results.values()) r.summary = summarize(r.rounds);
  const ratios: RatioResult[] = RATIOS.map((def) => {
    const a = results.get(def.a);
    const b = def.b === undefined ? undefined : results.get(def.b);
    let perRound: number[] = [];
    if (a !== undefined && def.b === undefined) perRound = a.rounds.filter((x): x is number => x !== null);
    else if (a !== undefined && b !== undefined) perRound = pairedRatios(a.rounds, b.rounds);
    const summary = summarize(perRound);
    const met =
      summary === null || def.goal === undefined
        ? null
        : def.goal.op === '<='
          ? summary.median <= def.goal.value
          : summary.median >= def.goal.value;
    return { ...def, perRound, summary, met };
  });
  const shown = ratios.filter((r) => results.has(r.a) || (r.b !== undefined && results.has(r.b)));

  process.stdout.write(`\n${caseTable([...results.values()])}\n\n`);
  if (shown.length > 0) process.stdout.write(`${ratioTable(shown)}\n\n`);
  const thesis = [...results.values()].filter((r) => r.group === 'thesis');
  if (thesis.length > 0) process.stdout.write(`${thesisTable(thesis, THESIS_F1)}\n\n`);
  const spread = spreadTable([...results.values()]);
  if (spread !== '') process.stdout.write(`${spread}\n\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);

  const out = {
    version: 1,
    command: ['npm run bench', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(
      ' ',
    ),
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: {
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      loadavgAtStart: loadAtStart,
      loadavgAtEnd: os.loadavg(),
    },
    settings: { rounds: s.rounds, quick: s.quick, targetMs: s.targetMs, only: s.only },
    notes,
    cases: [...results.values()],
    ratios,
    thesisF1: thesis.length > 0 ? THESIS_F1 : undefined,
  };
  mkdirSync(dirname(s.json), { recursive: true });
  writeFileSync(s.json, `${JSON.stringify(out, null, 2)}\n`);
  log(`results written to ${s.json}`);
  // Only a broken baseline (or raw thesis case) fails the run: dvs and peers report skips and errors in
  // the tables.
  return [...results.values()].some(
    (r) => (r.group === 'baseline' || r.group === 'thesis') && r.status === 'failed',
  )
    ? 1
    : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`bench: ${errText(e)}\n`);
    killAllSync();
    process.exitCode = 2;
  },
);
