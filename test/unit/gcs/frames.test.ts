/** GCS frames: every kind survives MessagePack unchanged (the wire shape), malformed ones are refused. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pack, unpack } from 'msgpackr';
import { parseFrame } from '../../../src/gcs/frames.js';
import type { GcsFrame, Op, SeqOp } from '../../../src/gcs/types.js';

const op: Op = { k: 'msg', dc: 1, g: 'grp', ep: 100, o: 'safe', p: new Uint8Array([1, 2, 3]), id: 4 };
const seqOp: SeqOp = { s: 1, n: 2, i: 7, op };
const FRAMES: GcsFrame[] = [
  { t: 'propose', id: [3, 0, 1], nodes: [0, 1, 2] },
  { t: 'nack', id: [3, 0, 1], promised: [4, 1, 1] },
  {
    t: 'flushOk',
    id: [3, 0, 1],
    cfg: [2, 0, 1],
    old: [0, 1],
    recv: 1,
    stable: 0,
    ops: [seqOp],
    members: [{ n: 1, dc: 1, g: 'grp', eps: [100] }],
    seen: [[2, 7, 4]],
  },
  {
    t: 'install',
    id: [3, 0, 1],
    nodes: [0, 1],
    members: [{ n: 1, dc: 1, g: 'grp', eps: [100, 101] }],
    recover: [{ cfg: [2, 0, 1], stable: 0, full: true, ops: [seqOp] }],
    seen: [[2, 7, 4]],
  },
  { t: 'wake' },
  {
    t: 'submit',
    cfg: [3, 0, 1],
    inc: 7,
    ops: [
      op,
      { k: 'join', dc: 1, g: 'grp', ep: 100, id: 5 },
      { k: 'leave', dc: 1, g: 'grp', ep: 100, r: 'expel', id: 6 },
    ],
  },
  { t: 'ordered', cfg: [3, 0, 1], first: 9, ops: [{ n: 2, i: 7, op }] },
  { t: 'ack', cfg: [3, 0, 1], seq: 9 },
  { t: 'stable', cfg: [3, 0, 1], seq: 9 },
];

/** Plain data with byte arrays as `{bytes: [...]}` (msgpackr decodes them as Buffers). */
function norm(x: unknown): unknown {
  if (x instanceof Uint8Array) return { bytes: [...x] };
  if (Array.isArray(x)) return x.map(norm);
  if (typeof x === 'object' && x !== null)
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, norm(v)]));
  return x;
}

describe('GCS frames', () => {
  for (const f of FRAMES)
    it(`${f.t} round-trips through MessagePack`, () => {
      const back = parseFrame(unpack(pack(f)));
      assert.ok(back !== undefined);
      assert.deepEqual(norm(back), norm(f));
    });

  it('refuses malformed frames', () => {
    const bad: unknown[] = [
      null,
      [],
      { t: 'nope' },
      { t: 'propose', id: [3], nodes: [0] },
      { t: 'propose', id: [3, 0, 1], nodes: [] },
      { t: 'ordered', cfg: [3, 0, 1], first: 0, ops: [] },
      { t: 'submit', cfg: [3, 0, 1], inc: 1, ops: [{ ...op, o: 'bogus' }] },
      { t: 'submit', cfg: [3, 0, 1], inc: 1, ops: [{ ...op, g: 'bad name' }] },
      { t: 'submit', cfg: [3, 0, 1], inc: 1, ops: [{ ...op, dc: 0 }] },
      { t: 'submit', cfg: [3, 0, 1], inc: 1, ops: [{ ...op, p: 'text' }] },
      { t: 'submit', cfg: [3, 0, 1], ops: [op] },
      { t: 'ack', cfg: [3, 0, 1], seq: -1 },
      { t: 'ack', cfg: [3, 0], seq: 1 },
      { t: 'flushOk', id: [3, 0, 1], cfg: [2, 0, 1], old: [0], recv: 0, stable: 0, ops: [], members: [] },
    ];
    for (const b of bad) assert.equal(parseFrame(b), undefined, JSON.stringify(b));
  });
});
