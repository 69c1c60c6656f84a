import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { unpack } from 'msgpackr';
import { CONTROL_FRAME_TYPES, MAX_ENDPOINT, type NodeFrame } from '../../../src/kernel/types.js';
import { DvsError, ERROR_NUMBERS, type ErrorCode } from '../../../src/protocol/errors.js';
import { FrameDecoder, FrameWriter } from '../../../src/protocol/frame.js';
import {
  checkNodeFrame,
  decodeNodeFrame,
  encodeNodeFrame,
  NODE_TAG,
  writeNodeFrame,
} from '../../../src/protocol/node-frames.js';

const codes = Object.keys(ERROR_NUMBERS) as ErrorCode[];
const dc = fc.integer({ min: 1, max: 0xffff });
const ep = fc.integer({ min: 0, max: MAX_ENDPOINT });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const op = fc.maxSafeNat();
const i32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const payload = fc.uint8Array({ maxLength: 200 });

/** Plain-data values that survive MessagePack unchanged (binary comes back as Uint8Array after normalising). */
const plain = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.string(),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 16 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(
      fc.string().filter((k) => k !== '__proto__'),
      tie('value'),
      { maxKeys: 4 },
    ),
  ),
})).value;

export const nodeFrame: fc.Arbitrary<NodeFrame> = fc.oneof(
  fc.record({
    t: fc.constant('msg' as const),
    dc,
    src: ep,
    dst: ep,
    kind: fc.constantFrom('send' as const, 'request' as const, 'post' as const),
    op,
    type: i32,
    payload,
  }),
  fc.record(
    {
      t: fc.constant('ack' as const),
      dc,
      src: ep,
      dst: ep,
      op,
      code: fc.oneof(fc.constant(null), fc.constantFrom(...codes)),
      node: fc.integer({ min: 0, max: 0xffff }),
    },
    { requiredKeys: ['t', 'dc', 'src', 'dst', 'op', 'code'] },
  ),
  fc.record({ t: fc.constant('reply' as const), dc, src: ep, dst: ep, op, type: i32, payload }),
  fc.record({
    t: fc.constant('notify' as const),
    dc,
    src: ep,
    dst: ep,
    ts: fc.double({ noNaN: true, noDefaultInfinity: true }),
  }),
  fc.record({ t: fc.constant('credit' as const), dc, src: ep, dst: ep, n: u32 }),
  fc
    .tuple(
      fc.constantFrom(...CONTROL_FRAME_TYPES),
      dc,
      fc.dictionary(
        fc.string().filter((k) => k !== '__proto__' && k !== 't' && k !== 'dc'),
        plain,
        { maxKeys: 5 },
      ),
    )
    .map(([t, d, rest]) => ({ ...rest, t, dc: d }) as NodeFrame),
);

/** Turn every Buffer back into a plain Uint8Array so deepEqual compares contents, not classes. */
function normalise(v: unknown): unknown {
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (Array.isArray(v)) return v.map(normalise);
  if (typeof v === 'object' && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  }
  return v;
}

function isProto(e: unknown): boolean {
  return e instanceof DvsError && e.code === 'EPROTO';
}

