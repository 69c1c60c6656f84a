/**
 * The routes of routes-more.ts against fake nodes (inject): DC isolation (create with limits and LAN, show,
 * stats, set, pause/resume, exec), kv, locks, groups, snapshots, other nodes' event logs, and for each the
 * bad input (400 naming the field), 404 and 503 answers, and the OpenAPI document.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { apiNodes } from '../../../src/api/caller.js';
import { buildApi } from '../../../src/api/server.js';
import { EventLog } from '../../../src/node/events.js';
import { jsonSafe, kvRow } from '../../../src/node/json.js';
import { mergeGroups } from '../../../src/node/views.js';
import { FakeNode } from './fake.js';

const TOKEN = 'b'.repeat(64);
const headers = { authorization: `Bearer ${TOKEN}` };
const logger = pino({ level: 'silent' });

async function setup(store: boolean) {
  const events = new EventLog({ node: 0 });
  const n0 = new FakeNode(0, [1], events, store);
  const n1 = new FakeNode(1, [0], new EventLog({ node: 1 }), store);
  const app = await buildApi({
    nodes: apiNodes(0, n0, new Map([[1, n1]])),
    events,
    token: TOKEN,
    logger,
    webRoot: '/nonexistent',
  });
  return { app, n0, n1 };
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

function call(app: FastifyInstance, method: Method, url: string, payload?: object) {
  return app.inject({ method, url: `/api/v1${url}`, headers, ...(payload ? { payload } : {}) });
}

/** A 400 EINVAL naming `field`, with a reason and no stack trace. */
function assertBad(r: LightMyRequestResponse, field: string) {
  assert.equal(r.statusCode, 400, r.body);
  const e = r.json().error;
  assert.equal(e.code, 'EINVAL', r.body);
  assert.equal(e.field, field, r.body);
  assert.equal(typeof e.reason, 'string');
  assert.doesNotMatch(r.body, /at .*\.[jt]s:\d+/);
}

