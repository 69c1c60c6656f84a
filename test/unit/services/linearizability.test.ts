/**
 * The WGL linearizability checker (test/lib/linearizability.ts): hand-written histories with known verdicts
 * (the classic tricky ones), property tests on histories generated from a sequential run (must pass) and
 * mutated (must fail), and agreement with a brute-force checker on small random histories.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  bruteForceLinearizable,
  checkLinearizable,
  type KvInput,
  type KvOutput,
  kvModel,
  type LockInput,
  type LockOutput,
  lockModel,
  type Operation,
} from '../../lib/linearizability.js';

type KvOp = Operation<KvInput, KvOutput>;
type LockOp = Operation<LockInput, LockOutput>;

const put = (client: number, key: string, value: string, call: number, ret: number): KvOp => ({
  client,
  input: { op: 'put', key, value },
  output: {},
  call,
  return: ret,
});
const get = (client: number, key: string, value: string | null, call: number, ret: number): KvOp => ({
  client,
  input: { op: 'get', key },
  output: { value },
  call,
  return: ret,
});
const cas = (
  client: number,
  key: string,
  expect: string | null,
  value: string | null,
  succeeded: boolean | undefined,
  call: number,
  ret: number,
): KvOp => ({
  client,
  input: { op: 'cas', key, expect, value },
  output: succeeded === undefined ? undefined : { succeeded },
  call,
  return: ret,
});

const verdict = (h: KvOp[]) => checkLinearizable(kvModel, h).outcome;
const lockVerdict = (h: LockOp[]) => checkLinearizable(lockModel, h).outcome;

describe('linearizability checker: register / kv map', () => {
  it('a sequential history that follows the model is linearizable', () => {
    assert.equal(
      verdict([
        put(1, 'x', 'a', 0, 1),
        get(2, 'x', 'a', 2, 3),
        put(1, 'x', 'b', 4, 5),
        get(2, 'x', 'b', 6, 7),
      ]),
      'ok',
    );
  });

  it('a read of the initial value after a write returned is illegal (stale read)', () => {
    const r = checkLinearizable(kvModel, [put(1, 'x', 'a', 0, 1), get(2, 'x', null, 2, 3)]);
    assert.equal(r.outcome, 'illegal');
    assert.ok(r.longestPrefix !== undefined);
  });

  it('reads concurrent with a write may see either value, but not new then old', () => {
    // w(a) spans both reads: r1 sees a, r2 (after r1) sees the old value → the write must be both before
    // r1 and after r2: illegal.
    assert.equal(
      verdict([put(1, 'x', 'a', 0, 10), get(2, 'x', 'a', 1, 2), get(3, 'x', null, 3, 4)]),
      'illegal',
    );
    // The other way round is fine: old, then new.
    assert.equal(verdict([put(1, 'x', 'a', 0, 10), get(2, 'x', null, 1, 2), get(3, 'x', 'a', 3, 4)]), 'ok');
  });

  it('two readers that see two concurrent writes in opposite orders are illegal', () => {
    const h = [
      put(1, 'x', 'a', 0, 20),
      put(2, 'x', 'b', 0, 20),
      get(3, 'x', 'a', 1, 2),
      get(3, 'x', 'b', 3, 4),
      get(4, 'x', 'b', 1, 2),
      get(4, 'x', 'a', 3, 4),
    ];
    assert.equal(verdict(h), 'illegal');
    // One reader alone seeing a then b is fine.
    assert.equal(verdict(h.slice(0, 4)), 'ok');
  });

  it('a write with an unknown outcome may take effect late, or never', () => {
    const lost: KvOp = {
      client: 1,
      input: { op: 'put', key: 'x', value: 'a' },
      output: undefined,
      call: 0,
      return: Infinity,
    };
    assert.equal(verdict([lost, get(2, 'x', null, 5, 6), get(2, 'x', 'a', 100, 101)]), 'ok');
    assert.equal(verdict([lost, get(2, 'x', null, 5, 6)]), 'ok');
    // But once seen, it cannot be un-seen.
    assert.equal(verdict([lost, get(2, 'x', 'a', 5, 6), get(2, 'x', null, 100, 101)]), 'illegal');
    // A blind retry of the same put after another write (a,b,a seen in sequence) is not one write.
    assert.equal(
      verdict([
        { ...lost, return: 50 },
        get(2, 'x', 'a', 1, 2),
        put(3, 'x', 'b', 3, 4),
        get(2, 'x', 'b', 5, 6),
        get(2, 'x', 'a', 7, 8),
      ]),
      'illegal',
    );
  });

  it('compare-and-swap: two successful swaps from the same expected value are a lost update', () => {
    assert.equal(
      verdict([
        put(0, 'x', '0', 0, 1),
        cas(1, 'x', '0', '1', true, 2, 10),
        cas(2, 'x', '0', '2', true, 2, 10),
      ]),
      'illegal',
    );
    assert.equal(
      verdict([
        put(0, 'x', '0', 0, 1),
        cas(1, 'x', '0', '1', true, 2, 10),
        cas(2, 'x', '0', '2', false, 2, 10),
      ]),
      'ok',
    );
    // A failed cas must have had a reason: the value differed at some point in its interval.
    assert.equal(verdict([put(0, 'x', '0', 0, 1), cas(1, 'x', '0', '1', false, 2, 3)]), 'illegal');
    // An ambiguous cas that matched takes effect when linearized.
    assert.equal(
      verdict([
        put(0, 'x', '0', 0, 1),
        cas(1, 'x', '0', '1', undefined, 2, Infinity),
        get(2, 'x', '1', 5, 6),
      ]),
      'ok',
    );
  });

  it('keys are independent partitions; the failing one is reported', () => {
    const r = checkLinearizable(kvModel, [
      put(1, 'x', 'a', 0, 1),
      get(2, 'x', 'a', 2, 3),
      put(1, 'y', 'a', 0, 1),
      get(2, 'y', 'b', 2, 3),
    ]);
    assert.equal(r.outcome, 'illegal');
    assert.equal(r.partition, 1);
  });

  it('a delete reports whether the key existed', () => {
    const del = (deleted: boolean, call: number, ret: number): KvOp => ({
      client: 1,
      input: { op: 'delete', key: 'x' },
      output: { deleted },
      call,
      return: ret,
    });
    assert.equal(verdict([put(1, 'x', 'a', 0, 1), del(true, 2, 3), get(2, 'x', null, 4, 5)]), 'ok');
    assert.equal(verdict([put(1, 'x', 'a', 0, 1), del(false, 2, 3)]), 'illegal');
  });

  it('gives up with unknown when the step budget runs out', () => {
    const h: KvOp[] = [];
    for (let i = 0; i < 12; i++) h.push(put(i, 'x', String(i), 0, 100));
    h.push(get(99, 'x', 'nope', 101, 102));
    assert.equal(checkLinearizable(kvModel, h, { maxSteps: 50 }).outcome, 'unknown');
    assert.equal(checkLinearizable(kvModel, h).outcome, 'illegal');
  });
});

describe('linearizability checker: lock with fencing tokens', () => {
  const acq = (client: number, token: number | undefined, call: number, ret: number): LockOp => ({
    client,
    input: { op: 'acquire' },
    output: token === undefined ? undefined : { token },
    call,
    return: ret,
  });
  const rel = (client: number, token: number, ok: boolean, call: number, ret: number): LockOp => ({
    client,
    input: { op: 'release', token },
    output: { ok },
    call,
    return: ret,
  });
  const chk = (client: number, token: number, ok: boolean, call: number, ret: number): LockOp => ({
    client,
    input: { op: 'check', token },
    output: { ok },
    call,
    return: ret,
  });

  it('acquire, release, acquire with increasing tokens is legal; concurrent acquires may order either way', () => {
    assert.equal(
      lockVerdict([acq(1, 5, 0, 1), rel(1, 5, true, 2, 3), acq(2, 9, 4, 5), rel(2, 9, true, 6, 7)]),
      'ok',
    );
    // 2 asked first but got the later token: the queue order is the store's, not the call order.
    assert.equal(
      lockVerdict([acq(2, 9, 0, 20), acq(1, 5, 1, 3), rel(1, 5, true, 10, 11), rel(2, 9, true, 21, 22)]),
      'ok',
    );
  });

  it('two holders at once are illegal', () => {
    assert.equal(lockVerdict([acq(1, 5, 0, 1), acq(2, 9, 2, 3), rel(1, 5, true, 4, 5)]), 'illegal');
  });

  it('a token not above every earlier one is illegal', () => {
    assert.equal(lockVerdict([acq(1, 9, 0, 1), rel(1, 9, true, 2, 3), acq(2, 5, 4, 5)]), 'illegal');
  });

  it('release and check succeed only for the holder', () => {
    assert.equal(lockVerdict([acq(1, 5, 0, 1), rel(2, 5, true, 2, 3)]), 'illegal');
    assert.equal(lockVerdict([acq(1, 5, 0, 1), rel(2, 5, false, 2, 3), chk(2, 5, true, 4, 5)]), 'ok');
    assert.equal(lockVerdict([acq(1, 5, 0, 1), rel(1, 5, true, 2, 3), chk(2, 5, true, 4, 5)]), 'illegal');
  });

  it('an expired holder loses the lock: its release fails and its token is stale', () => {
    const expire: LockOp = { client: 0, input: { op: 'expire', token: 5 }, output: {}, call: 2, return: 3 };
    assert.equal(
      lockVerdict([acq(1, 5, 0, 1), expire, acq(2, 9, 4, 5), chk(1, 5, false, 6, 7), rel(1, 5, false, 8, 9)]),
      'ok',
    );
    assert.equal(lockVerdict([acq(1, 5, 0, 1), expire, rel(1, 5, true, 8, 9)]), 'illegal');
  });

  it('an acquire with an unknown outcome does not block the others', () => {
    assert.equal(lockVerdict([acq(1, undefined, 0, Infinity), acq(2, 9, 4, 5), rel(2, 9, true, 6, 7)]), 'ok');
  });
});

// ------------------------------------------------------------------------------------------ generated histories

/** A generated sequential run: ops in linearization order, each applied to a real map. */
interface GenOp {
  client: number;
  input: KvInput;
  /** Call starts up to this much before the linearization point (overlap with earlier ops). */
  back: number;
  /** Return comes this much after it (< the gap between points, so a client's next op can follow). */
  fwd: number;
  /** The outcome is recorded as unknown; `applied` says whether it still took effect. */
  lost: boolean;
  applied: boolean;
}

