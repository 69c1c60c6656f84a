/**
 * The system harness itself: the topology it builds, pause/resume, and that an interrupted test process
 * leaves nothing behind (the exit guard).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { REPO } from '../integration/harness.js';
import { check, leftovers, NetnsCluster, purge, type RunIdentity, systemSkipReason } from './harness.js';

const run = promisify(execFile);
const ip = async (...args: string[]) => (await run('ip', args)).stdout;

describe('system harness', { skip: systemSkipReason() }, () => {
  let c: NetnsCluster;
  before(async () => {
    c = await NetnsCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: 1000 });
  });
  after(async () => {
    await c?.stop();
  });

  test('each daemon runs in its own namespace with its own LAN address; the root namespace has none', async () => {
    const rootAddrs = await ip('-o', 'addr', 'show');
    for (const n of c.nodes) {
      assert.match(await ip('-n', n.ns, '-o', 'addr', 'show', 'dev', 'eth0'), new RegExp(`inet ${n.ip}/24 `));
      assert.ok(!rootAddrs.includes(`${n.ip}/`), `${n.ip} leaked into the root namespace`);
      const pids = (await ip('netns', 'pids', n.ns)).split(/\s+/).filter(Boolean).map(Number);
      assert.ok(pids.includes(n.proc!.pid!), `daemon of node ${n.id} is not in ${n.ns}`);
      const st = await c.status(n.id);
      assert.equal(st.address, n.address);
      assert.equal(st.pid, n.proc!.pid);
    }
    // Each node port hangs on the LAN bridge.
    const ports = await ip('-n', c.lanNs, '-o', 'link', 'show', 'master', 'br0');
    for (const n of c.nodes) assert.match(ports, new RegExp(`: n${n.id}@`));
  });

  test('a paused node is declared dead by the others and rejoins when resumed', async () => {
    c.pause(1);
    try {
      await c.waitLinkState([0, 2], [1], 'down', 5000);
      assert.equal(await c.linkState(0, 2), 'up');
    } finally {
      c.resume(1);
    }
    await c.waitLinks();
  });

  test('teardown leaves no namespace, link, process or file of the run', async () => {
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`a test process interrupted by ${signal} leaves nothing of its cluster behind`, async () => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', join(import.meta.dirname, 'fixtures/orphan.ts')],
        {
          cwd: REPO,
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      let orphan: RunIdentity | undefined;
      try {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
        });
        const found = await check(
          () => {
            if (child.exitCode !== null) throw new Error(`fixture exited ${child.exitCode}`);
            const line = out.split('\n')[0];
            return out.includes('\n') && line ? (JSON.parse(line) as RunIdentity) : false;
          },
          20_000,
          'the fixture cluster',
        );
        orphan = found || undefined;
        assert.ok(orphan);
        assert.equal(orphan.pids.length, 2);
        assert.ok((await leftovers(orphan)).length > 0, 'the fixture cluster is running');
        const exited = once(child, 'exit');
        child.kill(signal);
        const [code] = (await exited) as [number | null];
        assert.equal(code, 128 + (signal === 'SIGTERM' ? 15 : 2));
        assert.deepEqual(await leftovers(orphan), []);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        // If the guard failed, the assertion above says so; this keeps the machine clean regardless.
        if (orphan) purge(orphan);
      }
    });
  }
});
