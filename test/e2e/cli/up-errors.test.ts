/** `dvs up` failures that must leave nothing behind. Requires `npm run build`. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const BIN = join(ROOT, 'bin', 'dvs.js');

function dvs(dir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [BIN, '--dir', dir, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

describe('dvs up - errors', () => {
  let dir: string;
  let busy: Server;
  let port: number;

  before(async () => {
    assert.ok(existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js')), 'run npm run build first');
    dir = await mkdtemp(join(tmpdir(), 'dvs-e2e-up-'));
    busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const addr = busy.address();
    assert.ok(addr !== null && typeof addr === 'object');
    port = addr.port;
  });

  after(async () => {
    await new Promise<void>((r) => busy.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a base port that is in use, with one error line and no cluster', async () => {
    const r = await dvs(dir, 'up', '--nodes', '2', '--detach', '--base-port', String(port));
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `dvs: error: port ${port} on 127.0.0.1 is in use (choose another --base-port) (EEXIST)\n`,
    );
    assert.equal(existsSync(join(dir, 'cluster.json')), false);
  });

  it('rejects a bad node count as a usage error', async () => {
    const r = await dvs(dir, 'up', '--nodes', 'many');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^dvs: error: .*--nodes.* \(EINVAL\)\n$/);
  });
});