const keys = ['a', 'b'];
const values = ['1', '2', '3', '4'];
const genInput: fc.Arbitrary<KvInput> = fc.oneof(
  fc.record({ op: fc.constant('get' as const), key: fc.constantFrom(...keys) }),
  fc.record({
    op: fc.constant('put' as const),
    key: fc.constantFrom(...keys),
    value: fc.constantFrom(...values),
  }),
  fc.record({ op: fc.constant('delete' as const), key: fc.constantFrom(...keys) }),
  fc.record({
    op: fc.constant('cas' as const),
    key: fc.constantFrom(...keys),
    expect: fc.constantFrom(null, ...values),
    value: fc.constantFrom(null, ...values),
  }),
);
const genOps = fc.array(
  fc.record({
    client: fc.integer({ min: 0, max: 3 }),
    input: genInput,
    back: fc.integer({ min: 0, max: 45 }),
    fwd: fc.integer({ min: 1, max: 9 }),
    lost: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
    applied: fc.boolean(),
  }),
  { minLength: 1, maxLength: 40 },
);

/**
 * Turn a sequential run into a concurrent history: op i takes effect at time 10·i; its call is up to `back`
 * earlier (but after its client's previous return), its return `fwd` later. Linearizable by construction.
 * A client whose op was lost issues nothing more (it never got a reply).
 */
