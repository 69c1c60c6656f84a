/**
 * The placement and balancing policies (src/node/scheduler.ts): pure functions of the nodes' load reports.
 * Hand-made cases pin each rule; property tests (fast-check) check what must hold for any input: the
 * ranking is a permutation of the eligible nodes that does not depend on their order, a balance plan only
 * moves the DC's processes from a node to another of its nodes, never moves one twice, and never widens the
 * gap between the most and least loaded nodes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type Candidate,
  IDLE_WEIGHT,
  type Movable,
  planBalance,
  rankNodes,
} from '../../../src/node/scheduler.js';
import type { NodeLoad, ProcLoad } from '../../../src/protocol/admin.js';

const GiB = 1024 ** 3;

function load(over: Partial<NodeLoad> & { procs?: ProcLoad[] } = {}): NodeLoad {
  return {
    host: 'h',
    cpus: 4,
    cpuBusy: 0.2,
    loadAvg1: 0.5,
    memTotalBytes: 8 * GiB,
    memAvailableBytes: 6 * GiB,
    daemonCpu: 0.01,
    daemonRssBytes: 80e6,
    procs: [],
    sampledAt: 0,
    intervalMs: 1000,
    ...over,
  };
}

const proc = (ep: number, cpu: number, dc = 1): ProcLoad => ({ dc, ep, pid: 1000 + ep, cpu, rssBytes: 10e6 });

describe('placement: rankNodes', () => {
  it('prefers the host with the most headroom (the scarcer of CPU and memory)', () => {
    const r = rankNodes([
      { node: 0, up: true, load: load({ host: 'a', cpuBusy: 0.95 }) },
      { node: 1, up: true, load: load({ host: 'b', cpuBusy: 0.1, memAvailableBytes: 1 * GiB }) },
      { node: 2, up: true, load: load({ host: 'c', cpuBusy: 0.5 }) },
    ]);
    // b has free CPU but 12.5% memory: its headroom is the memory. c has 50% of both.
    assert.deepEqual(
      r.map((x) => x.node),
      [2, 1, 0],
    );
    assert.equal(r[0]!.headroom, 0.5);
  });

  it('on a shared host, lets the nodes’ own processes decide, not sampling noise', () => {
    const r = rankNodes([
      { node: 0, up: true, load: load({ cpuBusy: 0.3, procs: [proc(100, 0.9)] }) },
      { node: 1, up: true, load: load({ cpuBusy: 0.52, procs: [proc(101, 0), proc(102, 0)] }) },
      { node: 2, up: true, load: load({ cpuBusy: 0.41, procs: [proc(103, 0)] }) },
    ]);
    assert.deepEqual(
      r.map((x) => x.node),
      [2, 1, 0],
    );
    // Same host: same headroom for all (the most pessimistic sample).
    assert.ok(r.every((x) => x.headroom === r[0]!.headroom));
  });

  it('breaks ties by process count, then by node id, and skips nodes down or silent', () => {
    const r = rankNodes([
      { node: 3, up: true, load: load() },
      { node: 1, up: true, load: load({ procs: [proc(100, 0)] }) },
      { node: 2, up: true, load: load() },
      { node: 0, up: false, load: load() },
      { node: 4, up: true, load: undefined },
    ]);
    assert.deepEqual(
      r.map((x) => x.node),
      [2, 3, 1],
    );
  });

  it('leaves out hosts short of memory, and fails with EUNAVAIL when nothing is left', () => {
    const nodes: Candidate[] = [
      { node: 0, up: true, load: load({ host: 'a', memAvailableBytes: 100e6 }) },
      { node: 1, up: true, load: load({ host: 'b' }) },
    ];
    assert.deepEqual(
      rankNodes(nodes, { minMemBytes: 1 * GiB }).map((x) => x.node),
      [1],
    );
    assert.throws(
      () => rankNodes(nodes, { minMemBytes: 100 * GiB }),
      (e: unknown) => (e as { code?: string }).code === 'EUNAVAIL',
    );
    assert.throws(
      () => rankNodes([]),
      (e: unknown) => (e as { code?: string }).code === 'EUNAVAIL',
    );
  });

  it('is a permutation of the eligible nodes, whatever their order (property)', () => {
    const arbLoad = fc.record({
      host: fc.constantFrom('a', 'b', 'c'),
      cpuBusy: fc.double({ min: 0, max: 1, noNaN: true }),
      mem: fc.double({ min: 0, max: 1, noNaN: true }),
      procs: fc.array(fc.double({ min: 0, max: 2, noNaN: true }), { maxLength: 4 }),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ node: fc.integer({ min: 0, max: 20 }), up: fc.boolean(), l: arbLoad }), {
          selector: (x) => x.node,
          minLength: 1,
          maxLength: 8,
        }),
        (rows) => {
          const cands: Candidate[] = rows.map((x) => ({
            node: x.node,
            up: x.up,
            load: load({
              host: x.l.host,
              cpuBusy: x.l.cpuBusy,
              memAvailableBytes: x.l.mem * 8 * GiB,
              procs: x.l.procs.map((c, i) => proc(100 + i, c)),
            }),
          }));
          const eligible = cands.filter((c) => c.up).map((c) => c.node);
          if (eligible.length === 0) return;
          const a = rankNodes(cands).map((x) => x.node);
          const b = rankNodes([...cands].reverse()).map((x) => x.node);
          assert.deepEqual(a, b);
          assert.deepEqual(
            [...a].sort((x, y) => x - y),
            [...eligible].sort((x, y) => x - y),
          );
        },
      ),
    );
  });
});

describe('balancing: planBalance', () => {
  it('moves busy processes from the loaded node to the idle ones', () => {
    const nodes: Candidate[] = [
      { node: 0, up: true, load: load({ procs: [proc(100, 1), proc(101, 1), proc(102, 1)] }) },
      { node: 1, up: true, load: load() },
      { node: 2, up: true, load: load() },
    ];
    const movable: Movable[] = [100, 101, 102].map((ep) => ({ ep, node: 0, cpu: 1, rssBytes: 0 }));
    const plan = planBalance({ dc: 1, nodes, movable });
    assert.deepEqual(
      plan.moves.map((m) => [m.ep, m.from, m.to]),
      [
        [100, 0, 1],
        [101, 0, 2],
      ],
    );
    assert.deepEqual(plan.after, { 0: 1.05, 1: 1.05, 2: 1.05 });
  });

  it('spreads idle processes by count, and stops when the nodes are even', () => {
    const nodes: Candidate[] = [
      { node: 0, up: true, load: load({ procs: [0, 1, 2, 3].map((i) => proc(100 + i, 0)) }) },
      { node: 1, up: true, load: load() },
    ];
    const movable: Movable[] = [0, 1, 2, 3].map((i) => ({ ep: 100 + i, node: 0, cpu: 0, rssBytes: 0 }));
    const plan = planBalance({ dc: 1, nodes, movable, minGain: 0.05 });
    assert.equal(plan.moves.length, 2);
    assert.equal(plan.after['0'], 2 * IDLE_WEIGHT);
    assert.equal(plan.after['1'], 2 * IDLE_WEIGHT);
    // Already even: nothing to do.
    assert.equal(planBalance({ dc: 1, nodes: [nodes[1]!, nodes[1]!], movable: [] }).moves.length, 0);
  });

  it("moves only the DC's processes but counts every process and a lone host's background load", () => {
    const nodes: Candidate[] = [
      // Host a: 4 cpus, 75% busy = 3 cores, of which 0.05 are dvs processes: background ≈ 2.94.
      { node: 0, up: true, load: load({ host: 'a', cpuBusy: 0.75, procs: [proc(100, 0.05, 1)] }) },
      { node: 1, up: true, load: load({ host: 'b', cpuBusy: 0, daemonCpu: 0, procs: [proc(200, 1.5, 2)] }) },
    ];
    const movable: Movable[] = [{ ep: 100, node: 0, cpu: 0.05, rssBytes: 0 }];
    const plan = planBalance({ dc: 1, nodes, movable, minGain: 0.01 });
    // Node 0 carries more (background), so its one DC process moves; the other DC's process stays.
    assert.deepEqual(
      plan.moves.map((m) => [m.ep, m.from, m.to]),
      [[100, 0, 1]],
    );
  });

  it('never widens the gap, never moves a process twice, only between live DC nodes (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.double({ min: 0, max: 2, noNaN: true }), { maxLength: 5 }), {
          minLength: 1,
          maxLength: 5,
        }),
        fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }),
        (perNode, ups) => {
          let ep = 100;
          const movable: Movable[] = [];
          const nodes: Candidate[] = perNode.map((cpus, node) => {
            const procs = cpus.map((c) => {
              const p = proc(ep++, c);
              movable.push({ ep: p.ep, node, cpu: c, rssBytes: 0 });
              return p;
            });
            return { node, up: ups[node]!, load: load({ procs }) };
          });
          const live = movable.filter((m) => nodes[m.node]!.up);
          const plan = planBalance({ dc: 1, nodes, movable: live });
          const spread = (r: Record<string, number>) => {
            const v = Object.values(r);
            return v.length === 0 ? 0 : Math.max(...v) - Math.min(...v);
          };
          assert.ok(spread(plan.after) <= spread(plan.before) + 1e-6);
          const eps = plan.moves.map((m) => m.ep);
          assert.equal(new Set(eps).size, eps.length);
          for (const m of plan.moves) {
            assert.ok(nodes[m.from]!.up && nodes[m.to]!.up && m.from !== m.to);
            assert.equal(live.find((x) => x.ep === m.ep)?.node, m.from);
          }
        },
      ),
    );
  });
});