describe('DC isolation routes (no store)', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  let app: FastifyInstance;
  before(async () => {
    s = await setup(false);
    app = s.app;
  });
  after(() => app.close());

  test('POST /dcs with limits and a LAN: each node gets the limits and its own address; peers pushed', async () => {
    const r = await call(app, 'POST', '/dcs', {
      name: 'web',
      limits: { memory: '256M', pids: '64' },
      lan: '172.31.5.0/24',
    });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(s.n0.limits.get(1), 'memory=256M,pids=64');
    assert.equal(s.n1.limits.get(1), 'memory=256M,pids=64');
    assert.deepEqual(
      [s.n0.lans.get(1), s.n1.lans.get(1)],
      [
        { prefix: '172.31.5.0/24', address: '172.31.5.1' },
        { prefix: '172.31.5.0/24', address: '172.31.5.2' },
      ],
    );
    // Every node learned both containers.
    assert.equal(s.n0.lanPeers.get(1)?.length, 2);
    assert.equal(s.n1.lanPeers.get(1)?.length, 2);
  });

  test('POST /dcs refuses bad limits and LANs naming the field, and creates nothing', async () => {
    assertBad(
      await call(app, 'POST', '/dcs', { name: 'x', limits: { memory: '12 parsecs' } }),
      'limits.memory',
    );
    assertBad(await call(app, 'POST', '/dcs', { name: 'x', limits: { memory: 'lots' } }), 'limits.memory');
    assertBad(await call(app, 'POST', '/dcs', { name: 'x', limits: { cpus: 'half' } }), 'limits.cpus');
    assertBad(await call(app, 'POST', '/dcs', { name: 'x', limits: { colour: '1' } }), 'limits.colour');
    assertBad(await call(app, 'POST', '/dcs', { name: 'x', lan: 'not-a-prefix' }), 'lan');
    // Well formed, but overlapping the LAN of DC 'web'.
    const overlap = await call(app, 'POST', '/dcs', { name: 'x', lan: '172.31.5.128/25' });
    assertBad(overlap, 'lan');
    assert.match(overlap.json().error.message, /overlaps .* web/);
    assert.equal(s.n0.dcs.size, 1);
  });

  test('GET /dcs/{dc}/isolation and /stats answer per node', async () => {
    const iso = await call(app, 'GET', '/dcs/web/isolation');
    assert.equal(iso.statusCode, 200, iso.body);
    const v = iso.json();
    assert.deepEqual([v.dc, v.dcId, v.unreachable], ['web', 1, []]);
    assert.deepEqual(
      v.nodes.map((n: { node: number; lan: { address: string } }) => [n.node, n.lan.address]),
      [
        [0, '172.31.5.1'],
        [1, '172.31.5.2'],
      ],
    );
    const stats = (await call(app, 'GET', '/dcs/1/stats')).json();
    assert.deepEqual(
      stats.nodes.map((n: { node: number; memory: { limitBytes: number } }) => [n.node, n.memory.limitBytes]),
      [
        [0, 256 << 20],
        [1, 256 << 20],
      ],
    );
  });

  test('a node that does not answer is listed as unreachable in reads, and fails a change', async () => {
    s.n1.down = true;
    try {
      const stats = (await call(app, 'GET', '/dcs/web/stats')).json();
      assert.deepEqual(
        stats.nodes.map((n: { node: number }) => n.node),
        [0],
      );
      assert.deepEqual(
        stats.unreachable.map((u: { node: number; code: string }) => [u.node, u.code]),
        [[1, 'ENOTCONN']],
      );
      const set = await call(app, 'PUT', '/dcs/web/limits', { cpus: '0.5' });
      assert.equal(set.statusCode, 503, set.body);
      assert.match(set.json().error.message, /node 1/);
    } finally {
      s.n1.down = false;
    }
  });

  test('PUT /dcs/{dc}/limits changes them on every node; bad or empty bodies are 400', async () => {
    const r = await call(app, 'PUT', '/dcs/web/limits', { memory: 'max', cpus: '50%', pids: 128 });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(
      r.json().nodes.map((n: { node: number; limits: string }) => [n.node, n.limits]),
      [
        [0, 'pids=128,cpus=50%'],
        [1, 'pids=128,cpus=50%'],
      ],
    );
    assertBad(await call(app, 'PUT', '/dcs/web/limits', { pids: 'many' }), 'limits.pids');
    assertBad(await call(app, 'PUT', '/dcs/web/limits', { swap: '1G' }), 'swap');
    assertBad(await call(app, 'PUT', '/dcs/web/limits', {}), 'body');
    const missing = await call(app, 'PUT', '/dcs/nope/limits', { pids: '1' });
    assert.equal(missing.statusCode, 404);
  });

  test('POST /dcs/{dc}/pause and /resume freeze and thaw on all nodes', async () => {
    const p = await call(app, 'POST', '/dcs/web/pause');
    assert.equal(p.statusCode, 200, p.body);
    assert.deepEqual(p.json(), { dc: 'web', dcId: 1, nodes: [0, 1], state: 'paused' });
    assert.ok(s.n0.frozen.has(1) && s.n1.frozen.has(1));
    const stats = (await call(app, 'GET', '/dcs/web/stats')).json();
    assert.ok(stats.nodes.every((n: { frozen: boolean }) => n.frozen));
    const r = await call(app, 'POST', '/dcs/web/resume');
    assert.equal(r.json().state, 'running');
    assert.ok(!s.n0.frozen.has(1) && !s.n1.frozen.has(1));
    assert.equal((await call(app, 'POST', '/dcs/nope/pause')).statusCode, 404);
  });

  test('POST /dcs/{dc}/exec runs on the chosen node (default the lowest); bad input is 400', async () => {
    const r = await call(app, 'POST', '/dcs/web/exec', { cmd: ['ps', 'ax'], node: 1 });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual([r.json().node, r.json().code, r.json().stdout], [1, 0, 'ps ax on 1\n']);
    const call1 = s.n1.calls.findLast((c) => c.method === 'proc.exec');
    assert.deepEqual(call1?.params, { dc: 1, cmd: ['ps', 'ax'], timeoutMs: 30_000, cwd: '/' });
    assert.equal((await call(app, 'POST', '/dcs/web/exec', { cmd: ['id'] })).json().node, 0);
    assertBad(await call(app, 'POST', '/dcs/web/exec', { cmd: [] }), 'cmd');
    assertBad(await call(app, 'POST', '/dcs/web/exec', { cmd: ['id'], timeoutMs: 0 }), 'timeoutMs');
    assertBad(await call(app, 'POST', '/dcs/web/exec', { cmd: ['id'], node: 7 }), 'node');
  });

  test("POST /dcs/{dc}/balance plans from the nodes' load and, with apply, migrates", async () => {
    const load = (host: string, procs: { ep: number; cpu: number }[]) => ({
      host,
      cpus: 2,
      cpuBusy: procs.reduce((a, p) => a + p.cpu, 0) / 2,
      loadAvg1: 0,
      memTotalBytes: 1 << 30,
      memAvailableBytes: 1 << 29,
      daemonCpu: 0,
      daemonRssBytes: 0,
      procs: procs.map((p) => ({ dc: 1, ep: p.ep, pid: 1, cpu: p.cpu, rssBytes: 1 << 20 })),
      sampledAt: 0,
      intervalMs: 1000,
    });
    for (const ep of [200, 201]) {
      await call(app, 'POST', '/dcs/web/processes', { ep, cmd: ['busy'], node: 0 });
    }
    s.n0.load = load('a', [
      { ep: 200, cpu: 0.9 },
      { ep: 201, cpu: 0.9 },
    ]);
    s.n1.load = load('b', []);
    try {
      const plan = await call(app, 'POST', '/dcs/web/balance', {});
      assert.equal(plan.statusCode, 200, plan.body);
      const moves = plan.json().moves as { ep: number; from: number; to: number }[];
      assert.equal(moves.length, 1, plan.body);
      assert.deepEqual([moves[0]?.from, moves[0]?.to], [0, 1]);
      assert.equal(plan.json().applied, undefined);
      assert.ok(!s.n0.calls.some((c) => c.method === 'proc.migrate'));
      const done = await call(app, 'POST', '/dcs/web/balance', { apply: true });
      assert.equal(done.json().applied[0].ok, true, done.body);
      assert.ok(s.n0.calls.some((c) => c.method === 'proc.migrate'));
      assertBad(await call(app, 'POST', '/dcs/web/balance', { maxMoves: 0 }), 'maxMoves');
      assertBad(await call(app, 'POST', '/dcs/web/balance', { apply: 'yes' }), 'apply');
    } finally {
      s.n0.load = undefined;
      s.n1.load = undefined;
    }
  });

  test('services without a store answer 503 EUNAVAIL (not 500)', async () => {
    const r = await call(app, 'GET', '/dcs/web/kv');
    assert.equal(r.statusCode, 503, r.body);
    assert.equal(r.json().error.code, 'EUNAVAIL');
  });
});