function toHistory(gen: GenOp[], overlap: boolean): KvOp[] {
  const state = new Map<string, string | null>();
  const lastReturn = new Map<number, number>();
  const dead = new Set<number>();
  const out: KvOp[] = [];
  gen.forEach((g, i) => {
    if (dead.has(g.client)) return;
    const point = 10 * i;
    const call = overlap ? Math.max((lastReturn.get(g.client) ?? -1) + 0.5, point - g.back) : point - 1;
    const ret = overlap ? point + g.fwd : point + 1;
    const cur = state.get(g.input.key) ?? null;
    let output: KvOutput = {};
    const apply = !g.lost || g.applied;
    switch (g.input.op) {
      case 'get':
        output = { value: cur };
        break;
      case 'put':
        if (apply) state.set(g.input.key, g.input.value);
        break;
      case 'delete':
        output = { deleted: cur !== null };
        if (apply) state.set(g.input.key, null);
        break;
      case 'cas':
        output = { succeeded: cur === g.input.expect };
        if (apply && cur === g.input.expect) state.set(g.input.key, g.input.value);
        break;
    }
    if (g.lost && g.input.op !== 'get') {
      // Applied or not, the history stays linearizable: a lost op that did not apply is linearized at the end.
      out.push({ client: g.client, input: g.input, output: undefined, call, return: Infinity });
      dead.add(g.client);
      return;
    }
    out.push({ client: g.client, input: g.input, output, call, return: ret });
    lastReturn.set(g.client, ret);
  });
  return out;
}

