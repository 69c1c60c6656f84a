/**
 * DC isolation with a cluster store (root, etcd): three nodes as network namespaces with an etcd member
 * each. Limits and the LAN prefix are kept in the store, every node claims its LAN address there (no two
 * alike) and learns the other containers from its watch; `dc set` on the store reaches every node; a
 * daemon killed with -9 and restarted adopts its container (same pid 1, the process in it untouched, the
 * LAN still working); `dc rm` leaves nothing anywhere.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DcIsolationInfo } from '../../src/protocol/admin.js';
import { alive, cliDir, dvs, objectsOf, ok } from './dc-helpers.js';
import { check, etcdSystemSkipReason, leftovers, NetnsCluster } from './harness.js';

describe('system: DC isolation with a cluster store', { skip: etcdSystemSkipReason() }, () => {
  let c: NetnsCluster;
  let dir: string;
  const prefixes: string[] = [];
  const show = async () =>
    (JSON.parse(await ok(dir, 'dc', 'show', '--dc', 'web', '--json')) as { isolation: DcIsolationInfo[] })
      .isolation;

  before(async () => {
    c = await NetnsCluster.start({ nodes: 3, etcdOn: [0, 1, 2], logLevel: 'info' });
    dir = cliDir(c);
    for (const n of c.nodes) prefixes.push((await c.status(n.id)).isolation?.prefix ?? '?');
  });

  after(async () => {
    await c?.stop();
    if (c) {
      assert.deepEqual(await leftovers(c), []);
      for (const [i, p] of prefixes.entries())
        assert.deepEqual(await objectsOf(p, c.node(i).ns), [], `node ${i}`);
    }
  });

  test('limits and LAN from the store: distinct addresses, TCP across nodes', async () => {
    await ok(dir, 'dc', 'create', 'web', '--id', '21', '--lan', '172.31.7.0/24', '--memory', '128M');
    const rows = await check(
      async () => {
        const r = await show();
        return r.length === 3 && r.every((x) => x.lan && x.running) ? r : undefined;
      },
      15_000,
      'containers on every node',
    );
    assert.ok(rows);
    const addrs = rows.map((r) => r.lan?.address);
    assert.equal(new Set(addrs).size, 3, `distinct addresses: ${addrs.join(',')}`);
    for (const r of rows) {
      assert.match(r.lan?.address ?? '', /^172\.31\.7\.\d+$/);
      assert.match(r.limits, /memory=128M/);
    }
    const server = rows.find((r) => r.node === 2)?.lan?.address ?? '';
    await ok(
      dir,
      'run',
      '--dc',
      'web',
      '--ep',
      '100',
      '--node',
      '2',
      '--',
      process.execPath,
      join(c.dir, 'server.mjs'),
    );
    await check(
      async () => (await dvs(dir, 'logs', '--dc', 'web', '--ep', '100')).out.includes('listening'),
      10_000,
      'server listening',
    );
    // The forwarding entries arrive by watch: retry until node 0 has node 2's.
    const out = await check(
      async () => {
        const r = await dvs(
          dir,
          'exec',
          '--dc',
          'web',
          '--node',
          '0',
          '--timeout',
          '3000',
          '--',
          process.execPath,
          join(c.dir, 'client.mjs'),
          server,
        );
        return r.code === 0 ? r.out : undefined;
      },
      15_000,
      'TCP over the DC LAN',
    );
    assert.equal(out, 'echo hello from web-node2 ep 100');
  });

  test('an overlapping LAN is refused and nothing is created', async () => {
    const r = await dvs(dir, 'dc', 'create', 'web2', '--lan', '172.31.7.0/25');
    assert.equal(r.code, 1);
    assert.match(r.err, /overlaps 172\.31\.7\.0\/24 of DC web/);
    for (const n of c.nodes) {
      assert.deepEqual(
        (await c.admin(n.id, 'dc.list', {})).map((d) => d.name),
        ['web'],
      );
    }
  });

  test('dc set reaches every node', async () => {
    await ok(dir, 'dc', 'set', '--dc', 'web', '--memory', '256M');
    await check(
      async () => {
        for (const n of c.nodes) {
          const st = await c.admin(n.id, 'dc.stats', { dc: 'web' });
          if (st.memory?.limitBytes !== 256 * 2 ** 20) return false;
        }
        return true;
      },
      10_000,
      'the new limit on every node',
    );
  });

  test('a daemon killed with -9 and restarted adopts its container', async () => {
    const before = (await show()).find((r) => r.node === 2);
    const server = (await c.admin(2, 'proc.list', { dc: 'web' })).find((p) => p.exit === null);
    assert.ok(before?.initPid && server);
    await c.killNode(2);
    await c.restartNode(2, 20_000);
    const afterRow = await check(
      async () => (await show()).find((r) => r.node === 2 && r.running),
      15_000,
      'node 2 holds the DC again',
    );
    assert.ok(afterRow);
    assert.equal(afterRow.initPid, before.initPid, 'the same container, adopted');
    assert.equal(afterRow.lan?.address, before.lan?.address, 'the same LAN address');
    assert.ok(alive(server.pid), 'the process in it kept running');
    const r = await dvs(
      dir,
      'exec',
      '--dc',
      'web',
      '--node',
      '1',
      '--',
      process.execPath,
      join(c.dir, 'client.mjs'),
      before.lan?.address ?? '',
    );
    assert.equal(r.out, 'echo hello from web-node2 ep 100');
  });

  test('dc rm leaves nothing on any node', async () => {
    await ok(dir, 'dc', 'rm', 'web');
    await check(
      async () => {
        for (const [i, p] of prefixes.entries())
          if ((await objectsOf(p, c.node(i).ns)).length > 0) return false;
        return true;
      },
      15_000,
      'every container, cgroup and link gone',
    );
  });
});
