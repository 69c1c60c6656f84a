/**
 * `dvs group ls` as a user types it: the built CLI against a `dvs up` cluster of two nodes, with SDK members
 * of a group on both nodes. The answer merges every node's view (node.call → group.ls). Requires the build.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { CliCluster } from '../cli.js';
import { check } from '../harness.js';
import { Reader } from './helpers.js';

describe('dvs group ls', { timeout: 120_000 }, () => {
  const c = new CliCluster('dvs-group-cli-');
  const { dvs, ok } = c;
  const open: Dvk[] = [];

  before(async () => {
    await c.start();
    await ok('up', '--nodes', '2', '--no-store', '--detach');
    await ok('dc', 'create', 'demo');
  });
  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    await c.stop();
  });

  it('lists the group with the merged view, members and counters', async () => {
    const rs: Reader[] = [];
    for (const [i, n] of (await c.nodes()).entries()) {
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
