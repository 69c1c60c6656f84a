/** The view-change protocol (src/gcs/membership.ts) against a fake host. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildInstall,
  type FlushOkFrame,
  type FlushState,
  type InstallFrame,
  Membership,
} from '../../../src/gcs/membership.js';
import type { CfgId, GcsFrame, NodeId, SeqOp } from '../../../src/gcs/types.js';

const op = (s: number, n = 0, id = s): SeqOp => ({
  s,
  n,
  i: 1,
  op: { k: 'msg', dc: 1, g: 'g', ep: 9, o: 'safe', p: new Uint8Array(0), id },
});

function flushOk(
  id: CfgId,
  cfg: CfgId,
  old: NodeId[],
  stable: number,
  ops: SeqOp[],
  n: NodeId,
): FlushOkFrame {
  return {
    t: 'flushOk',
    id,
    cfg,
    old,
    recv: ops.at(-1)?.s ?? stable,
    stable,
    ops,
    members: [{ n, dc: 1, g: 'g', eps: [100 + n] }],
    seen: [],
  };
}

class Host {
  sent: { to: NodeId; f: GcsFrame }[] = [];
  installs: InstallFrame[] = [];
  readonly inc = 1;
  constructor(readonly me: NodeId) {}
  send(to: NodeId, f: GcsFrame): void {
    this.sent.push({ to, f });
  }
  snapshot(): FlushState {
    return { cfg: [0, this.me, 1], old: [this.me], recv: 0, stable: 0, ops: [], members: [], seen: [] };
  }
  install(_now: number, f: InstallFrame): void {
    this.installs.push(f);
  }
  take(): { to: NodeId; f: GcsFrame }[] {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}

describe('buildInstall', () => {
  it('merges per old configuration the union of what the movers hold', () => {
    const id: CfgId = [5, 0, 1];
    const a: CfgId = [3, 0, 1];
    const b: CfgId = [4, 2, 1];
    const replies = new Map<NodeId, FlushOkFrame>([
      [0, flushOk(id, a, [0, 1], 2, [op(3), op(4)], 0)],
      [1, flushOk(id, a, [0, 1], 3, [op(4), op(5)], 1)],
      [2, flushOk(id, b, [2, 3], 0, [op(1, 2)], 2)],
    ]);
    const f = buildInstall(id, [0, 1, 2], replies);
    assert.deepEqual(f.nodes, [0, 1, 2]);
    const ra = f.recover.find((r) => r.cfg[0] === 3);
    assert.deepEqual(
      ra?.ops.map((e) => e.s),
      [3, 4, 5],
    );
    assert.equal(ra?.stable, 3);
    assert.equal(ra?.full, true, 'every node of [3,0] moves');
    const rb = f.recover.find((r) => r.cfg[0] === 4);
    assert.equal(rb?.full, false, 'node 3 of [4,2] is lost');
    assert.deepEqual(
      f.members.map((r) => r.eps[0]),
      [100, 101, 102],
    );
    assert.deepEqual(
      f.seen.find((e) => e[0] === 0),
      [0, 1, 5],
    );
  });

  it('refuses to build without every reply', () => {
    assert.throws(() => buildInstall([1, 0, 1], [0, 1], new Map()));
  });
});

describe('Membership', () => {
  it('the lowest reachable node proposes; others accept and answer; the round installs', () => {
    const h0 = new Host(0);
    const h1 = new Host(1);
    const m0 = new Membership(h0, { flushTimeoutMs: 100 });
    const m1 = new Membership(h1, { flushTimeoutMs: 100 });
    m1.setReach(0, new Set([0, 1]));
    assert.deepEqual(
      h1.take().map((s) => [s.to, s.f.t]),
      [[0, 'wake']],
    );
    m0.setReach(0, new Set([0, 1]));
    const proposals = h0.take();
    assert.deepEqual(
      proposals.map((s) => [s.to, s.f.t]),
      [
        [0, 'propose'],
        [1, 'propose'],
      ],
    );
    for (const { to, f } of proposals) (to === 0 ? m0 : m1).onFrame(1, 0, f);
    const answers = [...h0.take(), ...h1.take()];
    assert.ok(answers.every((s) => s.to === 0 && s.f.t === 'flushOk'));
    assert.ok(m1.flushing);
    for (const { f } of answers) m0.onFrame(2, f === answers[0]?.f ? 0 : 1, f);
    const installs = h0.take();
    assert.deepEqual(
      installs.map((s) => [s.to, s.f.t]),
      [
        [0, 'install'],
        [1, 'install'],
      ],
    );
    for (const { to, f } of installs) (to === 0 ? m0 : m1).onFrame(3, 0, f);
    assert.equal(h0.installs.length, 1);
    assert.equal(h1.installs.length, 1);
    assert.deepEqual(m1.current, m0.current);
    assert.ok(m0.settled() && m1.settled());
  });

  it('refuses an older proposal with a nack, and the proposer retries with a newer epoch', () => {
    const h1 = new Host(1);
    const m1 = new Membership(h1, { flushTimeoutMs: 100 });
    m1.setReach(0, new Set([0, 1]));
    h1.take();
    m1.onFrame(1, 0, { t: 'propose', id: [9, 0, 1], nodes: [0, 1] });
    h1.take();
    m1.onFrame(2, 0, { t: 'propose', id: [7, 0, 1], nodes: [0, 1] });
    const [nack] = h1.take();
    assert.deepEqual(nack?.f, { t: 'nack', id: [7, 0, 1], promised: [9, 0, 1] });

    const h0 = new Host(0);
    const m0 = new Membership(h0, { flushTimeoutMs: 100 });
    m0.setReach(0, new Set([0, 1]));
    const first = h0.take()[0]?.f;
    assert.ok(first?.t === 'propose');
    m0.onFrame(1, 1, { t: 'nack', id: first.id, promised: [9, 0, 1] });
    const retry = h0.take()[0]?.f;
    assert.ok(retry?.t === 'propose' && retry.id[0] > 9);
  });

  it('ignores an install it did not promise', () => {
    const h1 = new Host(1);
    const m1 = new Membership(h1, { flushTimeoutMs: 100 });
    m1.setReach(0, new Set([0, 1]));
    m1.onFrame(1, 0, { t: 'install', id: [4, 0, 1], nodes: [0, 1], members: [], recover: [], seen: [] });
    assert.equal(h1.installs.length, 0);
  });

  it('a stuck round is restarted after the flush timeout', () => {
    const h0 = new Host(0);
    const m0 = new Membership(h0, { flushTimeoutMs: 100 });
    m0.setReach(0, new Set([0, 1]));
    const a = h0.take()[0]?.f;
    m0.tick(50);
    assert.equal(h0.take().length, 0);
    m0.tick(100);
    const b = h0.take()[0]?.f;
    assert.ok(a?.t === 'propose' && b?.t === 'propose' && b.id[0] > a.id[0]);
  });
});
