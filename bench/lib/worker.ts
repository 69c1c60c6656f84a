/**
 * The child side of the bench process protocol. Every process a case starts is a Node script that speaks
 * JSON lines, each prefixed with {@link MARK} so stray output (a library warning) cannot be mistaken for a
 * result:
 *
 * - child -> runner, once: `@bench {"ready":true, ...info}` when it is listening / connected;
 * - runner -> child (stdin): `{"id":1,"work":N}` = run one measurement of size N;
 * - child -> runner: `@bench {"id":1,"value":V,"elapsedMs":T,"extra":{...}}` or `@bench {"id":1,"error":"..."}`.
 *
 * Servers (echo, sink, relay daemon) only send the ready line; drivers (clients) also answer runs.
 * A child exits when its stdin closes, so a runner that dies cannot leave it behind for long.
 */
import { createInterface } from 'node:readline';

/** Prefix of every protocol line a child writes on stdout. */
export const MARK = '@bench ';

/** What one measurement returns: the case's figure in its unit, and how long the work took. */
export interface Measurement {
  value: number;
  elapsedMs: number;
  /** Secondary figures kept in the JSON (p50, p99, ...). */
  extra?: Record<string, number>;
}

/** Write one protocol line. */
export function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${MARK}${JSON.stringify(obj)}\n`);
}

/** Announce readiness (with e.g. the bound port). */
export function ready(info: Record<string, unknown> = {}): void {
  emit({ ready: true, ...info });
}

/**
 * Serve runs from stdin until it closes, one at a time, then call `onClose` (and exit).
 * `run(work)` performs `work` units (iterations, messages, bytes: the case decides) and measures them.
 */
export function serveRuns(run: (work: number) => Promise<Measurement>, onClose?: () => Promise<void>): void {
  const rl = createInterface({ input: process.stdin });
  let chain: Promise<void> = Promise.resolve();
  rl.on('line', (line) => {
    let req: { id: number; work: number };
    try {
      req = JSON.parse(line) as { id: number; work: number };
    } catch {
      return;
    }
    chain = chain.then(async () => {
      try {
        const m = await run(req.work);
        emit({ id: req.id, ...m });
      } catch (e) {
        emit({ id: req.id, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
      }
    });
  });
  rl.on('close', () => {
    void chain.then(async () => {
      await onClose?.().catch(() => {});
      process.exit(0);
    });
  });
}

/** Exit when stdin closes (for servers that never answer runs). */
export function exitWithStdin(onClose?: () => Promise<void> | void): void {
  process.stdin.resume();
  process.stdin.on('end', () => {
    void Promise.resolve(onClose?.())
      .catch(() => {})
      .finally(() => process.exit(0));
  });
}

/** Nanoseconds now, monotonic. */
export function nowNs(): bigint {
  return process.hrtime.bigint();
}

/** Milliseconds since `t0` (from {@link nowNs}). */
export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Summarise per-iteration latencies (ns) of one measurement: the value is the mean in µs (total time over
 * iterations, the figure a throughput-minded reader expects), p50 and p99 go to `extra`.
 */
export function latencySummary(samplesNs: Float64Array, count: number, elapsedMs: number): Measurement {
  const s = Array.from(samplesNs.subarray(0, count)).sort((a, b) => a - b);
  const q = (p: number) => (s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0) / 1000;
  return { value: (elapsedMs * 1000) / count, elapsedMs, extra: { p50: q(0.5), p99: q(0.99) } };
}

/** Parse `--key value` pairs of a child's argv. */
export function args(): Map<string, string> {
  const m = new Map<string, string>();
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const k = a[i]!;
    if (k.startsWith('--')) m.set(k.slice(2), a[i + 1] ?? '');
    i++;
  }
  return m;
}

/** A required argument. */
export function arg(m: Map<string, string>, key: string): string {
  const v = m.get(key);
  if (v === undefined) throw new Error(`missing --${key}`);
  return v;
}
