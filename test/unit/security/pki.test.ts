/** Certificates: the CA, node CSRs and their signing, and how a CN names a node. */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { commonNameOf, nodeCommonName, parseNodeCommonName } from '../../../src/security/names.js';
import { createCa, createNodeRequest, fingerprintOf, signNodeRequest } from '../../../src/security/pki.js';

const code = (c: string) => (e: unknown) => e instanceof DvsError && e.code === c;

describe('node common names', () => {
  it('node-<id> round-trips for the whole id range', () => {
    for (const id of [0, 1, 9, 10, 4095, 65535]) assert.equal(parseNodeCommonName(nodeCommonName(id)), id);
  });

  it('rejects anything else', () => {
    for (const cn of [
      'node-',
      'node-65536',
      'node-01',
      'node--1',
      'node-1 ',
      'Node-1',
      'node-1x',
      'x-node-1',
      '',
    ]) {
      assert.equal(parseNodeCommonName(cn), null, cn);
    }
    assert.equal(parseNodeCommonName(undefined), null);
    assert.throws(() => nodeCommonName(65536), code('EINVAL'));
    assert.throws(() => nodeCommonName(1.5), code('EINVAL'));
  });

  it('reads the one CN of a subject, and refuses several', () => {
    assert.equal(commonNameOf('O=dvs\nCN=node-3'), 'node-3');
    assert.equal(commonNameOf('O=dvs'), undefined);
    assert.equal(commonNameOf('CN=node-1\nCN=node-2'), undefined);
  });
});

describe('cluster CA', () => {
  it('is a self-signed ECDSA P-256 CA allowed to sign certificates only', async () => {
    const ca = await createCa({ commonName: 'test CA', validDays: 10 });
    const x = new X509Certificate(ca.certPem);
    assert.equal(x.ca, true);
    assert.equal(x.subject, 'CN=test CA\nO=dvs');
    assert.equal(x.issuer, x.subject);
    assert.ok(x.verify(x.publicKey));
    const key = x.publicKey;
    assert.equal(key.asymmetricKeyType, 'ec');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const days = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / 86_400_000;
    assert.ok(days > 9.9 && days < 10.1, String(days));
    assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(fingerprintOf(ca.certPem), x.fingerprint256);
    // Two CAs are different CAs.
    assert.notEqual(fingerprintOf((await createCa()).certPem), x.fingerprint256);
  });
});

describe('node certificates', () => {
  it('signs a CSR into a leaf for node-<id> with the SAN asked for and both TLS usages', async () => {
    const ca = await createCa();
    const req = await createNodeRequest(7, { ips: ['127.0.0.1', '::1'], dns: ['n7.example'] });
    assert.match(req.csrPem, /^-----BEGIN CERTIFICATE REQUEST-----/);
    assert.doesNotMatch(req.csrPem, /PRIVATE KEY/);
    const cert = new X509Certificate(await signNodeRequest(ca, req.csrPem, { nodeId: 7 }));
    const caX = new X509Certificate(ca.certPem);
    assert.equal(cert.subject, 'CN=node-7\nO=dvs');
    assert.equal(cert.issuer, caX.subject);
    assert.ok(cert.checkIssued(caX));
    assert.ok(cert.verify(caX.publicKey));
    assert.equal(cert.ca, false);
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    assert.equal(cert.subjectAltName, 'IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:n7.example');
    // The certificate carries the key made with the CSR: the node's key never went to the CA.
    assert.ok(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(req.keyPem)));
  });

  it('refuses a CSR for another node id than the one being issued', async () => {
    const ca = await createCa();
    const req = await createNodeRequest(2);
    await assert.rejects(signNodeRequest(ca, req.csrPem, { nodeId: 3 }), (e) => {
      assert.ok(code('EAUTH')(e));
      assert.match((e as Error).message, /node-2, not node-3/);
      return true;
    });
  });

  it('refuses a CSR whose signature does not match its key', async () => {
    const ca = await createCa();
    const req = await createNodeRequest(2);
    // Flip one byte of the signature (the last bytes of the DER).
    const der = Buffer.from(req.csrPem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    der[der.length - 2]! ^= 0x01;
    const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(
      signNodeRequest(ca, bad, { nodeId: 2 }),
      (e) => code('EAUTH')(e) && /signature is invalid/.test((e as Error).message),
    );
  });

  it('refuses junk and bad names with EINVAL', async () => {
    const ca = await createCa();
    await assert.rejects(signNodeRequest(ca, 'not a csr', { nodeId: 1 }), code('EINVAL'));
    await assert.rejects(createNodeRequest(1, { ips: ['300.1.1.1'] }), code('EINVAL'));
    await assert.rejects(createNodeRequest(1, { dns: ['bad name'] }), code('EINVAL'));
    await assert.rejects(createNodeRequest(70000), code('EINVAL'));
  });
});
