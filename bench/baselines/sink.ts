/**
 * Raw byte sink for the stream and bulk baselines. Per connection and per run: the sender writes a u64 LE
 * byte count, then that many bytes; the sink only counts them (64 KiB-ish reads, as the kernel hands them
 * over) and answers one byte when all have arrived, which is when the sender stops its clock.
 * `--transport uds|tcp --path P`; reports `{ready, port}`.
 */
import net from 'node:net';
import { arg, args, exitWithStdin, ready } from '../lib/worker.js';
import { listen, transportOf } from './net.js';

const a = args();
const transport = transportOf(a.get('transport'));
const ACK = Buffer.from([1]);

const server = net.createServer((s) => {
  s.setNoDelay(true);
  const head = Buffer.alloc(8);
  let headHave = 0;
  let remaining = -1; // -1 = reading the count
  s.on('data', (chunk: Buffer) => {
    let pos = 0;
    while (pos < chunk.length) {
      if (remaining < 0) {
        const n = Math.min(8 - headHave, chunk.length - pos);
        chunk.copy(head, headHave, pos, pos + n);
        headHave += n;
        pos += n;
        if (headHave === 8) {
          remaining = Number(head.readBigUInt64LE(0));
          headHave = 0;
        }
        continue;
      }
      const n = Math.min(remaining, chunk.length - pos);
      remaining -= n;
      pos += n;
      if (remaining === 0) {
        remaining = -1;
        s.write(ACK);
      }
    }
  });
  s.on('error', () => s.destroy());
});
const port = await listen(server, transport, arg(a, 'path'));
ready({ port });
exitWithStdin(() => {
  server.close();
});
