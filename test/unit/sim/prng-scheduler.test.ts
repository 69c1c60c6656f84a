import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Prng } from '../../sim/prng.js';
import { Scheduler } from '../../sim/scheduler.js';
import { Trace } from '../../sim/trace.js';

describe('sim prng', () => {
  it('same seed gives the same stream, other seeds differ', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const c = new Prng(43);
    const sa = Array.from({ length: 100 }, () => a.nextU32());
    const sb = Array.from({ length: 100 }, () => b.nextU32());
    const sc = Array.from({ length: 100 }, () => c.nextU32());
    assert.deepEqual(sa, sb);
    assert.notDeepEqual(sa, sc);
  });

  it('int(lo, hi) stays in range and reaches both ends', () => {
    const r = new Prng(7);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const v = r.int(3, 9);
      assert.ok(v >= 3 && v <= 9 && Number.isInteger(v), `out of range: ${v}`);
      seen.add(v);
    }
    assert.deepEqual([...seen].sort(), [3, 4, 5, 6, 7, 8, 9]);
  });

  it('fork() streams are independent of later draws on the parent', () => {
    const p1 = new Prng(5);
    const f1 = p1.fork();
    const p2 = new Prng(5);
    const f2 = p2.fork();
    p2.nextU32();
    assert.equal(f1.nextU32(), f2.nextU32());
  });
});

describe('sim scheduler', () => {
  it('runs events by time, ties in insertion order', () => {
    const s = new Scheduler();
    const out: string[] = [];
    s.after(5, () => out.push('b5'));
    s.after(1, () => out.push('a1'));
    s.after(5, () => out.push('c5'));
    s.after(0, () => {
      out.push('z0');
      s.after(5, () => out.push('d5'));
      s.after(0, () => out.push('y0'));
    });
    assert.equal(s.run(Number.POSITIVE_INFINITY, 100), 'empty');
    assert.deepEqual(out, ['z0', 'y0', 'a1', 'b5', 'c5', 'd5']);
    assert.equal(s.now, 5);
  });

  it('keeps order over many random insertions (heap property)', () => {
    const s = new Scheduler();
    const r = new Prng(1);
    const got: [number, number][] = [];
    for (let i = 0; i < 500; i++) {
      const t = r.int(0, 50);
      s.after(t, () => got.push([t, i]));
    }
    s.run(Number.POSITIVE_INFINITY, 1000);
    const sorted = [...got].sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    assert.deepEqual(got, sorted);
  });

  it('cancelled events do not run; run() stops at the time bound and the step bound', () => {
    const s = new Scheduler();
    let ran = 0;
    s.after(1, () => ran++).cancel();
    s.after(2, () => ran++);
    s.after(10, () => ran++);
    assert.equal(s.run(5, 100), 'time');
    assert.equal(ran, 1);
    assert.equal(s.now, 5);
    s.after(1, () => ran++);
    assert.equal(s.run(Number.POSITIVE_INFINITY, 2), 'steps');
    assert.equal(ran, 2);
  });
});

describe('sim trace', () => {
  it('hash depends on every line and their order', () => {
    const h = (lines: string[]) => {
      const t = new Trace(4);
      for (const l of lines) t.add(l);
      return t.hash();
    };
    assert.equal(h(['a', 'b']), h(['a', 'b']));
    assert.notEqual(h(['a', 'b']), h(['b', 'a']));
    assert.notEqual(h(['ab']), h(['a', 'b']));
  });

  it('keeps the last lines in order', () => {
    const t = new Trace(3);
    for (const l of ['1', '2', '3', '4', '5']) t.add(l);
    assert.deepEqual(t.tail(), ['3', '4', '5']);
  });
});
