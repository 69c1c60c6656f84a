/**
 * The REST API over HTTPS with real daemons on loopback (credentials made as `dvs up --tls` makes them):
 * three nodes with TLS links; node 0 holds the CA (serves the network join) and has a certificate with SAN
 * 127.0.0.1, node 1 a certificate with no SAN at all (only its CN names it), node 2 runs `apiTls: 'off'`.
 * Clients trust the cluster CA and nothing else; another CA is refused at the handshake; plain HTTP to an
 * HTTPS port fails; any node's HTTPS API answers for the cluster; the network join pins the CA over HTTPS;
 * `dvs api --json` hands scripts the CA, and its curl line works.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { writeTokenFile } from '../../../src/api/auth.js';
import { apiRequest, clusterTlsOptions } from '../../../src/api/client.js';
import { type NodeDaemon, startNode } from '../../../src/node/daemon.js';
import type { NodeOptions } from '../../../src/node/options.js';
import type { PeerConfig } from '../../../src/protocol/admin.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { initCa, issueNodeTls } from '../../../src/security/ca-dir.js';
import { loadTlsCredentials } from '../../../src/security/credentials.js';
import { joinOverNetwork } from '../../../src/security/join-client.js';
import { createPinnedToken } from '../../../src/security/join-token.js';
import { caDirOf, tlsPathsIn } from '../../../src/security/paths.js';
import { createCa, fingerprintOf } from '../../../src/security/pki.js';
import { check, freePorts } from '../harness.js';
import { cli, code } from '../security/helpers.js';

const API_TOKEN = 'd'.repeat(64);
/** The daemon class has `apiUrl`; the NodeDaemon interface does not list it. */
const apiUrlOf = (d: NodeDaemon) => (d as unknown as { apiUrl?: string }).apiUrl;

