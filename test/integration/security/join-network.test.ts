/**
 * The network join end to end on loopback: node 0 holds the CA and serves `/api/v1/join` on its REST API;
 * nodes 1 and 2 get their certificates over HTTP (node 1 through the CLI, node 2 through the library with a
 * token bound to it), then the three daemons link with mutual TLS and exchange IPC. Refusals: a token
 * pinning another CA (nothing spent), a spent token, a token for node 2 used as node 3, an unreachable
 * node, and a man in the middle who swaps the CSR for his own.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { nodeOptionsOf } from '../../../src/cli/commands/node.js';
import type { DcConfig } from '../../../src/kernel/types.js';
import { type NodeDaemon, startNode } from '../../../src/node/daemon.js';
import type { PeerConfig } from '../../../src/protocol/admin.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { initCa } from '../../../src/security/ca-dir.js';
import { loadTlsCredentials } from '../../../src/security/credentials.js';
import { joinOverNetwork } from '../../../src/security/join-client.js';
import { createPinnedToken } from '../../../src/security/join-token.js';
import { tlsPathsIn } from '../../../src/security/paths.js';
import { createCa, createNodeRequest, fingerprintOf } from '../../../src/security/pki.js';
import { check, freePorts } from '../harness.js';
import { cli, code } from './helpers.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const API_TOKEN = 'c'.repeat(64);

describe('network join', () => {
  let dir: string;
  let caDir: string;
  let fingerprint: string;
  let peers: PeerConfig[];
  let apiUrl: string;
  const daemons: NodeDaemon[] = [];
  const open: Dvk[] = [];
  const servers: Server[] = [];
  const socket = (i: number) => join(dir, `node${i}`, 'dvk.sock');
  const tlsDir = (i: number) => join(dir, `node${i}`, 'tls');
  const token = async (nodeId?: number) =>
    (await createPinnedToken(caDir, fingerprint, 600_000, nodeId === undefined ? {} : { nodeId })).token;

  async function admin<T>(i: number, fn: (c: AdminClient) => Promise<T>): Promise<T> {
    const c = await AdminClient.connect(socket(i), { timeout: 2000 });
    try {
      return await fn(c);
    } finally {
      await c.close();
    }
  }

  async function start(id: number, extra: Partial<Parameters<typeof startNode>[0]> = {}): Promise<void> {
    daemons.push(
      await startNode({
        nodeId: id,
        listen: peers[id]!.address,
        socket: socket(id),
        dataDir: join(dir, `node${id}`),
        peers: peers.filter((p) => p.id !== id),
        heartbeatMs: 100,
        deadAfterMs: 1000,
        logLevel: 'debug',
        logFile: join(dir, `node${id}`, 'daemon.log'),
        tls: tlsPathsIn(tlsDir(id)),
        ...extra,
      }),
    );
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-join-net-'));
    caDir = join(dir, 'ca');
    fingerprint = (await initCa(caDir)).fingerprint;
    const ports = await freePorts(4);
    peers = [0, 1, 2].map((id) => ({ id, name: `node${id}`, address: `127.0.0.1:${ports[id]}` }));
    // Node 0 is on the CA host: it joins through the file flow, as the docs' 3-host recipe does.
    const own = await cli([
      'node',
      'join',
      '--token',
      await token(0),
      '--node-id',
      '0',
      '--ca-dir',
      caDir,
      '--tls-dir',
      tlsDir(0),
    ]);
    assert.equal(own.code, 0, own.stderr);
    // Plain HTTP on purpose (the join over HTTPS is in test/integration/api/https.test.ts): the man in the
    // middle below relays HTTP.
    await start(0, { api: `127.0.0.1:${ports[3]}`, apiToken: API_TOKEN, caDir, apiTls: 'off' });
    apiUrl = `http://127.0.0.1:${ports[3]}`;
  });

  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    for (const s of servers) s.close();
    for (const i of [0, 1, 2]) {
      if (daemons[i] === undefined) continue;
      await admin(i, (c) => c.call('dc.remove', { dc: 'app' }, { timeout: 10_000 })).catch(() => {});
    }
    for (const d of daemons.reverse()) await d.stop();
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  });

  test('dvs node join --via gets node 1 its certificate over HTTP; the token is then spent', async () => {
    const t = await token();
    const r = await cli([
      'node',
      'join',
      '--token',
      t,
      '--node-id',
      '1',
      '--via',
      apiUrl,
      '--tls-dir',
      tlsDir(1),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { caFingerprint: string; via: string };
    assert.equal(out.caFingerprint, fingerprint);
    assert.equal(out.via, apiUrl);
    assert.equal((await loadTlsCredentials(tlsPathsIn(tlsDir(1)))).nodeId, 1);
    assert.equal((await stat(tlsPathsIn(tlsDir(1)).key)).mode & 0o777, 0o600);
    assert.equal((await stat(tlsDir(1))).mode & 0o777, 0o700);

    const again = await cli([
      'node',
      'join',
      '--token',
      t,
      '--node-id',
      '1',
      '--via',
      apiUrl,
      '--tls-dir',
      join(dir, 'x'),
    ]);
    assert.equal(again.code, 1);
    assert.equal(
      again.stderr,
      `dvs: error: join refused by ${apiUrl}: join token unknown or already used (EAUTH)\n`,
    );
  });

  test('a token pinning another CA is refused before anything is spent', async () => {
    const t = await token();
    const otherFp = fingerprintOf((await createCa()).certPem)
      .replace(/:/g, '')
      .toLowerCase();
    const forged = t.replace(/\.[0-9a-f]{64}$/, `.${otherFp}`);
    await assert.rejects(
      joinOverNetwork(forged, { via: apiUrl, nodeId: 7, tlsDir: join(dir, 'n7') }),
      code('EAUTH', new RegExp(`CA fingerprint mismatch: ${apiUrl} serves CA ${fingerprint}`)),
    );
    // The real token still works: the mismatch was found before the join request was sent.
    await joinOverNetwork(t, { via: apiUrl, nodeId: 7, tlsDir: join(dir, 'n7') });
  });

  test('a token bound to node 2 is refused for node 3, then node 2 joins with it', async () => {
    const t = await token(2);
    await assert.rejects(
      joinOverNetwork(t, { via: apiUrl, nodeId: 3, tlsDir: join(dir, 'n3') }),
      code('EAUTH', /join token is for node 2, not node 3/),
    );
    const r = await joinOverNetwork(t, {
      via: apiUrl,
      nodeId: 2,
      tlsDir: tlsDir(2),
      names: { ips: ['127.0.0.1'] },
    });
    assert.equal(r.caFingerprint, fingerprint);
    assert.equal((await loadTlsCredentials(tlsPathsIn(tlsDir(2)))).nodeId, 2);
  });

  test('an unreachable node is ENOTCONN; a node without --ca-dir says so', async () => {
    const [port] = await freePorts(1);
    const t = await token();
    const r = await cli([
      'node',
      'join',
      '--token',
      t,
      '--node-id',
      '5',
      '--via',
      `http://127.0.0.1:${port}`,
      '--tls-dir',
      join(dir, 'n5'),
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^dvs: error: cannot reach http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED \(ENOTCONN\)\n$/,
    );
    // An API without the CA: the join paths are neither routed nor exempt from its token.
    const plain = createServer((_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'EAUTH', message: 'missing bearer token' } }));
    });
    servers.push(plain);
    await new Promise<void>((ok) => plain.listen(0, '127.0.0.1', ok));
    const url = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;
    await assert.rejects(
      joinOverNetwork(t, { via: url, nodeId: 5, tlsDir: join(dir, 'n5') }),
      code('ENOENT', /does not serve the network join/),
    );
  });

  test('a man in the middle who swaps in his own CSR gets nothing', async () => {
    // Relays to node 0's API, but replaces the CSR of the join request with one for a key he holds.
    const mine = await createNodeRequest(4);
    const seen: Record<string, unknown>[] = [];
    const target = new URL(apiUrl);
    const mitm = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => {
        body += d.toString();
      });
      req.on('end', () => {
        if (req.method === 'POST') {
          const b = JSON.parse(body) as { csr: string };
          seen.push({ ...b });
          b.csr = mine.csrPem;
          body = JSON.stringify(b);
        }
        const up = httpRequest(
          {
            host: target.hostname,
            port: target.port,
            path: req.url,
            method: req.method,
            headers: { 'content-type': 'application/json' },
          },
          (r) => {
            res.writeHead(r.statusCode ?? 502, { 'content-type': 'application/json' });
            r.pipe(res);
          },
        );
        up.end(req.method === 'POST' ? body : undefined);
      });
    });
    servers.push(mitm);
    await new Promise<void>((ok) => mitm.listen(0, '127.0.0.1', ok));
    const via = `http://127.0.0.1:${(mitm.address() as AddressInfo).port}`;
    const t = await token();
    await assert.rejects(
      joinOverNetwork(t, { via, nodeId: 4, tlsDir: join(dir, 'n4') }),
      code('EAUTH', /unknown or already used/),
    );
    // What travelled (the wire format of join-client.ts): the token's id and a proof, never its secret.
    const secret = t.split('.')[1]!;
    assert.equal(seen.length, 1);
    assert.deepEqual(Object.keys(seen[0]!).sort(), ['csr', 'nodeId', 'proof', 'tokenId', 'version']);
    assert.equal(seen[0]!.version, 1);
    assert.equal(seen[0]!.nodeId, 4);
    assert.equal(seen[0]!.tokenId, t.slice(7, 15));
    assert.match(String(seen[0]!.proof), /^[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(seen[0]).includes(secret));
    // The CA node logged the refusal: one warning, with the token's id but not its secret.
    const log = await readFile(join(dir, 'node0', 'daemon.log'), 'utf8');
    assert.ok(!log.includes(secret));
    const refusals = log
      .split('\n')
      .filter((l) => l.includes('"join refused"'))
      .map((l) => JSON.parse(l) as { level: number; nodeId?: number; tokenId?: string });
    assert.ok(refusals.some((r) => r.level === 40 && r.nodeId === 4 && r.tokenId === t.slice(7, 15)));
  });

  test('node start --ca-dir reaches the daemon, which refuses it without --api', async () => {
    const o = nodeOptionsOf({ nodeId: 9, listen: '127.0.0.1:0', socket: 's', data: 'd', caDir: '/x/ca' });
    assert.equal(o.caDir, '/x/ca');
    await assert.rejects(
      startNode({
        nodeId: 9,
        listen: '127.0.0.1:0',
        socket: join(dir, 'node9', 'dvk.sock'),
        dataDir: join(dir, 'node9'),
        peers: [],
        logLevel: 'silent',
        caDir,
      }),
      code('EINVAL', /--ca-dir .* needs --api/),
    );
  });

  test('three daemons with TLS links exchange IPC, two of them joined over the network', async () => {
    await start(1);
    await start(2);
    const linkState = async (i: number, j: number) =>
      admin(
        i,
        async (c) => (await c.call('status', {}, { timeout: 2000 })).links.find((l) => l.node === j)?.state,
      );
    await check(
      async () => {
        for (const i of [0, 1, 2])
          for (const j of [0, 1, 2]) if (i !== j && (await linkState(i, j)) !== 'up') return false;
        return true;
      },
      15_000,
      'TLS links among nodes 0, 1, 2',
    );
    const config: DcConfig = {
      id: 1,
      name: 'app',
      nodes: [0, 1, 2],
      maxPayload: 4096,
      sysEndpoints: 64,
      postWindow: 1024,
    };
    for (const i of [0, 1, 2]) await admin(i, (c) => c.call('dc.create', { config }, { timeout: 5000 }));

    const a = await connect({ socket: socket(1), dc: 'app', endpoint: 100, timeout: 5000 });
    open.push(a);
    const b = await connect({ socket: socket(2), dc: 'app', endpoint: 200, timeout: 5000 });
    open.push(b);
    const c0 = await connect({ socket: socket(0), dc: 'app', endpoint: 300, timeout: 5000 });
    open.push(c0);
    const server = (async () => {
      for (let i = 0; i < 2; i++) {
        const req = await b.receiveRequest({ timeout: 10_000 });
        await b.reply(req.source, {
          type: req.type + 1,
          payload: enc.encode(dec.decode(req.payload).toUpperCase()),
        });
      }
    })();
    for (const [client, word] of [
      [a, 'from-one'],
      [c0, 'from-zero'],
    ] as const) {
      // The first call may race the bind announcement of 200: retry until it is known.
      const r = await check(
        () => client.sendrec(200, { type: 41, payload: enc.encode(word) }, { timeout: 5000 }),
        10_000,
        word,
      );
      assert.equal(r.type, 42);
      assert.equal(dec.decode(r.payload), word.toUpperCase());
    }
    await server;
  });
});
