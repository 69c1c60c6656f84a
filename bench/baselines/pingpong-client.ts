/**
 * Raw ping-pong client: writes 64 bytes, waits for the 64-byte echo, repeats. One run = `work` round trips;
 * the figure is the mean round-trip time in µs (p50 / p99 in extra).
 */
import { arg, args, latencySummary, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';
import { dial, transportOf } from './net.js';

const SIZE = 64;
const a = args();
const sock = await dial(transportOf(a.get('transport')), arg(a, 'path'), Number(a.get('port') ?? 0));
const ping = Buffer.alloc(SIZE, 7);

let got = 0;
let wake: (() => void) | null = null;
sock.on('data', (chunk: Buffer) => {
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
    sock.write(ping);
  }).then(() => {
    got -= SIZE;
  });
}

let samples = new Float64Array(0);
ready();
serveRuns(
  async (work) => {
    if (samples.length < work) samples = new Float64Array(work);
    const t0 = nowNs();
    let prev = t0;
    for (let i = 0; i < work; i++) {
      await roundTrip();
      const t = nowNs();
      samples[i] = Number(t - prev);
      prev = t;
    }
    return latencySummary(samples, work, msSince(t0));
  },
  async () => {
    sock.destroy();
  },
);
