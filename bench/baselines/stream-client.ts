/**
 * Raw streaming sender for the stream and bulk baselines (the sink is ./sink.ts in another process).
 *
 * - `--mode stream`: `work` messages of 64 B, 256 of them copied into each 16 KiB write (what dvs's
 *   per-turn batching aims for); the figure is messages per second.
 * - `--mode bulk`: `work` MiB in 1 MiB writes; the figure is bytes per second.
 *
 * Writes respect backpressure (wait for 'drain'). The clock runs from the first write to the sink's ack.
 */
import { arg, args, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';
import { dial, drained, transportOf } from './net.js';

const MSG = 64;
const BATCH = 256;
const MIB = 1 << 20;

const a = args();
const mode = a.get('mode');
if (mode !== 'stream' && mode !== 'bulk') throw new Error('--mode must be stream or bulk');
const sock = await dial(transportOf(a.get('transport')), arg(a, 'path'), Number(a.get('port') ?? 0));
// Source bytes: one batch of distinct 64 B messages (stream) or one 1 MiB block (bulk).
const slab = Buffer.alloc(mode === 'stream' ? MSG * BATCH : MIB);
for (let i = 0; i < slab.length; i++) slab[i] = i & 0xff;

/**
 * A stream write: messages copied one by one into a fresh buffer, as a batching writer does (the socket may
 * still hold the previous buffer, so it cannot be reused).
 */
function batch(bytes: number): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  for (let pos = 0; pos < bytes; pos += MSG) slab.copy(out, pos, pos, pos + MSG);
  return out;
}

let acked: (() => void) | null = null;
sock.on('data', () => {
  const w = acked;
  acked = null;
  w?.();
});

ready();
serveRuns(
  async (work) => {
    const total = mode === 'stream' ? work * MSG : work * MIB;
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(total));
    const done = new Promise<void>((r) => {
      acked = r;
    });
    const t0 = nowNs();
    sock.write(head);
    let left = total;
    while (left > 0) {
      const n = Math.min(left, slab.length);
      const ok = sock.write(mode === 'stream' ? batch(n) : n === slab.length ? slab : slab.subarray(0, n));
      left -= n;
      if (!ok) await drained(sock);
    }
    await done;
    const ms = msSince(t0);
    return mode === 'stream'
      ? { value: work / (ms / 1000), elapsedMs: ms }
      : { value: total / (ms / 1000), elapsedMs: ms };
  },
  async () => {
    sock.destroy();
  },
);
