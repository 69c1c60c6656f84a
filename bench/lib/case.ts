/**
 * What a benchmark case is. A case starts its own processes in `setup()` and returns a driver; the runner
 * asks the driver for one measurement per round, interleaving all cases round by round, and finally stops
 * it. Every figure is a per-measurement number in the case's unit; rounds give a distribution.
 */
import type { Measurement } from './worker.js';

/** Units of the figures: round-trip time in microseconds, messages per second, bytes per second. */
export type Unit = 'us' | 'msg/s' | 'B/s';

/** What a case's setup gets from the runner. */
export interface CaseContext {
  /** Repo root (cwd of every child). */
  root: string;
  /** A temp dir of this run (removed at the end). */
  tmp: string;
  /** Aborted when the run is interrupted. */
  signal: AbortSignal;
  /** Shared fixtures, started on first use and stopped by the runner at the end (the dvs cluster). */
  fixture<T>(name: string, start: () => Promise<{ value: T; stop: () => Promise<void> }>): Promise<T>;
  /** Progress line on stderr. */
  log(msg: string): void;
  /** A caveat about this run (e.g. a stale build), printed with the results and kept in the JSON. */
  note(msg: string): void;
}

/** The measuring end of a started case. */
export interface Driver {
  /** One measurement of `work` units (iterations, messages or bytes, as the case defines). */
  run(work: number, timeoutMs: number): Promise<Measurement>;
  /** Stop every process the case started (by PID). Never throws. */
  stop(): Promise<void>;
}

/** A benchmark case. */
export interface BenchCase {
  /** Dotted name, e.g. `raw.uds.rtt`; `--only` matches names and name prefixes. */
  name: string;
  group: 'baseline' | 'dvs' | 'peer' | 'thesis';
  unit: Unit;
  /** One line for the docs and the JSON. */
  what: string;
  /** Work of the first calibration run; the runner rescales it so one measurement takes the target time. */
  initialWork: number;
  /**
   * Fixed work per measurement instead of calibration (one warm-up run at that size): for comparisons
   * that must use the same count everywhere, as the thesis' F1 did.
   */
  fixedWork?: { full: number; quick: number };
  setup(ctx: CaseContext): Promise<Driver>;
}

/** Thrown by a setup that cannot run here (dvs not built, peer not installed): the case is skipped. */
export class SkipError extends Error {
  override name = 'SkipError';
}

/** Driver over one driving child plus helper children (servers), stopped driver first. */
export function driverOf(
  driver: { run(work: number, timeoutMs: number): Promise<Measurement> },
  stops: Array<() => Promise<void>>,
): Driver {
  return {
    run: (work, timeoutMs) => driver.run(work, timeoutMs),
    stop: async () => {
      for (const s of stops) await s().catch(() => {});
    },
  };
}
