/**
 * The CLI as a user types it: `node bin/dvs.js ...` (the built CLI) against a real 3-node cluster of
 * daemon processes in a temp --dir. Requires `npm run build` (run in `before` if dist is missing).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { alive, built, CliCluster, SDK } from '../../integration/cli.js';
import { REPO } from '../../integration/harness.js';

describe('dvs CLI end to end', () => {
  const c = new CliCluster('dvs-e2e-');
  const { dvs, ok, json } = c;
  let daemonPids: number[] = [];
  const childPids: number[] = [];

  before(async () => {
    if (!built()) {
      try {
        execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'ignore' });
      } catch {
        // tsc exits non-zero on type errors elsewhere but still emits; checked below.
      }
    }
    assert.ok(built(), 'run npm run build first');
    const dir = await c.start();
    await writeFile(
      join(dir, 'echo.mjs'),
      [
        `import { connect } from ${JSON.stringify(SDK)};`,
        'const dvk = await connect();',
        "console.log('echo ready');",
        'for (;;) {',
        '  const m = await dvk.receiveRequest();',
        '  await dvk.reply(m.source, { type: m.type + 1, payload: m.payload });',
        '}',
      ].join('\n'),
    );
    await writeFile(
      join(dir, 'client.mjs'),
      [
        `import { connect } from ${JSON.stringify(SDK)};`,
        'const dvk = await connect();',
        "const r = await dvk.sendrec(100, { type: 1, payload: new TextEncoder().encode('ping') }, { timeout: 5000 });",
        "console.log('reply', r.source, r.type, new TextDecoder().decode(r.payload));",
        'await dvk.close();',
        'process.exit(3);',
      ].join('\n'),
    );
  });

  after(() => c.stop([...daemonPids, ...childPids]));

  it('up --detach starts 3 nodes whose links are all up', async () => {
    const out = await ok('up', '--nodes', '3', '--detach');
    assert.match(out, /dvs cluster up/);
    assert.match(out, /dvs dc create demo/);
    const st = await json<{
      nodes: { id: number; state: string; pid: number; links: { state: string }[] }[];
    }>('status', '--json');
    daemonPids = st.nodes.map((n) => n.pid);
    assert.deepEqual(
      st.nodes.map((n) => [n.id, n.state]),
      [
        [0, 'up'],
        [1, 'up'],
        [2, 'up'],
      ],
    );
    for (const n of st.nodes) {
      assert.equal(n.links.length, 2);
      assert.ok(n.links.every((l) => l.state === 'up'));
      assert.ok(alive(n.pid));
    }
  });

  it('up refuses a second cluster in the same directory', async () => {
    const r = await dvs('up', '--nodes', '1', '--detach');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /^dvs: error: a cluster is already running in .* \(EEXIST\)\n$/);
  });

  it('dc create / ls', async () => {
    assert.match(await ok('dc', 'create', 'demo'), /created DC 'demo' \(id 1\)/);
    const r = await dvs('dc', 'create', 'demo');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\(EEXIST\)\n$/);
    const ls = await json<{ dcs: { name: string; id: number; nodes: number[]; endpoints: number }[] }>(
      'dc',
      'ls',
      '--json',
    );
    assert.deepEqual(
      ls.dcs.map((d) => [d.name, d.id, d.nodes, d.endpoints]),
      [['demo', 1, [0, 1, 2], 0]],
    );
  });

  it('run starts an echo server that ep ls and logs show, and a client on another node reaches it', async () => {
    const started = await json<{ dc: string; ep: number; node: number; pid: number }>(
      'run',
      '--dc',
      'demo',
      '--ep',
      '100',
      '--name',
      'echo',
      '--json',
      '--',
      process.execPath,
      'echo.mjs',
    );
    childPids.push(started.pid);
    assert.equal(started.ep, 100);
    assert.equal(started.node, 0);
    assert.ok(alive(started.pid));

    // The server binds on connect(); wait until its log says so.
    const deadline = Date.now() + 15_000;
    while (!(await ok('logs', '--dc', 'demo', '--ep', '100')).includes('echo ready')) {
      assert.ok(Date.now() < deadline, 'echo server never became ready');
      await new Promise((r) => setTimeout(r, 100));
    }

    const eps = await json<{
      endpoints: { ep: number; name: string; node: number; pid: number; kind: string }[];
    }>('ep', 'ls', '--dc', 'demo', '--json');
    const row = eps.endpoints.find((e) => e.ep === 100);
    assert.ok(row, 'endpoint 100 missing from ep ls');
    assert.equal(row.name, 'echo');
    assert.equal(row.node, 0);
    assert.equal(row.pid, started.pid);
    assert.notEqual(row.kind, 'remote');
    assert.match(await ok('ep', 'ls', '--dc', 'demo'), /\b100\b.*\becho\b/);

    const client = await dvs(
      'run',
      '--dc',
      'demo',
      '--ep',
      '101',
      '--node',
      '2',
      '--wait',
      '--',
      process.execPath,
      'client.mjs',
    );
    assert.equal(client.code, 3, client.stderr);
    assert.match(client.stdout, /^reply 100 2 ping$/m);
  });

  it('kill stops the process and the endpoint disappears', async () => {
    const out = await ok('kill', '--dc', 'demo', '--ep', '100');
    assert.match(out, /killed by SIGTERM/);
    const pid = childPids[0]!;
    assert.equal(alive(pid), false);
    const eps = await json<{ endpoints: { ep: number }[] }>('ep', 'ls', '--dc', 'demo', '--json');
    assert.equal(
      eps.endpoints.some((e) => e.ep === 100),
      false,
    );
    const again = await dvs('kill', '--dc', 'demo', '--ep', '100');
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /^dvs: error: .* \(ENOENT\)\n$/);
  });

  it('dc rm removes the DC', async () => {
    await ok('dc', 'rm', 'demo');
    const ls = await json<{ dcs: unknown[] }>('dc', 'ls', '--json');
    assert.deepEqual(ls.dcs, []);
  });

  it('down stops every daemon, and is idempotent', async () => {
    assert.match(await ok('down'), /stopped 3 node\(s\)/);
    for (const pid of daemonPids) assert.equal(alive(pid), false, `daemon ${pid} still alive`);
    const st = await json<{ nodes: { state: string }[] }>('status', '--json');
    assert.ok(st.nodes.every((n) => n.state === 'down'));
    assert.match(await ok('down'), /not running/);
  });
});
