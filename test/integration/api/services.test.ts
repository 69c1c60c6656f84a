/**
 * The REST routes over service methods and the isolation admin methods, against real daemons with an
 * embedded cluster store (TestCluster, --api): a DC written once through one node's API, then kv and locks
 * through another node's API (the store makes any node answer), per-node stats and exec, another node's
 * event log, and the answers for bad input.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { newToken, writeTokenFile } from '../../../src/api/auth.js';
import { check, freePorts, TestCluster } from '../harness.js';

describe('REST API services on a 2-node cluster with a store', () => {
  let cluster: TestCluster;
  let tmp: string;
  let token: string;
  let urls: string[];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'dvs-api-svc-'));
    token = newToken();
    const tokenFile = join(tmp, 'api-token');
    await writeTokenFile(tokenFile, token);
    const ports = await freePorts(2);
    urls = ports.map((p) => `http://127.0.0.1:${p}`);
    cluster = await TestCluster.start({
      stores: ['embedded', 'embedded:0'],
      nodeArgs: (id) => ['--api', `127.0.0.1:${ports[id]}`, '--api-token-file', tokenFile],
    });
    // A daemon serves its API last in its start-up: wait until both answer.
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

  const call = async (node: number, method: string, path: string, body?: unknown) => {
    const res = await fetch(`${urls[node]}/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(20_000),
    });
    // biome-ignore lint/suspicious/noExplicitAny: answers of several shapes, checked field by field below
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  test('a DC written once through node 0 is applied by both nodes (each logs dc.created)', async () => {
    // Integration daemons run without containers: limits are refused (501 ENOTSUP) and nothing is created.
    const limited = await call(0, 'POST', '/dcs', { name: 'app', limits: { pids: '64' } });
    assert.equal(limited.status, 501, JSON.stringify(limited.body));
    assert.equal(limited.body.error.code, 'ENOTSUP');
    assert.equal((await call(1, 'GET', '/dcs/app')).status, 404);
    const r = await call(0, 'POST', '/dcs', { name: 'app' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    await check(
      async () => (await call(1, 'GET', '/dcs/app')).body.on?.length === 2,
      10_000,
      'DC app on both nodes',
    );
    // Node 1 applied it from the store watch and logged it; read through node 0's API.
    await check(
      async () => {
        const ev = await call(0, 'GET', '/events?node=1');
        return ev.body.events?.some(
          (e: { kind: string; subject: string; detail: { applied?: boolean } }) =>
            e.kind === 'dc.created' && e.subject === 'dc app' && e.detail.applied === true,
        );
      },
      5000,
      'dc.created applied on node 1',
    );
  });

  test('kv through node 1: put text and bytes, get, list, delete; a missing key is 404', async () => {
    const put = await call(1, 'PUT', '/dcs/app/kv/config/mode', { value: 'fast' });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.key, 'config/mode');
    assert.ok(put.body.revision > 0);
    const bin = await call(1, 'PUT', '/dcs/app/kv/config/raw', {
      base64: Buffer.from([0xff, 1]).toString('base64'),
    });
    assert.equal(bin.status, 200, JSON.stringify(bin.body));
    // Read back through the other node: one store.
    const get = await call(0, 'GET', '/dcs/app/kv/config/mode');
    assert.equal(get.status, 200, JSON.stringify(get.body));
    assert.equal(get.body.value, 'fast');
    assert.equal(get.body.version, 1);
    const list = await call(0, 'GET', '/dcs/app/kv?prefix=config/');
    assert.deepEqual(
      list.body.entries.map((e: { key: string; value: string | null }) => [e.key, e.value]),
      [
        ['config/mode', 'fast'],
        ['config/raw', null],
      ],
    );
    const del = await call(1, 'DELETE', '/dcs/app/kv/config/mode');
    assert.equal(del.body.deleted, true);
    const gone = await call(0, 'GET', '/dcs/app/kv/config/mode');
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, 'ENOENT');
    const bad = await call(0, 'PUT', '/dcs/app/kv/x', { value: 'a', base64: 'YQ==' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'base64');
  });

  test('locks: none held; groups: none; an unknown DC is 404', async () => {
    const locks = await call(0, 'GET', '/dcs/app/locks');
    assert.equal(locks.status, 200, JSON.stringify(locks.body));
    assert.deepEqual(locks.body.locks, []);
    const groups = await call(1, 'GET', '/dcs/app/groups');
    assert.equal(groups.status, 200, JSON.stringify(groups.body));
    assert.deepEqual(groups.body.groups, []);
    assert.deepEqual(
      groups.body.nodes.map((n: { node: number }) => n.node),
      [0, 1],
    );
    assert.equal((await call(0, 'GET', '/dcs/nope/locks')).status, 404);
  });

  test('stats and isolation answer per node (isolation off here); a bad limit is 400', async () => {
    const stats = await call(1, 'GET', '/dcs/app/stats');
    assert.equal(stats.status, 200, JSON.stringify(stats.body));
    assert.deepEqual(
      stats.body.nodes.map((n: { node: number; mode: string }) => [n.node, n.mode]),
      [
        [0, 'off'],
        [1, 'off'],
      ],
    );
    assert.deepEqual(stats.body.unreachable, []);
    const iso = await call(0, 'GET', '/dcs/app/isolation');
    assert.equal(iso.status, 200, JSON.stringify(iso.body));
    assert.deepEqual(
      iso.body.nodes.map((n: { node: number; limits: string }) => [n.node, n.limits]),
      [
        [0, ''],
        [1, ''],
      ],
    );
    const bad = await call(0, 'PUT', '/dcs/app/limits', { memory: 'lots' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'limits.memory');
  });

  test('exec runs in the DC on the node asked for', async () => {
    const r = await call(0, 'POST', '/dcs/app/exec', { cmd: ['sh', '-c', 'echo "$DVS_NODE"'], node: 1 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.node, 1);
    assert.equal(r.body.code, 0);
    assert.equal(r.body.stdout, '1\n');
  });

  test('snapshots: create through node 1, list and show through node 0, remove; a bad name is 400', async () => {
    const c = await call(1, 'POST', '/dcs/app/snapshots', { name: 'cut1' });
    assert.equal(c.status, 201, JSON.stringify(c.body));
    assert.equal(c.body.name, 'cut1');
    assert.equal(c.body.dcName, 'app');
    const ls = await call(0, 'GET', '/snapshots?dc=app');
    assert.equal(ls.status, 200, JSON.stringify(ls.body));
    assert.deepEqual(
      ls.body.snapshots.map((x: { name: string }) => x.name),
      ['cut1'],
    );
    const show = await call(0, 'GET', '/snapshots/cut1');
    assert.equal(show.status, 200, JSON.stringify(show.body));
    assert.equal(show.body.info.name, 'cut1');
    assert.equal((await call(0, 'POST', '/dcs/app/snapshots', { name: '-x' })).body.error.field, 'name');
    const rm = await call(0, 'DELETE', '/snapshots/cut1');
    assert.equal(rm.status, 200, JSON.stringify(rm.body));
    const gone = await call(1, 'GET', '/snapshots/cut1');
    assert.equal(gone.status, 404, JSON.stringify(gone.body));
  });
});
