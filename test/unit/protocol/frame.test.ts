import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DvsError } from '../../../src/protocol/errors.js';
import { encodeFrames, FrameDecoder, FrameWriter } from '../../../src/protocol/frame.js';

/** Split `buf` at the given cut points (sorted, deduplicated, inside the buffer). */
function chunk(buf: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

function isProto(e: unknown): boolean {
  return e instanceof DvsError && e.code === 'EPROTO';
}

describe('frame layout', () => {
  it('is a u32 little-endian length then the body', () => {
    const buf = encodeFrames([Uint8Array.of(0xaa, 0xbb, 0xcc), Uint8Array.of(0x01)]);
    assert.deepEqual([...buf], [3, 0, 0, 0, 0xaa, 0xbb, 0xcc, 1, 0, 0, 0, 0x01]);
  });
});

describe('FrameDecoder', () => {
  it('reassembles frames from arbitrary chunks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (bodies, cuts) => {
          const stream = encodeFrames(bodies);
          const dec = new FrameDecoder({ maxFrameBytes: 300 });
          const got: Uint8Array[] = [];
          for (const c of chunk(stream, cuts)) got.push(...dec.push(c).map((f) => Uint8Array.from(f)));
          assert.deepEqual(
            got,
            bodies.map((b) => Uint8Array.from(b)),
          );
          assert.equal(dec.idle, true);
        },
      ),
    );
  });

  it('rejects a zero length', () => {
    const dec = new FrameDecoder();
    assert.throws(() => dec.push(Uint8Array.of(0, 0, 0, 0, 1)), isProto);
  });

  it('rejects a length above the maximum, even split across chunks', () => {
    const dec = new FrameDecoder({ maxFrameBytes: 16 });
    assert.deepEqual(dec.push(Uint8Array.of(17, 0)), []);
    assert.throws(() => dec.push(Uint8Array.of(0, 0)), isProto);
  });

  it('delivers frames before a bad length, then throws', () => {
    const dec = new FrameDecoder({ maxFrameBytes: 16 });
    const got: number[] = [];
    const bytes = Buffer.concat([encodeFrames([Uint8Array.of(7)]), Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    assert.throws(() => dec.feed(bytes, (f) => got.push(f[0]!)), isProto);
    assert.deepEqual(got, [7]);
  });

  it('never throws anything but EPROTO on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const dec = new FrameDecoder({ maxFrameBytes: 64 });
        try {
          dec.push(bytes);
        } catch (e) {
          assert.ok(isProto(e), String(e));
        }
      }),
    );
  });
});

describe('FrameWriter', () => {
  it('batches frames into one buffer and keeps taken buffers intact', () => {
    const w = new FrameWriter({ slabBytes: 16 });
    w.frame(Uint8Array.of(1, 2, 3));
    assert.equal(w.frames, 1);
    const first = w.take()!;
    const firstCopy = Uint8Array.from(first);
    // Force a new slab: the first buffer must not be overwritten.
    for (let i = 0; i < 10; i++) w.frame(Uint8Array.of(i, i, i, i, i));
    assert.deepEqual(Uint8Array.from(first), firstCopy);
    const second = w.take()!;
    assert.equal(second.length, 10 * 9);
    const dec = new FrameDecoder();
    assert.equal(dec.push(second).length, 10);
    assert.equal(w.take(), undefined);
  });

  it('writes bodies in place with begin/end', () => {
    const w = new FrameWriter();
    const o = w.begin(10);
    w.buf[o] = 9;
    w.buf[o + 1] = 8;
    w.end(2);
    assert.deepEqual([...w.take()!], [2, 0, 0, 0, 9, 8]);
  });

  it('refuses frames above its maximum and empty frames', () => {
    const w = new FrameWriter({ maxFrameBytes: 4 });
    assert.throws(
      () => w.frame(new Uint8Array(5)),
      (e) => e instanceof DvsError && e.code === 'EMSGSIZE',
    );
    assert.throws(
      () => w.frame(new Uint8Array(0)),
      (e) => e instanceof DvsError && e.code === 'EINVAL',
    );
    assert.equal(w.take(), undefined);
  });
});
