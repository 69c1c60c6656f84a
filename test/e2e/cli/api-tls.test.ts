/**
 * `dvs up --tls` serves every node's API over HTTPS, and `dvs api --json` tells a script how to verify it;
 * `--api-tls off` keeps HTTP; `--api-tls on` without `--tls` is refused before anything starts.
 * Requires `npm run build` (the daemons run from dist/).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { apiRequest } from '../../../src/api/client.js';
import { DvsError } from '../../../src/protocol/errors.js';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const BIN = join(ROOT, 'bin', 'dvs.js');

function dvs(dir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [BIN, '--dir', dir, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Kill by PID whatever daemon of `dir`'s cluster is still alive (dvs down failed or was never reached). */
async function killLeft(dir: string): Promise<void> {
  const file = join(dir, 'cluster.json');
  if (!existsSync(file)) return;
  const c = JSON.parse(await readFile(file, 'utf8')) as { nodes: { pid: number }[] };
  for (const n of c.nodes) {
    try {
      if (n.pid > 0) process.kill(n.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

describe('dvs up --tls: the HTTPS API', () => {
  const dirs: string[] = [];
  const fresh = async () => {
    const d = await mkdtemp(join(tmpdir(), 'dvs-e2e-api-tls-'));
    dirs.push(d);
    return d;
  };

  before(() => {
    assert.ok(existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js')), 'run npm run build first');
  });

  after(async () => {
    for (const d of dirs) {
      await dvs(d, 'down', '--timeout', '3000');
      await killLeft(d);
      await rm(d, { recursive: true, force: true });
    }
  });

  it('every node serves HTTPS verified with the CA that dvs api --json names; plain HTTP fails', async () => {
    const dir = await fresh();
    const up = await dvs(dir, 'up', '--nodes', '2', '--tls', '--no-store', '--detach');
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /REST API and dashboard on every node, e\.g\. https:\/\/127\.0\.0\.1:\d+\//);
    for (const node of [0, 1]) {
      const r = await dvs(dir, 'api', '--json', '--node', String(node));
      assert.equal(r.code, 0, r.stderr);
      const info = JSON.parse(r.stdout) as { url: string; token: string; node: number; ca: string };
      assert.match(info.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(info.node, node);
      const trust = { ca: await readFile(info.ca, 'utf8'), node };
      const res = await apiRequest(`${info.url}/api/v1/cluster`, { token: info.token, trust });
      assert.equal(res.status, 200, res.text);
      assert.equal((JSON.parse(res.text) as { nodes: unknown[] }).nodes.length, 2);
      await assert.rejects(
        apiRequest(`${info.url.replace('https:', 'http:')}/api/v1/cluster`, { token: info.token }),
        (e: unknown) => e instanceof DvsError && e.code === 'ENOTCONN',
      );
    }
    const down = await dvs(dir, 'down');
    assert.equal(down.code, 0, down.stderr);
  });

  it('--api-tls off keeps HTTP beside TLS links; --api-tls on without --tls is refused', async () => {
    const dir = await fresh();
    const up = await dvs(dir, 'up', '--nodes', '1', '--tls', '--api-tls', 'off', '--no-store', '--detach');
    assert.equal(up.code, 0, up.stderr);
    const info = JSON.parse((await dvs(dir, 'api', '--json')).stdout) as { url: string; token: string };
    assert.deepEqual(Object.keys(info).sort(), ['node', 'token', 'url']);
    assert.match(info.url, /^http:\/\//);
    const res = await apiRequest(`${info.url}/api/v1/cluster`, { token: info.token });
    assert.equal(res.status, 200, res.text);
    assert.equal((await dvs(dir, 'down')).code, 0);

    const other = await fresh();
    const bad = await dvs(other, 'up', '--nodes', '1', '--api-tls', 'on', '--no-store', '--detach');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--api-tls on needs --tls .*\(EINVAL\)\n$/);
    assert.equal(existsSync(join(other, 'cluster.json')), false);
  });
});
