/**
 * Isolation "off" (no root, or forced): processes run as plain children, and the facade says so instead
 * of pretending. Runs as any user (forced off when root), so the fallback is exercised everywhere.
 */
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Isolation } from '../../src/isolation/index.js';

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

describe('isolation off', { skip: process.platform !== 'linux' ? 'needs Linux' : undefined }, () => {
  const make = () =>
    new Isolation({
      nodeId: 1,
      nodeName: 'n1',
      prefix: 'zz',
      logger: pino({ level: 'silent' }),
      mode: 'off',
    });

  it('reports the mode and why', async () => {
    const iso = make();
    await iso.start();
    assert.equal(iso.mode(), 'off');
    assert.deepEqual(iso.describe(), {
      mode: 'off',
      reason: 'isolation turned off',
      cgroup: 'none',
      lan: false,
      prefix: 'zz',
    });
    await iso.stop();
  });

  it('refuses limits and LANs with ENOTSUP, bad limits with EINVAL', async () => {
    const iso = make();
    await iso.start();
    await assert.rejects(iso.ensureDc({ dc: 1, name: 'a', limits: { memoryBytes: 64 * 1024 ** 2 } }), {
      code: 'ENOTSUP',
      message: /isolation is off on node n1 \(isolation turned off\)/,
    });
    await assert.rejects(
      iso.ensureDc({ dc: 1, name: 'a', lan: { prefix: '172.31.5.0/24', address: '172.31.5.1' } }),
      { code: 'ENOTSUP' },
    );
    await assert.rejects(iso.ensureDc({ dc: 1, name: 'a', limits: { pids: 0.5 } }), { code: 'EINVAL' });
    await assert.rejects(iso.spawn(1, { cmd: ['true'] }), { code: 'ENOENT' });
  });

  it('runs processes without namespaces', async () => {
    const iso = make();
    await iso.start();
    await iso.ensureDc({ dc: 1, name: 'a' });
    const r = await iso.exec(1, ['sh', '-c', 'echo $$; readlink /proc/self/ns/pid'], { env: ENV });
    assert.equal(r.code, 0);
    const [pid, ns] = r.stdout.trim().split('\n');
    assert.ok(Number(pid) > 1);
    assert.equal(ns, readlinkSync('/proc/self/ns/pid'), 'a new pid namespace while off');
    const p = await iso.spawn(1, { cmd: ['sleep', '30'], env: ENV });
    assert.ok(p.kill('SIGTERM'));
    assert.deepEqual(await p.exited, { code: null, signal: 'SIGTERM', oomKilled: false });
    assert.equal((await iso.stats(1)).running, true);
    await assert.rejects(iso.pause(1), { code: 'ENOTSUP' });
    await iso.removeDc(1);
    assert.deepEqual(await iso.list(), []);
  });
});
