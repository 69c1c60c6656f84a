/**
 * The thesis' local IPC comparison reproduced (reference/dvs-prototype.md §10.3, figure F1): message
 * transfer rate of a ping-pong exchange over pipe, FIFO, Unix socket, TCP loopback and the system's own
 * IPC, here dvs sendrec on one node, all between two Node processes with the same message size and the
 * same count per measurement. Run with `npm run bench -- --thesis`.
 *
 * The prototype's figures are kept here ({@link THESIS_F1}) so the runner can print them beside ours.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { BenchCluster } from '../dvs/cluster.js';
import { startCluster } from '../dvs/cluster.js';
import type { BenchCase, CaseContext, Driver } from '../lib/case.js';
import { driverOf, SkipError } from '../lib/case.js';
import { Child, killPid, trackPid } from '../lib/proc.js';

/** Round trips per measurement: the same for every case (the thesis ran 3,000,000 per run, 10 runs). */
const WORK = { full: 50_000, quick: 10_000 };
/** dvs payload: the prototype's 36-byte message is m_source + m_type + a 28-byte body. */
const DVS_PAYLOAD = 28;

/** F1 of the thesis (pixel-read bars, msg/s), by our case name. */
export const THESIS_F1: Record<string, { ipc: string; cores4: number; cores1: number }> = {
  'thesis.pipe': { ipc: 'PIPE', cores4: 753_000, cores1: 861_000 },
  'thesis.fifo': { ipc: 'FIFO', cores4: 488_000, cores1: 1_106_000 },
  'thesis.uds': { ipc: 'UNIX socket', cores4: 753_000, cores1: 861_000 },
  'thesis.tcp': { ipc: 'TCP loopback', cores4: 61_000, cores1: 229_000 },
  'thesis.dvs': { ipc: 'M3-IPC (prototype) / dvs sendrec', cores4: 742_000, cores1: 924_000 },
};

let seq = 0;
const DRIVER = 'bench/thesis/pingpong.ts';

function raw(name: string, what: string, setup: (ctx: CaseContext) => Promise<Driver>): BenchCase {
  return { name, group: 'thesis', unit: 'msg/s', what, initialWork: WORK.quick, fixedWork: WORK, setup };
}

/**
 * Anonymous pipes: a shell `coproc` makes the two pipes, then execs the driver with them on fds 3 and 4.
 * They are reopened through /dev/fd: bash marks coproc fds close-on-exec and a `3<&N` dup keeps that flag.
 */
async function pipeCase(ctx: CaseContext): Promise<Driver> {
  const tsx = ['--import', 'tsx'];
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const node = q(process.execPath);
  const script = [
    `coproc ECHO { exec ${node} ${tsx.join(' ')} bench/thesis/echo.ts --in 0 --out 1; }`,
    `exec ${node} ${tsx.join(' ')} ${DRIVER} --kind fd --in 3 --out 4 --echo-pid "$ECHO_PID" 3</dev/fd/"\${ECHO[0]}" 4>/dev/fd/"\${ECHO[1]}"`,
  ].join('\n');
  const cli = await Child.start(DRIVER, [], {
    cwd: ctx.root,
    label: 'thesis.pipe',
    command: ['bash', '-c', script],
  });
  const echoPid = Number(cli.info.echoPid ?? 0);
  if (echoPid > 0) trackPid(echoPid);
  return driverOf(cli, [
    () => cli.stop(),
    async () => {
      if (echoPid > 0) await killPid(echoPid);
    },
  ]);
}

/** Two FIFOs in the run's temp dir, echo process first. */
async function fifoCase(ctx: CaseContext): Promise<Driver> {
  const n = ++seq;
  const req = join(ctx.tmp, `fifo-${n}-req`);
  const rep = join(ctx.tmp, `fifo-${n}-rep`);
  execFileSync('mkfifo', [req, rep]);
  const echo = await Child.start('bench/thesis/echo.ts', ['--in', req, '--out', rep], {
    cwd: ctx.root,
    label: 'thesis.fifo echo',
  });
  try {
    const cli = await Child.start(DRIVER, ['--kind', 'fifo', '--in', rep, '--out', req], {
      cwd: ctx.root,
      label: 'thesis.fifo',
    });
    return driverOf(cli, [() => cli.stop(), () => echo.stop()]);
  } catch (e) {
    await echo.stop();
    throw e;
  }
}

