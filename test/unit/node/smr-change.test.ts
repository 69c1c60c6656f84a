/** The store-fenced replica set decision of src/node/smr.ts ({@link smrChange}): who may change it, and how. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { smrChange } from '../../../src/node/smr.js';

const base = { members: [0, 1, 2], size: 3, gaveUp: false, spares: [3, 4] };
const upExcept =
  (...down: number[]) =>
  (n: number) =>
    !down.includes(n);

describe('smrChange', () => {
  test('the lowest live replica of a majority drops the dead ones, then adds a spare', () => {
    assert.deepEqual(smrChange({ ...base, me: 1, up: upExcept(0) }), { drop: [0] });
    assert.deepEqual(smrChange({ ...base, me: 1, members: [1, 2], up: upExcept(0) }), { add: 3 });
  });
  test('another live replica does not decide', () => {
    assert.equal(smrChange({ ...base, me: 2, up: upExcept(0) }), undefined);
  });
  test('a minority side changes nothing: it cannot serve, and the majority side may replace it', () => {
    assert.equal(smrChange({ ...base, me: 0, up: upExcept(1, 2) }), undefined);
    assert.equal(smrChange({ ...base, me: 2, up: upExcept(0, 1), spares: [3] }), undefined);
  });
  test('nothing to do: all live and at size, or no spare', () => {
    assert.equal(smrChange({ ...base, me: 0, up: upExcept() }), undefined);
    assert.equal(smrChange({ ...base, me: 1, members: [1, 2], up: upExcept(0), spares: [] }), undefined);
  });
  test('a node that gave its replica up removes itself only, majority or not', () => {
    assert.deepEqual(smrChange({ ...base, me: 2, gaveUp: true, up: upExcept(0, 1) }), { drop: [2] });
    assert.deepEqual(smrChange({ ...base, me: 0, gaveUp: true, up: upExcept() }), { drop: [0] });
  });
});
