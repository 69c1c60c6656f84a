/**
 * One compliance suite for every cgroup driver (aesthetics "one compliance suite per interface"): run
 * against v1 where v1 hierarchies exist and against v2 wherever a cgroup2 mount exists. Limit tests run
 * only where the driver has the controller ({@link CgroupDriver.supports}); on this project's hybrid
 * machines the unified mount has no controllers, so v2 runs create/join/freeze/kill/remove/tracking and
 * says which limit tests it skips and why.
 *
 * Needs root. Every cgroup lives under a parent named with this run's id and is removed at the end, with
 * every process started here killed by pid.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { LimitKind } from '../../src/isolation/cgroup.js';
import { type CgroupDriver, detectCgroups } from '../../src/isolation/cgroup.js';
import { CgroupV1Driver } from '../../src/isolation/cgroup-v1.js';
import { CgroupV2Driver } from '../../src/isolation/cgroup-v2.js';

const RUN = randomBytes(3).toString('hex');
const PARENT = `dvs-t${RUN}`;
const det = process.platform === 'linux' ? detectCgroups() : undefined;
const notRoot = process.getuid?.() !== 0 ? 'needs root (cgroups)' : undefined;

interface Impl {
  name: 'v1' | 'v2';
  skip: string | undefined;
  make(): CgroupDriver;
  /** Directories the parent occupies, removed at the end. */
  parents(): string[];
}

const IMPLS: Impl[] = [
  {
    name: 'v1',
    skip:
      notRoot ??
      (det && ['memory', 'cpu', 'pids', 'freezer'].every((c) => det.v1[c]) ? undefined : 'no v1 hierarchies'),
    make: () => new CgroupV1Driver({ mounts: det?.v1 ?? {}, parent: PARENT }),
    parents: () => [...new Set(Object.values(det?.v1 ?? {}))].map((m) => `${m}/${PARENT}`),
  },
  {
    name: 'v2',
    skip: notRoot ?? (det?.v2 ? undefined : 'no cgroup2 mount'),
    make: () => new CgroupV2Driver({ mount: det?.v2?.path ?? '/nonexistent', parent: PARENT }),
    parents: () => (det?.v2 ? [`${det.v2.path}/${PARENT}`] : []),
  },
];

/** Children started here, killed by pid at the end whatever happens. */
const children = new Set<ChildProcess>();

/** Starts `cmd` already inside the cgroup (joins before exec, as the container spawner does). */
function startIn(driver: CgroupDriver, cg: string, cmd: string[]): ChildProcess {
  const c = spawn(
    'sh',
    [
      '-c',
      'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"',
      'sh',
      ...driver.procsFiles(cg),
      '--',
      ...cmd,
    ],
    { stdio: 'ignore' },
  );
  children.add(c);
  c.once('exit', () => children.delete(c));
  return c;
}

function exited(c: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (c.exitCode !== null || c.signalCode !== null)
    return Promise.resolve({ code: c.exitCode, signal: c.signalCode });
  return new Promise((r) => c.once('exit', (code, signal) => r({ code, signal })));
}

