/**
 * The transport compliance suite, parameterised by a fixture: every Transport implementation (TCP, Unix,
 * memory in compliance.test.ts; TLS in tls.test.ts) must pass it unchanged.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { FrameWriter } from '../../../src/protocol/frame.js';
import type { Transport } from '../../../src/transport/transport.js';

/** How the suite gets connections of one kind. */
export interface Fixture {
  /** A connected pair: [client side, server side]. */
  pair(maxFrameBytes?: number): Promise<[Transport, Transport]>;
  /** Close everything the fixture opened. */
  teardown(): Promise<void>;
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

/** Register the suite for one transport kind. */
export function transportCompliance(name: string, make: () => Promise<Fixture>): void {
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
