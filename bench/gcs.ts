/**
 * Group communication benchmark (`npm run bench -- --only gcs`): agreed-order multicast throughput and
 * latency for a 3- and a 5-member group, and safe-delivery latency, one member per node on a local 5-node
 * cluster (`dvs up --nodes 5 --no-store`, loopback TCP links). Printed beside Spread's published figures
 * (reference/peers.md), which were measured on real networks with C daemons: context, not a like-for-like
 * comparison.
 *
 * Cases (the driving member runs on the highest node of the group, so every message crosses a link to the
 * sequencer, node 0, and comes back; the other members read everything and report it consumed):
 * - `gcs.agreed.N` msg/s: the driver multicasts `work` 64 B agreed messages (at most 512 not yet delivered back) and the
 *   clock stops when it has delivered the last of them itself (in order, so all of them);
 * - `gcs.agreed.lat.N` µs: one 64 B agreed multicast at a time, from the call to its delivery at the sender;
 * - `gcs.safe.lat.N` µs: the same with safe order (delivered once every node of the configuration holds it).
 *
 * This file is also the member process: `node --import tsx bench/gcs.ts --socket S --dc D --ep E --group G
 * --members N --role driver|reader`.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBuilt, exec } from './dvs/cluster.js';
import type { BenchCase, CaseContext, Driver } from './lib/case.js';
import { driverOf, SkipError } from './lib/case.js';
import { Child, killPid, pidAlive, profileFlags, trackPid } from './lib/proc.js';
import type { CaseResult } from './lib/report.js';

const NODES = 5;
const DC = 'gbench';
const MSG_BYTES = 64;
/** Messages the throughput driver may have sent and not yet delivered to itself. */
const WINDOW = 512;

interface GcsCluster {
  sockets: string[];
}

