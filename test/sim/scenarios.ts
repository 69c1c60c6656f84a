/**
 * Named scenarios shared by the simulation tests, and the seed selection rules:
 * `SEED=n` runs only seed n (to replay a failure), `SIM_SEEDS=n` runs n seeds per scenario.
 */
import type { SimConfig } from './world.js';

export type Scenario = Omit<Partial<SimConfig>, 'seed' | 'makeKernel'>;

export const SCENARIOS = {
  /** No faults at all: everything must be delivered and succeed (liveness). */
  faultFree: {},
  /** Cancels (timeouts) and process exits, perfect links. */
  churn: { cancels: true, exits: true },
  /** Connection drops and reconnects (sessions resume), with cancels: zero loss expected. */
  drops: { drops: true, cancels: true },
  /** Drops, long outages (declared dead), node crashes and restarts, cancels, exits. */
  crashes: { drops: true, longOutages: true, crashes: true, cancels: true, exits: true },
  /** Everything at once, with more processes, a post window of 2 and quick declarations of death. */
  heavy: {
    drops: true,
    longOutages: true,
    crashes: true,
    cancels: true,
    exits: true,
    actorsPerNode: { sinks: 2, servers: 1, senders: 2, notifiers: 1 },
    postWindow: 2,
    workloadMs: 500,
    deadAfterMs: 60,
  },
} satisfies Record<string, Scenario>;

/** Seeds to run: [SEED] if set, else 1..(SIM_SEEDS or `dflt`). */
export function seeds(dflt: number): number[] {
  const one = process.env.SEED;
  if (one !== undefined && one !== '') return [Number(one)];
  const n = Number(process.env.SIM_SEEDS ?? dflt);
  return Array.from({ length: Number.isFinite(n) && n > 0 ? n : dflt }, (_, i) => i + 1);
}

/** Number of nodes for a seed: 3..5, varied so every size is covered. */
export function nodesFor(seed: number): number {
  return 3 + (seed % 3);
}