describe('DVK service routes (store)', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  let app: FastifyInstance;
  before(async () => {
    s = await setup(true);
    app = s.app;
    // With a store the DC is written once; both fake nodes know it, as their watches would apply it.
    const cfg = { id: 3, name: 'app', nodes: [0, 1], maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 };
    s.n0.dcs.set(3, cfg);
    s.n1.dcs.set(3, cfg);
  });
  after(() => app.close());

  test('kv: put text and bytes, get, list by prefix, delete; keys may hold slashes', async () => {
    const put = await call(app, 'PUT', '/dcs/app/kv/cfg/mode', { value: 'fast' });
    assert.equal(put.statusCode, 200, put.body);
    assert.deepEqual(put.json(), { key: 'cfg/mode', revision: 8 });
    assert.deepEqual([...(s.n0.kv.get('cfg/mode') ?? [])], [...Buffer.from('fast')]);
    await call(app, 'PUT', '/dcs/app/kv/cfg/blob', { base64: Buffer.from([0xff, 0, 1]).toString('base64') });
    const get = await call(app, 'GET', '/dcs/app/kv/cfg/mode');
    assert.equal(get.statusCode, 200, get.body);
    assert.deepEqual(get.json(), {
      key: 'cfg/mode',
      value: 'fast',
      base64: Buffer.from('fast').toString('base64'),
      revision: 7,
      createRevision: 5,
      version: 2,
    });
    const list = await call(app, 'GET', '/dcs/app/kv?prefix=cfg/');
    assert.equal(list.statusCode, 200, list.body);
    assert.deepEqual(
      list
        .json()
        .entries.map((e: { key: string; value: string | null; base64: string }) => [
          e.key,
          e.value,
          e.base64,
        ]),
      [
        ['cfg/blob', null, '/wAB'],
        ['cfg/mode', 'fast', 'ZmFzdA=='],
      ],
    );
    const del = await call(app, 'DELETE', '/dcs/app/kv/cfg/mode');
    assert.deepEqual(del.json(), { key: 'cfg/mode', deleted: true, revision: 9 });
    const again = await call(app, 'DELETE', '/dcs/app/kv/cfg/mode');
    assert.equal(again.json().deleted, false);
    const gone = await call(app, 'GET', '/dcs/app/kv/cfg/mode');
    assert.equal(gone.statusCode, 404);
    assert.equal(gone.json().error.code, 'ENOENT');
  });

  test('kv: bad bodies and queries are 400 naming the field', async () => {
    assertBad(await call(app, 'PUT', '/dcs/app/kv/k', {}), 'value');
    assertBad(await call(app, 'PUT', '/dcs/app/kv/k', { value: 'a', base64: 'YQ==' }), 'base64');
    assertBad(await call(app, 'PUT', '/dcs/app/kv/k', { base64: 'not base64!' }), 'base64');
    assertBad(await call(app, 'PUT', '/dcs/app/kv/k', { value: 3, extra: 1 }), 'extra');
    assertBad(await call(app, 'GET', '/dcs/app/kv?limit=0'), 'limit');
    assertBad(await call(app, 'GET', '/dcs/app/kv/'), 'key');
    assert.equal((await call(app, 'GET', '/dcs/nope/kv/k')).statusCode, 404);
  });

  test('GET /dcs/{dc}/locks lists holders', async () => {
    const r = await call(app, 'GET', '/dcs/app/locks');
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json().dc, 'app');
    assert.equal(r.json().locks[0].holder.token, 3);
  });

  test('GET /dcs/{dc}/groups merges every node: newest view, summed counters, who is behind', async () => {
    s.n0.groups = [{ name: 'g', epoch: 2, members: [{ node: 0, ep: 100 }], sent: 3 }];
    s.n1.groups = [{ name: 'g', epoch: 1, members: [{ node: 1, ep: 101 }], sent: 4 }];
    const r = await call(app, 'GET', '/dcs/app/groups');
    assert.equal(r.statusCode, 200, r.body);
    const v = r.json();
    assert.deepEqual(
      v.nodes.map((n: { node: number }) => n.node),
      [0, 1],
    );
    assert.equal(v.groups.length, 1);
    const g = v.groups[0];
    assert.equal(g.view.id.epoch, 2);
    assert.deepEqual(g.behind, [1]);
    assert.equal(g.sent, 7);
    assert.deepEqual(g.local, [
      { node: 0, ep: 100, backlog: 0 },
      { node: 1, ep: 101, backlog: 0 },
    ]);
  });

  test('snapshots: create (201), list, show (bytes as base64), fork (201), restore, remove; bad names 400', async () => {
    const c = await call(app, 'POST', '/dcs/app/snapshots', { name: 's1' });
    assert.equal(c.statusCode, 201, c.body);
    assert.equal(c.json().name, 's1');
    const ls = await call(app, 'GET', '/snapshots?dc=app');
    assert.deepEqual(
      ls.json().snapshots.map((x: { name: string }) => x.name),
      ['s1'],
    );
    const perDc = await call(app, 'GET', '/dcs/app/snapshots');
    assert.equal(perDc.json().snapshots.length, 1);
    const show = await call(app, 'GET', '/snapshots/s1');
    assert.equal(show.statusCode, 200, show.body);
    assert.equal(show.json().procs[0].state, Buffer.from([1, 2, 3]).toString('base64'));
    const fork = await call(app, 'POST', '/snapshots/s1/fork', { as: 'copy' });
    assert.equal(fork.statusCode, 201, fork.body);
    assert.equal(fork.json().dc.name, 'copy');
    const restore = await call(app, 'POST', '/dcs/app/restore', { snapshot: 's1' });
    assert.equal(restore.statusCode, 200, restore.body);
    assert.equal(restore.json().started.length, 1);
    assertBad(await call(app, 'POST', '/dcs/app/snapshots', { name: '../etc' }), 'name');
    assertBad(await call(app, 'POST', '/snapshots/s1/fork', { as: '9x' }), 'as');
    assertBad(await call(app, 'POST', '/dcs/app/restore', {}), 'snapshot');
    assert.equal((await call(app, 'DELETE', '/snapshots/s1')).statusCode, 200);
    const missing = await call(app, 'GET', '/snapshots/s1');
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().error.code, 'ENOENT');
  });

  test("GET /events?node=1 reads another node's log", async () => {
    const log1 = (s.n1 as unknown as { events: EventLog }).events;
    log1.emit('failover', 'app/100', { from: 0, to: 1 });
    const r = await call(app, 'GET', '/events?node=1');
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json().node, 1);
    assert.deepEqual(
      r.json().events.map((e: { kind: string }) => e.kind),
      ['failover'],
    );
    assert.equal((await call(app, 'GET', '/events?node=9')).statusCode, 404);
    assertBad(await call(app, 'GET', '/events?node=x'), 'node');
  });

  test('the OpenAPI document covers the new routes with their schemas', async () => {
    const spec = (await app.inject({ method: 'GET', url: '/api/v1/openapi.json' })).json();
    for (const [path, method] of [
      ['/api/v1/dcs/{dc}/isolation', 'get'],
      ['/api/v1/dcs/{dc}/stats', 'get'],
      ['/api/v1/dcs/{dc}/limits', 'put'],
      ['/api/v1/dcs/{dc}/pause', 'post'],
      ['/api/v1/dcs/{dc}/resume', 'post'],
      ['/api/v1/dcs/{dc}/exec', 'post'],
      ['/api/v1/dcs/{dc}/locks', 'get'],
      ['/api/v1/dcs/{dc}/kv', 'get'],
      ['/api/v1/dcs/{dc}/kv/{key}', 'put'],
      ['/api/v1/dcs/{dc}/groups', 'get'],
      ['/api/v1/dcs/{dc}/snapshots', 'post'],
      ['/api/v1/snapshots/{name}/fork', 'post'],
      ['/api/v1/dcs/{dc}/balance', 'post'],
    ] as const) {
      assert.ok(spec.paths[path]?.[method], `${method} ${path}`);
    }
    const kv = spec.paths['/api/v1/dcs/{dc}/kv/{key}'].put;
    assert.deepEqual(
      kv.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`),
      ['path:dc', 'path:key'],
    );
    assert.ok(spec.paths['/api/v1/dcs/{dc}/snapshots'].post.responses['201']);
    const create = spec.paths['/api/v1/dcs'].post.requestBody.content['application/json'].schema;
    assert.ok(create.properties.limits && create.properties.lan);
  });
});

describe('API helpers', () => {
  test('jsonSafe turns byte arrays into base64 at any depth', () => {
    assert.deepEqual(jsonSafe({ a: [new Uint8Array([1, 2])], b: { c: new Uint8Array(0) }, d: 1 }), {
      a: ['AQI='],
      b: { c: '' },
      d: 1,
    });
  });
  test('kvRow: text when UTF-8, null otherwise', () => {
    const e = { key: 'k', revision: 1, createRevision: 1, version: 1 };
    assert.equal(kvRow({ ...e, value: new TextEncoder().encode('héllo') }).value, 'héllo');
    assert.equal(kvRow({ ...e, value: new Uint8Array([0xff]) }).value, null);
  });
  test('mergeGroups keeps the newest view and the nodes behind it', () => {
    const row = (node: number, epoch: number) => ({
      node,
      cfg: [1, 0, 1] as [number, number, number],
      nodes: [0, 1],
      flushing: false,
      groups: [
        {
          node,
          name: 'g',
          view: { id: { epoch, coord: 0, inc: 0, seq: 0 }, members: [] },
          local: [],
          sent: 1,
          delivered: 1,
          views: 1,
        },
      ],
    });
    const [g] = mergeGroups([row(0, 1), row(1, 3), row(2, 3)]);
    assert.equal(g?.view?.id.epoch, 3);
    assert.deepEqual(g?.behind, [0]);
    assert.equal(g?.sent, 3);
  });
});
