/**
 * `dvs group ls` as a user types it: the built CLI against a `dvs up` cluster of two nodes, with SDK members
 * of a group on both nodes. The answer merges every node's view (node.call → group.ls). Requires the build.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { check, REPO } from '../harness.js';
import { Reader } from './helpers.js';

const BIN = join(REPO, 'bin', 'dvs.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe('dvs group ls', { timeout: 120_000 }, () => {
  let dir: string;
  const open: Dvk[] = [];
  const dvs = (...args: string[]): Promise<Result> =>
    new Promise((res) => {
      execFile(
        process.execPath,
        [BIN, '--dir', dir, ...args],
        { cwd: dir, timeout: 60_000, env: { ...process.env, NO_COLOR: '1' } },
        (err, stdout, stderr) =>
          res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await dvs(...args);
    assert.equal(r.code, 0, `dvs ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-group-cli-'));
    await ok('up', '--nodes', '2', '--no-store', '--detach');
    await ok('dc', 'create', 'demo');
  });
  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    await dvs('down', '--timeout', '3000').catch(() => {});
    try {
      const f = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as { nodes: { pid: number }[] };
      for (const n of f.nodes) {
        try {
          process.kill(n.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    } catch {
      // nothing started
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the group with the merged view, members and counters', async () => {
    const f = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as {
      nodes: { id: number; socket: string }[];
    };
    const rs: Reader[] = [];
    for (const [i, n] of f.nodes.entries()) {
      const d = await connect({ socket: n.socket, dc: 'demo', endpoint: 100 + i, timeout: 5000 });
      open.push(d);
      rs.push(new Reader(d, await d.join('board')));
    }
    await rs[0]!.waitView(2);
    await rs[0]!.group.multicast('one');
    await rs[1]!.group.multicast('two');
    for (const r of rs) await r.waitMessages(2);
    const ls = await check(
      async () => {
        const out = JSON.parse(await ok('group', 'ls', '--dc', 'demo', '--json')) as {
          groups: { name: string; view: { members: { ep: number }[] }; sent: number; delivered: number }[];
          nodes: { node: number }[];
        };
        return out.groups[0]?.delivered === 4 ? out : false;
      },
      10_000,
      'counters',
    );
    if (ls === false) throw new Error('unreachable');
    assert.equal(ls.nodes.length, 2);
    assert.deepEqual(
      ls.groups.map((g) => [g.name, g.view.members.map((m) => m.ep), g.sent, g.delivered]),
      [['board', [100, 101], 2, 4]],
    );
    const table = await ok('group', 'ls', '--dc', 'demo');
    assert.match(table, /GROUP\s+VIEW\s+MEMBERS/);
    assert.match(table, /board\s+\S+\s+100@\d+ 101@\d+/);
    const none = await dvs('group', 'ls', '--dc', 'nope');
    assert.equal(none.code, 1);
  });
});
