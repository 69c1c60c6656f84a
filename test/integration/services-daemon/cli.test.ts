/**
 * `dvs kv` and `dvs lock ls` as a user types them: the built CLI (`node bin/dvs.js`) against a local cluster
 * started by `dvs up` (which now starts the embedded cluster store by default), with a process holding a
 * lock through the built SDK. Also: `dvs up --no-store` makes the same commands fail with a hint. Requires
 * `npm run build`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { check, REPO } from '../harness.js';

const BIN = join(REPO, 'bin', 'dvs.js');
const SDK = join(REPO, 'dist', 'src', 'sdk', 'index.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function cli(dir: string) {
  const dvs = (...args: string[]): Promise<Result> =>
    new Promise((res) => {
      execFile(
        process.execPath,
        [BIN, '--dir', dir, ...args],
        { cwd: dir, timeout: 60_000, env: { ...process.env, NO_COLOR: '1' } },
        (err, stdout, stderr) => {
          res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
        },
      );
    });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await dvs(...args);
    assert.equal(r.code, 0, `dvs ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };
  const json = async <T>(...args: string[]): Promise<T> => JSON.parse(await ok(...args)) as T;
  /** `dvs down`, then SIGKILL whatever the cluster file still names, and remove the dir. */
  const cleanup = async (extraPids: number[]) => {
    await dvs('down', '--timeout', '3000').catch(() => {});
    const pids = [...extraPids];
    try {
      const f = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as { nodes: { pid: number }[] };
      pids.push(...f.nodes.map((n) => n.pid));
    } catch {
      // nothing was started
    }
    for (const pid of pids) if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  };
  return { dvs, ok, json, cleanup };
}

describe('dvs kv / dvs lock ls', { timeout: 120_000 }, () => {
  let dir: string;
  let c: ReturnType<typeof cli>;
  const childPids: number[] = [];

  before(async () => {
    assert.ok(
      existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js')) && existsSync(SDK),
      'run npm run build first',
    );
    dir = await mkdtemp(join(tmpdir(), 'dvs-svc-cli-'));
    c = cli(dir);
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

  after(async () => {
    if (dir !== undefined) await c.cleanup(childPids);
  });

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
  let dir: string;
  let c: ReturnType<typeof cli>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-svc-nostore-'));
    c = cli(dir);
    await c.ok('up', '--nodes', '1', '--detach', '--no-store');
    await c.ok('dc', 'create', 'demo');
  });

  after(async () => {
    if (dir !== undefined) await c.cleanup([]);
  });

  it('runs without a store: the service commands say --store is needed', async () => {
    const st = await c.json<{ nodes: { cluster?: unknown }[] }>('status', '--json');
    assert.equal(st.nodes[0]!.cluster, undefined);
    const r = await c.dvs('kv', 'ls', '--dc', 'demo');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--store.*\(EUNAVAIL\)\n$/);
  });
});
