import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { isLoopback, tokenMatches } from '../../../src/api/auth.js';
import { apiNodes } from '../../../src/api/caller.js';
import { httpStatus } from '../../../src/api/errors.js';
import { buildApi } from '../../../src/api/server.js';
import { EventLog } from '../../../src/node/events.js';
import { FakeNode } from './fake.js';

const TOKEN = 'a'.repeat(64);
const auth = { authorization: `Bearer ${TOKEN}` };
const logger = pino({ level: 'silent' });

async function setup(opts: { store?: boolean } = {}) {
  const events = new EventLog({ node: 0 });
  const n0 = new FakeNode(0, [1], events, opts.store ?? false);
  const n1 = new FakeNode(1, [0], new EventLog({ node: 1 }), opts.store ?? false);
  const registry = new Registry();
  const app = await buildApi({
    nodes: apiNodes(0, n0, new Map([[1, n1]])),
    events,
    token: TOKEN,
    logger,
    registry,
    webRoot: '/nonexistent',
  });
  return { app, n0, n1, events, registry };
}

describe('REST API (inject, fake admin)', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  let app: FastifyInstance;
  before(async () => {
    s = await setup();
    app = s.app;
  });
  after(() => app.close());

  test('401 EAUTH without a token or with a wrong one; openapi.json is public', async () => {
    const none = await app.inject({ method: 'GET', url: '/api/v1/cluster' });
    assert.equal(none.statusCode, 401);
    assert.deepEqual(none.json(), { error: { code: 'EAUTH', message: 'missing bearer token' } });
    const wrong = await app.inject({
      method: 'GET',
      url: '/api/v1/dcs',
      headers: { authorization: 'Bearer nope' },
    });
    assert.equal(wrong.statusCode, 401);
    assert.equal(wrong.json().error.code, 'EAUTH');
    const spec = await app.inject({ method: 'GET', url: '/api/v1/openapi.json' });
    assert.equal(spec.statusCode, 200);
  });

  test('POST /dcs creates the DC on every node (no store) and GET /dcs merges them', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs',
      headers: auth,
      payload: { name: 'demo' },
    });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.json().name, 'demo');
    assert.deepEqual(r.json().nodes, [0, 1]);
    assert.equal(s.n0.dcs.get(1)?.name, 'demo');
    assert.equal(s.n1.dcs.get(1)?.name, 'demo');
    const list = await app.inject({ method: 'GET', url: '/api/v1/dcs', headers: auth });
    assert.equal(list.statusCode, 200);
    assert.deepEqual(
      list.json().dcs.map((d: { name: string; on: number[] }) => [d.name, d.on]),
      [['demo', [0, 1]]],
    );
  });

  test('409 EEXIST for a DC name taken; 404 ENOENT for an unknown DC', async () => {
    const dup = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs',
      headers: auth,
      payload: { name: 'demo' },
    });
    assert.equal(dup.statusCode, 409);
    assert.equal(dup.json().error.code, 'EEXIST');
    const missing = await app.inject({ method: 'GET', url: '/api/v1/dcs/nope/endpoints', headers: auth });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().error.code, 'ENOENT');
    const route = await app.inject({ method: 'GET', url: '/api/v1/nothing-here', headers: auth });
    assert.equal(route.statusCode, 404);
    assert.equal(route.json().error.code, 'ENOENT');
  });

  test('bad bodies are 400 EINVAL naming the field and the reason, never 500', async () => {
    const cases: [unknown, string][] = [
      [{ name: '9bad' }, 'name'],
      [{}, 'name'],
      [{ name: 'ok', nodes: [-1] }, 'nodes.0'],
      [{ name: 'ok', colour: 'red' }, 'colour'],
      [{ name: 'ok', maxPayload: 'big' }, 'maxPayload'],
    ];
    for (const [payload, field] of cases) {
      const r = await app.inject({
        method: 'POST',
        url: '/api/v1/dcs',
        headers: auth,
        payload: payload as object,
      });
      assert.equal(r.statusCode, 400, `${JSON.stringify(payload)}: ${r.body}`);
      const e = r.json().error;
      assert.equal(e.code, 'EINVAL');
      assert.equal(e.field, field, r.body);
      assert.equal(typeof e.reason, 'string');
      assert.doesNotMatch(r.body, /at .*\.ts:\d+/);
    }
    const notJson = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs',
      headers: { ...auth, 'content-type': 'application/json' },
      payload: '{"name":',
    });
    assert.equal(notJson.statusCode, 400);
    assert.equal(notJson.json().error.code, 'EINVAL');
    const run = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes',
      headers: auth,
      payload: { ep: 100, cmd: [] },
    });
    assert.equal(run.statusCode, 400);
    assert.equal(run.json().error.field, 'cmd');
    const ep = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/x/kill',
      headers: auth,
      payload: {},
    });
    assert.equal(ep.statusCode, 400);
    assert.equal(ep.json().error.field, 'ep');
  });

  test('run places the process on the chosen node, lists it, shows its endpoint, kills it', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes',
      headers: auth,
      payload: { ep: 100, cmd: ['sleep', '100'], node: 1, name: 'srv' },
    });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.json().node, 1);
    assert.equal(s.n1.procs.length, 1);
    const again = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes',
      headers: auth,
      payload: { ep: 100, cmd: ['sleep', '1'], node: 1 },
    });
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().error.code, 'EBOUND');
    const eps = await app.inject({ method: 'GET', url: '/api/v1/dcs/demo/endpoints', headers: auth });
    assert.deepEqual(
      eps.json().endpoints.map((e: { ep: number; node: number; name: string }) => [e.ep, e.node, e.name]),
      [[100, 1, 'srv']],
    );
    const procs = await app.inject({ method: 'GET', url: '/api/v1/processes?dc=demo', headers: auth });
    assert.equal(procs.json().processes.length, 1);
    const logs = await app.inject({
      method: 'GET',
      url: '/api/v1/dcs/demo/processes/100/logs',
      headers: auth,
    });
    assert.deepEqual(logs.json(), { node: 1, data: 'hello\n', offset: 6, running: false });
    const bad = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/100/migrate',
      headers: auth,
      payload: { to: 'one' },
    });
    assert.equal(bad.statusCode, 400, bad.body);
    const moved = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/100/migrate',
      headers: auth,
      payload: { to: 0 },
    });
    assert.equal(moved.statusCode, 200, moved.body);
    assert.deepEqual([moved.json().from, moved.json().to], [1, 0]);
    assert.ok(s.n1.calls.some((c) => c.method === 'proc.migrate' && (c.params as { to: number }).to === 0));
    const kill = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/100/kill',
      headers: auth,
      payload: { signal: 'SIGKILL' },
    });
    assert.equal(kill.statusCode, 200, kill.body);
    assert.equal(kill.json().exit.signal, 'SIGKILL');
    assert.ok(s.n1.calls.some((c) => c.method === 'proc.kill'));
    const twice = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/100/kill',
      headers: auth,
      payload: {},
    });
    assert.equal(twice.statusCode, 404);
  });

  test('kill-replicas ends a group through the node that runs a replica; not replicated: 404', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes',
      headers: auth,
      payload: { ep: 105, cmd: ['sleep', '100'], node: 1 },
    });
    assert.equal(r.statusCode, 201, r.body);
    const bad = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/105/kill-replicas',
      headers: auth,
      payload: { graceMs: -1 },
    });
    assert.equal(bad.statusCode, 400, bad.body);
    const ended = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/105/kill-replicas',
      headers: auth,
      payload: { signal: 'SIGINT', graceMs: 100 },
    });
    assert.equal(ended.statusCode, 200, ended.body);
    assert.deepEqual(ended.json().unreachable, []);
    assert.equal(ended.json().processes[0].exit.signal, 'SIGINT');
    const call = s.n1.calls.find((c) => c.method === 'proc.killGroup');
    assert.deepEqual(call?.params, { dc: 1, ep: 105, graceMs: 100, signal: 'SIGINT' });
    const none = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes/999/kill-replicas',
      headers: auth,
      payload: {},
    });
    assert.equal(none.statusCode, 404, none.body);
  });

  test('GET /cluster: both nodes up with their message counters; a node that stops answering turns down', async () => {
    await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/processes',
      headers: auth,
      payload: { ep: 101, cmd: ['x'] },
    });
    const r = await app.inject({ method: 'GET', url: '/api/v1/cluster', headers: auth });
    assert.equal(r.statusCode, 200, r.body);
    const v = r.json();
    assert.deepEqual(
      v.nodes.map((n: { id: number; state: string }) => [n.id, n.state]),
      [
        [0, 'up'],
        [1, 'up'],
      ],
    );
    assert.deepEqual(v.nodes[0].messages, { sent: 5, received: 4 });
    assert.equal(v.store, null);
    s.n1.down = true;
    try {
      const d = await app.inject({ method: 'GET', url: '/api/v1/nodes/1', headers: auth });
      assert.equal(d.statusCode, 200);
      assert.equal(d.json().state, 'down');
      const none = await app.inject({ method: 'GET', url: '/api/v1/nodes/7', headers: auth });
      assert.equal(none.statusCode, 404);
    } finally {
      s.n1.down = false;
    }
  });

  test('dc add-node needs a store: 400 EINVAL from the daemon passes through', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/dcs/demo/nodes',
      headers: auth,
      payload: { node: 1 },
    });
    assert.equal(r.statusCode, 400);
    assert.match(r.json().error.message, /store/);
  });

  test('GET /events pages with since', async () => {
    const all = await app.inject({ method: 'GET', url: '/api/v1/events', headers: auth });
    const body = all.json();
    assert.equal(body.node, 0);
    assert.ok(body.events.length >= 1);
    assert.equal(body.events[0].kind, 'dc.created');
    const after = await app.inject({
      method: 'GET',
      url: `/api/v1/events?since=${body.last}`,
      headers: auth,
    });
    assert.deepEqual(after.json().events, []);
    const bad = await app.inject({ method: 'GET', url: '/api/v1/events?since=-1', headers: auth });
    assert.equal(bad.statusCode, 400);
  });

  test('DELETE /dcs/{dc} removes it from every node', async () => {
    const r = await app.inject({ method: 'DELETE', url: '/api/v1/dcs/demo', headers: auth });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(s.n0.dcs.size, 0);
    assert.equal(s.n1.dcs.size, 0);
  });

  test('the OpenAPI document lists every route with its request schema', async () => {
    const spec = (await app.inject({ method: 'GET', url: '/api/v1/openapi.json' })).json();
    assert.equal(spec.openapi, '3.1.0');
    for (const p of [
      '/api/v1/dcs',
      '/api/v1/dcs/{dc}/processes',
      '/api/v1/events/stream',
      '/api/v1/cluster',
    ]) {
      assert.ok(spec.paths[p], p);
    }
    const body = spec.paths['/api/v1/dcs'].post.requestBody.content['application/json'].schema;
    assert.deepEqual(body.required, ['name']);
    assert.equal(body.additionalProperties, false);
    // The network join is listed only by the node that serves it (test/unit/api/join-openapi.test.ts).
    assert.equal(spec.paths['/api/v1/join'], undefined);
    assert.equal(spec.paths['/api/v1/join/ca'], undefined);
    assert.equal((await app.inject({ method: 'GET', url: '/api/v1/join/ca' })).statusCode, 401);
  });

  test('requests are counted in dvs_api_requests_total', async () => {
    const text = await s.registry.metrics();
    assert.match(text, /dvs_api_requests_total\{method="POST",route="\/api\/v1\/dcs",status="201"\} 1/);
  });
});

