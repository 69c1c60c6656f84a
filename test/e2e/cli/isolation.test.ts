/**
 * The isolation commands as a user types them (`node bin/dvs.js ...`, the built CLI) against a 2-node
 * `dvs up` cluster on loopback: `dvs node status`, `dc create --memory/--pids`, `dc set`, `dc stats`,
 * `dc show`, `dc pause/resume`, `ps`, `exec`. As root the nodes run containers (no DC LAN: loopback has no
 * underlay, so `--lan` is refused); without root (or with DVS_ISOLATION=off) they say isolation is off and
 * refuse limits.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { alive, built, CliCluster } from '../../integration/cli.js';

/** Containers: root, unless turned off (DVS_ISOLATION=off reaches the daemons `dvs up` starts). */
const ROOTED = process.getuid?.() === 0 && process.env.DVS_ISOLATION !== 'off';

/** Named netns and cgroups carrying one of `prefixes` (the nodes' isolation prefixes). */
function objects(prefixes: string[]): string[] {
  const mine = (n: string) => prefixes.some((p) => n.startsWith(p));
  const found = existsSync('/run/netns') ? readdirSync('/run/netns').filter(mine) : [];
  if (existsSync('/sys/fs/cgroup')) {
    for (const ctl of readdirSync('/sys/fs/cgroup')) {
      const d = join('/sys/fs/cgroup', ctl, 'dvs');
      if (existsSync(d))
        found.push(
          ...readdirSync(d)
            .filter(mine)
            .map((n) => `${ctl}/${n}`),
        );
    }
  }
  return found;
}

describe('dvs isolation commands end to end', {
  skip: built() ? false : 'run npm run build first',
}, () => {
  const c = new CliCluster('dvs-e2e-iso-');
  const { dvs, ok } = c;
  let pids: number[] = [];
  let prefixes: string[] = [];

  before(async () => {
    await c.start();
    await ok('up', '--nodes', '2', '--detach');
    pids = (await c.nodes()).map((n) => n.pid);
  });

  after(async () => {
    await c.stop(pids);
    // A clean stop leaves no container, namespace or cgroup behind.
    assert.deepEqual(objects(prefixes), []);
  });

  it('node status says how each node isolates', async () => {
    const st = JSON.parse(await ok('node', 'status', '--json')) as {
      nodes: {
        id: number;
        isolation?: { mode: string; cgroup: string; lan: boolean; prefix: string; reason: string };
      }[];
    };
    assert.equal(st.nodes.length, 2);
    for (const n of st.nodes) {
      assert.equal(n.isolation?.mode, ROOTED ? 'container' : 'off', n.isolation?.reason);
      assert.equal(n.isolation.lan, false, 'loopback nodes have no DC LAN underlay');
      prefixes.push(n.isolation.prefix);
    }
    prefixes = [...new Set(prefixes)];
    assert.equal(prefixes.length, 2, 'one prefix per node');
    assert.match(await ok('node', 'status'), ROOTED ? /container/ : /off/);
  });

  it('without root, limits are refused and processes run plainly', {
    skip: ROOTED ? 'isolation is on' : false,
  }, async () => {
    const r = await dvs('dc', 'create', 'lim', '--memory', '64M');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /isolation is off .*\(ENOTSUP\)/);
    assert.doesNotMatch(await ok('dc', 'ls'), /lim/);
    await ok('dc', 'create', 'plain');
    assert.equal((await ok('exec', '--dc', 'plain', '--', 'echo', 'hi')).trim(), 'hi');
    assert.match((await dvs('dc', 'pause', '--dc', 'plain')).stderr, /ENOTSUP/);
    await ok('dc', 'rm', 'plain');
  });

  it('as root: limits, live changes, stats, pause/resume, ps and exec in the container', {
    skip: ROOTED ? false : 'needs root (and isolation not turned off)',
  }, async () => {
    const lan = await dvs('dc', 'create', 'netted', '--lan', '172.31.9.0/24');
    assert.equal(lan.code, 1);
    assert.match(lan.stderr, /no underlay for DC LANs/);
    await ok('dc', 'create', 'lim', '--memory', '64M', '--pids', '256');
    await ok('run', '--dc', 'lim', '--ep', '100', '--node', '1', '--', 'sleep', '60');
    const ps = JSON.parse(await ok('ps', '--dc', 'lim', '--json')) as {
      processes: { ep: number; node: number; pid: number; containerPid?: number; exit: unknown }[];
    };
    const p = ps.processes.find((x) => x.ep === 100);
    assert.ok(p && p.exit === null && p.node === 1);
    assert.ok(p.containerPid !== undefined && p.containerPid !== p.pid, 'a pid of its own inside');
    assert.match(await ok('ps'), /sleep 60/);
    assert.equal((await ok('exec', '--dc', 'lim', '--node', '1', '--', 'hostname')).trim(), 'lim-node1');
    const inside = await ok('exec', '--dc', 'lim', '--node', '1', '--', 'ps', '-e', '-o', 'args=');
    assert.match(inside, /sleep 60/);
    assert.doesNotMatch(inside, /dvs\.js/, 'the daemons are not visible in the container');
    const failed = await dvs('exec', '--dc', 'lim', '--', 'sh', '-c', 'exit 7');
    assert.equal(failed.code, 7);

    const stats = async () =>
      (
        JSON.parse(await ok('dc', 'stats', '--dc', 'lim', '--json')) as {
          nodes: {
            node: number;
            memory?: { limitBytes: number | null };
            frozen?: boolean;
            pids?: { limit: number | null };
          }[];
        }
      ).nodes;
    for (const n of await stats()) {
      assert.equal(n.memory?.limitBytes, 64 * 2 ** 20);
      assert.equal(n.pids?.limit, 256);
    }
    await ok('dc', 'set', '--dc', 'lim', '--memory', '128M', '--pids', 'max');
    for (const n of await stats()) {
      assert.equal(n.memory?.limitBytes, 128 * 2 ** 20);
      assert.equal(n.pids?.limit, null);
    }
    assert.match(await ok('dc', 'show', '--dc', 'lim'), /memory=128M/);
    await ok('dc', 'pause', '--dc', 'lim');
    assert.ok((await stats()).every((n) => n.frozen === true));
    assert.match(await ok('dc', 'stats', '--dc', 'lim'), /paused/);
    await ok('dc', 'resume', '--dc', 'lim');
    assert.ok((await stats()).every((n) => n.frozen === false));
    await ok('dc', 'rm', 'lim');
    // With a cluster store (dvs up's default) the other nodes apply the removal from their watch.
    for (let i = 0; i < 200 && (objects(prefixes).length > 0 || alive(p.pid)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(objects(prefixes), []);
    assert.equal(alive(p.pid), false);
  });
});
