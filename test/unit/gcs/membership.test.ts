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

  /** Node 2 reaches 0 and 1, which do not reach each other yet (a heal lifting link after link). */
  function pledgedTo1(): { h2: Host; m2: Membership } {
    const h2 = new Host(2);
    const m2 = new Membership(h2, { flushTimeoutMs: 100 });
    m2.setReach(0, new Set([0, 1, 2]));
    h2.take();
    m2.onFrame(1, 1, { t: 'propose', id: [5, 1, 1], nodes: [1, 2] });
    assert.deepEqual(
      h2.take().map((s) => [s.to, s.f.t]),
      [[1, 'flushOk']],
    );
    m2.onFrame(2, 0, { t: 'propose', id: [6, 0, 1], nodes: [0, 1, 2] });
    assert.deepEqual(h2.take(), [], "another coordinator's proposal waits while pledged");
    return { h2, m2 };
  }
  const install5: GcsFrame = {
    t: 'install',
    id: [5, 1, 1],
    nodes: [1, 2],
    members: [],
    recover: [],
    seen: [],
  };

  it("a node pledged to one coordinator's round installs it before answering another's", () => {
    // Without the pledge, node 2 would answer 0 (closing its old configuration 0's way) and refuse the
    // install of 1, which node 1 applies (closing it 1's way): different messages in the same view.
    const { h2, m2 } = pledgedTo1();
    m2.onFrame(3, 1, install5);
    assert.equal(h2.installs.length, 1, 'the install of the round it answered');
    assert.deepEqual(
      h2
        .take()
        .filter((s) => s.f.t !== 'wake')
        .map((s) => [s.to, s.f.t, 'id' in s.f ? s.f.id : undefined]),
      [[0, 'flushOk', [6, 0, 1]]],
      'then the waiting proposal is answered',
    );
  });

  it('the pledge ends when the round is aborted, its coordinator goes out of reach, or in two flush timeouts', () => {
    const ends: [string, (m: Membership) => void][] = [
      ['abort', (m) => m.onFrame(3, 1, { t: 'abort', id: [5, 1, 1] })],
      ['out of reach', (m) => m.setReach(3, new Set([0, 2]))],
      ['timeout', (m) => m.tick(201)],
    ];
    for (const [why, end] of ends) {
      const { h2, m2 } = pledgedTo1();
      m2.tick(150);
      assert.deepEqual(
        h2.take().filter((s) => s.f.t === 'flushOk'),
        [],
        `${why}: still pledged after 1.5 flush timeouts`,
      );
      end(m2);
      const sent = h2.take().filter((s) => s.f.t === 'flushOk');
      assert.deepEqual(
        sent.map((s) => [s.to, 'id' in s.f ? s.f.id : undefined]),
        [[0, [6, 0, 1]]],
        `${why}: the waiting proposal is answered`,
      );
      m2.onFrame(4, 1, install5);
      assert.equal(h2.installs.length, 0, `${why}: the late install is refused`);
    }
  });

  it('a newer round of the same coordinator takes the pledge over; an abort of another round is ignored', () => {
    const { h2, m2 } = pledgedTo1();
    m2.onFrame(3, 1, { t: 'abort', id: [4, 1, 1] });
    assert.deepEqual(h2.take(), []);
    m2.onFrame(3, 1, { t: 'propose', id: [7, 1, 1], nodes: [1, 2] });
    assert.deepEqual(
      h2.take().map((s) => [s.to, s.f.t]),
      [[1, 'flushOk']],
    );
  });

  it('a coordinator that gives up its round tells the nodes it asked', () => {
    const h1 = new Host(1);
    const m1 = new Membership(h1, { flushTimeoutMs: 100 });
    m1.setReach(0, new Set([1, 2]));
    const round = h1.take().find((s) => s.to === 2)?.f;
    assert.ok(round?.t === 'propose');
    m1.setReach(1, new Set([0, 1, 2]));
    assert.deepEqual(
      h1.take().map((s) => [s.to, s.f.t]),
      [
        [2, 'abort'],
        [0, 'wake'],
      ],
    );
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
