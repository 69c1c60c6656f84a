/**
 * The driving end of a dvs case (see ./server.ts for the other end). One run:
 *
 * - `--role sendrec`: `work` sendrec round trips of 64 B to `--peer` (mean µs; p50/p99 in extra);
 * - `--role post`: posts START, then `work` DATA messages of 64 B without awaiting each (only every
 *   {@link CHUNK}-th post is awaited, which waits for credit when the window is full), then `flush()`, and
 *   waits for the receiver's DONE; messages per second from the first post to DONE;
 * - `--role vcopy`: `work` copies of 1 MiB from the peer's grant into ours (bytes per second).
 *
 * `--socket S --dc NAME --ep N --peer P [--size BYTES]`. The first call to the peer is retried for a few seconds, since a
 * remote endpoint becomes known to this node shortly after it binds.
 */
import { connect, type Dvk, DvsError } from '../../src/sdk/index.js';
import { arg, args, latencySummary, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';
import { MSG_BYTES, T_DATA, T_DONE, T_GRANT, T_PING, T_START, VCOPY_BYTES } from './proto.js';

const CHUNK = 1024;
const CALL_TIMEOUT = 10_000;

const a = args();
const role = arg(a, 'role');
const peer = Number(arg(a, 'peer'));
const dvk: Dvk = await connect({
  socket: arg(a, 'socket'),
  dc: arg(a, 'dc'),
  endpoint: Number(arg(a, 'ep')),
  timeout: 10_000,
});
/** Payload bytes of sendrec and post messages (`--size`, default 64; the thesis case uses 28). */
const size = Number(a.get('size') ?? MSG_BYTES);
const payload = new Uint8Array(size).fill(9);

/** First contact: retry while the peer is not yet known here. */
async function firstCall<T>(f: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (Date.now() > deadline || !(e instanceof DvsError)) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

let run: (work: number) => ReturnType<Parameters<typeof serveRuns>[0]>;

if (role === 'sendrec') {
  const echo = await firstCall(() => dvk.sendrec(peer, { type: T_PING, payload }, { timeout: 1000 }));
  if (echo.payload.length !== size || echo.payload[0] !== 9) throw new Error('sendrec check: bad echo');
  let samples = new Float64Array(0);
  run = async (work) => {
    if (samples.length < work) samples = new Float64Array(work);
    const t0 = nowNs();
    let prev = t0;
    for (let i = 0; i < work; i++) {
      await dvk.sendrec(peer, { type: T_PING, payload }, { timeout: CALL_TIMEOUT });
      const t = nowNs();
      samples[i] = Number(t - prev);
      prev = t;
    }
    return latencySummary(samples, work, msSince(t0));
  };
} else if (role === 'post') {
  let failure: unknown;
  const noteFailure = (e: unknown) => {
    failure ??= e;
  };
  run = async (work) => {
    const start = new Uint8Array(4);
    new DataView(start.buffer).setUint32(0, work, true);
    const t0 = nowNs();
    await dvk.post(peer, { type: T_START, payload: start });
    for (let i = 0; i < work; i++) {
      const p = dvk.post(peer, { type: T_DATA, payload });
      if (i % CHUNK === CHUNK - 1) await p;
      else p.catch(noteFailure);
    }
    await dvk.flush({ timeout: CALL_TIMEOUT * 6 });
    const done = await dvk.receive(peer, { timeout: CALL_TIMEOUT * 6 });
    const ms = msSince(t0);
    if (failure !== undefined) throw failure;
    if (done.type !== T_DONE) throw new Error(`expected DONE, got type ${done.type}`);
    return { value: work / (ms / 1000), elapsedMs: ms };
  };
} else if (role === 'vcopy') {
  const buf = new Uint8Array(VCOPY_BYTES);
  const mine = await dvk.grant(buf, 'rw');
  const r = await firstCall(() => dvk.sendrec(peer, { type: T_GRANT }, { timeout: 1000 }));
  const theirs = new DataView(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength).getUint32(
    0,
    true,
  );
  const src = { ep: peer, grant: theirs, offset: 0 };
  const dst = { ep: dvk.endpoint, grant: mine.id, offset: 0 };
  // Check once that a copy really lands (the server's buffer holds i & 0xff), so no run times a no-op.
  await dvk.vcopy(src, dst, VCOPY_BYTES, { timeout: CALL_TIMEOUT });
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== (i & 0xff)) throw new Error(`vcopy check: byte ${i} is ${buf[i]}, expected ${i & 0xff}`);
  }
  run = async (work) => {
    const t0 = nowNs();
    for (let i = 0; i < work; i++) await dvk.vcopy(src, dst, VCOPY_BYTES, { timeout: CALL_TIMEOUT });
    const ms = msSince(t0);
    return { value: (work * VCOPY_BYTES) / (ms / 1000), elapsedMs: ms };
  };
} else {
  throw new Error(`unknown --role ${role}`);
}

ready({ node: dvk.node });
serveRuns(
  (work) => run(work),
  () => dvk.close(),
);
