import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Received } from '../../../src/kernel/types.js';
import { ANY, MAX_ENDPOINT } from '../../../src/kernel/types.js';
import type { ErrorCode } from '../../../src/protocol/errors.js';
import { DvsError, ERROR_CODES, ERROR_NUMBERS } from '../../../src/protocol/errors.js';
import { FrameDecoder } from '../../../src/protocol/frame.js';
import type { ProcFrame } from '../../../src/protocol/proc-frames.js';
import {
  decodeProcFrame,
  encodeProcFrame,
  PROC_HEADER_SIZE,
  PROC_OPS,
  ProcFrameWriter,
} from '../../../src/protocol/proc-frames.js';

function isProto(e: unknown): boolean {
  return e instanceof DvsError && e.code === 'EPROTO';
}

describe('proc-frames - byte layout', () => {
  test('SEND header is op, flags, err, callId, peer, type, aux (LE), then the payload', () => {
    const body = encodeProcFrame({
      op: 'send',
      callId: 0x01020304,
      dst: 0x0a0b0c0d,
      type: -2,
      payload: Uint8Array.of(0xaa, 0xbb),
    });
    // biome-ignore format: the layout is easier to read in columns
    assert.deepEqual([...body], [
      3, 0, 0, 0,                   // op SEND, flags, err u16
      0x04, 0x03, 0x02, 0x01,       // callId u32 LE
      0x0d, 0x0c, 0x0b, 0x0a,       // peer (dst) u32 LE
      0xfe, 0xff, 0xff, 0xff,       // type i32 LE (-2)
      0, 0, 0, 0,                   // aux
      0xaa, 0xbb,                   // payload
    ]);
    assert.equal(PROC_HEADER_SIZE, 20);
  });

  test('writer prefixes each frame with its u32 LE length', () => {
    const w = new ProcFrameWriter();
    w.post(7, 9, Uint8Array.of(1));
    w.frame({ op: 'credit', dst: 7, n: 300 });
    const buf = w.take()!;
    assert.equal(buf.readUInt32LE(0), PROC_HEADER_SIZE + 1);
    assert.equal(buf[4], PROC_OPS.post);
    const second = 4 + PROC_HEADER_SIZE + 1;
    assert.equal(buf.readUInt32LE(second), PROC_HEADER_SIZE);
    assert.equal(buf[second + 4], PROC_OPS.credit);
    assert.equal(buf.readUInt32LE(second + 4 + 16), 300); // aux = n
    assert.equal(buf.length, second + 4 + PROC_HEADER_SIZE);
  });

  test('RESULT with an error carries the error number and the text', () => {
    const body = encodeProcFrame({ op: 'result', callId: 5, code: 'ETIMEDOUT', message: 'late' });
    assert.equal(body[0], PROC_OPS.result);
    assert.equal(body[2]! | (body[3]! << 8), ERROR_NUMBERS.ETIMEDOUT);
    assert.equal(Buffer.from(body.subarray(PROC_HEADER_SIZE)).toString(), 'late');
  });

  test('RESULT of a notify puts the timestamp as f64 LE in the body and the kind in flags bits 2-3', () => {
    const msg: Received = {
      source: 3,
      type: -1,
      payload: new Uint8Array(0),
      kind: 'notify',
      timestamp: 1700000000123,
    };
    const body = encodeProcFrame({ op: 'result', callId: 1, code: null, msg });
    assert.equal(body[1], 0x01 | (3 << 2));
    assert.equal(body.length, PROC_HEADER_SIZE + 8);
    assert.equal(Buffer.from(body).readDoubleLE(PROC_HEADER_SIZE), 1700000000123);
  });
});

const endpoint = fc.integer({ min: 0, max: MAX_ENDPOINT });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const i32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const payload = fc.uint8Array({ maxLength: 64 });
const code = fc.constantFrom(...(Object.keys(ERROR_CODES) as ErrorCode[]));
const grantRef = fc.record({ ep: endpoint, grant: u32, offset: u32 });
const received: fc.Arbitrary<Received> = fc.oneof(
  fc.record({
    source: endpoint,
    type: i32,
    payload,
    kind: fc.constantFrom('send' as const, 'request' as const, 'post' as const),
  }),
  fc.record({
    source: endpoint,
    type: i32,
    payload: fc.constant(new Uint8Array(0)),
    kind: fc.constant('notify' as const),
    timestamp: fc.integer({ min: 0, max: 2 ** 50 }),
  }),
);

