/**
 * A ZeroMQ process of the peer cases (npm `zeromq` v6, libzmq 4.3), over ipc:// endpoints in the run's
 * temp dir (Unix sockets, like dvs's local path). `--dir D --role R`:
 *
 * - `rep`: binds REP at `D/rr.ipc` and answers every request with its payload;
 * - `req`: driver; one run = `work` REQ/REP round trips of 64 B (mean µs; p50/p99 in extra);
 * - `pull`: binds PULL at `D/data.ipc` (the data) and PUSH at `D/done.ipc` (its answer); a 4-byte START
 *   (u32 LE n) opens a run, and after n 64-byte messages it pushes DONE;
 * - `push`: driver; one run = START + `work` messages of 64 B, each `await send()` (the v6 API allows one
 *   send in flight per socket), timed until DONE (messages per second).
 *
 * Brokerless: 2 hops per round trip (dvs and NATS make 4, through a daemon or a server).
 */
import { join } from 'node:path';
import { Pull, Push, Reply, Request } from 'zeromq';
import { arg, args, latencySummary, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';

const MSG = 64;
const TIMEOUT = 10_000;

const a = args();
const role = arg(a, 'role');
const dir = arg(a, 'dir');
const at = (name: string) => `ipc://${join(dir, name)}`;
const payload = Buffer.alloc(MSG, 9);

/** Close the sockets and exit when stdin closes (servers). */
function serveUntilStdinEnds(close: () => void): void {
  process.stdin.resume();
  process.stdin.on('end', () => {
    close();
    process.exit(0);
  });
}

if (role === 'rep') {
  const rep = new Reply();
  await rep.bind(at('rr.ipc'));
  ready();
  serveUntilStdinEnds(() => rep.close());
  for await (const [msg] of rep) await rep.send(msg ?? Buffer.alloc(0));
} else if (role === 'pull') {
  const pull = new Pull();
  const done = new Push();
  await pull.bind(at('data.ipc'));
  await done.bind(at('done.ipc'));
  ready();
  serveUntilStdinEnds(() => {
    pull.close();
    done.close();
  });
  let want = 0;
  let count = 0;
  for await (const [msg] of pull) {
    if (msg === undefined) continue;
    if (msg.length === 4) {
      want = msg.readUInt32LE(0);
      count = 0;
    } else if (++count === want) {
      await done.send('done');
    }
  }
} else if (role === 'req') {
  const req = new Request({ receiveTimeout: TIMEOUT, sendTimeout: TIMEOUT });
  req.connect(at('rr.ipc'));
  await req.send(payload);
  const [echo] = await req.receive();
  if (echo?.length !== MSG || echo[0] !== 9) throw new Error('zeromq reqrep check: bad echo');
  let samples = new Float64Array(0);
  ready();
  serveRuns(
    async (work) => {
      if (samples.length < work) samples = new Float64Array(work);
      const t0 = nowNs();
      let prev = t0;
      for (let i = 0; i < work; i++) {
        await req.send(payload);
        await req.receive();
        const t = nowNs();
        samples[i] = Number(t - prev);
        prev = t;
      }
      return latencySummary(samples, work, msSince(t0));
    },
    async () => req.close(),
  );
} else if (role === 'push') {
  const push = new Push({ sendTimeout: TIMEOUT });
  const done = new Pull({ receiveTimeout: TIMEOUT * 6 });
  push.connect(at('data.ipc'));
  done.connect(at('done.ipc'));
  ready();
  serveRuns(
    async (work) => {
      const start = Buffer.alloc(4);
      start.writeUInt32LE(work, 0);
      const t0 = nowNs();
      await push.send(start);
      for (let i = 0; i < work; i++) await push.send(payload);
      await done.receive();
      const ms = msSince(t0);
      return { value: work / (ms / 1000), elapsedMs: ms };
    },
    async () => {
      push.close();
      done.close();
    },
  );
} else {
  throw new Error(`unknown --role ${role}`);
}
