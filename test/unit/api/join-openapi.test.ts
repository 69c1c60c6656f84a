/**
 * The network join in the OpenAPI document of the node that serves it (fastify inject, a CA in a temp
 * directory): both routes with their schemas, marked as needing no bearer token, and the documented body
 * schema agreeing with the parser the route really uses.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import Value from 'typebox/value';
import { apiNodes } from '../../../src/api/caller.js';
import { parseJoinRequest } from '../../../src/api/join.js';
import { JoinBody } from '../../../src/api/schemas.js';
import { buildApi } from '../../../src/api/server.js';
import { EventLog } from '../../../src/node/events.js';
import { dvsError } from '../../../src/protocol/errors.js';
import { initCa } from '../../../src/security/ca-dir.js';

type Spec = {
  security: unknown[];
  paths: Record<string, Record<string, Record<string, unknown>>>;
};

describe('OpenAPI document of a node serving the network join', () => {
  let dir: string;
  let app: FastifyInstance;
  let spec: Spec;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-join-openapi-'));
    await initCa(join(dir, 'ca'));
    const unreachable = { call: async () => Promise.reject(dvsError('ENOTCONN', 'no admin in this test')) };
    app = await buildApi({
      nodes: apiNodes(0, unreachable as never, new Map()),
      events: new EventLog({ node: 0 }),
      token: 'b'.repeat(64),
      logger: pino({ level: 'silent' }),
      webRoot: '/nonexistent',
      join: { caDir: join(dir, 'ca') },
    });
    spec = (await app.inject({ method: 'GET', url: '/api/v1/openapi.json' })).json() as Spec;
  });
  after(async () => {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('GET /join/ca and POST /join are listed with their schemas and need no bearer token', () => {
    const ca = spec.paths['/api/v1/join/ca']?.get;
    const jn = spec.paths['/api/v1/join']?.post;
    assert.ok(ca && jn, Object.keys(spec.paths).join(' '));
    // The document requires the bearer token; these two operations lift it.
    assert.deepEqual(spec.security, [{ bearer: [] }]);
    assert.deepEqual(ca.security, []);
    assert.deepEqual(jn.security, []);
    const okSchema = (op: Record<string, unknown>) =>
      (op.responses as Record<string, { content: Record<string, { schema: { required?: string[] } }> }>)[
        '200'
      ]!.content['application/json']!.schema;
    assert.deepEqual(okSchema(ca).required?.sort(), ['ca', 'fingerprint']);
    assert.deepEqual(okSchema(jn).required?.sort(), ['ca', 'cert']);
    const body = (jn.requestBody as { content: Record<string, { schema: Record<string, unknown> }> }).content[
      'application/json'
    ]!.schema;
    assert.deepEqual((body.required as string[]).sort(), ['csr', 'nodeId', 'proof', 'tokenId', 'version']);
    assert.equal(body.additionalProperties, false);
    assert.deepEqual(Object.keys(jn.responses as object).sort(), ['200', '400', '401', '429']);
    // The other routes keep the token requirement (no operation-level override).
    assert.equal(spec.paths['/api/v1/cluster']?.get?.security, undefined);
  });

  test('the documented body schema accepts and refuses what the route parser does', () => {
    const good = {
      version: 1,
      tokenId: 'Ab3_x-9Z',
      nodeId: 2,
      csr: '-----BEGIN CERTIFICATE REQUEST-----\nMII...\n-----END CERTIFICATE REQUEST-----\n',
      proof: 'a'.repeat(64),
    };
    const cases: [string, unknown][] = [
      ['good', good],
      ['version 2', { ...good, version: 2 }],
      ['short token id', { ...good, tokenId: 'abc' }],
      ['node id too big', { ...good, nodeId: 70_000 }],
      ['fractional node id', { ...good, nodeId: 1.5 }],
      ['upper-case proof', { ...good, proof: 'A'.repeat(64) }],
      ['csr too long', { ...good, csr: `-----BEGIN CERTIFICATE REQUEST-----${'x'.repeat(9000)}` }],
      ['unknown field', { ...good, extra: 1 }],
      ['missing proof', { version: 1, tokenId: good.tokenId, nodeId: 2, csr: good.csr }],
    ];
    for (const [what, b] of cases) {
      let parsed = true;
      try {
        parseJoinRequest(b);
      } catch {
        parsed = false;
      }
      assert.equal(Value.Check(JoinBody, b), parsed, what);
    }
  });
});
