/**
 * Pinned join tokens (src/security/join-token.ts): the token's form, the proof a joining node sends instead
 * of the secret (wire format pinned), one-time spending, expiry, node binding, and living in the same
 * tokens.json as the plain tokens without either flow spending the other's.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import fc from 'fast-check';
import { DvsError } from '../../../src/protocol/errors.js';
import {
  checkPinnedToken,
  colonFingerprint,
  compactFingerprint,
  createPinnedToken,
  isPinnedToken,
  joinProof,
  type PinnedToken,
  parsePinnedToken,
  pinnedTokenHash,
  spendPinnedToken,
  type TokenCredential,
} from '../../../src/security/join-token.js';
import {
  consumeJoinToken,
  createJoinToken,
  listJoinTokens,
  TOKENS_FILE,
} from '../../../src/security/tokens.js';

const code = (c: string, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof DvsError, String(e));
  assert.equal(e.code, c, e.message);
  if (re) assert.match(e.message, re);
  return true;
};

// A CA fingerprint as node:crypto prints it (any 32 bytes do for these tests).
const FP = Array.from({ length: 32 }, (_, i) => (i * 7).toString(16).padStart(2, '0').toUpperCase()).join(
  ':',
);
const CSR = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';

function proofCred(t: PinnedToken, nodeId: number, csr = CSR): TokenCredential {
  return {
    kind: 'proof',
    tokenId: t.id,
    nodeId,
    csrPem: csr,
    proof: joinProof(pinnedTokenHash(t), nodeId, csr),
  };
}

describe('pinned join token form', () => {
  it('is dvsjt1-<id>.<secret>.<fingerprint> and parses back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dvs-jt-'));
    try {
      const t = await createPinnedToken(dir, FP, 60_000);
      assert.match(t.token, /^dvsjt1-[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{43}\.[0-9a-f]{64}$/);
      const p = parsePinnedToken(t.token);
      assert.equal(p.id, t.id);
      assert.equal(p.caFingerprint, compactFingerprint(FP));
      assert.equal(colonFingerprint(p.caFingerprint), FP);
      assert.ok(isPinnedToken(t.token));
      // Surrounding white space (a copy from a terminal) is forgiven.
      assert.equal(parsePinnedToken(` ${t.token}\n`).secret, p.secret);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses the old form with a hint, and anything else', () => {
    const old = `dvsjt1-${'A'.repeat(43)}`;
    assert.equal(isPinnedToken(old), false);
    assert.throws(() => parsePinnedToken(old), code('EINVAL', /no CA fingerprint \(old form\)/));
    for (const bad of [
      '',
      'hello',
      `dvsjt1-${'A'.repeat(8)}.${'B'.repeat(43)}`,
      `dvsjt1-${'A'.repeat(8)}.${'B'.repeat(43)}.${'c'.repeat(63)}`,
      `dvsjt1-${'A'.repeat(8)}.${'B'.repeat(43)}.${'g'.repeat(64)}`,
      `dvsjt1-${'A'.repeat(7)}.${'B'.repeat(44)}.${'c'.repeat(64)}`,
      `dvsjt2-${'A'.repeat(8)}.${'B'.repeat(43)}.${'c'.repeat(64)}`,
    ]) {
      assert.throws(() => parsePinnedToken(bad), code('EINVAL'), bad);
    }
  });

  it('parsing never throws anything but EINVAL on arbitrary input', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        try {
          parsePinnedToken(s);
        } catch (e) {
          return e instanceof DvsError && e.code === 'EINVAL';
        }
        return true;
      }),
    );
  });

  it('fingerprints convert between the colon and the compact form', () => {
    assert.equal(compactFingerprint(FP), FP.replace(/:/g, '').toLowerCase());
    assert.equal(compactFingerprint(compactFingerprint(FP).toUpperCase()), compactFingerprint(FP));
    assert.throws(() => compactFingerprint('AB:CD'), code('EINVAL'));
  });
});

describe('join proof wire format', () => {
  it('hash and proof are the documented SHA-256 and HMAC constructions', () => {
    const t = { id: 'abcdEFGH', secret: 's'.repeat(43) };
    const hash = createHash('sha256')
      .update(`dvsjt1:abcdEFGH.${'s'.repeat(43)}`)
      .digest('hex');
    assert.equal(pinnedTokenHash(t), hash);
    const proof = createHmac('sha256', Buffer.from(hash, 'hex'))
      .update(`dvs-join-v1\n7\n${CSR}`)
      .digest('hex');
    assert.equal(joinProof(hash, 7, CSR), proof);
    assert.match(proof, /^[0-9a-f]{64}$/);
    // Bound to the node id and the CSR.
    assert.notEqual(joinProof(hash, 8, CSR), proof);
    assert.notEqual(joinProof(hash, 7, `${CSR} `), proof);
  });
});

describe('pinned token store', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-jt-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is stored as a hash only, 0600, listed with the plain tokens', async () => {
    const t = await createPinnedToken(dir, FP, 60_000, { nodeId: 4 });
    const p = parsePinnedToken(t.token);
    const text = await readFile(join(dir, TOKENS_FILE), 'utf8');
    assert.ok(!text.includes(p.secret));
    assert.equal((await stat(join(dir, TOKENS_FILE))).mode & 0o777, 0o600);
    const [rec] = await listJoinTokens(dir);
    assert.deepEqual(
      { id: (rec as { id?: string }).id, nodeId: (rec as { nodeId?: number }).nodeId },
      { id: t.id, nodeId: 4 },
    );
  });

  it('a proof spends the token exactly once', async () => {
    const p = parsePinnedToken((await createPinnedToken(dir, FP, 60_000)).token);
    await checkPinnedToken(dir, proofCred(p, 2));
    await spendPinnedToken(dir, proofCred(p, 2));
    await assert.rejects(spendPinnedToken(dir, proofCred(p, 2)), code('EAUTH', /unknown or already used/));
  });

  it('the token itself (file flow) spends it too, once', async () => {
    const p = parsePinnedToken((await createPinnedToken(dir, FP, 60_000)).token);
    await spendPinnedToken(dir, { kind: 'token', token: p, nodeId: 9 });
    await assert.rejects(spendPinnedToken(dir, proofCred(p, 9)), code('EAUTH'));
  });

  it('a wrong proof or secret is refused like an unknown token, and spends nothing', async () => {
    const p = parsePinnedToken((await createPinnedToken(dir, FP, 60_000)).token);
    const wrongSecret = { ...p, secret: 'x'.repeat(43) };
    const unknown = code('EAUTH', /unknown or already used/);
    await assert.rejects(spendPinnedToken(dir, proofCred(wrongSecret, 2)), unknown);
    await assert.rejects(spendPinnedToken(dir, { kind: 'token', token: wrongSecret, nodeId: 2 }), unknown);
    // A proof made for another CSR (someone in the middle swapping the request) does not verify.
    const swapped = {
      ...(proofCred(p, 2) as Extract<TokenCredential, { kind: 'proof' }>),
      csrPem: `${CSR}x`,
    };
    await assert.rejects(spendPinnedToken(dir, swapped), unknown);
    await assert.rejects(spendPinnedToken(dir, proofCred({ ...p, id: 'zzzzzzzz' }, 2)), unknown);
    await assert.rejects(spendPinnedToken(dir, proofCred({ ...p, id: 'bad' }, 2)), code('EINVAL'));
    await spendPinnedToken(dir, proofCred(p, 2));
  });

  it('an expired token is refused and forgotten', async () => {
    const p = parsePinnedToken((await createPinnedToken(dir, FP, 1000, { now: 0 })).token);
    await assert.rejects(
      spendPinnedToken(dir, proofCred(p, 1), { now: 1000 }),
      code('EAUTH', /expired at 1970-01-01T00:00:01.000Z/),
    );
    assert.equal((await listJoinTokens(dir, { now: 0 })).length, 0);
  });

  it('a token bound to node 2 is refused for node 3 and stays good for node 2', async () => {
    const t = await createPinnedToken(dir, FP, 60_000, { nodeId: 2 });
    const p = parsePinnedToken(t.token);
    await assert.rejects(checkPinnedToken(dir, proofCred(p, 3)), code('EAUTH', /is for node 2, not node 3/));
    await assert.rejects(spendPinnedToken(dir, proofCred(p, 3)), code('EAUTH', /is for node 2, not node 3/));
    await assert.rejects(
      spendPinnedToken(dir, { kind: 'token', token: p, nodeId: 3 }),
      code('EAUTH', /is for node 2/),
    );
    await spendPinnedToken(dir, proofCred(p, 2));
  });

  it('two spends racing: exactly one wins', async () => {
    const p = parsePinnedToken((await createPinnedToken(dir, FP, 60_000)).token);
    const results = await Promise.allSettled([
      spendPinnedToken(dir, proofCred(p, 1)),
      spendPinnedToken(dir, { kind: 'token', token: p, nodeId: 1 }),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  });

  it('shares tokens.json with plain tokens: neither kind of spend takes the other kind', async () => {
    const plain = await createJoinToken(dir, 60_000);
    const pinned = await createPinnedToken(dir, FP, 60_000, { nodeId: 5 });
    const p = parsePinnedToken(pinned.token);
    // Code that knows only plain tokens cannot spend a pinned one (so it cannot skip the node binding)...
    await assert.rejects(consumeJoinToken(dir, pinned.token), code('EAUTH'));
    // ...and a plain-token write keeps the pinned record with its binding.
    await consumeJoinToken(dir, plain.token);
    await assert.rejects(spendPinnedToken(dir, proofCred(p, 6)), code('EAUTH', /is for node 5/));
    await spendPinnedToken(dir, proofCred(p, 5));
    assert.equal((await listJoinTokens(dir)).length, 0);
  });

  it('refuses a bad lifetime or node id', async () => {
    await assert.rejects(createPinnedToken(dir, FP, 0), code('EINVAL'));
    await assert.rejects(createPinnedToken(dir, FP, 1000, { nodeId: 65536 }), code('EINVAL'));
    await assert.rejects(createPinnedToken(dir, 'nope', 1000), code('EINVAL'));
  });
});
