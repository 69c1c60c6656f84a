/**
 * One compliance suite for every Transport implementation: TCP, Unix sockets and the in-memory pair.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { FrameWriter } from '../../../src/protocol/frame.js';
import { memoryPair } from '../../../src/transport/memory.js';
import { connectTcp, connectUnix, listenTcp, listenUnix, parseHostPort } from '../../../src/transport/net.js';
import type { Transport, TransportListener } from '../../../src/transport/transport.js';

interface Fixture {
  /** A connected pair: [client side, server side]. */
  pair(maxFrameBytes?: number): Promise<[Transport, Transport]>;
  /** Raw bytes into the server side of a new connection, or null if the kind has no raw access. */
  teardown(): Promise<void>;
}

async function netFixture(kind: 'tcp' | 'unix'): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'dvs-transport-'));
  const listeners: TransportListener[] = [];
  const open: Transport[] = [];
  return {
    async pair(maxFrameBytes) {
      let accept!: (t: Transport) => void;
      const accepted = new Promise<Transport>((r) => {
        accept = r;
      });
      const onTransport = (t: Transport) => accept(t);
      const opts = maxFrameBytes === undefined ? { onTransport } : { onTransport, maxFrameBytes };
      const l =
        kind === 'tcp'
          ? await listenTcp({ ...opts, host: '127.0.0.1', port: 0 })
          : await listenUnix({ ...opts, path: join(dir, `s${listeners.length}.sock`) });
      listeners.push(l);
      const client =
        kind === 'tcp'
          ? await connectTcp({ ...parseHostPort(l.address), timeoutMs: 2000 })
          : await connectUnix({ path: l.address, timeoutMs: 2000 });
      const server = await accepted;
      open.push(client, server);
      return [client, server];
    },
    async teardown() {
      for (const t of open) t.close();
      await Promise.all(open.map((t) => t.closed()));
      await Promise.all(listeners.map((l) => l.close()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function memoryFixture(): Promise<Fixture> {
  const open: Transport[] = [];
  return {
    async pair(maxFrameBytes) {
      const p = memoryPair(maxFrameBytes === undefined ? {} : { maxFrameBytes });
      open.push(...p);
      return p;
    },
    async teardown() {
      for (const t of open) t.close();
      await Promise.all(open.map((t) => t.closed()));
    },
  };
}

function collect(t: Transport, n: number): Promise<Uint8Array[]> {
  return new Promise((resolve) => {
    const got: Uint8Array[] = [];
    t.start({
      frame(b) {
        got.push(Uint8Array.from(b));
        if (got.length === n) resolve(got);
      },
    });
  });
}

const kinds: [string, () => Promise<Fixture>][] = [
  ['tcp', () => netFixture('tcp')],
  ['unix', () => netFixture('unix')],
  ['memory', memoryFixture],
];

for (const [name, make] of kinds) {
  describe(`transport compliance: ${name}`, () => {
    let fx: Fixture;
    before(async () => {
      fx = await make();
    });
    after(async () => {
      await fx.teardown();
    });

    it('delivers frames in order, both ways, from send and sendFramed', async () => {
      const [a, b] = await fx.pair();
      const atB = collect(b, 1002);
      const atA = collect(a, 1);
      a.send(Uint8Array.of(1));
      const w = new FrameWriter();
      for (let i = 0; i < 1000; i++) w.frame(Uint8Array.of(2, i & 0xff, i >> 8));
      a.sendFramed(w.take()!);
      a.send(new Uint8Array(100_000).fill(7));
      b.send(Uint8Array.of(9));
      const got = await atB;
      assert.deepEqual(got[0], Uint8Array.of(1));
      for (let i = 0; i < 1000; i++) assert.deepEqual(got[i + 1], Uint8Array.of(2, i & 0xff, i >> 8));
      assert.equal(got[1001]!.length, 100_000);
      assert.ok(got[1001]!.every((x) => x === 7));
      assert.deepEqual(await atA, [Uint8Array.of(9)]);
    });

    it('close() on one side closes both, closed() reports the reason', async () => {
      const [a, b] = await fx.pair();
      a.start({ frame() {} });
      b.start({ frame() {} });
      const reason = new Error('bye');
      a.close(reason);
      assert.equal(await a.closed(), reason);
      await b.closed();
      assert.equal(a.isClosed, true);
      assert.equal(b.isClosed, true);
      assert.equal(a.send(Uint8Array.of(1)), false);
    });

    it('a frame above the maximum closes the receiver with EPROTO', async () => {
      const [a, b] = await fx.pair(8);
      let frames = 0;
      b.start({ frame: () => frames++ });
      a.start({ frame() {} });
      // The sender's limit is its own; write the oversized frame pre-framed.
      const w = new FrameWriter();
      w.frame(Uint8Array.of(1));
      w.frame(new Uint8Array(9));
      a.sendFramed(w.take()!);
      const err = await b.closed();
      assert.ok(err instanceof DvsError && err.code === 'EPROTO', String(err));
      assert.equal(frames, 1);
    });

    it('a throwing handler closes the transport with its error', async () => {
      const [a, b] = await fx.pair();
      const boom = new Error('handler failed');
      b.start({
        frame() {
          throw boom;
        },
      });
      a.start({ frame() {} });
      a.send(Uint8Array.of(1));
      assert.equal(await b.closed(), boom);
    });

    it('refuses to send empty frames', async () => {
      const [a] = await fx.pair();
      assert.throws(
        () => a.send(new Uint8Array(0)),
        (e) => e instanceof DvsError && e.code === 'EMSGSIZE',
      );
    });
  });
}

describe('dialing', () => {
  it('a refused dial rejects with ENOTCONN', async () => {
    const l = await listenTcp({ host: '127.0.0.1', port: 0, onTransport: (t) => t.close() });
    const { host, port } = parseHostPort(l.address);
    await l.close();
    await assert.rejects(
      connectTcp({ host, port, timeoutMs: 2000 }),
      (e) => e instanceof DvsError && e.code === 'ENOTCONN',
    );
  });

  it('an aborted dial rejects with EABORTED', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      connectTcp({ host: '127.0.0.1', port: 1, timeoutMs: 2000, signal: ac.signal }),
      (e) => e instanceof DvsError && e.code === 'EABORTED',
    );
  });

  it('parseHostPort accepts host:port and [v6]:port and rejects junk', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
    assert.deepEqual(parseHostPort('[::1]:9'), { host: '::1', port: 9 });
    for (const bad of ['x', ':1', 'h:99999', 'h:']) assert.throws(() => parseHostPort(bad));
  });
});
