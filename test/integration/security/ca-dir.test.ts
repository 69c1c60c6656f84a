/**
 * The CA directory and node credentials on disk, and the `dvs ca` / `dvs node join` commands that drive them
 * (the CLI run in this process with captured output).
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { nodeOptionsOf } from '../../../src/cli/commands/node.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { initCa, issueNodeTls, joinWithToken, loadCa } from '../../../src/security/ca-dir.js';
import { loadTlsCredentials } from '../../../src/security/credentials.js';
import { caDirOf, tlsPathsIn } from '../../../src/security/paths.js';
import { createJoinToken } from '../../../src/security/tokens.js';
import { cli } from './helpers.js';

const code = (c: string) => (e: unknown) => e instanceof DvsError && e.code === c;
const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe('CA directory', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-ca-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('init writes a private key only the owner can read, and refuses a second CA', async () => {
    const ca = caDirOf(dir);
    const info = await initCa(ca);
    assert.equal(await mode(info.key), 0o600);
    assert.equal(await mode(info.cert), 0o644);
    assert.equal(await mode(ca), 0o700);
    await assert.rejects(initCa(ca), code('EEXIST'));
    assert.equal((await loadCa(ca)).info.fingerprint, info.fingerprint);
  });

  it('refuses to use a CA key others can read', async () => {
    const info = await initCa(caDirOf(dir));
    await chmod(info.key, 0o644);
    await assert.rejects(
      loadCa(caDirOf(dir)),
      (e) => code('EAUTH')(e) && /chmod 600/.test((e as Error).message),
    );
  });

  it('join spends the token once and writes credentials the link layer accepts', async () => {
    const ca = caDirOf(dir);
    await initCa(ca);
    const { token } = await createJoinToken(ca, 60_000);
    const tlsDir = join(dir, 'n5');
    const r = await joinWithToken(token, { caDir: ca, nodeId: 5, tlsDir, names: { ips: ['127.0.0.1'] } });
    assert.equal(await mode(r.key), 0o600);
    const creds = await loadTlsCredentials(tlsPathsIn(tlsDir));
    assert.equal(creds.nodeId, 5);
    assert.equal(creds.fingerprint, r.fingerprint);
    // The key was made on the "node": the CA directory holds no copy of it.
    const key = await readFile(r.key, 'utf8');
    for (const f of ['ca.key', 'ca.crt', 'tokens.json'])
      assert.ok(!(await readFile(join(ca, f), 'utf8')).includes(key));
    await assert.rejects(
      joinWithToken(token, { caDir: ca, nodeId: 6, tlsDir: join(dir, 'n6') }),
      code('EAUTH'),
    );
  });

  it('credentials are refused when mixed up: other CA, other key, loose key file', async () => {
    await initCa(join(dir, 'ca1'));
    await initCa(join(dir, 'ca2'));
    const a = tlsPathsIn(join(dir, 'a'));
    const b = tlsPathsIn(join(dir, 'b'));
    await issueNodeTls({ caDir: join(dir, 'ca1'), nodeId: 1, tlsDir: join(dir, 'a') });
    await issueNodeTls({ caDir: join(dir, 'ca2'), nodeId: 2, tlsDir: join(dir, 'b') });
    await assert.rejects(
      loadTlsCredentials({ ...a, ca: b.ca }),
      (e) => code('EAUTH')(e) && /not issued by the CA/.test((e as Error).message),
    );
    await assert.rejects(
      loadTlsCredentials({ ...a, key: b.key }),
      (e) => code('EAUTH')(e) && /does not belong/.test((e as Error).message),
    );
    await assert.rejects(loadTlsCredentials({ ...a, cert: join(dir, 'missing.crt') }), code('ENOENT'));
    await chmod(a.key, 0o640);
    await assert.rejects(loadTlsCredentials(a), code('EAUTH'));
  });
});

describe('dvs ca and dvs node join', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-ca-cli-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('init --json, token, join; a spent token fails with one EAUTH line', async () => {
    const init = await cli(['ca', 'init', '--dir', dir, '--json']);
    assert.equal(init.code, 0, init.stderr);
    const info = JSON.parse(init.stdout) as { dir: string; cert: string; key: string; fingerprint: string };
    assert.equal(info.dir, caDirOf(dir));
    assert.match(info.fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.equal(await mode(info.key), 0o600);

    const again = await cli(['ca', 'init', '--dir', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^dvs: error: a cluster CA already exists in .* \(EEXIST\)\n$/);

    const tok = await cli(['ca', 'token', '--dir', dir, '--ttl', '10m']);
    assert.equal(tok.code, 0, tok.stderr);
    const token = tok.stdout.trim();
    // The pinned form (src/security/join-token.ts): id, secret, CA fingerprint.
    assert.match(token, /^dvsjt1-[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{43}\.[0-9a-f]{64}$/);

    const join1 = await cli(['node', 'join', '--dir', dir, '--token', token, '--node-id', '2', '--json']);
    assert.equal(join1.code, 0, join1.stderr);
    const r = JSON.parse(join1.stdout) as { tlsDir: string; nodeId: number; caFingerprint: string };
    assert.equal(r.tlsDir, join(dir, 'node2', 'tls'));
    assert.equal(r.caFingerprint, info.fingerprint);
    assert.equal((await loadTlsCredentials(tlsPathsIn(r.tlsDir))).nodeId, 2);

    const join2 = await cli(['node', 'join', '--dir', dir, '--token', token, '--node-id', '3']);
    assert.equal(join2.code, 1);
    assert.equal(join2.stderr, 'dvs: error: join token unknown or already used (EAUTH)\n');
  });

  it('bad input is a usage error', async () => {
    assert.equal((await cli(['ca', 'token', '--dir', dir, '--ttl', '1w'])).code, 2);
    assert.equal(
      (await cli(['node', 'join', '--dir', dir, '--token', 'x', '--node-id', '2', '--ip', 'nope'])).code,
      2,
    );
    const noCa = await cli(['ca', 'token', '--dir', dir]);
    assert.equal(noCa.code, 1);
    assert.match(noCa.stderr, /no cluster CA .* \(ENOENT\)/);
  });

  it('node start --tls-dir gives the daemon the three paths', () => {
    const o = nodeOptionsOf({ nodeId: 1, listen: '127.0.0.1:1', socket: 's', data: 'd', tlsDir: '/x/tls' });
    assert.deepEqual(o.tls, { ca: '/x/tls/ca.crt', cert: '/x/tls/node.crt', key: '/x/tls/node.key' });
    assert.equal(nodeOptionsOf({ nodeId: 1, listen: '127.0.0.1:1', socket: 's', data: 'd' }).tls, undefined);
  });
});
