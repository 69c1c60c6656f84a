/**
 * Pins the daemon's GCS wire format (src/node/gcs-wiring.ts): a GCS frame rides a node-link control frame
 * `{t:'gcs', dc:0, f}` (tag 16, MessagePack of the whole object), and member endpoints pack the DC in.
 * Pure (no sockets); it lives beside the integration tests of the same wiring.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type GcsFrame, parseFrame } from '../../../src/gcs/index.js';
import type { ControlFrame } from '../../../src/kernel/types.js';
import {
  decodeEndpoint,
  GCS_INTERNAL_BASE,
  gcsEndpoint,
  internalEndpoint,
} from '../../../src/node/gcs-wiring.js';
import { decodeNodeFrame, encodeNodeFrame, NODE_TAG } from '../../../src/protocol/node-frames.js';
import { slotsViewId } from '../../../src/services/slots/gcs-adapter.js';

test('a GCS frame in a node-link control frame: tag 16, round trip, accepted by the core', () => {
  const f: GcsFrame = {
    t: 'ordered',
    cfg: [3, 1, 1764165600000],
    first: 7,
    ops: [
      {
        n: 2,
        i: 1764165600123,
        op: {
          k: 'msg',
          dc: 5,
          g: 'chat',
          ep: gcsEndpoint(5, 100),
          o: 'safe',
          p: new Uint8Array([1, 2]),
          id: 9,
        },
      },
    ],
  };
  const bytes = encodeNodeFrame({ t: 'gcs', dc: 0, f } as ControlFrame);
  assert.equal(bytes[0], NODE_TAG.control);
  const back = decodeNodeFrame(bytes) as ControlFrame;
  assert.equal(back.t, 'gcs');
  assert.equal(back.dc, 0);
  const parsed = parseFrame(back.f);
  assert.ok(parsed !== undefined, 'the core accepts the decoded frame');
  assert.deepEqual(
    {
      ...parsed,
      ops: (parsed as typeof f).ops.map((o) => ({
        ...o,
        op: { ...o.op, p: [...(o.op as { p: Uint8Array }).p] },
      })),
    },
    { ...f, ops: f.ops.map((o) => ({ ...o, op: { ...o.op, p: [1, 2] } })) },
  );
});

test('member endpoints: DC packed in, internal members apart, both decoded back', () => {
  assert.equal(gcsEndpoint(1, 0), 2 ** 31);
  assert.equal(gcsEndpoint(65535, 0x7ffffffe), 65535 * 2 ** 31 + 0x7ffffffe);
  assert.ok(gcsEndpoint(65535, 0x7ffffffe) < GCS_INTERNAL_BASE);
  assert.deepEqual(decodeEndpoint(gcsEndpoint(7, 123)), { kind: 'process', dc: 7, ep: 123 });
  // The same endpoint number in two DCs is two members.
  assert.notEqual(gcsEndpoint(1, 100), gcsEndpoint(2, 100));
  assert.deepEqual(decodeEndpoint(internalEndpoint(7, 3)), { kind: 'internal', dc: 7, tag: 3 });
  assert.ok(Number.isSafeInteger(internalEndpoint(65535, 2 ** 36)));
});

test('SLOTS view numbers: equal for equal GCS view ids, different otherwise', () => {
  const a = { epoch: 4, coord: 1, inc: 1764165600000, seq: 12 };
  assert.equal(slotsViewId(a), slotsViewId({ ...a }));
  assert.notEqual(slotsViewId(a), slotsViewId({ ...a, seq: 13 }));
  assert.notEqual(slotsViewId(a), slotsViewId({ ...a, coord: 2 }));
  assert.ok(Number.isSafeInteger(slotsViewId(a)));
});