describe('the REST API over HTTPS', () => {
  let dir: string;
  let ca: string;
  let fingerprint: string;
  let peers: PeerConfig[];
  let apiPorts: number[];
  const daemons: NodeDaemon[] = [];
  const socket = (i: number) => join(dir, `node${i}`, 'dvk.sock');
  const url = (i: number, scheme = 'https') => `${scheme}://127.0.0.1:${apiPorts[i]}`;
  const get = (i: number, path: string, node?: number) =>
    apiRequest(`${url(i)}${path}`, {
      token: API_TOKEN,
      trust: { ca, ...(node !== undefined ? { node } : {}) },
      timeoutMs: 10_000,
    });

  async function admin<T>(i: number, fn: (c: AdminClient) => Promise<T>): Promise<T> {
    const c = await AdminClient.connect(socket(i), { timeout: 2000 });
    try {
      return await fn(c);
    } finally {
      await c.close();
    }
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-api-https-'));
    fingerprint = (await initCa(caDirOf(dir))).fingerprint;
    ca = await readFile(join(caDirOf(dir), 'ca.crt'), 'utf8');
    const ports = await freePorts(6);
    peers = [0, 1, 2].map((id) => ({ id, name: `node${id}`, address: `127.0.0.1:${ports[id]}` }));
    apiPorts = ports.slice(3);
    for (const id of [0, 1, 2]) {
      const dataDir = join(dir, `node${id}`);
      const tlsDir = join(dataDir, 'tls');
      // Node 1's certificate names no address: only its CN (node-1) and the chain identify it.
      await issueNodeTls({
        caDir: caDirOf(dir),
        nodeId: id,
        tlsDir,
        names: id === 1 ? {} : { ips: ['127.0.0.1'] },
      });
      const opts: NodeOptions = {
        nodeId: id,
        listen: peers[id]!.address,
        socket: socket(id),
        dataDir,
        peers: peers.filter((p) => p.id !== id),
        heartbeatMs: 100,
        deadAfterMs: 1000,
        logLevel: 'debug',
        logFile: join(dataDir, 'daemon.log'),
        tls: tlsPathsIn(tlsDir),
        api: `127.0.0.1:${apiPorts[id]}`,
        apiToken: API_TOKEN,
        ...(id === 0 ? { caDir: caDirOf(dir) } : {}),
        ...(id === 2 ? { apiTls: 'off' as const } : {}),
      };
      daemons.push(await startNode(opts));
    }
    await check(
      async () => {
        for (const i of [0, 1, 2]) {
          const links = (await admin(i, (c) => c.call('status', {}, { timeout: 2000 }))).links;
          if (links.filter((l) => l.state === 'up').length < 2) return false;
        }
        return true;
      },
      15_000,
      'TLS links among nodes 0, 1, 2',
    );
  });

  after(async () => {
    for (const d of daemons.reverse()) await d.stop();
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  });

  test('a TLS node serves HTTPS (TLS 1.3, chain = node certificate + cluster CA) to a client trusting the CA', async () => {
    assert.equal(apiUrlOf(daemons[0]!), url(0));
    const r = await get(0, '/api/v1/cluster', 0);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      (JSON.parse(r.text) as { nodes: { id: number }[] }).nodes.map((n) => n.id).sort(),
      [0, 1, 2],
    );
    // What the handshake shows: protocol and the chain the server presents.
    const seen = await new Promise<{ protocol: string | null; cn: unknown; issuer: string }>((ok, fail) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port: apiPorts[0]!,
        ...clusterTlsOptions({ ca }, '127.0.0.1'),
      });
      s.once('secureConnect', () => {
        const peer = s.getPeerCertificate(true);
        ok({ protocol: s.getProtocol(), cn: peer.subject.CN, issuer: peer.issuerCertificate.fingerprint256 });
        s.destroy();
      });
      s.once('error', fail);
    });
    assert.deepEqual(seen, { protocol: 'TLSv1.3', cn: 'node-0', issuer: fingerprint });
  });

  test('a certificate without a SAN for the address is accepted by chain and CN, and only for that node', async () => {
    const r = await get(1, '/api/v1/nodes/1', 1);
    assert.equal(r.status, 200, r.text);
    // Host-name verification as browsers and node:https do it would refuse this certificate: nothing
    // names 127.0.0.1 in it. That is why clients check the chain and the CN instead (client.ts).
    await assert.rejects(
      new Promise((ok, fail) => {
        const s = tls.connect({ host: '127.0.0.1', port: apiPorts[1]!, ca }, () => {
          s.destroy();
          ok(undefined);
        });
        s.once('error', fail);
      }),
      (e: NodeJS.ErrnoException) => e.code === 'ERR_TLS_CERT_ALTNAME_INVALID',
    );
    // A client that knows it dials node 0 does not accept node 1's certificate.
    await assert.rejects(get(1, '/api/v1/cluster', 0), code('EAUTH', /node-1's, not node-0's/));
  });

  test('a client trusting another CA is refused at the TLS handshake', async () => {
    const other = (await createCa()).certPem;
    await assert.rejects(
      apiRequest(`${url(0)}/api/v1/cluster`, { token: API_TOKEN, trust: { ca: other }, timeoutMs: 5000 }),
      code('EAUTH', /is not trusted: .*SELF_SIGNED_CERT_IN_CHAIN/),
    );
  });

  test('plain HTTP to the HTTPS port fails; https to an --api-tls off node fails; that node speaks HTTP', async () => {
    // The TLS server takes the request line for a bad handshake and drops the connection: no fallback.
    await assert.rejects(
      apiRequest(`${url(0, 'http')}/api/v1/cluster`, { token: API_TOKEN, timeoutMs: 5000 }),
      code('ENOTCONN', /ECONNRESET \(if it serves HTTPS, use https:\/\/\)/),
    );
    await assert.rejects(fetch(`${url(0, 'http')}/api/v1/openapi.json`));
    assert.equal(apiUrlOf(daemons[2]!), url(2, 'http'));
    const plain = await apiRequest(`${url(2, 'http')}/api/v1/cluster`, { token: API_TOKEN, timeoutMs: 5000 });
    assert.equal(plain.status, 200, plain.text);
    await assert.rejects(get(2, '/api/v1/cluster'), code('ENOTCONN'));
  });

  test("any node's HTTPS API answers for the cluster: calls forwarded between TLS nodes", async () => {
    // Node 1 reads node 0's own row (node 0's status, reached over the TLS node link).
    const row = await get(1, '/api/v1/nodes/0', 1);
    assert.equal(row.status, 200, row.text);
    const r0 = JSON.parse(row.text) as { id: number; self: boolean; reachable: boolean; state: string };
    assert.deepEqual([r0.id, r0.self, r0.reachable, r0.state], [0, false, true, 'up']);
    // A DC created through node 1's API is seen through node 0's.
    const made = await apiRequest(`${url(1)}/api/v1/dcs`, {
      method: 'POST',
      body: { name: 'web', nodes: [0, 1] },
      token: API_TOKEN,
      trust: { ca, node: 1 },
      timeoutMs: 10_000,
    });
    assert.equal(made.status, 201, made.text);
    const seen = await get(0, '/api/v1/dcs/web', 0);
    assert.equal(seen.status, 200, seen.text);
    assert.deepEqual((JSON.parse(seen.text) as { on?: number[]; nodes?: number[] }).nodes, [0, 1]);
    const gone = await apiRequest(`${url(0)}/api/v1/dcs/web`, {
      method: 'DELETE',
      token: API_TOKEN,
      trust: { ca, node: 0 },
      timeoutMs: 10_000,
    });
    assert.equal(gone.status, 200, gone.text);
  });

  test('the network join over HTTPS works with the pinned fingerprint and fails with another one', async () => {
    const t = (await createPinnedToken(caDirOf(dir), fingerprint, 600_000)).token;
    const otherFp = fingerprintOf((await createCa()).certPem)
      .replace(/:/g, '')
      .toLowerCase();
    const forged = t.replace(/\.[0-9a-f]{64}$/, `.${otherFp}`);
    await assert.rejects(
      joinOverNetwork(forged, { via: url(0), nodeId: 7, tlsDir: join(dir, 'n7') }),
      code(
        'EAUTH',
        /CA fingerprint mismatch: the TLS certificate chain of https:\/\/127\.0\.0\.1:\d+ holds no CA/,
      ),
    );
    assert.ok(!existsSync(join(dir, 'n7')));
    // Plain HTTP to the HTTPS join: no answer (and a hint), the token untouched.
    await assert.rejects(
      joinOverNetwork(t, { via: url(0, 'http'), nodeId: 7, tlsDir: join(dir, 'n7') }),
      code('ENOTCONN', /use https:\/\//),
    );
    // The real token was not spent by either attempt; through the CLI, as an operator types it.
    const r = await cli([
      'node',
      'join',
      '--token',
      t,
      '--node-id',
      '7',
      '--via',
      url(0),
      '--tls-dir',
      join(dir, 'n7'),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { caFingerprint: string }).caFingerprint, fingerprint);
    assert.equal((await loadTlsCredentials(tlsPathsIn(join(dir, 'n7')))).nodeId, 7);
  });

  test('dvs api --json gives {url, token, node, ca} for an HTTPS API, and its curl line works', async () => {
    const cdir = join(dir, 'cli');
    const tokenFile = join(cdir, 'api-token');
    await rm(cdir, { recursive: true, force: true });
    await mkdir(cdir, { recursive: true });
    await writeTokenFile(tokenFile, API_TOKEN);
    const caFile = join(caDirOf(dir), 'ca.crt');
    const node = {
      id: 0,
      name: 'node0',
      address: peers[0]!.address,
      socket: socket(0),
      metrics: '127.0.0.1:1',
      dataDir: join(dir, 'node0'),
      pid: process.pid,
      api: `127.0.0.1:${apiPorts[0]}`,
      apiCa: caFile,
    };
    await writeFile(join(cdir, 'cluster.json'), JSON.stringify({ version: 1, createdAt: 0, nodes: [node] }));
    const r = await cli(['--dir', cdir, 'api', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { url: string; token: string; node: number; ca: string };
    assert.deepEqual(info, { url: url(0), token: API_TOKEN, node: 0, ca: caFile });
    const ok = await apiRequest(`${info.url}/api/v1/cluster`, {
      token: info.token,
      trust: { ca: await readFile(info.ca, 'utf8'), node: info.node },
    });
    assert.equal(ok.status, 200, ok.text);

    const human = await cli(['--dir', cdir, 'api']);
    assert.equal(human.code, 0, human.stderr);
    const line = /^try: (curl .*)$/m.exec(human.stdout)?.[1];
    assert.ok(line, human.stdout);
    assert.ok(line.includes(`--cacert "${caFile}"`), line);
    if (!existsSync('/usr/bin/curl')) return; // the line itself is checked above; running it needs curl
    // Run it as a user would, with the token substituted (the line reads it with `dvs api --json | jq`).
    const args = [
      '-sS',
      '--cacert',
      caFile,
      '-H',
      `Authorization: Bearer ${info.token}`,
      `${info.url}/api/v1/cluster`,
    ];
    const out = await new Promise<string>((ok, fail) =>
      execFile('/usr/bin/curl', args, { timeout: 10_000 }, (e, stdout, stderr) =>
        e ? fail(new Error(`${e.message} ${stderr}`)) : ok(stdout),
      ),
    );
    assert.equal((JSON.parse(out) as { nodes: unknown[] }).nodes.length, 3);
  });

  test('apiTls on without TLS credentials is EINVAL at start', async () => {
    await assert.rejects(
      startNode({
        nodeId: 9,
        listen: '127.0.0.1:0',
        socket: join(dir, 'node9', 'dvk.sock'),
        dataDir: join(dir, 'node9'),
        peers: [],
        logLevel: 'silent',
        api: '127.0.0.1:0',
        apiToken: API_TOKEN,
        apiTls: 'on',
      }),
      code('EINVAL', /--api-tls on needs TLS credentials/),
    );
  });
});
