/**
 * The join routes inside the REST API (fastify inject: no sockets): no API token needed for them while
 * every other route still needs it; bad input is a 4xx, never a 500; each refusal is one warning that
 * carries neither the proof nor the secret; too many failures from one address get 429 with Retry-After.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { apiNodes } from '../../../src/api/caller.js';
import { buildApi } from '../../../src/api/server.js';
import { EventLog } from '../../../src/node/events.js';
import { dvsError } from '../../../src/protocol/errors.js';
import { initCa } from '../../../src/security/ca-dir.js';
import { checkIssued } from '../../../src/security/join-client.js';
import {
  createPinnedToken,
  joinProof,
  type PinnedToken,
  parsePinnedToken,
  pinnedTokenHash,
} from '../../../src/security/join-token.js';
import { createNodeRequest } from '../../../src/security/pki.js';

const API_TOKEN = 'b'.repeat(64);

describe('join routes in the API', () => {
  let dir: string;
  let app: FastifyInstance;
  let fingerprint: string;
  const registry = new Registry();
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-join-route-'));
    fingerprint = (await initCa(join(dir, 'ca'))).fingerprint;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk
          .toString()
          .split('\n')
          .filter((s) => s !== '')) {
          raw.push(l);
          lines.push(JSON.parse(l) as Record<string, unknown>);
        }
        cb();
      },
    });
    const unreachable = { call: async () => Promise.reject(dvsError('ENOTCONN', 'no admin in this test')) };
    app = await buildApi({
      nodes: apiNodes(0, unreachable as never, new Map()),
      events: new EventLog({ node: 0 }),
      token: API_TOKEN,
      logger: pino({ level: 'info' }, sink),
      registry,
      webRoot: '/nonexistent',
      join: { caDir: join(dir, 'ca'), maxFailures: 5, windowMs: 60_000 },
    });
  });
  after(async () => {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  const token = async (nodeId?: number) =>
    parsePinnedToken(
      (await createPinnedToken(join(dir, 'ca'), fingerprint, 60_000, nodeId === undefined ? {} : { nodeId }))
        .token,
    );
  const body = (t: PinnedToken, nodeId: number, csr: string) => ({
    version: 1,
    tokenId: t.id,
    nodeId,
    csr,
    proof: joinProof(pinnedTokenHash(t), nodeId, csr),
  });
  // Each test its own remote address, so the limiter of one does not leak into another.
  const post = (payload: unknown, remoteAddress: string, headers: Record<string, string> = {}) =>
    app.inject({
      method: 'POST',
      url: '/api/v1/join',
      remoteAddress,
      headers: { 'content-type': 'application/json', ...headers },
      payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
    });

  it('serves the CA without the API token; other routes still need it', async () => {
    const r = await app.inject({ method: 'GET', url: '/api/v1/join/ca' });
    assert.equal(r.statusCode, 200);
    assert.equal(r.json().fingerprint, fingerprint);
    assert.match(r.json().ca, /BEGIN CERTIFICATE/);
    assert.equal((await app.inject({ method: 'GET', url: '/api/v1/cluster' })).statusCode, 401);
  });

  it('issues a certificate for a good request, once', async () => {
    const t = await token();
    const req = await createNodeRequest(3);
    const r = await post(body(t, 3, req.csrPem), '10.0.0.1');
    assert.equal(r.statusCode, 200, r.body);
    const { cert, ca } = r.json() as { cert: string; ca: string };
    checkIssued(cert, ca, 3, req.keyPem);
    const again = await post(body(t, 3, req.csrPem), '10.0.0.1');
    assert.equal(again.statusCode, 401);
    assert.deepEqual(again.json(), {
      error: { code: 'EAUTH', message: 'join token unknown or already used' },
    });
  });

  it('a token bound to node 2 is refused for node 3 (401), and is still good for node 2', async () => {
    const t = await token(2);
    const r3 = await post(body(t, 3, (await createNodeRequest(3)).csrPem), '10.0.0.2');
    assert.equal(r3.statusCode, 401);
    assert.equal(r3.json().error.message, 'join token is for node 2, not node 3');
    const r2 = await post(body(t, 2, (await createNodeRequest(2)).csrPem), '10.0.0.2');
    assert.equal(r2.statusCode, 200, r2.body);
  });

  it('bad input is 400 (or 413/415), never 500', async () => {
    const cases: [string | object, Record<string, string>][] = [
      ['{not json', {}],
      ['[]', {}],
      ['"x"', {}],
      [{}, {}],
      [{ version: 1, tokenId: 'abcdEFGH', nodeId: 'x', csr: 'x', proof: 'x' }, {}],
      [
        {
          version: 1,
          tokenId: 'abcdEFGH',
          nodeId: 1,
          csr: '-----BEGIN CERTIFICATE REQUEST-----',
          proof: 'a'.repeat(64),
        },
        {},
      ],
      ['x'.repeat(20_000), {}],
      ['a=1', { 'content-type': 'application/x-www-form-urlencoded' }],
    ];
    for (const [i, [payload, headers]] of cases.entries()) {
      // A fresh address each: these count as failures, and this test is not about the limit.
      const r = await post(payload, `10.1.0.${i}`, headers);
      assert.ok(
        r.statusCode >= 400 && r.statusCode < 500,
        `${r.statusCode} for ${String(payload).slice(0, 40)}`,
      );
      assert.equal(typeof r.json().error.code, 'string');
    }
  });

  it('logs each refusal as one warning without the secret or the proof', async () => {
    const t = await token();
    const req = await createNodeRequest(4);
    const b = body({ ...t, secret: 'w'.repeat(43) }, 4, req.csrPem);
    const before = lines.length;
    const r = await post(b, '10.0.0.4');
    assert.equal(r.statusCode, 401);
    const mine = lines.slice(before).filter((l) => l.msg === 'join refused');
    assert.equal(mine.length, 1);
    assert.equal(mine[0]!.level, 40);
    assert.equal(mine[0]!.remote, '10.0.0.4');
    assert.equal(mine[0]!.nodeId, 4);
    assert.equal(mine[0]!.tokenId, t.id);
    assert.equal(mine[0]!.code, 'EAUTH');
    const text = raw.join('\n');
    assert.ok(!text.includes(t.secret));
    assert.ok(!text.includes(b.proof));
  });

  it('after maxFailures from one address: 429 with Retry-After, even for a good request; others unaffected', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await post({}, '10.0.0.5')).statusCode, 400);
    const t = await token();
    const good = body(t, 6, (await createNodeRequest(6)).csrPem);
    const r = await post(good, '10.0.0.5');
    assert.equal(r.statusCode, 429);
    assert.equal(r.json().error.code, 'EBUSY');
    assert.ok(Number(r.headers['retry-after']) > 0);
    // The token was not touched by the refused attempt: another address may still use it.
    assert.equal((await post(good, '10.0.0.6')).statusCode, 200);
    const metric = await registry.getSingleMetricAsString('dvs_join_requests_total');
    assert.match(metric, /result="limited"\} 1/);
    assert.match(metric, /result="ok"\} [1-9]/);
  });
});