describe('REST API with a cluster store', () => {
  test('POST /dcs writes once through this node (the store allocates the id)', async () => {
    const s = await setup({ store: true });
    try {
      const r = await s.app.inject({
        method: 'POST',
        url: '/api/v1/dcs',
        headers: auth,
        payload: { name: 'db' },
      });
      assert.equal(r.statusCode, 201, r.body);
      assert.equal(r.json().id, 9);
      assert.equal(s.n1.calls.filter((c) => c.method === 'dc.create').length, 0);
    } finally {
      await s.app.close();
    }
  });
});

describe('insecure loopback mode', () => {
  test('needs no token from loopback, and building without a token or the mode is refused', async () => {
    const events = new EventLog({ node: 0 });
    const n0 = new FakeNode(0, [], events);
    await assert.rejects(buildApi({ nodes: apiNodes(0, n0), events, logger }), { code: 'EINVAL' });
    const app = await buildApi({
      nodes: apiNodes(0, n0),
      events,
      logger,
      insecureLoopback: true,
      webRoot: '/x',
    });
    try {
      const r = await app.inject({ method: 'GET', url: '/api/v1/dcs', remoteAddress: '127.0.0.1' });
      assert.equal(r.statusCode, 200);
      const far = await app.inject({ method: 'GET', url: '/api/v1/dcs', remoteAddress: '10.1.2.3' });
      assert.equal(far.statusCode, 401);
    } finally {
      await app.close();
    }
  });
});

describe('helpers', () => {
  test('status mapping', () => {
    assert.equal(httpStatus('EINVAL'), 400);
    assert.equal(httpStatus('ENOENT'), 404);
    assert.equal(httpStatus('EEXIST'), 409);
    assert.equal(httpStatus('EBUSY'), 409);
    assert.equal(httpStatus('EAUTH'), 401);
    assert.equal(httpStatus('EINTERNAL'), 500);
  });
  test('token comparison and loopback detection', () => {
    assert.ok(tokenMatches(TOKEN, TOKEN));
    assert.ok(!tokenMatches(undefined, TOKEN));
    assert.ok(!tokenMatches('a', TOKEN));
    assert.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('::ffff:127.0.0.2'));
    assert.ok(!isLoopback('10.0.0.1') && !isLoopback(undefined));
  });
});
