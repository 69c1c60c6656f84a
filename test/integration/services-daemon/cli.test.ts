/**
 * `dvs kv` and `dvs lock ls` as a user types them: the built CLI (`node bin/dvs.js`) against a local cluster
 * started by `dvs up` (which now starts the embedded cluster store by default), with a process holding a
 * lock through the built SDK. Also: `dvs up --no-store` makes the same commands fail with a hint. Requires
 * `npm run build`.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { built, CliCluster, SDK } from '../cli.js';
import { check } from '../harness.js';

describe('dvs kv / dvs lock ls', { timeout: 120_000 }, () => {
  const c = new CliCluster('dvs-svc-cli-');
  const childPids: number[] = [];

  before(async () => {
    assert.ok(built(), 'run npm run build first');
    const dir = await c.start();
    await writeFile(
      join(dir, 'holder.mjs'),
      [
        `import { connect } from ${JSON.stringify(SDK)};`,
        'const dvk = await connect();',
        "const l = await dvk.lock('cli-lock', { timeout: 10000 });",
        "console.log('locked', l.token);",
        'setInterval(() => {}, 60000);',
      ].join('\n'),
    );
    await c.ok('up', '--nodes', '2', '--detach');
    await c.ok('dc', 'create', 'demo');
  });

  after(() => c.stop(childPids));

  it('kv put / get / ls / rm', async () => {
    const put = await c.json<{ key: string; revision: number }>(
      'kv',
      'put',
      'cfg/mode',
      'fast',
      '--dc',
      'demo',
      '--json',
    );
    assert.equal(put.key, 'cfg/mode');
    await c.ok('kv', 'put', 'cfg/size', '42', '--dc', 'demo');
    const got = await c.json<{ key: string; value: string; revision: number; version: number }>(
      'kv',
      'get',
      'cfg/mode',
      '--dc',
      'demo',
      '--json',
    );
    assert.deepEqual([got.key, got.value, got.revision, got.version], ['cfg/mode', 'fast', put.revision, 1]);
    assert.equal(await c.ok('kv', 'get', 'cfg/size', '--dc', 'demo'), '42\n');
    const ls = await c.json<{ entries: { key: string; value: string }[] }>(
      'kv',
      'ls',
      'cfg/',
      '--dc',
      '1',
      '--json',
    );
    assert.deepEqual(
      ls.entries.map((e) => [e.key, e.value]),
      [
        ['cfg/mode', 'fast'],
        ['cfg/size', '42'],
      ],
    );
    const del = await c.json<{ deleted: boolean }>('kv', 'rm', 'cfg/mode', '--dc', 'demo', '--json');
    assert.equal(del.deleted, true);
    const missing = await c.dvs('kv', 'get', 'cfg/mode', '--dc', 'demo');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^dvs: error: .* \(ENOENT\)\n$/);
    const nodc = await c.dvs('kv', 'ls', '--dc', 'nope');
    assert.match(nodc.stderr, /\(ENOENT\)\n$/);
  });

  it('lock ls shows the process that holds a lock, and nothing once it is killed', async () => {
    const empty = await c.json<{ locks: unknown[] }>('lock', 'ls', '--dc', 'demo', '--json');
    assert.deepEqual(empty.locks, []);
    const started = await c.json<{ pid: number }>(
      'run',
      '--dc',
      'demo',
      '--ep',
      '100',
      '--node',
      '1',
      '--json',
      '--',
      process.execPath,
      'holder.mjs',
    );
    childPids.push(started.pid);
    const log = await check(
      async () => {
        const out = await c.ok('logs', '--dc', 'demo', '--ep', '100');
        return out.includes('locked') ? out : undefined;
      },
      15_000,
      'the holder to take the lock',
    );
    const token = Number(/locked (\d+)/.exec(log ?? '')?.[1]);
    const ls = await c.json<{
      locks: { name: string; holder: { owner: string; token: number }; waiters: unknown[] }[];
    }>('lock', 'ls', '--dc', 'demo', '--json');
    assert.deepEqual(
      ls.locks.map((l) => [l.name, l.holder.owner, l.holder.token, l.waiters.length]),
      [['cli-lock', 'ep100@node1', token, 0]],
    );
    assert.match(await c.ok('lock', 'ls', '--dc', 'demo'), /cli-lock\s+ep100@node1\s+\d+/);
    await c.ok('kill', '--dc', 'demo', '--ep', '100');
    // The process's session closes as it dies, and the daemon releases what it held.
    await check(
      async () =>
        (await c.json<{ locks: unknown[] }>('lock', 'ls', '--dc', 'demo', '--json')).locks.length === 0,
      10_000,
      'lock released after kill',
    );
  });
});

describe('dvs up --no-store', { timeout: 60_000 }, () => {
  const c = new CliCluster('dvs-svc-nostore-');

  before(async () => {
    await c.start();
    await c.ok('up', '--nodes', '1', '--detach', '--no-store');
    await c.ok('dc', 'create', 'demo');
  });

  after(() => c.stop());

  it('runs without a store: the service commands say --store is needed', async () => {
    const st = await c.json<{ nodes: { cluster?: unknown }[] }>('status', '--json');
    assert.equal(st.nodes[0]!.cluster, undefined);
    const r = await c.dvs('kv', 'ls', '--dc', 'demo');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--store.*\(EUNAVAIL\)\n$/);
  });
});
