/** Order statistics of the per-round figures, and per-round paired ratios. */

/** Median, min and max of a sample (NaN entries dropped); null when nothing is left. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function summarize(values: ReadonlyArray<number | null>): Summary | null {
  const v = values.filter((x): x is number => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

/**
 * Ratios a[r] / b[r] for every round r where both cases have a figure. Pairing by round cancels most of
 * the machine's drift: both sides of a ratio ran within seconds of each other.
 */
export function pairedRatios(a: ReadonlyArray<number | null>, b: ReadonlyArray<number | null>): number[] {
  const out: number[] = [];
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    if (x != null && y != null && y !== 0 && Number.isFinite(x) && Number.isFinite(y)) out.push(x / y);
  }
  return out;
}
