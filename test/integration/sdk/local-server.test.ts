/**
 * LocalServer behaviours that the SDK never triggers: raw protocol misuse and a process that stops reading.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { pino } from 'pino';
import { LocalServer } from '../../../src/node/local-server.js';
import { FrameDecoder } from '../../../src/protocol/frame.js';
import type { ProcFrame } from '../../../src/protocol/proc-frames.js';
import { decodeProcFrame, ProcFrameWriter } from '../../../src/protocol/proc-frames.js';
import { connect } from '../../../src/sdk/index.js';
import { FakeKernel } from './fake-kernel.js';
import type { TestNode } from './harness.js';
import { DC, startNode } from './harness.js';

let node: TestNode;
const sockets: Socket[] = [];

beforeEach(async () => {
  node = await startNode((opts) => new FakeKernel(opts), DC, { maxUnreadBytes: 1 << 20 });
});
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await node.stop();
});

/** A raw protocol client: write frames, read decoded frames. */
async function raw(): Promise<{ socket: Socket; send(...f: ProcFrame[]): void; next(): Promise<ProcFrame> }> {
  const socket = createConnection(node.socket);
  sockets.push(socket);
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const dec = new FrameDecoder();
  const queue: ProcFrame[] = [];
  const waiters: Array<(f: ProcFrame) => void> = [];
  socket.on('data', (chunk: Buffer) => {
    for (const b of dec.push(chunk)) {
      const f = decodeProcFrame(b);
      const w = waiters.shift();
      if (w) w(f);
      else queue.push(f);
    }
  });
  return {
    socket,
    send: (...fs) => {
      const w = new ProcFrameWriter();
      for (const f of fs) w.frame(f);
      socket.write(w.take()!);
    },
    next: () => {
      const f = queue.shift();
      return f ? Promise.resolve(f) : new Promise((resolve) => waiters.push(resolve));
    },
  };
}

test('calls before HELLO are answered ENOTBOUND and posts fail; the session stays open', async () => {
  const c = await raw();
  c.send(
    { op: 'receive', callId: 4, src: 1, nowait: false, ahead: 0 },
    { op: 'post', dst: 9, type: 1, payload: new Uint8Array(0) },
  );
  assert.deepEqual(await c.next(), {
    op: 'result',
    callId: 4,
    code: 'ENOTBOUND',
    message: 'no HELLO on this connection',
  });
  assert.deepEqual(await c.next(), { op: 'postFailed', dst: 9, code: 'ENOTBOUND', n: 1 });
  c.send({ op: 'hello', callId: 1, dc: DC.name, endpoint: 120, pid: process.pid });
  const ok = await c.next();
  assert.equal(ok.op, 'helloOk');
  // A second HELLO on the same session is refused.
  c.send({ op: 'hello', callId: 2, dc: DC.name, endpoint: 121, pid: process.pid });
  const again = await c.next();
  assert.ok(again.op === 'result' && again.callId === 2 && again.code === 'EPROTO');
});

test('a frame only the daemon may send closes the session with a warning', async () => {
  const c = await raw();
  const closed = new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
  c.send({ op: 'credit', dst: 1, n: 1 });
  await closed;
  assert.ok(
    node.logs.some(
      (l) => l.level === 40 && /protocol error/.test(l.msg) && /daemon-only/.test(String(l.reason)),
    ),
  );
  assert.equal(node.server.sessionCount, 0);
});

test('a session that stops reading is cut off once the daemon buffers too much for it', async () => {
  const c = await raw();
  c.socket.pause();
  const closed = new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
  const big = 'x'.repeat(200_000);
  for (let i = 0; i < 40; i++) c.send({ op: 'admin', id: i, method: 'echo', params: { big } });
  await closed;
  assert.ok(node.logs.some((l) => l.level === 40 && /not reading/.test(l.msg)));
});

test('start refuses a path held by a live daemon or by a regular file, and replaces a stale socket', async () => {
  const logger = pino({ level: 'silent' });
  const admin = async () => null;
  const busy = new LocalServer({ path: node.socket, kernel: node.kernel, logger, admin });
  await assert.rejects(busy.start(), (e: unknown) => (e as { code?: string }).code === 'EBUSY');
  const file = join(node.dir, 'plain');
  await writeFile(file, 'keep me');
  const onFile = new LocalServer({ path: file, kernel: node.kernel, logger, admin });
  await assert.rejects(onFile.start(), (e: unknown) => (e as { code?: string }).code === 'EEXIST');
  // After the daemon stops, a new one can take the path.
  await node.server.stop();
  const next = new LocalServer({ path: node.socket, kernel: node.kernel, logger, admin });
  await next.start();
  await next.stop();
});

test("a DC's own socket binds only in that DC and marks its admin calls restricted", async () => {
  const path = join(node.dir, 'dc.sock');
  await node.server.listenForDc(DC.id, path);
  const other = { ...DC, id: DC.id + 1, name: 'other' };
  node.kernel.createDc(other);
  await assert.rejects(
    connect({ socket: path, dc: 'other', endpoint: 130, timeout: 2000 }),
    (e: unknown) => (e as { code?: string }).code === 'EPERM',
  );
  const own = await connect({ socket: path, dc: DC.name, endpoint: 131, timeout: 2000 });
  assert.equal(await own.service('restricted', {}, { timeout: 2000 }), true);
  await own.close();
  // The daemon's main socket is not restricted.
  const main = await connect({ socket: node.socket, dc: 'other', endpoint: 132, timeout: 2000 });
  assert.equal(await main.service('restricted', {}, { timeout: 2000 }), false);
  await main.close();
  await node.server.closeForDc(DC.id);
  await assert.rejects(
    connect({ socket: path, dc: DC.name, endpoint: 133, timeout: 1000 }),
    (e: unknown) => (e as { code?: string }).code === 'ENOTCONN',
  );
});
