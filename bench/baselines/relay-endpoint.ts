/**
 * An endpoint of the relay baseline, connected to ./relay-daemon.ts.
 *
 * - `--role echo`: answers every PING with a PING of the same payload to its source.
 * - `--role sink`: a START (aux = n) opens a run; it counts DATA frames and sends DONE after n of them.
 * - `--role rtt --peer E`: driver; one run = `work` PING round trips of 64 B through the daemon (µs).
 * - `--role stream --peer E`: driver; one run = START + `work` DATA frames of 64 B, 256 per write, timed
 *   until DONE comes back (messages per second).
 *
 * `--path P --ep N` always.
 */
import type net from 'node:net';
import { arg, args, exitWithStdin, latencySummary, msSince, nowNs, ready, serveRuns } from '../lib/worker.js';
import {
  Deframer,
  frame,
  HEADER,
  OFF_AUX,
  OFF_PEER,
  OFF_TYPE,
  OP_HELLO,
  OP_MSG,
  putFrame,
  T_DATA,
  T_DONE,
  T_PING,
  T_START,
} from './framing.js';
import { dial, drained } from './net.js';

const MSG = 64;
const BATCH = 256;

const a = args();
const role = arg(a, 'role');
const ep = Number(arg(a, 'ep'));
const sock: net.Socket = await dial('uds', arg(a, 'path'), 0);
const deframer = new Deframer();
const payload = Buffer.alloc(MSG, 9);

type Handler = (src: number, type: number, aux: number, body: Buffer) => void;
/** Called for every MSG frame; set by the role below. */
let handler: Handler = () => {};
/** Called after each chunk's frames (the echo role flushes its replies there). */
let afterChunk: () => void = () => {};
let helloAck: () => void = () => {};
const registered = new Promise<void>((r) => {
  helloAck = r;
});
sock.on('data', (chunk: Buffer) => {
  deframer.push(chunk, (body) => {
    if (body[0] === OP_HELLO) helloAck();
    else if (body[0] === OP_MSG)
      handler(body.readUInt32LE(OFF_PEER), body.readInt32LE(OFF_TYPE), body.readUInt32LE(OFF_AUX), body);
  });
  afterChunk();
});
sock.write(frame(OP_HELLO, ep, 0, 0, new Uint8Array(0)));
await registered;

if (role === 'echo') {
  // Replies produced by one chunk leave in one write, like the daemon's batching.
  const out: Buffer[] = [];
  handler = (src, type, _aux, body) => {
    if (type === T_PING) out.push(frame(OP_MSG, src, T_PING, 0, body.subarray(HEADER)));
  };
  afterChunk = () => {
    if (out.length > 0) {
      sock.write(out.length === 1 ? out[0]! : Buffer.concat(out));
      out.length = 0;
    }
  };
  ready();
  exitWithStdin(() => {
    sock.destroy();
  });
} else if (role === 'sink') {
  let want = 0;
  let count = 0;
  handler = (src, type, aux) => {
    if (type === T_START) {
      want = aux;
      count = 0;
    } else if (type === T_DATA && ++count === want) {
      sock.write(frame(OP_MSG, src, T_DONE, count, new Uint8Array(0)));
    }
  };
  ready();
  exitWithStdin(() => {
    sock.destroy();
  });
} else if (role === 'rtt' || role === 'stream') {
  const peer = Number(arg(a, 'peer'));
  let wake: (() => void) | null = null;
  handler = (_src, type) => {
    if ((type === T_PING || type === T_DONE) && wake) {
      const w = wake;
      wake = null;
      w();
    }
  };
  const next = () =>
    new Promise<void>((r) => {
      wake = r;
    });
  const ping = frame(OP_MSG, peer, T_PING, 0, payload);
  let samples = new Float64Array(0);
  ready();
  serveRuns(
    async (work) => {
      if (role === 'rtt') {
        if (samples.length < work) samples = new Float64Array(work);
        const t0 = nowNs();
        let prev = t0;
        for (let i = 0; i < work; i++) {
          const p = next();
          sock.write(ping);
          await p;
          const t = nowNs();
          samples[i] = Number(t - prev);
          prev = t;
        }
        return latencySummary(samples, work, msSince(t0));
      }
      const done = next();
      const t0 = nowNs();
      sock.write(frame(OP_MSG, peer, T_START, work, new Uint8Array(0)));
      let left = work;
      while (left > 0) {
        const n = Math.min(left, BATCH);
        // A fresh slab per write: the socket may still hold the previous one.
        const buf = Buffer.allocUnsafe((4 + HEADER + MSG) * n);
        let pos = 0;
        for (let i = 0; i < n; i++) pos = putFrame(buf, pos, OP_MSG, peer, T_DATA, 0, payload);
        left -= n;
        if (!sock.write(buf)) await drained(sock);
      }
      await done;
      const ms = msSince(t0);
      return { value: work / (ms / 1000), elapsedMs: ms };
    },
    async () => {
      sock.destroy();
    },
  );
} else {
  throw new Error(`unknown --role ${role}`);
}
