/**
 * DC isolation through real daemons and the CLI (root): two nodes as network namespaces, DCs created with
 * `dvs dc create --lan --memory ...`, processes started with `dvs run` inside their DC's container.
 *
 * Checked: the node reports container mode; a process binds to the DVK from inside its container (the
 * socket at /run/dvs) and serves TCP on the DC LAN to a container of the same DC on the other node; a
 * container sees only its own DC's processes and cannot reach another DC's LAN; overlapping LANs are refused
 * with nothing half-created; an OOM kill is reported as such; `dc set` changes a limit live; pause/resume;
 * `dc rm` and a daemon stop leave no namespace, cgroup or link; a daemon killed with -9 and restarted
 * sweeps the containers of the DCs it no longer hosts (without a store, none).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { alive, cliDir, dvs, objectsOf, ok, SDK } from './dc-helpers.js';
import { check, leftovers, NetnsCluster, systemSkipReason } from './harness.js';

describe('system: DC isolation through the daemons and the CLI', { skip: systemSkipReason() }, () => {
  let c: NetnsCluster;
  let dir: string;
  const prefixes: string[] = [];

  before(async () => {
    c = await NetnsCluster.start({ nodes: 2, logLevel: 'info' });
    dir = cliDir(c);
  });

  after(async () => {
    await c?.stop();
    if (c) {
      assert.deepEqual(await leftovers(c), []);
      for (const [i, p] of prefixes.entries())
        assert.deepEqual(await objectsOf(p, c.node(i).ns), [], `node ${i}`);
    }
  });

  test('nodes run in container mode and say which cgroup driver', async () => {
    for (const n of c.nodes) {
      const st = await c.status(n.id);
      assert.equal(st.isolation?.mode, 'container', st.isolation?.reason);
      assert.ok(st.isolation.cgroup === 'v1' || st.isolation.cgroup === 'v2');
      assert.equal(st.isolation.lan, true, 'the node has an underlay for DC LANs');
      prefixes.push(st.isolation.prefix);
    }
    const out = await ok(dir, 'node', 'status');
    assert.match(out, /container/);
  });

  test('DCs with limits and LANs; overlapping LANs refused with nothing created', async () => {
    await ok(
      dir,
      'dc',
      'create',
      'alpha',
      '--id',
      '11',
      '--lan',
      '172.31.5.0/24',
      '--memory',
      '256M',
      '--pids',
      '256',
    );
    await ok(dir, 'dc', 'create', 'beta', '--id', '12', '--lan', '172.31.6.0/24');
    const before0 = await objectsOf(prefixes[0]!, c.node(0).ns);
    const clash = await dvs(dir, 'dc', 'create', 'gamma', '--id', '13', '--lan', '172.31.5.128/25');
    assert.equal(clash.code, 1);
    assert.match(clash.err, /overlaps 172\.31\.5\.0\/24 of DC alpha/);
    const host = await dvs(dir, 'dc', 'create', 'delta', '--id', '14', '--lan', `${c.subnet}.0/24`);
    assert.equal(host.code, 1);
    assert.match(host.err, /overlaps the host network/);
    for (const n of c.nodes) {
      assert.deepEqual(
        (await c.admin(n.id, 'dc.list', {})).map((d) => d.name),
        ['alpha', 'beta'],
      );
    }
    assert.deepEqual(await objectsOf(prefixes[0]!, c.node(0).ns), before0, 'nothing half-created');
    const show = JSON.parse(await ok(dir, 'dc', 'show', '--dc', 'alpha', '--json')) as {
      isolation: { node: number; lan?: { address: string }; limits: string; running: boolean }[];
    };
    assert.deepEqual(
      show.isolation.map((i) => [i.node, i.lan?.address, i.running]),
      [
        [0, '172.31.5.1', true],
        [1, '172.31.5.2', true],
      ],
    );
    assert.match(show.isolation[0]!.limits, /memory=256M/);
  });

  test('dvs run: SDK over /run/dvs inside the container, TCP across nodes on the DC LAN', async () => {
    await ok(
      dir,
      'run',
      '--dc',
      'alpha',
      '--ep',
      '100',
      '--node',
      '0',
      '--',
      process.execPath,
      join(c.dir, 'server.mjs'),
    );
    await check(
      async () =>
        (await c.admin(0, 'ep.list', { dc: 'alpha' })).some((e) => e.ep === 100 && e.kind !== 'remote'),
      10_000,
      'server bound',
    );
    await check(
      async () => (await dvs(dir, 'logs', '--dc', 'alpha', '--ep', '100')).out.includes('listening'),
      10_000,
      'server listening',
    );
    const r = await dvs(
      dir,
      'run',
      '--dc',
      'alpha',
      '--ep',
      '101',
      '--node',
      '1',
      '--wait',
      '--',
      process.execPath,
      join(c.dir, 'client.mjs'),
      '172.31.5.1',
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'echo hello from alpha-node0 ep 100');
    const procs = await c.admin(0, 'proc.list', { dc: 'alpha' });
    const server = procs.find((p) => p.ep === 100);
    assert.ok(
      server?.containerPid !== undefined && server.containerPid !== server.pid,
      'pid inside the container',
    );
    const row = (await c.admin(0, 'ep.list', { dc: 'alpha' })).find((e) => e.ep === 100);
    assert.equal(row?.pid, server.pid, 'the endpoint table and ProcessInfo agree on the host pid');
  });

  test('a container sees only its DC and cannot reach another DC LAN', async () => {
    await ok(dir, 'run', '--dc', 'beta', '--ep', '100', '--node', '0', '--', 'sleep', '301');
    const psBeta = await ok(dir, 'exec', '--dc', 'beta', '--node', '0', '--', 'ps', '-e', '-o', 'args=');
    assert.match(psBeta, /sleep 301/);
    const psAlpha = await ok(dir, 'exec', '--dc', 'alpha', '--node', '0', '--', 'ps', '-e', '-o', 'args=');
    assert.match(psAlpha, /server\.mjs/);
    assert.doesNotMatch(psAlpha, /sleep 301/, 'DC beta is visible from alpha');
    assert.equal(
      (await ok(dir, 'exec', '--dc', 'beta', '--node', '0', '--', 'hostname')).trim(),
      'beta-node0',
    );
    const links = await ok(dir, 'exec', '--dc', 'alpha', '--node', '1', '--', 'ip', '-br', 'link');
    assert.deepEqual(
      links
        .trim()
        .split('\n')
        .map((l) => l.split(/[\s@]+/)[0])
        .sort(),
      ['eth0', 'lo'],
    );
    const cross = await dvs(
      dir,
      'exec',
      '--dc',
      'alpha',
      '--node',
      '1',
      '--',
      process.execPath,
      join(c.dir, 'client.mjs'),
      '172.31.6.1',
    );
    assert.equal(cross.code, 3);
    assert.match(cross.out, /ENETUNREACH|EHOSTUNREACH|ETIMEDOUT/);
  });

  test('from inside a container: no bind in another DC, no admin call, services of its own DC only', async () => {
    const probe = join(c.dir, 'probe.mjs');
    writeFileSync(
      probe,
      [
        `const { connect, AdminClient } = await import(${JSON.stringify(SDK)});`,
        'const code = (e) => e?.code ?? String(e);',
        'const out = {};',
        "out.otherDc = await connect({ dc: 'beta', endpoint: 150, timeout: 3000 }).then(() => 'bound', code);",
        'const admin = await AdminClient.connect(process.env.DVS_SOCKET, { timeout: 3000 });',
        "out.admin = await admin.call('dc.list', {}, { timeout: 3000 }).then(() => 'ok', code);",
        "out.serviceBeforeHello = await admin.service('kv.get', { dc: 'alpha', key: 'k' }, { timeout: 3000 }).then(() => 'ok', code);",
        'await admin.close();',
        "const dvk = await connect({ dc: 'alpha', endpoint: 150, timeout: 3000 });",
        'out.ownDc = dvk.dcName;',
        "out.serviceOtherDc = await dvk.service('kv.get', { dc: 'beta', key: 'k' }, { timeout: 3000 }).then(() => 'ok', code);",
        'await dvk.close();',
        'console.log(JSON.stringify(out));',
      ].join('\n'),
    );
    const r = await dvs(dir, 'exec', '--dc', 'alpha', '--node', '0', '--', process.execPath, probe);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out.trim().split('\n').pop()!), {
      otherDc: 'EPERM',
      admin: 'EPERM',
      serviceBeforeHello: 'EPERM',
      ownDc: 'alpha',
      serviceOtherDc: 'EPERM',
    });
  });

  test('an OOM kill is reported as such', async () => {
    const hog = 'const a = []; for (;;) a.push(Buffer.alloc(16 << 20, 1));';
    const r = await dvs(
      dir,
      'run',
      '--dc',
      'alpha',
      '--ep',
      '102',
      '--node',
      '1',
      '--wait',
      '--',
      process.execPath,
      '-e',
      hog,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.err, /killed: out of memory at 256M/);
    const info = await c.admin(1, 'proc.wait', { dc: 'alpha', ep: 102 });
    assert.equal(info.exit?.oomKilled, true);
    const ps = JSON.parse(await ok(dir, 'ps', '--dc', 'alpha', '--json')) as {
      processes: { ep: number; exit: { reason?: string } | null }[];
    };
    assert.equal(ps.processes.find((p) => p.ep === 102)?.exit?.reason, 'killed: out of memory at 256M');
  });

  test('dc set changes a limit live; pause and resume', async () => {
    await ok(dir, 'dc', 'set', '--dc', 'alpha', '--memory', '512M', '--cpus', '0.5');
    const stats = JSON.parse(await ok(dir, 'dc', 'stats', '--dc', 'alpha', '--json')) as {
      nodes: {
        node: number;
        memory?: { limitBytes: number | null; oomKills: number };
        cpu?: { limitCpus: number | null };
      }[];
    };
    for (const n of stats.nodes) {
      assert.equal(n.memory?.limitBytes, 512 * 2 ** 20, `node ${n.node}`);
      assert.equal(n.cpu?.limitCpus, 0.5);
    }
    assert.equal(stats.nodes.find((n) => n.node === 1)?.memory?.oomKills, 1);
    await ok(dir, 'dc', 'pause', '--dc', 'alpha');
    for (const n of c.nodes) assert.equal((await c.admin(n.id, 'dc.stats', { dc: 'alpha' })).frozen, true);
    const server = (await c.admin(0, 'proc.list', { dc: 'alpha' })).find(
      (p) => p.ep === 100 && p.exit === null,
    );
    assert.ok(server);
    await ok(dir, 'dc', 'resume', '--dc', 'alpha');
    for (const n of c.nodes) assert.equal((await c.admin(n.id, 'dc.stats', { dc: 'alpha' })).frozen, false);
    // Still serving after the thaw.
    const r = await dvs(
      dir,
      'exec',
      '--dc',
      'alpha',
      '--node',
      '1',
      '--',
      process.execPath,
      join(c.dir, 'client.mjs'),
      '172.31.5.1',
    );
    assert.equal(r.out, 'echo hello from alpha-node0 ep 100');
  });

  test('dc rm leaves nothing of the DC on any node', async () => {
    await ok(dir, 'dc', 'rm', 'alpha');
    for (const [i, p] of prefixes.entries()) {
      const left = (await objectsOf(p, c.node(i).ns)).filter((o) => /c11$|[bxvi]11$/.test(o));
      assert.deepEqual(left, [], `node ${i}`);
    }
  });

  test('a daemon killed with -9 and restarted sweeps what it no longer hosts', async () => {
    const held = await objectsOf(prefixes[0]!, c.node(0).ns);
    assert.ok(
      held.some((o) => o.endsWith('c12')),
      `DC beta's container exists: ${held.join(', ')}`,
    );
    const sleeper = (await c.admin(0, 'proc.list', { dc: 'beta' })).find((p) => p.exit === null);
    assert.ok(sleeper);
    await c.killNode(0);
    // The container outlived the daemon (a crash must not take the DC's processes down with it)...
    assert.ok((await objectsOf(prefixes[0]!, c.node(0).ns)).some((o) => o.endsWith('c12')));
    await c.restartNode(0);
    // ...and the new daemon, which (without a cluster store) hosts no DC, removes it as it starts.
    await check(async () => (await objectsOf(prefixes[0]!, c.node(0).ns)).length === 0, 10_000, 'swept');
    await check(() => !alive(sleeper.pid), 5000, 'the DC process gone');
  });
});
