/**
 * The checks of the network join, without a network: the joining node's checks of what it receives (CA
 * pinned by fingerprint, certificate issued by it, for its node id and key), the CA side's validation of
 * the request body and the CSR (a bad request never spends the token), and the failure limiter.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseJoinRequest } from '../../../src/api/join.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { initCa } from '../../../src/security/ca-dir.js';
import { checkIssued, checkPinned } from '../../../src/security/join-client.js';
import { FailureLimiter, JoinAuthority } from '../../../src/security/join-server.js';
import {
  compactFingerprint,
  createPinnedToken,
  joinProof,
  parsePinnedToken,
  pinnedTokenHash,
} from '../../../src/security/join-token.js';
import {
  createCa,
  createNodeRequest,
  fingerprintOf,
  type PemPair,
  signNodeRequest,
} from '../../../src/security/pki.js';
import { listJoinTokens } from '../../../src/security/tokens.js';

const code = (c: string, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof DvsError, String(e));
  assert.equal(e.code, c, e.message);
  if (re) assert.match(e.message, re);
  return true;
};

describe('what the joining node accepts', () => {
  let ca: PemPair;
  let other: PemPair;
  before(async () => {
    ca = await createCa();
    other = await createCa();
  });

  it('the pinned CA passes; another CA is refused naming both fingerprints', () => {
    const pinned = compactFingerprint(fingerprintOf(ca.certPem));
    assert.equal(checkPinned(ca.certPem, pinned, 'http://x').fingerprint256, fingerprintOf(ca.certPem));
    assert.throws(
      () => checkPinned(other.certPem, pinned, 'http://x'),
      code(
        'EAUTH',
        new RegExp(
          `CA fingerprint mismatch: http://x serves CA ${fingerprintOf(other.certPem)}, the token pins ${fingerprintOf(ca.certPem)}`,
        ),
      ),
    );
    assert.throws(() => checkPinned('junk', pinned, 'http://x'), code('EPROTO'));
  });

  it('a leaf pinned as if it were the CA is refused', async () => {
    const req = await createNodeRequest(1);
    const leaf = await signNodeRequest(ca, req.csrPem, { nodeId: 1 });
    assert.throws(
      () => checkPinned(leaf, compactFingerprint(fingerprintOf(leaf)), 'http://x'),
      code('EAUTH', /not a CA certificate/),
    );
  });

  it('the certificate must be from the CA, for this node id and this key', async () => {
    const req = await createNodeRequest(2);
    const good = await signNodeRequest(ca, req.csrPem, { nodeId: 2 });
    checkIssued(good, ca.certPem, 2, req.keyPem);
    const fromOther = await signNodeRequest(other, req.csrPem, { nodeId: 2 });
    assert.throws(
      () => checkIssued(fromOther, ca.certPem, 2, req.keyPem),
      code('EAUTH', /not signed by the pinned CA/),
    );
    const req3 = await createNodeRequest(3);
    const for3 = await signNodeRequest(ca, req3.csrPem, { nodeId: 3 });
    assert.throws(
      () => checkIssued(for3, ca.certPem, 2, req3.keyPem),
      code('EAUTH', /node id mismatch: .* node-3, not node-2/),
    );
    // Someone else's certificate for node 2 (a replayed answer) is useless: not for our key.
    const otherKey = (await createNodeRequest(2)).keyPem;
    assert.throws(
      () => checkIssued(good, ca.certPem, 2, otherKey),
      code('EAUTH', /not for the key made here/),
    );
    const expired = await signNodeRequest(ca, req.csrPem, { nodeId: 2, validDays: 1, now: new Date(0) });
    assert.throws(() => checkIssued(expired, ca.certPem, 2, req.keyPem), code('EAUTH', /not valid now/));
  });
});

describe('join request body', () => {
  const ok = {
    version: 1,
    tokenId: 'abcdEFGH',
    nodeId: 3,
    csr: '-----BEGIN CERTIFICATE REQUEST-----x',
    proof: 'a'.repeat(64),
  };

  it('a well-formed body parses', () => {
    assert.deepEqual(parseJoinRequest(ok), { tokenId: 'abcdEFGH', nodeId: 3, csr: ok.csr, proof: ok.proof });
  });

  it('each malformed field is EINVAL naming the field', () => {
    const cases: [unknown, string][] = [
      [null, 'body'],
      [[], 'body'],
      ['str', 'body'],
      [{ ...ok, extra: 1 }, 'extra'],
      [{ ...ok, version: 2 }, 'version'],
      [{ ...ok, tokenId: 'short' }, 'tokenId'],
      [{ ...ok, tokenId: 7 }, 'tokenId'],
      [{ ...ok, nodeId: -1 }, 'nodeId'],
      [{ ...ok, nodeId: 65536 }, 'nodeId'],
      [{ ...ok, nodeId: 1.5 }, 'nodeId'],
      [{ ...ok, nodeId: '3' }, 'nodeId'],
      [{ ...ok, csr: 'hello' }, 'csr'],
      [{ ...ok, csr: `-----BEGIN CERTIFICATE REQUEST-----${'x'.repeat(9000)}` }, 'csr'],
      [{ ...ok, proof: 'A'.repeat(64) }, 'proof'],
      [{ ...ok, proof: undefined }, 'proof'],
    ];
    for (const [body, field] of cases) {
      assert.throws(
        () => parseJoinRequest(body),
        (e) => e instanceof DvsError && e.code === 'EINVAL' && e.details?.field === field,
        JSON.stringify(body)?.slice(0, 80),
      );
    }
  });
});

describe('the CA side (JoinAuthority)', () => {
  let dir: string;
  let authority: JoinAuthority;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-join-auth-'));
    await initCa(join(dir, 'ca'));
    authority = new JoinAuthority({ caDir: join(dir, 'ca') });
    await authority.start();
  });
  after(async () => {
    await authority.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function token(nodeId?: number) {
    const t = await createPinnedToken(
      join(dir, 'ca'),
      authority.caFingerprint,
      60_000,
      nodeId === undefined ? {} : { nodeId },
    );
    return parsePinnedToken(t.token);
  }
  const request = (t: ReturnType<typeof parsePinnedToken>, nodeId: number, csr: string) => ({
    tokenId: t.id,
    nodeId,
    csr,
    proof: joinProof(pinnedTokenHash(t), nodeId, csr),
  });

  it('signs a good request once', async () => {
    const t = await token();
    const req = await createNodeRequest(4);
    const a = await authority.join(request(t, 4, req.csrPem));
    checkIssued(a.cert, a.ca, 4, req.keyPem);
    assert.equal(a.ca, authority.caCert);
    await assert.rejects(authority.join(request(t, 4, req.csrPem)), code('EAUTH', /already used/));
  });

  it('a CSR for another node, or not a CSR, is refused and the token stays good', async () => {
    const t = await token();
    const for5 = await createNodeRequest(5);
    await assert.rejects(authority.join(request(t, 6, for5.csrPem)), code('EAUTH', /node-5, not node-6/));
    const junk = '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n';
    await assert.rejects(authority.join(request(t, 6, junk)), code('EINVAL'));
    assert.equal(
      (await listJoinTokens(join(dir, 'ca'))).filter((r) => (r as { id?: string }).id === t.id).length,
      1,
    );
    const for6 = await createNodeRequest(6);
    await authority.join(request(t, 6, for6.csrPem));
  });

  it('a CSR whose signature does not match its key is refused', async () => {
    const t = await token();
    const a = await createNodeRequest(7);
    // Swap the signature bits: take the body of one request and the tail of another.
    const b = await createNodeRequest(7);
    const body = (pem: string) =>
      pem
        .split('\n')
        .filter((l) => !l.startsWith('-----'))
        .join('');
    const mixed = Buffer.from(body(a.csrPem), 'base64');
    const other = Buffer.from(body(b.csrPem), 'base64');
    // The DER ends with the signature's s: overwrite its last 16 bytes with b's (lengths unchanged).
    other.copy(mixed, mixed.length - 16, other.length - 16);
    const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${mixed.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(authority.join(request(t, 7, pem)), code('EAUTH', /signature is invalid/));
  });

  it('a token bound to node 2 does not sign for node 3', async () => {
    const t = await token(2);
    const r3 = await createNodeRequest(3);
    await assert.rejects(authority.join(request(t, 3, r3.csrPem)), code('EAUTH', /for node 2, not node 3/));
    const r2 = await createNodeRequest(2);
    checkIssued((await authority.join(request(t, 2, r2.csrPem))).cert, authority.caCert, 2, r2.keyPem);
  });

  it('refuses to start without a CA', async () => {
    const none = new JoinAuthority({ caDir: join(dir, 'nothing') });
    await assert.rejects(none.start(), code('ENOENT'));
  });
});

describe('failure limiter', () => {
  it('blocks a key after maxFailures within the window, until the window ends', () => {
    let now = 1000;
    const l = new FailureLimiter({ maxFailures: 3, windowMs: 10_000, now: () => now });
    for (let i = 0; i < 3; i++) {
      assert.equal(l.blockedFor('a'), 0);
      l.fail('a');
    }
    assert.equal(l.blockedFor('a'), 10_000);
    assert.equal(l.blockedFor('b'), 0);
    now += 4000;
    assert.equal(l.blockedFor('a'), 6000);
    now += 6000;
    assert.equal(l.blockedFor('a'), 0);
    l.fail('a');
    assert.equal(l.blockedFor('a'), 0);
  });

  it('keeps at most maxKeys windows', () => {
    const l = new FailureLimiter({ maxFailures: 1, windowMs: 10_000, maxKeys: 4, now: () => 0 });
    for (let i = 0; i < 10; i++) l.fail(`k${i}`);
    assert.equal(l.size, 4);
    assert.ok(l.blockedFor('k9') > 0);
    assert.equal(l.blockedFor('k0'), 0);
  });
});
