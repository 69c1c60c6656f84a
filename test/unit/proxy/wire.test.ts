import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DvsError } from '../../../src/protocol/errors.js';
import { FrameDecoder, FrameWriter } from '../../../src/protocol/frame.js';
import {
  decodeDataHeader,
  decodeHello,
  decodeShort,
  encodeHello,
  encodeShort,
  type HelloInfo,
  LINK_TAG,
  writeDataHeader,
  writeShort,
} from '../../../src/proxy/wire.js';

const isProto = (e: unknown) => e instanceof DvsError && e.code === 'EPROTO';

const hello: fc.Arbitrary<HelloInfo> = fc.record({
  nodeId: fc.integer({ min: 0, max: 0xffff }),
  name: fc.string({ maxLength: 40 }),
  incarnation: fc.uuid(),
  epoch: fc.maxSafeNat(),
  peerIncarnation: fc.oneof(fc.constant(''), fc.uuid()),
  peerEpoch: fc.maxSafeNat(),
  received: fc.maxSafeNat(),
});

describe('link wire', () => {
  it('HELLO round-trips and starts with tag, magic and version', () => {
    fc.assert(
      fc.property(hello, (h) => {
        const b = encodeHello(h);
        assert.deepEqual([...b.subarray(0, 6)], [0xf1, 0x44, 0x56, 0x53, 0x4c, 1]);
        assert.deepEqual(decodeHello(b), { ...h });
      }),
    );
  });

  it('HELLO with a wrong magic, version or field is rejected with EPROTO', () => {
    const good = Buffer.from(
      encodeHello({
        nodeId: 1,
        name: 'a',
        incarnation: 'x',
        epoch: 1,
        peerIncarnation: '',
        peerEpoch: 0,
        received: 0,
      }),
    );
    const magic = Buffer.from(good);
    magic[2] = 0;
    const version = Buffer.from(good);
    version[5] = 2;
    assert.throws(() => decodeHello(magic), isProto);
    assert.throws(() => decodeHello(version), isProto);
    assert.throws(() => decodeHello(good.subarray(0, 7)), isProto);
    const negative = encodeHello({
      nodeId: 1,
      name: 'a',
      incarnation: 'x',
      epoch: -1,
      peerIncarnation: '',
      peerEpoch: 0,
      received: 0,
    });
    assert.throws(() => decodeHello(negative), isProto);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (tail) => {
        try {
          decodeHello(Buffer.concat([good.subarray(0, 6), tail]));
        } catch (e) {
          assert.ok(isProto(e), String(e));
        }
      }),
    );
  });

  it('DATA header has the documented bytes', () => {
    const w = new FrameWriter();
    writeDataHeader(w, 1, 0);
    // biome-ignore format: one row per field
    assert.deepEqual([...w.take()!], [
      20, 0, 0, 0,
      0xf2, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
      0, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });

  it('DATA, ACK, PING and PONG round-trip through the frame decoder', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), fc.maxSafeNat(), (first, ack) => {
        const w = new FrameWriter();
        writeDataHeader(w, first, ack);
        writeShort(w, LINK_TAG.ack, ack);
        writeShort(w, LINK_TAG.ping, 12.5);
        const frames = new FrameDecoder().push(w.take()!);
        assert.equal(frames.length, 3);
        assert.deepEqual(decodeDataHeader(frames[0]!), { firstSeq: first, ack });
        assert.equal(decodeShort(frames[1]!), ack);
        assert.equal(decodeShort(frames[2]!), 12.5);
        assert.deepEqual([...encodeShort(LINK_TAG.ack, ack)], [...frames[1]!]);
      }),
    );
  });

  it('rejects bad DATA and ACK values', () => {
    const w = new FrameWriter();
    writeDataHeader(w, 0, 0);
    writeDataHeader(w, 1.5, 0);
    writeShort(w, LINK_TAG.ack, -1);
    writeShort(w, LINK_TAG.ping, Number.NaN);
    for (const f of new FrameDecoder().push(w.take()!)) {
      assert.throws(() => (f[0] === LINK_TAG.data ? decodeDataHeader(f) : decodeShort(f)), isProto);
    }
    assert.throws(() => decodeShort(Uint8Array.of(0xf3, 0, 0)), isProto);
  });
});
