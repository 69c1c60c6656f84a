/**
 * A minimal Node relay daemon: the floor for what a dvs node daemon does on the local IPC path. Endpoints
 * connect over a Unix socket and say HELLO with their endpoint number (answered by a HELLO); every MSG frame is routed by its
 * destination (a Map lookup), its peer field rewritten to the source, and appended to that destination's
 * output. Output is batched per incoming chunk: all frames a chunk produced for one destination leave in
 * one write (the same per-turn batching dvs does). `--path P`.
 */
import net from 'node:net';
import { arg, args, exitWithStdin, ready } from '../lib/worker.js';
import { Deframer, frame, OFF_PEER, OP_HELLO, OP_MSG } from './framing.js';
import { listen } from './net.js';

const a = args();
const routes = new Map<number, net.Socket>();

const server = net.createServer((s) => {
  const deframer = new Deframer();
  let self = -1;
  // Destination socket -> frames (with their length prefixes) gathered from the current chunk.
  const out = new Map<net.Socket, Buffer[]>();
  s.on('data', (chunk: Buffer) => {
    deframer.push(chunk, (body) => {
      const op = body[0];
      const peer = body.readUInt32LE(OFF_PEER);
      if (op === OP_HELLO) {
        self = peer;
        routes.set(self, s);
        // Acknowledge, so the endpoint reports ready only once it is routable.
        s.write(frame(OP_HELLO, self, 0, 0, new Uint8Array(0)));
        return;
      }
      if (op !== OP_MSG) return;
      const dst = routes.get(peer);
      if (dst === undefined) return; // a real daemon would answer "dead destination"
      const f = Buffer.allocUnsafe(4 + body.length);
      f.writeUInt32LE(body.length, 0);
      body.copy(f, 4);
      f.writeUInt32LE(self, 4 + OFF_PEER);
      const list = out.get(dst);
      if (list === undefined) out.set(dst, [f]);
      else list.push(f);
    });
    for (const [dst, list] of out) dst.write(list.length === 1 ? list[0]! : Buffer.concat(list));
    out.clear();
  });
  s.on('close', () => {
    if (routes.get(self) === s) routes.delete(self);
  });
  s.on('error', () => s.destroy());
});

await listen(server, 'uds', arg(a, 'path'));
ready();
exitWithStdin(() => {
  server.close();
});
