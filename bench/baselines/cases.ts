/**
 * The raw Node baselines, measured in the same run as dvs so every dvs figure has a same-moment floor:
 * ping-pong RTT, streaming and bulk over Unix sockets and TCP, and a minimal relay daemon.
 */
import { join } from 'node:path';
import type { BenchCase, CaseContext, Driver } from '../lib/case.js';
import { driverOf } from '../lib/case.js';
import { Child } from '../lib/proc.js';
import type { Transport } from './net.js';

const DIR = 'bench/baselines';
let seq = 0;

/** A fresh socket path in the run's temp dir. */
function sockPath(ctx: CaseContext, tag: string): string {
  return join(ctx.tmp, `${tag}-${++seq}.sock`);
}

function start(ctx: CaseContext, script: string, argv: string[], label: string): Promise<Child> {
  return Child.start(`${DIR}/${script}`, argv, { cwd: ctx.root, label });
}

/** Server + driving client; the client is stopped first so the server sees a clean close. */
async function pair(
  ctx: CaseContext,
  server: string,
  client: string,
  transport: Transport,
  extra: string[],
  name: string,
): Promise<Driver> {
  const path = sockPath(ctx, name);
  const srv = await start(ctx, server, ['--transport', transport, '--path', path], `${name} server`);
  try {
    const port = String(srv.info.port ?? 0);
    const cli = await start(
      ctx,
      client,
      ['--transport', transport, '--path', path, '--port', port, ...extra],
      `${name} client`,
    );
    return driverOf(cli, [() => cli.stop(), () => srv.stop()]);
  } catch (e) {
    await srv.stop();
    throw e;
  }
}

function rtt(transport: Transport): BenchCase {
  const name = `raw.${transport}.rtt`;
  return {
    name,
    group: 'baseline',
    unit: 'us',
    what: `Node ping-pong round trip, 64 B, over ${transport === 'uds' ? 'a Unix socket' : 'loopback TCP'}; echo server in a second process`,
    initialWork: 2000,
    setup: (ctx) => pair(ctx, 'echo-server.ts', 'pingpong-client.ts', transport, [], name),
  };
}

function stream(transport: Transport): BenchCase {
  const name = `raw.${transport}.stream`;
  return {
    name,
    group: 'baseline',
    unit: 'msg/s',
    what: `Node one-way stream of 64 B messages, 256 per write, over ${transport === 'uds' ? 'a Unix socket' : 'loopback TCP'}; byte-counting sink in a second process`,
    initialWork: 200_000,
    setup: (ctx) => pair(ctx, 'sink.ts', 'stream-client.ts', transport, ['--mode', 'stream'], name),
  };
}

function bulk(transport: Transport): BenchCase {
  const name = `raw.${transport}.bulk`;
  return {
    name,
    group: 'baseline',
    unit: 'B/s',
    what: `Node bulk transfer in 1 MiB writes over ${transport === 'uds' ? 'a Unix socket' : 'loopback TCP'}; sink in a second process`,
    initialWork: 64,
    setup: (ctx) => pair(ctx, 'sink.ts', 'stream-client.ts', transport, ['--mode', 'bulk'], name),
  };
}

/** Relay daemon + the far endpoint (`echo` or `sink`) + the driving endpoint A. */
async function relay(
  ctx: CaseContext,
  name: string,
  far: 'echo' | 'sink',
  role: 'rtt' | 'stream',
): Promise<Driver> {
  const path = sockPath(ctx, name);
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const s of stops.reverse()) await s().catch(() => {});
  };
  try {
    const d = await start(ctx, 'relay-daemon.ts', ['--path', path], `${name} daemon`);
    stops.push(() => d.stop());
    const b = await start(
      ctx,
      'relay-endpoint.ts',
      ['--path', path, '--ep', '2', '--role', far],
      `${name} ${far}`,
    );
    stops.push(() => b.stop());
    const a = await start(
      ctx,
      'relay-endpoint.ts',
      ['--path', path, '--ep', '1', '--role', role, '--peer', '2'],
      `${name} driver`,
    );
    stops.push(() => a.stop());
    return driverOf(a, [stopAll]);
  } catch (e) {
    await stopAll();
    throw e;
  }
}

export const baselineCases: BenchCase[] = [
  rtt('uds'),
  rtt('tcp'),
  stream('uds'),
  stream('tcp'),
  bulk('uds'),
  bulk('tcp'),
  {
    name: 'relay.uds.rtt',
    group: 'baseline',
    unit: 'us',
    what: 'Minimal Node relay daemon: A -> daemon -> echo B -> daemon -> A, 64 B payload in dvs-shaped frames (u32 LE length + 20-byte header), Unix sockets, 3 processes',
    initialWork: 2000,
    setup: (ctx) => relay(ctx, 'relay.uds.rtt', 'echo', 'rtt'),
  },
  {
    name: 'relay.uds.stream',
    group: 'baseline',
    unit: 'msg/s',
    what: 'Minimal Node relay daemon, one-way: A sends 64 B frames 256 per write, the daemon routes frame by frame, B counts',
    initialWork: 100_000,
    setup: (ctx) => relay(ctx, 'relay.uds.stream', 'sink', 'stream'),
  },
];