async function waitFor(cond: () => Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BUSY = ['sh', '-c', 'while :; do :; done'];

after(() => {
  for (const c of children) {
    try {
      if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    } catch {
      // Exited, its exit event not yet delivered.
    }
  }
});

for (const impl of IMPLS) {
  describe(`cgroup driver ${impl.name} (compliance)`, { skip: impl.skip }, () => {
    const driver = impl.skip ? undefined : impl.make();
    const d = () => driver as CgroupDriver;
    const cg = (s: string) => `t${RUN}${s}`;
    const limitSkip = (kind: LimitKind) =>
      driver && !driver.supports(kind)
        ? `${impl.name} here has no ${kind} controller (${driver.describe()})`
        : false;

    after(async () => {
      if (!driver) return;
      for (const name of await driver.list()) await driver.remove(name);
      for (const p of impl.parents()) {
        try {
          rmdirSync(p);
        } catch {
          // Not created in this hierarchy.
        }
      }
    });

    it('creates idempotently, lists, joins, kills every task and removes', async () => {
      const name = cg('a');
      await d().create(name);
      await d().create(name);
      assert.deepEqual(await d().list(), [name]);
      const c1 = startIn(d(), name, ['sleep', '300']);
      const c2 = startIn(d(), name, ['sh', '-c', 'sleep 300 & sleep 300']);
      await waitFor(async () => (await d().pids(name)).length >= 4, 'four tasks in the cgroup');
      assert.equal((await d().stats(name)).procs, (await d().pids(name)).length);
      await d().kill(name);
      assert.deepEqual(await d().pids(name), []);
      assert.equal((await exited(c1)).signal, 'SIGKILL');
      assert.equal((await exited(c2)).signal, 'SIGKILL');
      await d().remove(name);
      await d().remove(name); // idempotent
      assert.deepEqual(await d().list(), []);
      await assert.rejects(d().stats(name), { code: 'ENOENT' });
    });

    it('moves a running process in with addPid', async () => {
      const name = cg('p');
      await d().create(name);
      const c = spawn('sleep', ['300'], { stdio: 'ignore' });
      children.add(c);
      await new Promise((r) => c.once('spawn', r));
      await d().addPid(name, c.pid as number);
      assert.deepEqual(await d().pids(name), [c.pid]);
      await d().remove(name);
      assert.equal((await exited(c)).signal, 'SIGKILL');
    });

    it('freezes (no CPU used while frozen) and thaws', async () => {
      const name = cg('f');
      await d().create(name);
      startIn(d(), name, BUSY);
      await waitFor(async () => ((await d().stats(name)).cpu?.usageNs ?? 0) > 0, 'the busy loop to run');
      await d().freeze(name);
      assert.equal((await d().stats(name)).frozen, true);
      const u0 = (await d().stats(name)).cpu?.usageNs ?? 0;
      await sleepMs(300);
      assert.equal((await d().stats(name)).cpu?.usageNs ?? 0, u0, 'a frozen cgroup used CPU');
      await d().thaw(name);
      assert.equal((await d().stats(name)).frozen, false);
      await waitFor(async () => ((await d().stats(name)).cpu?.usageNs ?? 0) > u0, 'CPU use after thaw');
      await d().remove(name); // kills a thawed, running cgroup
      assert.deepEqual(await d().list(), []);
    });

    it('kills a frozen cgroup too', async () => {
      const name = cg('k');
      await d().create(name);
      const c = startIn(d(), name, BUSY);
      await waitFor(async () => (await d().pids(name)).length === 1, 'the task');
      await d().freeze(name);
      await d().remove(name);
      assert.equal((await exited(c)).signal, 'SIGKILL');
    });

    it('OOM-kills a memory hog at its limit and counts it', { skip: limitSkip('memory') }, async () => {
      const name = cg('m');
      await d().create(name);
      const limit = 96 * 1024 * 1024;
      await d().setLimits(name, { memoryBytes: limit });
      assert.equal((await d().stats(name)).memory?.limitBytes, limit);
      const c = startIn(d(), name, [
        process.execPath,
        '-e',
        'const a = []; for (;;) a.push(Buffer.alloc(8e6, 1));',
      ]);
      const r = await exited(c);
      assert.equal(r.signal, 'SIGKILL');
      const st = await d().stats(name);
      assert.ok((st.memory?.oomKills ?? 0) >= 1, `oom_kill count ${st.memory?.oomKills}`);
      assert.ok((st.memory?.maxUsageBytes ?? limit) <= limit);
      await d().setLimits(name, { memoryBytes: null });
      assert.equal((await d().stats(name)).memory?.limitBytes, null);
      await d().remove(name);
    });

    it('holds a CPU quota of 25% within 5 points', { skip: limitSkip('cpu') }, async (t) => {
      const name = cg('c');
      await d().create(name);
      await d().setLimits(name, { cpus: 0.25 });
      assert.equal((await d().stats(name)).cpu?.limitCpus, 0.25);
      startIn(d(), name, BUSY);
      await waitFor(async () => ((await d().stats(name)).cpu?.usageNs ?? 0) > 0, 'the busy loop to run');
      await sleepMs(300); // past the start-up
      const s0 = (await d().stats(name)).cpu;
      const t0 = process.hrtime.bigint();
      await sleepMs(3000);
      const s1 = (await d().stats(name)).cpu;
      const wallNs = Number(process.hrtime.bigint() - t0);
      const share = ((s1?.usageNs ?? 0) - (s0?.usageNs ?? 0)) / wallNs;
      t.diagnostic(`CPU share ${share.toFixed(3)} over ${(wallNs / 1e9).toFixed(1)} s`);
      assert.ok(Math.abs(share - 0.25) <= 0.05, `CPU share ${share.toFixed(3)} (quota 0.25)`);
      assert.ok((s1?.nrThrottled ?? 0) > (s0?.nrThrottled ?? 0), 'the quota never throttled');
      await d().remove(name);
    });

    it('holds a pids limit', { skip: limitSkip('pids') }, async () => {
      const name = cg('n');
      await d().create(name);
      await d().setLimits(name, { pids: 5 });
      // One shell plus up to 10 background sleeps: only 4 of them fit.
      const c = startIn(d(), name, [
        'sh',
        '-c',
        'for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 & done 2>/dev/null; sleep 300',
      ]);
      await waitFor(async () => ((await d().stats(name)).pids?.refused ?? 0) > 0, 'a refused fork');
      const st = await d().stats(name);
      assert.ok((st.pids?.current ?? 99) <= 5, `pids.current ${st.pids?.current}`);
      assert.equal(st.pids?.limit, 5);
      await d().remove(name);
      await exited(c);
    });

    it('throttles block I/O writes to the io-bps limit within 15%', { skip: limitSkip('io') }, async (t) => {
      const name = cg('i');
      await d().create(name);
      const bps = 4 * 1024 * 1024;
      await d().setLimits(name, { ioBps: bps });
      const file = join(tmpdir(), `dvs-io-${RUN}`);
      try {
        // O_DIRECT, so the writes are the cgroup's own and not the flusher's: 8 MiB at 4 MiB/s.
        const c = startIn(d(), name, [
          'dd',
          'if=/dev/zero',
          `of=${file}`,
          'bs=128K',
          'count=64',
          'oflag=direct',
        ]);
        await waitFor(async () => ((await d().stats(name)).io?.writeBytes ?? 0) > 0, 'the first write');
        const w0 = (await d().stats(name)).io?.writeBytes ?? 0;
        const t0 = process.hrtime.bigint();
        await sleepMs(1000);
        const w1 = (await d().stats(name)).io?.writeBytes ?? 0;
        const rate = (w1 - w0) / (Number(process.hrtime.bigint() - t0) / 1e9);
        t.diagnostic(`write rate ${(rate / 1024 ** 2).toFixed(2)} MiB/s, limit 4`);
        assert.ok(
          Math.abs(rate / bps - 1) <= 0.15,
          `write rate ${(rate / 1024 ** 2).toFixed(2)} MiB/s, limit 4`,
        );
        assert.equal((await exited(c)).code, 0);
      } finally {
        rmSync(file, { force: true });
      }
      await d().setLimits(name, { ioBps: null });
      await d().remove(name);
    });

    it('refuses limits it cannot enforce, and values the kernel refuses', async () => {
      const name = cg('e');
      await d().create(name);
      for (const [kind, limits] of [
        ['memory', { memoryBytes: 64 * 1024 * 1024 }],
        ['cpu', { cpus: 0.5 }],
        ['pids', { pids: 10 }],
      ] as const) {
        if (!d().supports(kind)) await assert.rejects(d().setLimits(name, limits), { code: 'ENOTSUP' });
      }
      if (d().supports('pids')) await assert.rejects(d().setLimits(name, { pids: -1 }), { code: 'EINVAL' });
      await assert.rejects(d().setLimits(cg('missing'), { pids: 10 }), { code: 'ENOENT' });
      await d().remove(name);
    });
  });
}