/** The shared 5-node cluster of the gcs cases (its own: the dvs cases' cluster has 2 nodes). */
async function startGcsCluster(ctx: CaseContext): Promise<{ value: GcsCluster; stop: () => Promise<void> }> {
  await ensureBuilt(ctx.root, ctx.log, ctx.note);
  const dir = join(ctx.tmp, 'gcs-cluster');
  const cli = (argv: string[]) =>
    exec(
      process.execPath,
      [...(argv[0] === 'up' ? profileFlags() : []), join(ctx.root, 'bin/dvs.js'), ...argv, '--dir', dir],
      ctx.root,
      60_000,
    );
  const pids: number[] = [];
  const stop = async () => {
    await cli(['down']);
    for (const pid of pids) if (pidAlive(pid)) await killPid(pid);
  };
  ctx.log(`starting a ${NODES}-node dvs cluster for the gcs cases`);
  const up = await cli(['up', '--detach', '--nodes', String(NODES), '--no-store']);
  const file = await readFile(join(dir, 'cluster.json'), 'utf8').catch(() => null);
  const nodes =
    file === null
      ? []
      : (JSON.parse(file) as { nodes: { id: number; pid?: number; socket: string }[] }).nodes;
  for (const n of nodes)
    if (typeof n.pid === 'number') {
      pids.push(n.pid);
      trackPid(n.pid);
    }
  try {
    if (up.code !== 0 || nodes.length < NODES)
      throw new SkipError(`dvs up failed: ${up.out.trim().slice(-200)}`);
    const dc = await cli(['dc', 'create', DC]);
    if (dc.code !== 0) throw new SkipError(`dvs dc create failed: ${dc.out.trim().slice(-200)}`);
    const sockets: string[] = [];
    for (const n of nodes) sockets[n.id] = n.socket;
    return { value: { sockets }, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

type Kind = 'agreed' | 'agreed.lat' | 'safe.lat';

function gcsCase(kind: Kind, members: number, epBase: number): BenchCase {
  const name = `gcs.${kind}.${members}`;
  const what = {
    agreed: `agreed multicast throughput, 64 B, ${members} members on ${members} nodes, at the sender`,
    'agreed.lat': `agreed multicast to own delivery, 64 B, ${members} members on ${members} nodes`,
    'safe.lat': `safe multicast to own delivery, 64 B, ${members} members on ${members} nodes`,
  }[kind];
  return {
    name,
    group: 'dvs',
    unit: kind === 'agreed' ? 'msg/s' : 'us',
    what,
    initialWork: kind === 'agreed' ? 5000 : 200,
    async setup(ctx): Promise<Driver> {
      const c = await ctx.fixture('gcs-cluster', () => startGcsCluster(ctx));
      const group = `bench-${kind.replace('.', '-')}-${members}`;
      const common = ['--dc', DC, '--group', group, '--members', String(members)];
      const readers: Child[] = [];
      const stops: Array<() => Promise<void>> = [];
      try {
        for (let node = 0; node < members - 1; node++) {
          const r = await Child.start(
            'bench/gcs.ts',
            ['--socket', c.sockets[node]!, '--ep', String(epBase + node), '--role', 'reader', ...common],
            { cwd: ctx.root, label: `${name} reader ${node}`, readyTimeout: 30_000 },
          );
          readers.push(r);
        }
        const order = kind === 'safe.lat' ? 'safe' : 'agreed';
        const mode = kind === 'agreed' ? 'throughput' : 'latency';
        const drv = await Child.start(
          'bench/gcs.ts',
          [
            '--socket',
            c.sockets[members - 1]!,
            '--ep',
            String(epBase + members - 1),
            '--role',
            'driver',
            '--order',
            order,
            '--mode',
            mode,
            ...common,
          ],
          { cwd: ctx.root, label: `${name} driver`, readyTimeout: 30_000 },
        );
        stops.push(() => drv.stop());
        for (const r of readers) stops.push(() => r.stop());
        return driverOf(drv, stops);
      } catch (e) {
        for (const r of readers) await r.stop();
        throw e;
      }
    },
  };
}

export const gcsCases: BenchCase[] = [
  gcsCase('agreed', 3, 300),
  gcsCase('agreed', 5, 310),
  gcsCase('agreed.lat', 3, 320),
  gcsCase('agreed.lat', 5, 330),
  gcsCase('safe.lat', 3, 340),
  gcsCase('safe.lat', 5, 350),
];

/**
 * Spread's published figures (reference/peers.md, "Headline performance figures", sources S1, S2, S4),
 * printed beside ours. None was measured on this machine; units as published.
 */
export const SPREAD_FIGURES = [
  {
    figure: 'throughput, users on spread-users (spflood)',
    value: '35,000-101,000 msg/s',
    source: 'S2 (2010)',
    ours: 'gcs.agreed.3 / gcs.agreed.5',
  },
  {
    figure: 'publisher rate, one daemon',
    value: '~122,000 msg/s',
    source: 'S2 (2007)',
    ours: 'gcs.agreed.3',
  },
  {
    figure: 'Accelerated Ring throughput',
    value: 'saturates 1 GbE; ~6 Gbps on 10 GbE',
    source: 'S1 (2016)',
    ours: '(no bandwidth case: 64 B messages)',
  },
  {
    figure: 'latency, 10 KB messages, 100 Mb LAN, ring protocol',
    value: '~2.8 ms',
    source: 'S4 (2004)',
    ours: 'gcs.agreed.lat.3 / .5 (64 B, loopback)',
  },
  {
    figure: 'Accelerated Ring latency vs ring protocol',
    value: '20-45% lower',
    source: 'S1',
    ours: '-',
  },
  {
    figure: 'safe delivery latency',
    value: 'not in our sources',
    source: '-',
    ours: 'gcs.safe.lat.3 / .5',
  },
];

/** The gcs results next to Spread's published figures (empty when no gcs case ran). */
export function spreadTable(results: CaseResult[]): string {
  const ours = results.filter((r) => r.name.startsWith('gcs.'));
  if (ours.length === 0) return '';
  const fmt = (r: CaseResult) => {
    const m = r.summary?.median;
    if (m === undefined || r.status !== 'ok') return `${r.status}${r.reason ? ` (${r.reason})` : ''}`;
    return r.unit === 'us' ? `${(m / 1000).toFixed(3)} ms` : `${Math.round(m).toLocaleString('en-US')} msg/s`;
  };
  const lines = ['GCS (dvs, loopback daemons, this machine) beside Spread (published, other hardware):', ''];
  for (const r of ours) lines.push(`  dvs   ${r.name.padEnd(18)} ${fmt(r).padEnd(22)} ${r.what}`);
  lines.push('');
  for (const f of SPREAD_FIGURES)
    lines.push(`  Spread ${f.figure.padEnd(52)} ${f.value.padEnd(36)} ${f.source.padEnd(10)} vs ${f.ours}`);
  lines.push(
    '',
    '  Spread ran as C daemons on real LANs (100 Mb to 10 GbE); dvs runs Node daemons over loopback TCP on',
    '  2 shared cores with all members on one host: read the comparison as orders of magnitude only.',
  );
  return lines.join('\n');
}

// ------------------------------------------------------------------------------------------- member process

async function member(): Promise<void> {
  const { arg, args, latencySummary, msSince, nowNs, ready, serveRuns } = await import('./lib/worker.js');
  const { connect } = await import('../src/sdk/index.js');
  const a = args();
  const members = Number(arg(a, 'members'));
  const dvk = await connect({
    socket: arg(a, 'socket'),
    dc: arg(a, 'dc'),
    endpoint: Number(arg(a, 'ep')),
    timeout: 10_000,
  });
  const g = await dvk.join(arg(a, 'group'), { timeout: 20_000 });
  const self = { node: dvk.node, ep: dvk.endpoint };
  if (arg(a, 'role') === 'reader') {
    ready({ node: dvk.node });
    (async () => {
      for await (const _ of g) {
        // read and drop: consumption is reported by the SDK
      }
    })().catch(() => {});
    serveRuns(
      async () => ({ value: 0, elapsedMs: 0 }),
      () => dvk.close(),
    );
    return;
  }
  const order = arg(a, 'order') as 'agreed' | 'safe';
  const mode = arg(a, 'mode');
  // Wait for the full group, then read everything; a counter of own messages delivered wakes the runs.
  let own = 0;
  const hooks: { wake: (() => void) | null; full: (() => void) | null } = { wake: null, full: null };
  const fullP = new Promise<void>((r) => {
    hooks.full = r;
  });
  (async () => {
    for await (const ev of g) {
      if (ev.kind === 'view') {
        if (ev.view.members.length >= members) hooks.full?.();
      } else if (ev.sender.node === self.node && ev.sender.ep === self.ep) {
        own++;
        hooks.wake?.();
      }
    }
  })().catch(() => {});
  await fullP;
  const payload = new Uint8Array(MSG_BYTES).fill(7);
  const until = (n: number) =>
    new Promise<void>((r) => {
      if (own >= n) return r();
      hooks.wake = () => {
        if (own >= n) {
          hooks.wake = null;
          r();
        }
      };
    });
  ready({ node: dvk.node });
  serveRuns(
    async (work) => {
      if (mode === 'throughput') {
        const base = own;
        const t0 = nowNs();
        const inflight = new Set<Promise<void>>();
        for (let i = 0; i < work; i++) {
          // Bounded: calls awaiting the daemon's answer, and messages sent but not yet read back here. The
          // window stays under the daemons' flow-control bound (1024 unread deliveries per member) so that
          // neither this member nor a reader keeping pace with it is expelled.
          while (inflight.size >= 256) await Promise.race(inflight);
          if (i - (own - base) >= WINDOW) await until(base + i - WINDOW / 2);
          const p: Promise<void> = g
            .multicast(payload, { order, timeout: 30_000 })
            .finally(() => inflight.delete(p));
          inflight.add(p);
        }
        await Promise.all(inflight);
        await until(base + work);
        const ms = msSince(t0);
        return { value: work / (ms / 1000), elapsedMs: ms };
      }
      const samples = new Float64Array(work);
      const t0 = nowNs();
      let prev = t0;
      for (let i = 0; i < work; i++) {
        const target = own + 1;
        await g.multicast(payload, { order, timeout: 10_000 });
        await until(target);
        const t = nowNs();
        samples[i] = Number(t - prev);
        prev = t;
      }
      return latencySummary(samples, work, msSince(t0));
    },
    () => dvk.close(),
  );
}

if (resolve(process.argv[1] ?? '') === fileURLToPath(import.meta.url)) await member();
