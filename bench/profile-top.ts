/**
 * Summarise V8 CPU profiles (`node --cpu-prof`): for each file, the process's main script, how much of
 * the profiled time was idle, and the top functions by self time. Used for the "Profiles" section of
 * docs/benchmarks.md:
 *
 * ```sh
 * node --import tsx bench/profile-top.ts [--top N] DIR_OR_FILE...
 * ```
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time (µs) per node id, from the sample deltas. */
function selfTimes(p: Profile): Map<number, number> {
  const t = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    t.set(id, (t.get(id) ?? 0) + (p.timeDeltas[i + 1] ?? 0));
  }
  return t;
}

/** A readable location: the file name under node_modules / src / bench, or node's own module. */
function where(url: string, line: number): string {
  if (url === '') return '';
  const m = /(node_modules\/.*|src\/.*|bench\/.*|node:.*)$/.exec(url);
  return `${m ? m[1] : url}:${line + 1}`;
}

function summarise(file: string, top: number): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const self = selfTimes(p);
  const byName = new Map<string, number>();
  let total = 0;
  let main = '';
  for (const n of p.nodes) {
    const us = self.get(n.id) ?? 0;
    total += us;
    const f = n.callFrame;
    // The entry script: the CLI (daemons, `dvs up`) or a bench child script.
    if (main === '' && /(cli\/main\.js|bin\/dvs\.js|bench\/\w+\/[\w-]+\.ts)$/.test(f.url))
      main = f.url.replace(/^file:\/\//, '');
    const key =
      f.url === ''
        ? `(${f.functionName || 'anonymous'})`
        : `${f.functionName || '(anonymous)'} ${where(f.url, f.lineNumber)}`;
    byName.set(key, (byName.get(key) ?? 0) + us);
  }
  const idle = byName.get('((idle))') ?? 0;
  const rows = [...byName.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  const pct = (us: number) => `${((100 * us) / Math.max(1, total)).toFixed(1).padStart(5)} %`;
  const lines = [
    `${file}`,
    `  first script: ${main || '?'}; ${(total / 1e6).toFixed(2)} s profiled, idle ${pct(idle).trim()}`,
    ...rows.map(([k, us]) => `  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`),
  ];
  return lines.join('\n');
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '15' } },
});
const files: string[] = [];
for (const p of positionals) {
  if (statSync(p).isDirectory()) {
    for (const f of readdirSync(p)) if (f.endsWith('.cpuprofile')) files.push(join(p, f));
  } else files.push(p);
}
for (const f of files.sort()) process.stdout.write(`${summarise(f, Number(values.top))}\n\n`);
