/**
 * The REST API over real HTTP, served by real daemons (TestCluster, each node with --api and the peers'
 * API addresses), as a script or the dashboard uses it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { newToken, writeTokenFile } from '../../../src/api/auth.js';
import { check, freePorts, TestCluster } from '../harness.js';

const N = 3;

describe('REST API on a 3-node cluster', () => {
  let cluster: TestCluster;
  let tmp: string;
  let token: string;
  let urls: string[];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'dvs-api-'));
    token = newToken();
    const tokenFile = join(tmp, 'api-token');
    await writeTokenFile(tokenFile, token);
    const ports = await freePorts(N);
    urls = ports.map((p) => `http://127.0.0.1:${p}`);
    cluster = await TestCluster.start({
      nodes: N,
      nodeArgs: (id) => ['--api', `127.0.0.1:${ports[id]}`, '--api-token-file', tokenFile],
    });
    // A daemon serves its API last in its start-up: wait until every one answers.
    for (const url of urls) {
      await check(
        async () =>
          (await fetch(`${url}/api/v1/openapi.json`, { signal: AbortSignal.timeout(1000) }).catch(() => null))
            ?.ok === true,
        10_000,
        `API at ${url}`,
      );
    }
  });
  after(async () => {
    await cluster?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  const call = async (node: number, method: string, path: string, body?: unknown, withToken = true) => {
    const res = await fetch(`${urls[node]}/api/v1${path}`, {
      method,
      headers: {
        ...(withToken ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(20_000),
    });
    // biome-ignore lint/suspicious/noExplicitAny: answers of several shapes, checked field by field below
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  test('the token file is 0600; no token is 401 EAUTH on every node', async () => {
    assert.equal((await stat(join(tmp, 'api-token'))).mode & 0o777, 0o600);
    for (let i = 0; i < N; i++) {
      const r = await call(i, 'GET', '/cluster', undefined, false);
      assert.equal(r.status, 401);
      assert.equal(r.body.error.code, 'EAUTH');
    }
  });

  test('create a DC through node 1: every node has it; a bad body is 400 with the field', async () => {
    const r = await call(1, 'POST', '/dcs', { name: 'web' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.deepEqual(r.body.nodes, [0, 1, 2]);
    for (let i = 0; i < N; i++) {
      const dcs = await cluster.admin(i, 'dc.list', {});
      assert.deepEqual(
        dcs.map((d) => d.name),
        ['web'],
      );
    }
    const bad = await call(0, 'POST', '/dcs', { name: 'web', nodes: 'all' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'nodes');
    const dup = await call(2, 'POST', '/dcs', { name: 'web' });
    assert.equal(dup.status, 409);
  });

  test('run on node 2 through node 0, see it in the endpoint table from node 1, read its log, kill it', async () => {
    const run = await call(0, 'POST', '/dcs/web/processes', {
      ep: 100,
      node: 2,
      name: 'srv',
      cmd: [process.execPath, '-e', "console.log('hello from srv'); setInterval(() => {}, 1e6)"],
    });
    assert.equal(run.status, 201, JSON.stringify(run.body));
    assert.equal(run.body.node, 2);
    const eps = await call(1, 'GET', '/dcs/web/endpoints');
    assert.equal(eps.status, 200);
    const row = eps.body.endpoints.find((e: { ep: number }) => e.ep === 100);
    assert.equal(row?.node, 2);
    assert.equal(row?.name, 'srv');
    assert.equal(row?.pid, run.body.pid);
    const log = await check(
      async () => {
        const r = await call(1, 'GET', '/dcs/web/processes/100/logs');
        return r.body.data?.includes('hello from srv') ? r : undefined;
      },
      10_000,
      'process output',
    );
    assert.equal(log?.body.node, 2);
    const kill = await call(1, 'POST', '/dcs/web/processes/100/kill', { signal: 'SIGKILL', graceMs: 0 });
    assert.equal(kill.status, 200, JSON.stringify(kill.body));
    assert.equal(kill.body.exit?.signal, 'SIGKILL');
    const ev = await call(2, 'GET', '/events');
    const kinds = ev.body.events.map((e: { kind: string }) => e.kind);
    assert.ok(kinds.includes('proc.started') && kinds.includes('proc.killed'), kinds.join(','));
  });

  test('the SSE stream of node 0 reports node 2 going down; /cluster then shows it down', async () => {
    const ac = new AbortController();
    const res = await fetch(`${urls[0]}/api/v1/events/stream`, {
      headers: { authorization: `Bearer ${token}` },
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const found = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        text += decoder.decode(value, { stream: true });
        if (/event: event\ndata: .*"kind":"node\.down","subject":"node2"/.test(text)) return true;
      }
    })();
    try {
      await cluster.killNode(2);
      const timeout = new Promise<boolean>((r) => setTimeout(() => r(false), 15_000).unref());
      assert.ok(await Promise.race([found, timeout]), `no node.down in the stream:\n${text}`);
      assert.match(text, /event: hello\n/);
    } finally {
      ac.abort();
      await found.catch(() => {});
    }
    const view = await call(0, 'GET', '/cluster');
    const n2 = view.body.nodes.find((n: { id: number }) => n.id === 2);
    assert.equal(n2.state, 'down');
    assert.equal(view.body.nodes.find((n: { id: number }) => n.id === 1).state, 'up');
  });
});