const frames: fc.Arbitrary<ProcFrame> = fc.oneof(
  fc.record({
    op: fc.constant('hello' as const),
    callId: u32,
    dc: fc.oneof(fc.integer({ min: 1, max: 0xffff }), fc.string({ minLength: 1, maxLength: 20 })),
    endpoint,
    pid: fc.integer({ min: 1, max: 4194304 }),
    name: fc.string({ maxLength: 10 }),
  }),
  fc.record({
    op: fc.constant('helloOk' as const),
    callId: u32,
    node: fc.integer({ min: 0, max: 0xffff }),
    dc: fc.integer({ min: 1, max: 0xffff }),
    dcName: fc.string({ maxLength: 10 }),
    endpoint,
    maxPayload: fc.integer({ min: 1, max: 1 << 20 }),
    postWindow: fc.integer({ min: 1, max: 1 << 16 }),
  }),
  fc.record({
    op: fc.constantFrom('send' as const, 'sendrec' as const, 'reply' as const),
    callId: u32,
    dst: endpoint,
    type: i32,
    payload,
  }),
  fc.record({
    op: fc.constant('receive' as const),
    callId: u32,
    src: fc.oneof(endpoint, fc.constant(ANY)),
    nowait: fc.boolean(),
    ahead: u32,
  }),
  fc.record({ op: fc.constant('receiveRequest' as const), callId: u32, nowait: fc.boolean() }),
  fc.record({
    op: fc.constant('replyReceive' as const),
    callId: u32,
    dst: endpoint,
    type: i32,
    payload,
    nowait: fc.boolean(),
  }),
  fc.record({ op: fc.constantFrom('notify' as const, 'wakeup' as const), callId: u32, dst: endpoint }),
  fc.record({ op: fc.constant('post' as const), dst: endpoint, type: i32, payload }),
  fc.record({
    op: fc.constant('cancel' as const),
    callId: u32,
    reason: fc.constantFrom('ETIMEDOUT' as const, 'EABORTED' as const),
  }),
  fc.record({
    op: fc.constant('grant' as const),
    callId: u32,
    grant: u32,
    size: u32,
    access: fc.constantFrom('r' as const, 'w' as const, 'rw' as const),
  }),
  fc.record({ op: fc.constant('revoke' as const), callId: u32, grant: u32 }),
  fc.record({ op: fc.constant('vcopy' as const), callId: u32, src: grantRef, dst: grantRef, bytes: u32 }),
  fc.record({ op: fc.constant('result' as const), callId: u32, code: fc.constant(null) }),
  fc.record({
    op: fc.constant('result' as const),
    callId: u32,
    code,
    message: fc.string({ minLength: 1, maxLength: 20 }),
  }),
  fc.record({ op: fc.constant('result' as const), callId: u32, code: fc.constant(null), msg: received }),
  fc.record({
    op: fc.constant('result' as const),
    callId: u32,
    code: fc.constant(null),
    msg: received,
    more: fc.constant(true),
  }),
  fc.record({ op: fc.constant('credit' as const), dst: endpoint, n: u32 }),
  fc.record({ op: fc.constant('postFailed' as const), dst: endpoint, code, n: u32 }),
  fc.record({
    op: fc.constant('grantRead' as const),
    xfer: u32,
    grant: u32,
    offset: u32,
    length: fc.integer({ min: 0, max: 0x7fffffff }),
  }),
  fc.record({ op: fc.constant('grantData' as const), xfer: u32, code: fc.constant(null), data: payload }),
  fc.record({ op: fc.constant('grantData' as const), xfer: u32, code, data: fc.constant(new Uint8Array(0)) }),
  fc.record({ op: fc.constant('grantWrite' as const), xfer: u32, grant: u32, offset: u32, data: payload }),
  fc.record({ op: fc.constant('grantWritten' as const), xfer: u32, code: fc.oneof(fc.constant(null), code) }),
  fc.record({
    op: fc.constant('admin' as const),
    id: u32,
    method: fc.string({ maxLength: 12 }),
    params: fc.dictionary(fc.string({ maxLength: 5 }), fc.oneof(fc.integer(), fc.string({ maxLength: 5 }))),
  }),
  fc.record({
    op: fc.constant('adminResult' as const),
    id: u32,
    result: fc.oneof(fc.integer(), fc.string({ maxLength: 8 })),
  }),
  fc.record({
    op: fc.constant('adminResult' as const),
    id: u32,
    error: fc.record({ code, message: fc.string({ maxLength: 10 }) }),
  }),
  fc.record({
    op: fc.constant('event' as const),
    sub: u32,
    data: fc.oneof(fc.integer(), fc.string({ maxLength: 8 }), fc.constant(null)),
  }),
);

/** Decoded frames use plain Uint8Array views; compare bytes, not classes. */
function normalize(v: unknown): unknown {
  if (v instanceof Uint8Array) return [...v];
  if (Array.isArray(v)) return v.map(normalize);
  if (typeof v === 'object' && v !== null)
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]));
  return v;
}