describe('node frame layout', () => {
  it('msg has the documented bytes', () => {
    const body = encodeNodeFrame({
      t: 'msg',
      dc: 0x0102,
      src: 0x03040506,
      dst: 7,
      kind: 'request',
      op: 0x5_1122_3344,
      type: -2,
      payload: Uint8Array.of(0xde, 0xad),
    });
    // biome-ignore format: one row per field
    assert.deepEqual([...body], [
      1, 1, 0x02, 0x01,
      0x06, 0x05, 0x04, 0x03,
      7, 0, 0, 0,
      0x44, 0x33, 0x22, 0x11, 0x05, 0, 0, 0,
      0xfe, 0xff, 0xff, 0xff,
      2, 0, 0, 0,
      0xde, 0xad,
    ]);
  });

  it('ack has the documented bytes', () => {
    const body = encodeNodeFrame({ t: 'ack', dc: 5, src: 1, dst: 2, op: 3, code: 'EMOVED', node: 0x0a0b });
    // biome-ignore format: one row per field
    assert.deepEqual([...body], [
      2, 1, 5, 0,
      1, 0, 0, 0,
      2, 0, 0, 0,
      3, 0, 0, 0, 0, 0, 0, 0,
      20, 0, 0x0b, 0x0a,
    ]);
  });

  it('notify, credit and reply have the documented sizes and tags', () => {
    const n = encodeNodeFrame({ t: 'notify', dc: 1, src: 2, dst: 3, ts: 1.5 });
    assert.equal(n.length, 20);
    assert.equal(Buffer.from(n).readDoubleLE(12), 1.5);
    const c = encodeNodeFrame({ t: 'credit', dc: 1, src: 2, dst: 3, n: 9 });
    assert.deepEqual([...c], [5, 0, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0]);
    const r = encodeNodeFrame({
      t: 'reply',
      dc: 1,
      src: 2,
      dst: 3,
      op: 4,
      type: 5,
      payload: Uint8Array.of(1),
    });
    assert.equal(r[0], NODE_TAG.reply);
    assert.equal(r.length, 29);
  });

  it('control frames are a tag then plain MessagePack', () => {
    const body = encodeNodeFrame({ t: 'cancel', dc: 1, op: 7 });
    assert.equal(body[0], NODE_TAG.control);
    assert.deepEqual(unpack(body.subarray(1)), { t: 'cancel', dc: 1, op: 7 });
    // A hand-written standard map decodes too: fixmap(2) "t" "cancel" "dc" 1.
    const std = Uint8Array.of(16, 0x82, 0xa1, 0x74, 0xa6, ...Buffer.from('cancel'), 0xa2, 0x64, 0x63, 1);
    assert.deepEqual(decodeNodeFrame(std), { t: 'cancel', dc: 1 });
  });
});

