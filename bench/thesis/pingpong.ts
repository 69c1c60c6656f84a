/**
 * Driver of the thesis' local IPC comparison (reference/dvs-prototype.md §10.3 F1): ping-pong message
 * exchange with {@link SIZE}-byte messages, the size of the prototype's i386 `message`. One run = `work`
 * round trips; the figure is messages per second counting both directions (2 × work / time), as the
 * prototype's latency_client reports msg/s = 2 × loops / t.
 *
 * `--kind fd --in N --out N` (anonymous pipes on fds inherited from the shell), `--kind fifo --in PATH
 * --out PATH`, `--kind uds --path P`, `--kind tcp --port N`.
 */
import fs, { openSync } from 'node:fs';
import net from 'node:net';
import { dial } from '../baselines/net.js';
import { arg, args, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';

/** sizeof(message) of the prototype (m_source, m_type and a 28-byte union, i386). */
export const SIZE = 36;

const a = args();
const kind = arg(a, 'kind');
let input: net.Socket;
let output: net.Socket;
if (kind === 'fd' || kind === 'fifo') {
  const open = (v: string) => (kind === 'fd' ? Number(v) : openSync(v, fs.constants.O_RDWR));
  input = new net.Socket({ fd: open(arg(a, 'in')), readable: true, writable: false });
  output = new net.Socket({ fd: open(arg(a, 'out')), readable: false, writable: true });
} else if (kind === 'uds' || kind === 'tcp') {
  const s = await dial(kind, a.get('path') ?? '', Number(a.get('port') ?? 0));
  input = s;
  output = s;
} else {
  throw new Error(`unknown --kind ${kind}`);
}

const ping = Buffer.alloc(SIZE, 7);
let got = 0;
let wake: (() => void) | null = null;
input.on('data', (chunk: Buffer) => {
  got += chunk.length;
  if (got >= SIZE && wake) {
    const w = wake;
    wake = null;
    w();
  }
});

function roundTrip(): Promise<void> {
  return new Promise<void>((resolve) => {
    wake = resolve;
    output.write(ping);
  }).then(() => {
    got -= SIZE;
  });
}

// Check the echo once before reporting ready, so no run times a dead peer.
await roundTrip();
ready({ echoPid: Number(a.get('echo-pid') ?? 0) });
serveRuns(
  async (work) => {
    const t0 = nowNs();
    for (let i = 0; i < work; i++) await roundTrip();
    const ms = msSince(t0);
    return { value: (2 * work) / (ms / 1000), elapsedMs: ms };
  },
  async () => {
    input.destroy();
    output.destroy();
  },
);
