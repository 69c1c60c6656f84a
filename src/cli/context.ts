/**
 * What every command gets: output, the resolved cluster directory, the path of the CLI entry point (to
 * start daemons with), and a way to wait for Ctrl-C.
 */
import type { Output } from './output.js';

export interface Ctx {
  out: Output;
  /** The cluster state directory (--dir, $DVS_HOME or the XDG default), absolute. */
  dir(): string;
  /** True if the user named the directory (--dir), so hints repeat it. */
  dirGiven(): boolean;
  /** Absolute path of the CLI main module (src/cli/main.ts under tsx, dist/src/cli/main.js when built). */
  mainPath: string;
}

/**
 * An AbortSignal that fires on SIGINT or SIGTERM, and a dispose() that removes the handlers. While it is
 * installed, Ctrl-C does not kill the CLI: the command gets the signal and cleans up.
 */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const on = () => ac.abort();
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return {
    signal: ac.signal,
    dispose() {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
    },
  };
}

/** `--dir DIR ` if the user gave one (for printed hints), else empty. */
export function dirHint(ctx: Ctx): string {
  return ctx.dirGiven() ? ` --dir ${ctx.dir()}` : '';
}