describe('node frame codec', () => {
  it('carries the node-level sync frame with dc 0, and refuses dc 0 elsewhere', () => {
    const sync: NodeFrame = {
      t: 'sync',
      dc: 0,
      dcs: [{ dc: 3, eps: [{ ep: 70, kind: 'self', name: 'a', pid: 9 }] }],
    };
    assert.deepEqual(decodeNodeFrame(encodeNodeFrame(sync)), sync);
    assert.throws(
      () => checkNodeFrame({ t: 'bind', dc: 0, ep: 1 }),
      (e: unknown) => (e as DvsError).code === 'EINVAL',
    );
    assert.throws(
      () => checkNodeFrame({ t: 'notify', dc: 0, src: 1, dst: 2, ts: 1 }),
      (e: unknown) => (e as DvsError).code === 'EINVAL',
    );
  });

  it('round-trips arbitrary frames', () => {
    fc.assert(
      fc.property(nodeFrame, (f) => {
        assert.deepEqual(normalise(decodeNodeFrame(encodeNodeFrame(f))), normalise(f));
      }),
    );
  });

  it('round-trips a stream of frames written in batches and read in arbitrary chunks', () => {
    fc.assert(
      fc.property(
        fc.array(nodeFrame, { maxLength: 30 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (frames, batchSizes, cuts) => {
          const w = new FrameWriter({ slabBytes: 128 });
          const parts: Buffer[] = [];
          let i = 0;
          for (let b = 0; i < frames.length; b++) {
            const n = batchSizes[b % batchSizes.length]!;
            for (let k = 0; k < n && i < frames.length; k++) writeNodeFrame(w, frames[i++]!);
            const out = w.take();
            if (out) parts.push(out);
          }
          const stream = Buffer.concat(parts);
          const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
          const dec = new FrameDecoder();
          const got: unknown[] = [];
          let prev = 0;
          for (const p of [...points, stream.length]) {
            // Copy each chunk, as a socket would hand out fresh buffers.
            dec.feed(Buffer.from(stream.subarray(prev, p)), (body) =>
              got.push(normalise(decodeNodeFrame(body))),
            );
            prev = p;
          }
          assert.deepEqual(got, frames.map(normalise));
        },
      ),
    );
  });

  it('throws only EPROTO on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodeNodeFrame(bytes);
        } catch (e) {
          assert.ok(isProto(e), String(e));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('throws only EPROTO on mutated valid frames', () => {
    fc.assert(
      fc.property(nodeFrame, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (f, at, byte, cut) => {
        const body = Uint8Array.from(encodeNodeFrame(f));
        body[at % body.length] = byte;
        const truncated = body.subarray(0, Math.max(1, cut % (body.length + 1)));
        for (const b of [body, truncated]) {
          try {
            decodeNodeFrame(b);
          } catch (e) {
            assert.ok(isProto(e), String(e));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects specific malformed frames', () => {
    const ok = Buffer.from(encodeNodeFrame({ t: 'ack', dc: 1, src: 1, dst: 1, op: 1, code: null }));
    const cases: [string, (b: Buffer) => void][] = [
      ['unknown tag', (b) => (b[0] = 99)],
      ['dc 0', (b) => b.writeUInt16LE(0, 2)],
      ['src above MAX_ENDPOINT', (b) => b.writeUInt32LE(MAX_ENDPOINT + 1, 4)],
      ['unknown error number', (b) => b.writeUInt16LE(999, 20)],
      ['unknown flag', (b) => (b[1] = 2)],
      ['node without flag', (b) => b.writeUInt16LE(3, 22)],
      ['op above 2^53', (b) => b.writeUInt32LE(0x200000, 16)],
    ];
    for (const [name, mutate] of cases) {
      const b = Buffer.from(ok);
      mutate(b);
      assert.throws(() => decodeNodeFrame(b), isProto, name);
    }
    assert.throws(() => decodeNodeFrame(ok.subarray(0, 23)), isProto, 'short ack');
    const msg = Buffer.from(
      encodeNodeFrame({
        t: 'msg',
        dc: 1,
        src: 1,
        dst: 1,
        kind: 'post',
        op: 0,
        type: 0,
        payload: Uint8Array.of(1, 2),
      }),
    );
    msg.writeUInt32LE(3, 24);
    assert.throws(() => decodeNodeFrame(msg), isProto, 'payload length mismatch');
    msg.writeUInt32LE(2, 24);
    msg[1] = 3;
    assert.throws(() => decodeNodeFrame(msg), isProto, 'bad kind');
    assert.throws(() => decodeNodeFrame(Uint8Array.of(16, 0xc1)), isProto, 'bad MessagePack');
    assert.throws(() => decodeNodeFrame(Uint8Array.of(16, 0x92, 1, 2)), isProto, 'not a map');
    const unknownControl = Buffer.from(encodeNodeFrame({ t: 'cancel', dc: 1 }));
    unknownControl.write('cancex', 4);
    assert.throws(() => decodeNodeFrame(unknownControl), isProto, 'unknown control name');
  });

  it('refuses to encode frames out of range with EINVAL', () => {
    const inval = (e: unknown) => e instanceof DvsError && e.code === 'EINVAL';
    const base = {
      t: 'msg',
      dc: 1,
      src: 1,
      dst: 1,
      kind: 'send',
      op: 1,
      type: 1,
      payload: new Uint8Array(0),
    } as const;
    assert.throws(() => checkNodeFrame({ ...base, dc: 0 }), inval);
    assert.throws(() => checkNodeFrame({ ...base, src: -1 }), inval);
    assert.throws(() => checkNodeFrame({ ...base, op: 2 ** 53 }), inval);
    assert.throws(() => checkNodeFrame({ ...base, type: 2 ** 31 }), inval);
    assert.throws(() => checkNodeFrame({ ...base, payload: new Uint8Array((1 << 20) + 1) }), inval);
    assert.throws(() => checkNodeFrame({ t: 'nope', dc: 1 } as unknown as NodeFrame), inval);
    assert.throws(
      () => checkNodeFrame({ t: 'ack', dc: 1, src: 1, dst: 1, op: 1, code: 'EWHAT' } as unknown as NodeFrame),
      inval,
    );
  });
});
