/**
 * A NATS client process of the peer cases (npm `nats`, the v2 client), connected to the bench's own
 * nats-server on 127.0.0.1. `--port P --subject S --role R`:
 *
 * - `responder`: answers every request on S with its own payload (the far end of `requester`);
 * - `requester`: driver; one run = `work` `nc.request()` round trips of 64 B (mean µs; p50/p99 in extra);
 * - `subscriber`: counts messages on S; a 4-byte START (u32 LE n) opens a run, and after n 64-byte DATA
 *   messages it publishes DONE on `S.done`;
 * - `publisher`: driver; one run = START + `work` publishes of 64 B on S, `flush()` every {@link FLUSH}
 *   (as perf-limits.md measured it: without it the client buffers without bound and the server cuts the
 *   subscriber off as a slow consumer), timed until DONE (messages per second).
 *
 * START and DATA share one subject, so NATS's per-publisher order puts START first.
 */
import { connect, type NatsConnection } from 'nats';
import { arg, args, latencySummary, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';

const MSG = 64;
const FLUSH = 20_000;
const TIMEOUT = 10_000;

const a = args();
const role = arg(a, 'role');
const subject = arg(a, 'subject');
const nc: NatsConnection = await connect({
  servers: `127.0.0.1:${arg(a, 'port')}`,
  name: `bench-${role}`,
  // The bench owns the server; a lost connection is a failed case, not something to ride out.
  reconnect: false,
  timeout: TIMEOUT,
});
const payload = new Uint8Array(MSG).fill(9);
const close = async () => {
  await nc.close().catch(() => {});
};

if (role === 'responder') {
  nc.subscribe(subject, { callback: (_err, m) => m.respond(m.data) });
  await nc.flush();
  ready();
  process.stdin.resume();
  process.stdin.on('end', () => void close().finally(() => process.exit(0)));
} else if (role === 'subscriber') {
  let want = 0;
  let count = 0;
  nc.subscribe(subject, {
    callback: (_err, m) => {
      if (m.data.length === 4) {
        want = new DataView(m.data.buffer, m.data.byteOffset, 4).getUint32(0, true);
        count = 0;
      } else if (++count === want) {
        nc.publish(`${subject}.done`, new Uint8Array(0));
      }
    },
  });
  await nc.flush();
  ready();
  process.stdin.resume();
  process.stdin.on('end', () => void close().finally(() => process.exit(0)));
} else if (role === 'requester') {
  // First contact: the responder subscribed before it reported ready, so one request must succeed.
  const echo = await nc.request(subject, payload, { timeout: TIMEOUT });
  if (echo.data.length !== MSG || echo.data[0] !== 9) throw new Error('nats request check: bad echo');
  let samples = new Float64Array(0);
  ready();
  serveRuns(async (work) => {
    if (samples.length < work) samples = new Float64Array(work);
    const t0 = nowNs();
    let prev = t0;
    for (let i = 0; i < work; i++) {
      await nc.request(subject, payload, { timeout: TIMEOUT });
      const t = nowNs();
      samples[i] = Number(t - prev);
      prev = t;
    }
    return latencySummary(samples, work, msSince(t0));
  }, close);
} else if (role === 'publisher') {
  let wake: (() => void) | null = null;
  nc.subscribe(`${subject}.done`, {
    callback: () => {
      const w = wake;
      wake = null;
      w?.();
    },
  });
  await nc.flush();
  ready();
  serveRuns(async (work) => {
    const done = new Promise<void>((r) => {
      wake = r;
    });
    const start = new Uint8Array(4);
    new DataView(start.buffer).setUint32(0, work, true);
    const t0 = nowNs();
    nc.publish(subject, start);
    for (let i = 0; i < work; i++) {
      nc.publish(subject, payload);
      if (i % FLUSH === FLUSH - 1) await nc.flush();
    }
    await nc.flush();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`no DONE after ${work} publishes`)), TIMEOUT * 6);
    });
    await Promise.race([done, timedOut]).finally(() => clearTimeout(timer));
    const ms = msSince(t0);
    return { value: work / (ms / 1000), elapsedMs: ms };
  }, close);
} else {
  throw new Error(`unknown --role ${role}`);
}
