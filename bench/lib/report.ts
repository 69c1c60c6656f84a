/** Tables and JSON of a bench run. */
import Table from 'cli-table3';
import type { Unit } from './case.js';
import type { Summary } from './stats.js';

/** Result of one case over the run. */
export interface CaseResult {
  name: string;
  group: string;
  unit: Unit;
  what: string;
  status: 'ok' | 'skipped' | 'failed';
  reason?: string;
  /** Work per measurement after calibration. */
  work?: number;
  /** Figure of each round (null = no figure that round). */
  rounds: Array<number | null>;
  /** Secondary figures of each round: elapsedMs, and p50 / p99 (µs) for latencies. */
  extras: Array<Record<string, number> | null>;
  errors: string[];
  summary: Summary | null;
}

/** A target of DESIGN.md §12, or an informative ratio without a goal. */
export interface RatioResult {
  name: string;
  /** Numerator case, and denominator case (absent for an absolute target). */
  a: string;
  b?: string;
  goal?: { op: '<=' | '>='; value: number };
  unit?: Unit;
  perRound: number[];
  summary: Summary | null;
  met: boolean | null;
}

/** A figure in its unit, human sized. */
export function fmt(v: number, unit: Unit | 'x'): string {
  if (!Number.isFinite(v)) return '-';
  switch (unit) {
    case 'us':
      return v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(v < 100 ? 1 : 0)} µs`;
    case 'msg/s':
      return v >= 1e6 ? `${(v / 1e6).toFixed(2)} M/s` : `${(v / 1e3).toFixed(0)} k/s`;
    case 'B/s':
      return v >= 1e9 ? `${(v / 1e9).toFixed(2)} GB/s` : `${(v / 1e6).toFixed(0)} MB/s`;
    case 'x':
      return v.toFixed(2);
  }
}

// No colour codes (they garble piped output) and no rule between rows.
const plain = {
  style: { head: [], border: [] },
  chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
};

/** A reason cut to fit the table (the JSON keeps it whole). */
function short(s: string): string {
  return s.length > 90 ? `${s.slice(0, 89)}…` : s;
}

/** The case table: median (min-max) per case, or why there is none. */
export function caseTable(cases: CaseResult[]): string {
  const t = new Table({ head: ['case', 'median', 'min - max', 'rounds', 'unit / status'], ...plain });
  for (const c of cases) {
    if (c.summary !== null) {
      const s = c.summary;
      const status =
        c.status !== 'ok'
          ? `${c.unit}; ${c.status}: ${short(c.reason ?? '')}`
          : c.errors.length > 0
            ? `${c.unit}; ${c.errors.length} round(s) failed: ${short(c.errors[c.errors.length - 1]!)}`
            : c.unit;
      t.push([
        c.name,
        fmt(s.median, c.unit),
        `${fmt(s.min, c.unit)} - ${fmt(s.max, c.unit)}`,
        String(s.n),
        status,
      ]);
    } else {
      t.push([c.name, '-', '-', '0', `${c.status}: ${short(c.reason ?? 'no figure')}`]);
    }
  }
  return t.toString();
}

/** The ratio table with goals marked met / not met. */
export function ratioTable(ratios: RatioResult[]): string {
  const t = new Table({
    head: ['ratio (paired per round)', 'median', 'min - max', 'goal', 'verdict'],
    ...plain,
  });
  for (const r of ratios) {
    const unit = r.b === undefined ? (r.unit ?? 'x') : 'x';
    const goal = r.goal ? `${r.goal.op} ${fmt(r.goal.value, unit)}` : '(info)';
    const verdict = r.met === null ? (r.goal ? 'n/a' : '') : r.met ? 'met' : 'NOT MET';
    if (r.summary === null) t.push([r.name, '-', '-', goal, r.goal ? 'n/a (missing case)' : '']);
    else
      t.push([
        r.name,
        fmt(r.summary.median, unit),
        `${fmt(r.summary.min, unit)} - ${fmt(r.summary.max, unit)}`,
        goal,
        verdict,
      ]);
  }
  return t.toString();
}

/** A reference figure of the thesis for a case (msg/s with 4 cores and with 1 core). */
export interface ThesisFigure {
  ipc: string;
  cores4: number;
  cores1: number;
}

/**
 * The thesis comparison: our median (min-max) per IPC next to the prototype's F1 bars, and each figure
 * relative to the Unix socket of the same column (the only way to compare a 2017 kernel module on other
 * hardware with Node processes on this VM).
 */
export function thesisTable(cases: CaseResult[], f1: Record<string, ThesisFigure>): string {
  const t = new Table({
    head: [
      'IPC (ping-pong, 36 B)',
      'dvs run: median',
      'min - max',
      '/ UDS',
      'F1 4 cores',
      '/ UNIX',
      'F1 1 core',
      '/ UNIX',
    ],
    ...plain,
  });
  const uds = cases.find((c) => c.name === 'thesis.uds')?.summary?.median;
  const ref = f1['thesis.uds'];
  for (const c of cases) {
    const f = f1[c.name];
    if (f === undefined) continue;
    const s = c.summary;
    t.push([
      f.ipc,
      s === null ? `${c.status}: ${short(c.reason ?? 'no figure')}` : fmt(s.median, 'msg/s'),
      s === null ? '-' : `${fmt(s.min, 'msg/s')} - ${fmt(s.max, 'msg/s')}`,
      s === null || uds === undefined ? '-' : fmt(s.median / uds, 'x'),
      fmt(f.cores4, 'msg/s'),
      ref === undefined ? '-' : fmt(f.cores4 / ref.cores4, 'x'),
      fmt(f.cores1, 'msg/s'),
      ref === undefined ? '-' : fmt(f.cores1 / ref.cores1, 'x'),
    ]);
  }
  return t.toString();
}
