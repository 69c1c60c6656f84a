/**
 * Peer systems (NATS, ZeroMQ, gRPC), for the DESIGN.md §12 targets "local sendrec <= 0.5x NATS
 * request-reply" and "post() >= 1.5x NATS publish". Each case looks for its peer first and reports itself
 * skipped, naming what is missing (`nats-server not installed`, `npm zeromq not installed`); otherwise it
 * starts the peer's server and a client pair, each in its own process, as the baselines do. The NATS cases
 * share one nats-server started by the bench on a free loopback port and killed by PID at the end.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { BenchCase, CaseContext, Driver, Unit } from '../lib/case.js';
import { driverOf, SkipError } from '../lib/case.js';
import { Child, killPid, trackPid } from '../lib/proc.js';

const DIR = 'bench/peers';
let seq = 0;

/** True when `bin` is an executable on PATH (Debian puts nats-server in /usr/sbin). */
function onPath(bin: string): boolean {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin'];
  return whichIn(bin, dirs) !== null;
}

function whichIn(bin: string, dirs: string[]): string | null {
  for (const d of dirs) {
    try {
      accessSync(join(d, bin), constants.X_OK);
      return join(d, bin);
    } catch {}
  }
  return null;
}

/** True when the npm package `pkg` resolves from the repo. */
function hasPackage(root: string, pkg: string): boolean {
  try {
    createRequire(join(root, 'package.json')).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/** Throw a skip naming what is missing. */
function need(ctx: CaseContext, bins: string[], pkgs: string[]): void {
  const missing = [
    ...bins.filter((b) => !onPath(b)).map((b) => `${b} not installed`),
    ...pkgs.filter((p) => !hasPackage(ctx.root, p)).map((p) => `npm ${p} not installed`),
  ];
  if (missing.length > 0) throw new SkipError(missing.join(', '));
}

/**
 * Start nats-server on 127.0.0.1 with a random port (`-p -1`), read the port from its log, and stop it by
 * PID. The log goes to stderr; only the startup lines are read.
 */
function startNatsServer(ctx: CaseContext): Promise<{ value: { port: number }; stop: () => Promise<void> }> {
  const bin =
    whichIn('nats-server', [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin']) ??
    'nats-server';
  const p = spawn(bin, ['-a', '127.0.0.1', '-p', '-1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const pid = p.pid;
  if (pid !== undefined) trackPid(pid);
  const stop = async () => {
    if (pid !== undefined) await killPid(pid);
  };
  return new Promise((resolve, reject) => {
    let port = 0;
    const tail: string[] = [];
    const timer = setTimeout(() => fail(new Error('nats-server: not ready after 10 s')), 10_000);
    const fail = (e: Error) => {
      clearTimeout(timer);
      void stop().then(() => reject(e));
    };
    p.on('error', (e) => fail(new Error(`nats-server: ${e.message}`)));
    p.on('exit', (code) => fail(new Error(`nats-server exited (${code}): ${tail.slice(-2).join(' | ')}`)));
    const rl = createInterface({ input: p.stderr });
    rl.on('line', (line) => {
      tail.push(line);
      const m = /Listening for client connections on [\d.]+:(\d+)/.exec(line);
      if (m) port = Number(m[1]);
      if (/Server is ready/.test(line) && port > 0) {
        clearTimeout(timer);
        p.removeAllListeners('exit');
        rl.close();
        // Keep draining stderr so a chatty server never blocks on a full pipe.
        p.stderr.resume();
        ctx.log(`nats-server pid ${pid} on 127.0.0.1:${port}`);
        resolve({ value: { port }, stop });
      }
    });
  });
}

/** Responder / far end first, then the driver; the driver is stopped first. */
async function pair(
  ctx: CaseContext,
  name: string,
  script: string,
  far: string[],
  driver: string[],
): Promise<Driver> {
  const srv = await Child.start(`${DIR}/${script}`, far, { cwd: ctx.root, label: `${name} server` });
  try {
    const cli = await Child.start(`${DIR}/${script}`, driver, { cwd: ctx.root, label: `${name} client` });
    return driverOf(cli, [() => cli.stop(), () => srv.stop()]);
  } catch (e) {
    await srv.stop();
    throw e;
  }
}

function natsCase(
  name: string,
  unit: Unit,
  what: string,
  roles: [string, string],
  initialWork: number,
): BenchCase {
  return {
    name,
    group: 'peer',
    unit,
    what,
    initialWork,
    async setup(ctx): Promise<Driver> {
      need(ctx, ['nats-server'], ['nats']);
      const { port } = await ctx.fixture('nats-server', () => startNatsServer(ctx));
      const common = ['--port', String(port), '--subject', `bench.${++seq}`];
      return pair(
        ctx,
        name,
        'nats-worker.ts',
        [...common, '--role', roles[0]],
        [...common, '--role', roles[1]],
      );
    },
  };
}

function zmqCase(
  name: string,
  unit: Unit,
  what: string,
  roles: [string, string],
  initialWork: number,
): BenchCase {
  return {
    name,
    group: 'peer',
    unit,
    what,
    initialWork,
    async setup(ctx): Promise<Driver> {
      need(ctx, [], ['zeromq']);
      const dir = join(ctx.tmp, `zmq-${++seq}`);
      mkdirSync(dir);
      return pair(
        ctx,
        name,
        'zmq-worker.ts',
        ['--dir', dir, '--role', roles[0]],
        ['--dir', dir, '--role', roles[1]],
      );
    },
  };
}

export const peerCases: BenchCase[] = [
  natsCase(
    'peer.nats.request',
    'us',
    'NATS request-reply RTT, 64 B (requester -> nats-server -> responder -> nats-server -> requester), loopback TCP',
    ['responder', 'requester'],
    500,
  ),
  natsCase(
    'peer.nats.publish',
    'msg/s',
    'NATS publish -> subscriber in another process, 64 B, flush() every 20 k, timed until the subscriber has all',
    ['subscriber', 'publisher'],
    50_000,
  ),
  zmqCase(
    'peer.zeromq.reqrep',
    'us',
    'ZeroMQ REQ/REP RTT over ipc://, 64 B (brokerless, 2 hops)',
    ['rep', 'req'],
    1000,
  ),
  zmqCase(
    'peer.zeromq.pushpull',
    'msg/s',
    'ZeroMQ PUSH -> PULL over ipc://, 64 B, await send() per message (v6 API), timed until the puller has all',
    ['pull', 'push'],
    20_000,
  ),
  {
    name: 'peer.grpc.unary',
    group: 'peer',
    unit: 'us',
    what: 'gRPC unary RTT (grpc-js, identity serializers) over a Unix socket, 64 B',
    initialWork: 300,
    async setup(ctx): Promise<Driver> {
      need(ctx, [], ['@grpc/grpc-js']);
      const path = join(ctx.tmp, `grpc-${++seq}.sock`);
      return pair(
        ctx,
        'peer.grpc.unary',
        'grpc-worker.ts',
        ['--path', path, '--role', 'server'],
        ['--path', path, '--role', 'client'],
      );
    },
  },
];
