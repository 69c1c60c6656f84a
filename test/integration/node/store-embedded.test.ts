/**
 * Three node daemons on the embedded cluster store: node 0 hosts it (`--store embedded`), nodes 1 and 2 reach
 * it over their node links (`--store embedded:0`). Plus the start-up errors of a misconfigured store.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect } from '../../../src/sdk/index.js';
import { check, freePorts, REPO } from '../harness.js';
import { StoreCluster } from './store-cluster.js';
import { storeSuite } from './store-suite.js';

storeSuite('node daemons on the embedded store (hosted by node 0)', {
  stores: () => ['embedded', 'embedded:0', 'embedded:0'],
});

test('when the store host dies, the others say they are degraded and keep serving IPC they know', async () => {
  const c = await StoreCluster.start(['embedded', 'embedded:0', 'embedded:0']);
  const sessions: Awaited<ReturnType<typeof connect>>[] = [];
  try {
    await c.admin(1, 'dc.create', {
      config: { id: 0, name: 'ha', nodes: [1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 64 },
    });
    await check(
      async () => (await c.admin(2, 'dc.list', {})).some((d) => d.name === 'ha'),
      10_000,
      'ha on 2',
    );
    const srv = await connect({ socket: c.nodes[2]!.socket, dc: 'ha', endpoint: 210, timeout: 5000 });
    const cli = await connect({ socket: c.nodes[1]!.socket, dc: 'ha', endpoint: 110, timeout: 5000 });
    sessions.push(srv, cli);
    await check(
      async () => (await c.admin(1, 'ep.list', { dc: 'ha' })).some((r) => r.ep === 210),
      10_000,
      '210 known on node 1',
    );
    await c.killNode(0);
    for (const n of [1, 2]) {
      await check(async () => (await c.status(n)).cluster?.degraded === true, 15_000, `node ${n} degraded`);
    }
    const st = await c.status(1);
    assert.ok(st.cluster?.reason, 'a degraded node says why');
    const served = (async () => {
      const req = await srv.receiveRequest({ timeout: 10_000 });
      await srv.reply(req.source, { type: 2, payload: req.payload });
    })();
    const r = await cli.sendrec(210, { type: 1, payload: new Uint8Array([7]) }, { timeout: 10_000 });
    await served;
    assert.deepEqual([...r.payload], [7]);
  } finally {
    for (const d of sessions) await d.close().catch(() => {});
    await c.stop();
  }
});

/** Run `dvs node start` with `extra` args; resolves with its exit code and stderr (killed after 20 s). */
async function startFails(extra: string[]): Promise<{ code: number | null; stderr: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'dvs-store-err-'));
  const [port] = await freePorts(1);
  const args = [
    join(REPO, 'bin/dvs.js'),
    'node',
    'start',
    '--node-id',
    '1',
    '--listen',
    `127.0.0.1:${port}`,
    '--socket',
    join(dir, 'dvk.sock'),
    '--data',
    dir,
    '--log-level',
    'silent',
    ...extra,
  ];
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const kill = setTimeout(() => p.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  clearTimeout(kill);
  await rm(dir, { recursive: true, force: true });
  return { code, stderr };
}

test('an unreachable etcd at start is one line naming the address', async () => {
  const [port] = await freePorts(1);
  const { code, stderr } = await startFails(['--store', `etcd://127.0.0.1:${port}`]);
  assert.notEqual(code, 0);
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0]!, new RegExp(`cluster store unreachable: etcd at 127\\.0\\.0\\.1:${port}`));
});

test('a store hosted by a node that is not a peer is refused at start', async () => {
  const { code, stderr } = await startFails(['--store', 'embedded:7']);
  assert.notEqual(code, 0);
  assert.match(stderr, /embedded:7: node 7 is not a configured peer/);
});

test('a malformed --store is a usage error', async () => {
  const { code, stderr } = await startFails(['--store', 'zookeeper://x']);
  assert.equal(code, 2);
  assert.match(stderr, /--store must be embedded, embedded:<node id> or etcd:\/\/host:port/);
});