describe('proc-frames - EVENT wire format', () => {
  test('op 25, callId = subscription id, MessagePack body', () => {
    const b = encodeProcFrame({ op: 'event', sub: 0x01020304, data: 7 });
    assert.deepEqual([...b], [25, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
  });
});

describe('proc-frames - round trip', () => {
  test('decode(encode(f)) == f for arbitrary frames', () => {
    fc.assert(
      fc.property(frames, (f) => {
        assert.deepEqual(normalize(decodeProcFrame(encodeProcFrame(f))), normalize(f));
      }),
      { numRuns: 2000 },
    );
  });

  test('a batch written by ProcFrameWriter decodes in order under arbitrary chunking', () => {
    fc.assert(
      fc.property(
        fc.array(frames, { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1 }),
        (fs, cuts) => {
          const w = new ProcFrameWriter({ slabBytes: 128 });
          for (const f of fs) w.frame(f);
          const buf = w.take() ?? Buffer.alloc(0);
          const dec = new FrameDecoder();
          const out: ProcFrame[] = [];
          let pos = 0;
          let i = 0;
          while (pos < buf.length) {
            const n = cuts[i++ % cuts.length]!;
            for (const body of dec.push(buf.subarray(pos, pos + n))) out.push(decodeProcFrame(body));
            pos += n;
          }
          assert.deepEqual(normalize(out), normalize(fs));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('proc-frames - garbage rejection', () => {
  test('short frames, unknown ops and stray header fields are EPROTO', () => {
    assert.throws(() => decodeProcFrame(new Uint8Array(5)), isProto);
    const unknown = new Uint8Array(PROC_HEADER_SIZE);
    unknown[0] = 200;
    assert.throws(() => decodeProcFrame(unknown), isProto);
    const zero = new Uint8Array(PROC_HEADER_SIZE);
    assert.throws(() => decodeProcFrame(zero), isProto);
    // POST must not carry a callId.
    const post = Buffer.from(encodeProcFrame({ op: 'post', dst: 1, type: 0, payload: new Uint8Array(0) }));
    post.writeUInt32LE(9, 4);
    assert.throws(() => decodeProcFrame(post), isProto);
    // RECEIVE with an unknown flag.
    const recv = Buffer.from(
      encodeProcFrame({ op: 'receive', callId: 1, src: ANY, nowait: false, ahead: 0 }),
    );
    recv[1] = 0x80;
    assert.throws(() => decodeProcFrame(recv), isProto);
    // CANCEL with a reason other than ETIMEDOUT / EABORTED.
    const cancel = Buffer.from(encodeProcFrame({ op: 'cancel', callId: 1, reason: 'ETIMEDOUT' }));
    cancel.writeUInt16LE(ERROR_NUMBERS.EPERM, 2);
    assert.throws(() => decodeProcFrame(cancel), isProto);
    // An endpoint out of range.
    const send = Buffer.from(
      encodeProcFrame({ op: 'send', callId: 1, dst: 1, type: 0, payload: new Uint8Array(0) }),
    );
    send.writeUInt32LE(0xfffffff0, 8);
    assert.throws(() => decodeProcFrame(send), isProto);
    // A MessagePack body that is not a map, or is not MessagePack at all.
    const hello = Buffer.from(encodeProcFrame({ op: 'hello', callId: 1, dc: 1, endpoint: 1, pid: 1 }));
    const badHello = Buffer.concat([hello.subarray(0, PROC_HEADER_SIZE), Buffer.from([0xc1])]);
    assert.throws(() => decodeProcFrame(badHello), isProto);
    const arrayHello = Buffer.concat([hello.subarray(0, PROC_HEADER_SIZE), Buffer.from([0x91, 0x01])]);
    assert.throws(() => decodeProcFrame(arrayHello), isProto);
  });

  test('random bytes never throw anything but EPROTO', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.integer({ min: 1, max: 23 }), (bytes, op) => {
        const b = new Uint8Array(bytes);
        if (b.length > 0 && bytes.length % 2 === 0) b[0] = op; // often a known op, so the body checks run
        try {
          decodeProcFrame(b);
        } catch (e) {
          assert.ok(isProto(e), String(e));
        }
      }),
      { numRuns: 5000 },
    );
  });

  test('mutating one byte of a valid frame either decodes or throws EPROTO', () => {
    fc.assert(
      fc.property(frames, fc.nat(), fc.integer({ min: 0, max: 255 }), (f, at, v) => {
        const b = new Uint8Array(encodeProcFrame(f));
        b[at % b.length] = v;
        try {
          decodeProcFrame(b);
        } catch (e) {
          assert.ok(isProto(e), String(e));
        }
      }),
      { numRuns: 3000 },
    );
  });
});