describe('linearizability checker: generated histories', () => {
  it('histories generated from a sequential run are linearizable', () => {
    fc.assert(
      fc.property(genOps, (gen) => {
        const h = toHistory(gen, true);
        assert.equal(checkLinearizable(kvModel, h).outcome, 'ok', JSON.stringify(h));
      }),
      { numRuns: 300 },
    );
  });

  it('a read mutated to a value never written is caught', () => {
    fc.assert(
      fc.property(genOps, fc.nat(), (gen, pick) => {
        const h = toHistory(gen, true);
        const reads = h.filter((op) => op.input.op === 'get' && op.output !== undefined);
        fc.pre(reads.length > 0);
        const victim = reads[pick % reads.length]!;
        victim.output = { value: 'never-written' };
        assert.equal(checkLinearizable(kvModel, h).outcome, 'illegal');
      }),
      { numRuns: 200 },
    );
  });

  it('in a history without overlap, any changed read or flipped cas outcome is caught', () => {
    fc.assert(
      fc.property(genOps, fc.nat(), fc.constantFrom(null, ...values), (gen, pick, other) => {
        const h = toHistory(
          gen.map((g) => ({ ...g, lost: false })),
          false,
        );
        const targets = h.filter((op) => op.input.op === 'get' || op.input.op === 'cas');
        fc.pre(targets.length > 0);
        const victim = targets[pick % targets.length]!;
        if (victim.input.op === 'get') {
          fc.pre(victim.output?.value !== other);
          victim.output = { value: other };
        } else {
          victim.output = { succeeded: !victim.output?.succeeded };
        }
        assert.equal(checkLinearizable(kvModel, h).outcome, 'illegal', JSON.stringify(h));
      }),
      { numRuns: 200 },
    );
  });

  it('agrees with brute force on small random histories (legal or not)', () => {
    const op = fc.record({
      client: fc.integer({ min: 0, max: 2 }),
      input: genInput.map((i) => ({ ...i, key: 'a' })),
      call: fc.integer({ min: 0, max: 20 }),
      len: fc.integer({ min: 0, max: 10 }),
      value: fc.constantFrom(null, '1', '2'),
      flag: fc.boolean(),
      lost: fc.integer({ min: 0, max: 6 }).map((n) => n === 0),
    });
    let legal = 0;
    let illegal = 0;
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 6 }), (raw) => {
        const h: KvOp[] = raw.map((r) => ({
          client: r.client,
          input: r.input,
          output: r.lost
            ? undefined
            : r.input.op === 'get'
              ? { value: r.value }
              : r.input.op === 'delete'
                ? { deleted: r.flag }
                : r.input.op === 'cas'
                  ? { succeeded: r.flag }
                  : {},
          call: r.call,
          return: r.lost ? Infinity : r.call + r.len,
        }));
        const expected = bruteForceLinearizable(kvModel, h);
        if (expected) legal++;
        else illegal++;
        assert.equal(checkLinearizable(kvModel, h).outcome, expected ? 'ok' : 'illegal', JSON.stringify(h));
      }),
      { numRuns: 1_000 },
    );
    // Both verdicts were exercised, or the comparison proves little.
    assert.ok(legal > 50 && illegal > 50, `legal ${legal}, illegal ${illegal}`);
  });
});
