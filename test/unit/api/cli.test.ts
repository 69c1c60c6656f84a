/** `dvs api`, `dvs dashboard` and the `--api` options of `dvs node start` (files only: no daemon needed). */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { newToken, readTokenFile, writeTokenFile } from '../../../src/api/auth.js';
import { nodeOptionsOf } from '../../../src/cli/commands/node.js';
import { main } from '../../../src/cli/main.js';

function sink(): { stream: Writable; text: () => string } {
  let s = '';
  return {
    stream: new Writable({
      write(chunk, _enc, cb) {
        s += String(chunk);
        cb();
      },
    }),
    text: () => s,
  };
}

async function dvs(dir: string, ...args: string[]) {
  const out = sink();
  const err = sink();
  const code = await main(['--dir', dir, ...args], {
    stdout: out.stream,
    stderr: err.stream,
    env: { PATH: '' },
    cwd: dir,
  });
  return { code, stdout: out.text(), stderr: err.text() };
}

describe('dvs api / dvs dashboard', () => {
  let dir: string;
  let token: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-api-cli-'));
    token = newToken();
    await writeTokenFile(join(dir, 'api-token'), token);
    const node = (id: number) => ({
      id,
      name: `node${id}`,
      address: `127.0.0.1:${7000 + id}`,
      socket: join(dir, `node${id}`, 'dvk.sock'),
      metrics: `127.0.0.1:${7100 + id}`,
      dataDir: join(dir, `node${id}`),
      pid: 0,
      api: `127.0.0.1:${7200 + id}`,
    });
    // Node 2's API is HTTPS (dvs up --tls): the cluster file records the CA its clients verify it with.
    const tlsNode = { ...node(2), apiCa: join(dir, 'node2', 'tls', 'ca.crt') };
    await writeFile(
      join(dir, 'cluster.json'),
      JSON.stringify({ version: 1, createdAt: 0, nodes: [node(0), node(1), tlsNode] }),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('a new token is 64 hex characters, written 0600 and read back', async () => {
    assert.match(token, /^[0-9a-f]{64}$/);
    assert.notEqual(newToken(), token);
    assert.equal((await stat(join(dir, 'api-token'))).mode & 0o777, 0o600);
    assert.equal(await readTokenFile(join(dir, 'api-token')), token);
  });

  test('dvs api --json prints {url, token, node} of the first node, --node picks another', async () => {
    const r = await dvs(dir, 'api', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { url: 'http://127.0.0.1:7200', token, node: 0 });
    const r1 = await dvs(dir, 'api', '--json', '--node', '1');
    assert.equal(JSON.parse(r1.stdout).url, 'http://127.0.0.1:7201');
    const bad = await dvs(dir, 'api', '--node', '5');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /ENOENT/);
  });

  test('dvs dashboard prints the URL with the token in the fragment; --open without xdg-open says so', async () => {
    const r = await dvs(dir, 'dashboard', '--open');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `http://127.0.0.1:7200/#token=${token}`);
    assert.match(r.stderr, /xdg-open is not installed/);
  });

  test('an HTTPS API: --json adds the CA file; the human output prints the curl line with --cacert', async () => {
    const ca = join(dir, 'node2', 'tls', 'ca.crt');
    const r = await dvs(dir, 'api', '--json', '--node', '2');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { url: 'https://127.0.0.1:7202', token, node: 2, ca });
    const human = await dvs(dir, 'api', '--node', '2');
    assert.equal(human.code, 0, human.stderr);
    assert.ok(
      human.stdout.includes(
        `try: curl --cacert "${ca}" -H "Authorization: Bearer $(dvs api --dir ${dir} --json | jq -r .token)" "https://127.0.0.1:7202/api/v1/cluster"\n`,
      ),
      human.stdout,
    );
    const plain = await dvs(dir, 'api');
    assert.match(
      plain.stdout,
      /^try: curl -H "Authorization: Bearer .*" "http:\/\/127\.0\.0\.1:7200\/api\/v1\/cluster"$/m,
    );
    const dash = await dvs(dir, 'dashboard', '--node', '2');
    assert.equal(dash.stdout.trim(), `https://127.0.0.1:7202/#token=${token}`);
    assert.match(dash.stderr, /import .*ca\.crt into the browser/);
  });

  test('without a cluster dvs api fails with a clear error', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'dvs-api-cli-'));
    try {
      const r = await dvs(empty, 'api');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no cluster in/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe('dvs node start --api options', () => {
  test('reach the daemon options; the API is off by default', () => {
    const base = { nodeId: 1, listen: '127.0.0.1:7000', socket: '/tmp/s', data: '/tmp/d' };
    const off = nodeOptionsOf(base);
    assert.equal(off.api, undefined);
    const on = nodeOptionsOf({
      ...base,
      api: '127.0.0.1:8080',
      apiTokenFile: '/tmp/t',
      apiInsecureLoopback: true,
    });
    assert.equal(on.api, '127.0.0.1:8080');
    assert.equal(on.apiTokenFile, '/tmp/t');
    assert.equal(on.apiInsecureLoopback, true);
    assert.equal(on.apiTls, undefined);
    assert.equal(nodeOptionsOf({ ...base, api: '127.0.0.1:8080', apiTls: 'off' }).apiTls, 'off');
  });
});
