/**
 * `dvs node start --store embedded --seed HOST:PORT`: the seed is the node-link address of the node hosting
 * the embedded store, mapped to `embedded:<its id>` through the peer list. Two real daemons (node 0 hosts,
 * node 1 seeds from its address), plus the mapping rules and the start-up errors of a bad seed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { nodeOptionsOf } from '../../../src/cli/commands/node.js';
import { storeFromSeed } from '../../../src/node/store-spec.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { check, freePorts, REPO } from '../harness.js';

const CLI = join(REPO, 'bin/dvs.js');

const invalid = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof DvsError, String(e));
  assert.equal(e.code, 'EINVAL');
  assert.match(e.message, re);
  return true;
};

describe('--seed HOST:PORT mapping', () => {
  const peers = [
    { id: 0, name: 'node0', address: '10.0.0.1:7000' },
    { id: 1, name: 'node1', address: '10.0.0.2:7000' },
    { id: 2, name: 'node2', address: '[FE80::1]:7000' },
  ];

  test('the peer with that address hosts the store', () => {
    assert.equal(storeFromSeed('10.0.0.1:7000', peers, 1), 'embedded:0');
    assert.equal(storeFromSeed(' 10.0.0.2:7000', peers, 0), 'embedded:1');
    // Host names compare case-insensitively, IPv6 with or without brackets.
    assert.equal(storeFromSeed('[fe80::1]:7000', peers, 0), 'embedded:2');
  });

  test('unknown, own, or ambiguous addresses are refused with the reason', () => {
    assert.throws(
      () => storeFromSeed('10.0.0.9:7000', peers, 1),
      invalid(/no peer has this address.*0=10\.0\.0\.1:7000/),
    );
    assert.throws(() => storeFromSeed('10.0.0.1:7001', peers, 1), invalid(/no peer has this address/));
    assert.throws(() => storeFromSeed('10.0.0.2:7000', peers, 1), invalid(/own address/));
    assert.throws(() => storeFromSeed('10.0.0.7:7000', [], 1, '10.0.0.7:7000'), invalid(/own address/));
    assert.throws(
      () => storeFromSeed('10.0.0.1:7000', [...peers, { id: 5, name: 'x', address: '10.0.0.1:7000' }], 1),
      invalid(/several peers/),
    );
  });

  test('node start options: --seed needs --store embedded and becomes embedded:<id>', () => {
    const base = { nodeId: 1, listen: '10.0.0.2:7000', socket: '/s', data: '/d', peers };
    assert.equal(nodeOptionsOf({ ...base, store: 'embedded', seed: '10.0.0.1:7000' }).store, 'embedded:0');
    // Without --seed nothing changes: both embedded forms still work.
    assert.equal(nodeOptionsOf({ ...base, store: 'embedded:0' }).store, 'embedded:0');
    assert.equal(nodeOptionsOf({ ...base, store: 'embedded' }).store, 'embedded');
    assert.throws(() => nodeOptionsOf({ ...base, seed: '10.0.0.1:7000' }), invalid(/--store embedded/));
    assert.throws(
      () => nodeOptionsOf({ ...base, store: 'etcd://10.0.0.1:2379', seed: '10.0.0.1:7000' }),
      invalid(/--seed goes with --store embedded/),
    );
  });
});

describe('daemons: node 1 started with --store embedded --seed <node 0 address>', () => {
  let dir: string;
  const procs: ChildProcess[] = [];
  let ports: number[];
  const socket = (i: number) => join(dir, `node${i}`, 'dvk.sock');
  const address = (i: number) => `127.0.0.1:${ports[i]}`;

  const start = (i: number, store: string[]): { proc: ChildProcess; stderr: () => string } => {
    let err = '';
    const proc = spawn(
      process.execPath,
      [
        CLI,
        'node',
        'start',
        '--node-id',
        String(i),
        '--listen',
        address(i),
        '--socket',
        socket(i),
        '--data',
        join(dir, `node${i}`),
        '--peers',
        `0=${address(0)},1=${address(1)}`,
        '--heartbeat-ms',
        '100',
        '--dead-after-ms',
        '1000',
        '--log-file',
        join(dir, `node${i}`, 'daemon.log'),
        ...store,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    procs.push(proc);
    return { proc, stderr: () => err };
  };
  const admin = async <T>(i: number, fn: (c: AdminClient) => Promise<T>): Promise<T> => {
    const c = await AdminClient.connect(socket(i), { timeout: 2000 });
    try {
      return await fn(c);
    } finally {
      await c.close();
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-seed-'));
    ports = await freePorts(2);
  });
  after(async () => {
    await Promise.all(
      procs.map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }),
    );
    await rm(dir, { recursive: true, force: true });
  });

  test('a seed that names no peer: the daemon does not start, and says why', async () => {
    const { proc, stderr } = start(1, ['--store', 'embedded', '--seed', '127.0.0.1:1']);
    const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    assert.equal(code, 1);
    assert.match(stderr(), /--seed 127\.0\.0\.1:1: no peer has this address/);
  });

  test('the seeded node uses the store hosted by node 0: status, a DC created through it', async () => {
    start(0, ['--store', 'embedded']);
    start(1, ['--store', 'embedded', '--seed', address(0)]);
    await check(
      async () => {
        const st = await admin(1, (c) => c.call('status', {}, { timeout: 2000 }));
        return st.cluster?.members.filter((m) => m.state === 'up').length === 2;
      },
      20_000,
      'node 1 registered through the store on node 0',
    );
    const st = await admin(1, (c) => c.call('status', {}, { timeout: 2000 }));
    assert.equal(st.cluster?.store, 'embedded:0');
    assert.equal((await admin(0, (c) => c.call('status', {}, { timeout: 2000 }))).cluster?.store, 'embedded');
    const cfg = { id: 0, name: 'seeded', nodes: [0, 1], maxPayload: 4096, sysEndpoints: 64, postWindow: 64 };
    const made = await admin(1, (c) => c.call('dc.create', { config: cfg }, { timeout: 10_000 }));
    await check(
      async () =>
        (await admin(0, (c) => c.call('dc.list', {}, { timeout: 2000 }))).some((d) => d.id === made.id),
      10_000,
      'DC seeded on node 0 (from the store node 0 hosts)',
    );
  });
});
