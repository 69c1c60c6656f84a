/** One-time join tokens: stored hashed, spent once, expire, and a wrong token is refused. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import {
  consumeJoinToken,
  createJoinToken,
  listJoinTokens,
  parseDuration,
  TOKEN_PREFIX,
  TOKENS_FILE,
} from '../../../src/security/tokens.js';

const code = (c: string) => (e: unknown) => e instanceof DvsError && e.code === c;

describe('join tokens', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-tokens-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a token is good exactly once', async () => {
    const { token, expiresAt } = await createJoinToken(dir, 60_000, { now: 1000 });
    assert.ok(token.startsWith(TOKEN_PREFIX));
    assert.equal(expiresAt, 61_000);
    await consumeJoinToken(dir, token, { now: 2000 });
    await assert.rejects(consumeJoinToken(dir, token, { now: 2000 }), (e) => {
      assert.ok(code('EAUTH')(e));
      assert.match((e as Error).message, /unknown or already used/);
      return true;
    });
  });

  it('is stored only as a hash, in a file only the owner can read', async () => {
    const { token } = await createJoinToken(dir, 60_000);
    const text = await readFile(join(dir, TOKENS_FILE), 'utf8');
    assert.ok(!text.includes(token.slice(TOKEN_PREFIX.length)));
    assert.equal((await stat(join(dir, TOKENS_FILE))).mode & 0o777, 0o600);
    assert.equal((await listJoinTokens(dir)).length, 1);
  });

  it('an expired token is refused and forgotten', async () => {
    const { token } = await createJoinToken(dir, 1000, { now: 0 });
    await assert.rejects(consumeJoinToken(dir, token, { now: 1000 }), (e) => {
      assert.ok(code('EAUTH')(e));
      assert.match((e as Error).message, /expired at 1970-01-01T00:00:01.000Z/);
      return true;
    });
    assert.equal((await listJoinTokens(dir, { now: 0 })).length, 0);
  });

  it('a wrong token is refused and leaves the others valid', async () => {
    const a = await createJoinToken(dir, 60_000);
    const b = await createJoinToken(dir, 60_000);
    const wrong = `${TOKEN_PREFIX}${'A'.repeat(43)}`;
    await assert.rejects(consumeJoinToken(dir, wrong), code('EAUTH'));
    await assert.rejects(consumeJoinToken(dir, 'hello'), code('EINVAL'));
    await consumeJoinToken(dir, b.token);
    await consumeJoinToken(dir, a.token);
  });

  it('two joins racing on one token: exactly one wins', async () => {
    const { token } = await createJoinToken(dir, 60_000);
    const results = await Promise.allSettled([consumeJoinToken(dir, token), consumeJoinToken(dir, token)]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  });

  it('refuses a bad lifetime', async () => {
    await assert.rejects(createJoinToken(dir, 0), code('EINVAL'));
    await assert.rejects(createJoinToken(dir, Number.NaN), code('EINVAL'));
  });
});

describe('durations', () => {
  it('parses units and refuses junk', () => {
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('30m'), 1_800_000);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('7d'), 604_800_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('250'), 250);
    for (const bad of ['', 'h', '1w', '-1h', '0s', '1.5h'])
      assert.throws(() => parseDuration(bad), code('EINVAL'), bad);
  });
});