/** Unix socket or loopback TCP, against the baselines' echo server. */
async function socketCase(ctx: CaseContext, transport: 'uds' | 'tcp'): Promise<Driver> {
  const path = join(ctx.tmp, `thesis-${++seq}.sock`);
  const echo = await Child.start(
    'bench/baselines/echo-server.ts',
    ['--transport', transport, '--path', path],
    {
      cwd: ctx.root,
      label: `thesis.${transport} echo`,
    },
  );
  try {
    const cli = await Child.start(
      DRIVER,
      ['--kind', transport, '--path', path, '--port', String(echo.info.port ?? 0)],
      { cwd: ctx.root, label: `thesis.${transport}` },
    );
    return driverOf(cli, [() => cli.stop(), () => echo.stop()]);
  } catch (e) {
    await echo.stop();
    throw e;
  }
}

/** dvs sendrec on node 0 of the shared bench cluster; µs per round trip turned into 2 messages per trip. */
async function dvsCase(ctx: CaseContext): Promise<Driver> {
  const c = await ctx.fixture<BenchCluster>('dvs-cluster', () =>
    startCluster(ctx.root, ctx.tmp, ctx.log, ctx.note),
  );
  const ep = 120;
  const common = ['--dc', c.dc, '--role', 'sendrec'];
  const srv = await Child.start(
    'bench/dvs/server.ts',
    ['--socket', c.sockets[0]!, '--ep', String(ep), ...common],
    {
      cwd: ctx.root,
      label: 'thesis.dvs server',
    },
  );
  try {
    const cli = await Child.start(
      'bench/dvs/client.ts',
      [
        '--socket',
        c.sockets[0]!,
        '--ep',
        String(ep + 1),
        '--peer',
        String(ep),
        '--size',
        String(DVS_PAYLOAD),
        ...common,
      ],
      { cwd: ctx.root, label: 'thesis.dvs client', readyTimeout: 30_000 },
    );
    const stop = driverOf(cli, [() => cli.stop(), () => srv.stop()]).stop;
    return {
      async run(work, timeoutMs) {
        const m = await cli.run(work, timeoutMs);
        return { ...m, value: (2 * work) / (m.elapsedMs / 1000) };
      },
      stop,
    };
  } catch (e) {
    await srv.stop();
    throw e;
  }
}

export const thesisCases: BenchCase[] = [
  raw('thesis.pipe', 'ping-pong over two anonymous pipes (shell coproc), 36 B, msg/s both ways', pipeCase),
  raw('thesis.fifo', 'ping-pong over two FIFOs (mkfifo), 36 B, msg/s both ways', fifoCase),
  raw('thesis.uds', 'ping-pong over a Unix stream socket, 36 B, msg/s both ways', (ctx) =>
    socketCase(ctx, 'uds'),
  ),
  raw('thesis.tcp', 'ping-pong over loopback TCP (TCP_NODELAY), 36 B, msg/s both ways', (ctx) =>
    socketCase(ctx, 'tcp'),
  ),
  {
    name: 'thesis.dvs',
    group: 'thesis',
    unit: 'msg/s',
    what: 'dvs sendrec / replyReceive on one node, type + 28 B payload (the 36 B prototype message), msg/s both ways',
    initialWork: WORK.quick,
    fixedWork: WORK,
    // As in the dvs group, a dvs that cannot start (not built, mid-edit) is a skip, not a failed run.
    setup: (ctx) =>
      dvsCase(ctx).catch((e: unknown) => {
        throw e instanceof SkipError ? e : new SkipError(e instanceof Error ? e.message : String(e));
      }),
  },
];
