import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ProcessManager } from '../../../src/node/processes.js';
import type { ProcessInfo } from '../../../src/protocol/admin.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { alive } from '../cli.js';

const node = process.execPath;

async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function readAll(pm: ProcessManager, dc: number, ep: number): Promise<string> {
  let out = '';
  let offset = 0;
  for (;;) {
    const chunk = await pm.readLog(dc, ep, offset, 7);
    out += Buffer.from(chunk.data).toString();
    offset = chunk.offset;
    if (chunk.data.length === 0) return out;
  }
}

describe('ProcessManager', () => {
  let dir: string;
  let pm: ProcessManager;
  const exits: ProcessInfo[] = [];
  const started: number[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-pm-'));
    pm = new ProcessManager({
      nodeId: 3,
      dataDir: dir,
      logger: pino({ level: 'silent' }),
      onExit: (info) => exits.push(info),
      stopGraceMs: 500,
    });
    await pm.start();
  });

  after(async () => {
    await pm.stop();
    for (const pid of started) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('captures stdout and stderr, env and exit code', async () => {
    const script =
      "process.stdout.write('out:' + process.env.DVS_TEST_VAR + '\\n'); process.stderr.write('err line\\n'); process.exit(7)";
    const info = await pm.spawn({
      dc: 1,
      dcName: 'web',
      ep: 70,
      cmd: [node, '-e', script],
      env: { DVS_TEST_VAR: 'hello' },
    });
    started.push(info.pid);
    assert.equal(info.node, 3);
    assert.equal(info.name, 'ep70');
    assert.ok(info.pid > 0);
    const done = await pm.wait(1, 70, { timeoutMs: 10_000 });
    assert.deepEqual({ code: done.exit?.code, signal: done.exit?.signal }, { code: 7, signal: null });
    const text = await readAll(pm, 1, 70);
    assert.match(text, /^out:hello$/m);
    assert.match(text, /^err line$/m);
    const file = await readFile(join(dir, 'logs', 'web-70.log'), 'utf8');
    assert.equal(file, text);
    assert.ok(exits.some((e) => e.pid === info.pid && e.exit?.code === 7));
    const chunk = await pm.readLog(1, 70, 0);
    assert.equal(chunk.running, false);
  });

  it('counts log offsets from the start of the latest run', async () => {
    const a = await pm.spawn({ dc: 1, dcName: 'web', ep: 71, cmd: [node, '-e', "console.log('first')"] });
    started.push(a.pid);
    await pm.wait(1, 71, { timeoutMs: 10_000 });
    const b = await pm.spawn({ dc: 1, dcName: 'web', ep: 71, cmd: [node, '-e', "console.log('second')"] });
    started.push(b.pid);
    await pm.wait(1, 71, { timeoutMs: 10_000 });
    assert.equal(await readAll(pm, 1, 71), 'second\n');
    const file = await readFile(join(dir, 'logs', 'web-71.log'), 'utf8');
    assert.equal(file, 'first\nsecond\n');
  });

  it('rejects a missing command with ENOENT and an empty one with EINVAL', async () => {
    await assert.rejects(
      pm.spawn({ dc: 1, dcName: 'web', ep: 72, cmd: ['/nonexistent/dvs-no-such-binary'] }),
      (e: unknown) => e instanceof DvsError && e.code === 'ENOENT',
    );
    await assert.rejects(
      pm.spawn({ dc: 1, dcName: 'web', ep: 72, cmd: [] }),
      (e: unknown) => e instanceof DvsError && e.code === 'EINVAL',
    );
    await assert.rejects(
      pm.spawn({ dc: 1, dcName: 'web', ep: 72, cmd: [node, '-e', '0'], cwd: join(dir, 'missing') }),
      (e: unknown) => e instanceof DvsError && e.code === 'ENOENT',
    );
    assert.equal(
      pm.list(1).some((p) => p.ep === 72),
      false,
    );
  });

  it('refuses a second process at a busy endpoint with EBOUND', async () => {
    const a = await pm.spawn({
      dc: 2,
      dcName: 'db',
      ep: 80,
      cmd: [node, '-e', 'setInterval(() => {}, 1000)'],
    });
    started.push(a.pid);
    await assert.rejects(
      pm.spawn({ dc: 2, dcName: 'db', ep: 80, cmd: [node, '-e', '0'] }),
      (e: unknown) => e instanceof DvsError && e.code === 'EBOUND',
    );
    const killed = await pm.kill(2, 80);
    assert.equal(killed.exit?.signal, 'SIGTERM');
    assert.equal(alive(a.pid), false);
  });

  it('sends SIGKILL after the grace period when SIGTERM is ignored', async () => {
    const script =
      "process.on('SIGTERM', () => console.log('ignoring TERM')); console.log('ready'); setInterval(() => {}, 1000)";
    const info = await pm.spawn({ dc: 2, dcName: 'db', ep: 81, cmd: [node, '-e', script] });
    started.push(info.pid);
    await until(async () => (await readAll(pm, 2, 81)).includes('ready'), 'the child to install its handler');
    const done = await pm.kill(2, 81, 'SIGTERM', 300);
    assert.equal(done.exit?.signal, 'SIGKILL');
    assert.match(await readAll(pm, 2, 81), /ignoring TERM/);
    assert.equal(alive(info.pid), false);
  });

  it('kill of an exited process returns its exit; unknown endpoints are ENOENT; bad signals EINVAL', async () => {
    const done = await pm.kill(1, 70);
    assert.equal(done.exit?.code, 7);
    await assert.rejects(pm.kill(9, 9), (e: unknown) => e instanceof DvsError && e.code === 'ENOENT');
    await assert.rejects(
      pm.kill(1, 70, 'SIGNOPE'),
      (e: unknown) => e instanceof DvsError && e.code === 'EINVAL',
    );
    await assert.rejects(pm.readLog(9, 9, 0), (e: unknown) => e instanceof DvsError && e.code === 'ENOENT');
  });

  it('wait resolves with exit null after its timeout and rejects on abort', async () => {
    const info = await pm.spawn({
      dc: 3,
      dcName: 'x',
      ep: 90,
      cmd: [node, '-e', 'setInterval(() => {}, 1000)'],
    });
    started.push(info.pid);
    const w = await pm.wait(3, 90, { timeoutMs: 50 });
    assert.equal(w.exit, null);
    const ac = new AbortController();
    const p = pm.wait(3, 90, { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, (e: unknown) => e instanceof DvsError && e.code === 'EABORTED');
    assert.equal(pm.get(3, 90)?.exit, null);
    assert.ok(pm.list(3).every((p) => p.dc === 3));
  });

  it('stop() kills every running child, including those ignoring SIGTERM', async () => {
    const a = await pm.spawn({
      dc: 4,
      dcName: 'y',
      ep: 100,
      cmd: [node, '-e', 'setInterval(() => {}, 1000)'],
    });
    const stubborn = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000)";
    const b = await pm.spawn({ dc: 4, dcName: 'y', ep: 101, cmd: [node, '-e', stubborn] });
    started.push(a.pid, b.pid);
    await until(
      async () => (await readAll(pm, 4, 101)).includes('ready'),
      'the child to install its handler',
    );
    const running = pm.list().filter((p) => p.exit === null);
    assert.ok(running.length >= 2);
    await pm.stop();
    for (const p of running) assert.equal(alive(p.pid), false, `pid ${p.pid} still alive`);
    assert.ok(pm.list().every((p) => p.exit !== null));
    await assert.rejects(
      pm.spawn({ dc: 4, dcName: 'y', ep: 102, cmd: [node, '-e', '0'] }),
      (e: unknown) => e instanceof DvsError && e.code === 'ENOTCONN',
    );
  });
});
