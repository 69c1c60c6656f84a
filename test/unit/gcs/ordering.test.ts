/** The per-configuration total order (src/gcs/ordering.ts): numbering, prefixes, stability, safe delivery. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Stream } from '../../../src/gcs/ordering.js';
import type { Op, Order } from '../../../src/gcs/types.js';

const msg = (id: number, o: Order = 'agreed'): Op => ({
  k: 'msg',
  dc: 1,
  g: 'g',
  ep: 5,
  o,
  p: new Uint8Array([id]),
  id,
});

describe('Stream', () => {
  it('numbers submitted ops consecutively across submits', () => {
    const s = new Stream([1, 0, 1], [0, 1]);
    const a = s.sequence(1, 7, [msg(1), msg(2)]);
    const b = s.sequence(0, 3, [msg(1)]);
    assert.equal(a.first, 1);
    assert.equal(b.first, 3);
    assert.deepEqual(b.ops[0], { n: 0, i: 3, op: msg(1) });
  });

  it('keeps a prefix: refuses gaps, ignores duplicates', () => {
    const s = new Stream([1, 0, 1], [0, 1]);
    assert.equal(s.accept(1, [{ n: 0, i: 1, op: msg(1) }]), 'ok');
    assert.equal(s.accept(3, [{ n: 0, i: 1, op: msg(3) }]), 'gap');
    assert.equal(s.accept(1, [{ n: 0, i: 1, op: msg(1) }]), 'duplicate');
    assert.equal(s.recv, 1);
    assert.equal(s.accept(2, [{ n: 0, i: 1, op: msg(2) }]), 'ok');
    assert.equal(s.recv, 2);
  });

  it('holds a safe message until stable, and everything behind it', () => {
    const s = new Stream([1, 0, 1], [0, 1]);
    s.accept(1, [
      { n: 0, i: 1, op: msg(1) },
      { n: 0, i: 1, op: msg(2, 'safe') },
      { n: 0, i: 1, op: msg(3, 'fifo') },
    ]);
    assert.equal(s.next()?.s, 1);
    s.advance();
    assert.equal(s.next(), undefined, 'safe waits for stability');
    s.setStable(2);
    assert.equal(s.next()?.s, 2);
    s.advance();
    assert.equal(s.next()?.s, 3);
  });

  it('stability is the minimum acknowledgement over the configuration, announced once', () => {
    const s = new Stream([1, 0, 1], [0, 1, 2]);
    s.sequence(0, 1, [msg(1), msg(2), msg(3)]);
    assert.equal(s.onAck(0, 3), undefined);
    assert.equal(s.onAck(1, 2), undefined);
    assert.equal(s.onAck(7, 3), undefined, 'not a member');
    assert.equal(s.onAck(2, 3), 2);
    assert.equal(s.onAck(1, 3), 3);
    assert.equal(s.onAck(1, 3), undefined);
    assert.equal(s.onAck(1, 9), undefined, 'beyond what was numbered');
  });

  it('reports what is unstable and trims what is delivered and stable', () => {
    const s = new Stream([1, 0, 1], [0, 1]);
    s.accept(
      1,
      [1, 2, 3, 4].map((i) => ({ n: 0, i: 1, op: msg(i) })),
    );
    for (let i = 0; i < 3; i++) s.advance();
    s.setStable(2);
    assert.deepEqual(
      s.unstable().map((e) => e.s),
      [3, 4],
    );
    assert.equal(s.get(1), undefined);
    assert.equal(s.get(3)?.s, 3);
    assert.equal(s.heldCount, 2);
  });
});
