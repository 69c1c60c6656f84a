/**
 * The shared parts of the services (src/services/scope.ts): the per-DC key layout, name and key validation,
 * and storeCall's retry rules (which writes may be retried after a lost reply, and which errors the caller
 * sees). Pure: the "store" is a function that fails on cue.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DvsError, type ErrorCode } from '../../../src/protocol/errors.js';
import {
  AsyncQueue,
  DcScope,
  MAX_VALUE_BYTES,
  storeCall,
  validateKey,
  validateName,
  validateValue,
} from '../../../src/services/scope.js';

function code(fn: () => unknown): ErrorCode | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof DvsError ? e.code : undefined;
  }
  return undefined;
}

async function rejection(p: Promise<unknown>): Promise<DvsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DvsError);
    return e;
  }
  assert.fail('resolved');
}

const lost = () => new DvsError('ENOTCONN', 'lost', { ambiguous: true });
const notSent = () => new DvsError('ENOTCONN', 'not sent', { ambiguous: false });

describe('services scope', () => {
  it('every DC has its own prefixes, and no DC prefix is a prefix of another', () => {
    const d1 = new DcScope(1);
    const d12 = new DcScope(12);
    assert.equal(d1.kvRoot, '/dvs/svc/1/kv/');
    assert.equal(d1.locksRoot, '/dvs/svc/1/locks/');
    assert.equal(d1.electionsRoot, '/dvs/svc/1/elections/');
    assert.equal(d1.consensusRoot, '/dvs/svc/1/consensus/');
    assert.equal(d12.kvRoot.startsWith(d1.root), false);
    for (const bad of [0, -1, 65536, 1.5, Number.NaN])
      assert.equal(
        code(() => new DcScope(bad)),
        'EINVAL',
      );
  });

  it('validates names, keys and values', () => {
    assert.equal(
      code(() => validateName('lock', 'db-primary.v2:x_y')),
      undefined,
    );
    for (const bad of ['', 'a/b', 'a b', 'x'.repeat(129), 'é', 7]) {
      assert.equal(
        code(() => validateName('lock', bad)),
        'EINVAL',
        String(bad),
      );
    }
    assert.equal(
      code(() => validateKey('a/b c/é')),
      undefined,
    );
    assert.equal(
      code(() => validateKey('')),
      'EINVAL',
    );
    assert.equal(
      code(() => validateKey('', true)),
      undefined,
    );
    assert.equal(
      code(() => validateKey('a\u0000b')),
      'EINVAL',
    );
    assert.equal(
      code(() => validateKey('k'.repeat(1025))),
      'EINVAL',
    );
    assert.equal(
      code(() => validateValue(new Uint8Array(MAX_VALUE_BYTES))),
      undefined,
    );
    assert.equal(
      code(() => validateValue(new Uint8Array(MAX_VALUE_BYTES + 1))),
      'EINVAL',
    );
    assert.equal(
      code(() => validateValue('text')),
      'EINVAL',
    );
  });
});

describe('storeCall', () => {
  const read = { what: 'read', write: false, idempotent: true };
  const put = { what: 'put', write: true, idempotent: false };
  const guarded = { what: 'guarded', write: true, idempotent: true };

  it('retries what was not sent, and reads, until they succeed', async () => {
    let n = 0;
    const v = await storeCall(put, {}, 2_000, async () => {
      if (++n < 3) throw notSent();
      return 'ok';
    });
    assert.deepEqual([v, n], ['ok', 3]);
  });

  it('never retries a non-idempotent write that may have been applied: EUNAVAIL ambiguous', async () => {
    let n = 0;
    const e = await rejection(
      storeCall(put, {}, 2_000, async () => {
        n++;
        throw lost();
      }),
    );
    assert.equal(e.code, 'EUNAVAIL');
    assert.equal(e.details?.ambiguous, true);
    assert.equal(n, 1);
  });

  it('retries an idempotent write after a lost reply', async () => {
    let n = 0;
    const v = await storeCall(guarded, {}, 2_000, async () => {
      if (++n === 1) throw lost();
      return n;
    });
    assert.equal(v, 2);
  });

  it('an unreachable store past the timeout is EUNAVAIL (not ambiguous for reads)', async () => {
    const e = await rejection(
      storeCall(read, { timeout: 60 }, 2_000, async () => {
        throw new DvsError('ETIMEDOUT', 'slow');
      }),
    );
    assert.equal(e.code, 'EUNAVAIL');
    assert.equal(e.details?.ambiguous, false);
    assert.equal(e.details?.cause, 'ETIMEDOUT');
  });

  it("the caller's signal gives EABORTED; refusals pass through unchanged", async () => {
    const ac = new AbortController();
    ac.abort();
    assert.equal(
      (await rejection(storeCall(read, { signal: ac.signal }, 1_000, async () => 1))).code,
      'EABORTED',
    );
    const refused = await rejection(
      storeCall(put, {}, 1_000, async () => {
        throw new DvsError('ENOENT', 'no such lease');
      }),
    );
    assert.equal(refused.code, 'ENOENT');
    assert.equal((await rejection(storeCall(read, { timeout: -1 }, 1_000, async () => 1))).code, 'EINVAL');
  });
});

describe('AsyncQueue', () => {
  it('delivers in order, bounds the backlog, ends cleanly or with an error', async () => {
    let returned = false;
    const q = new AsyncQueue<number>(3, () => {
      returned = true;
    });
    for (let i = 1; i <= 5; i++) q.push(i);
    q.end();
    const got: number[] = [];
    for await (const v of q) got.push(v);
    assert.deepEqual(got, [3, 4, 5], 'the oldest beyond the limit are dropped');
    assert.equal(returned, false);

    const q2 = new AsyncQueue<number>(10, () => {});
    const next = q2.next();
    q2.end(new DvsError('EUNAVAIL', 'stopped'));
    assert.equal((await rejection(next)).code, 'EUNAVAIL');

    const q3 = new AsyncQueue<number>(10, () => {
      returned = true;
    });
    q3.push(1);
    for await (const v of q3) {
      assert.equal(v, 1);
      break;
    }
    assert.equal(returned, true, 'breaking out of for-await returns the iterator');
  });
});
