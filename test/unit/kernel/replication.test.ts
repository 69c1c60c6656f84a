/**
 * Kernel side of primary-backup failover (KernelReplicationApi): when a replicated endpoint's primary dies
 * (its node, or only its process), callers blocked on it wait instead of failing, and their calls are
 * replayed at the promoted backup: requests already taken by the old primary included.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY } from '../../../src/kernel/index.js';
import { bytes, msgOf, Net } from './harness.js';

const P = 1;
const B = 2;
const C = 3;
/** The replicated server endpoint: primary process at P (session 1), backup process at B (session 20). */
const E = 100;

/**
 * Nodes 1 (P), 2 (B), 3 (C) in DC 1; E replicated on every node, primary at P, backup attached at B.
 * Clients: 110 at P (session 2), 210 at B (session 3), 310 at C (session 4).
 */
function group(replicated = true) {
  const net = new Net([P, B, C]);
  net.dc(1);
  net.connect();
  const [p, b, c] = [net.n(P), net.n(B), net.n(C)];
  p.attach(1, 1, E);
  p.attach(2, 1, 110);
  b.attach(3, 1, 210);
  c.attach(4, 1, 310);
  net.run();
  b.kernel.attach(net.now, 20, 1, E, { pid: 20, kind: 'backup', primaryNode: P });
  if (replicated) for (const n of [p, b, c]) n.kernel.setReplicated(net.now, 1, E, true);
  return { net, p, b, c };
}

/** Take the next request at session `proc` of `node` (nowait), failing the test if there is none. */
function takeRequest(node: ReturnType<Net['n']>, proc: number) {
  const id = node.call(proc, { op: 'receiveRequest', nowait: true });
  return msgOf(node.result(proc, id));
}

describe('kernel: primary-backup failover', () => {
  it('a group ending: the primary unbinds, then the backup; no stale entry is left at the backup node', () => {
    const { net, p, b } = group();
    p.kernel.setReplicated(net.now, 1, E, false);
    b.kernel.setReplicated(net.now, 1, E, false);
    p.kernel.detach(net.now, 1);
    net.run();
    assert.ok(
      b.kernel
        .endpoints(1)
        .find((e) => e.ep === E)
        ?.flags.includes('BACKUP'),
    );
    b.kernel.detach(net.now, 20);
    net.run();
    assert.equal(
      b.kernel.endpoints(1).find((e) => e.ep === E),
      undefined,
      'nothing left of E at B',
    );
    assert.deepEqual(net.violations, []);
  });

  it('a backup whose primary still lives reverts to knowing it when the backup process goes', () => {
    const { net, p, b } = group();
    b.kernel.detach(net.now, 20);
    net.run();
    const row = b.kernel.endpoints(1).find((e) => e.ep === E);
    assert.equal(row?.node, P);
    assert.deepEqual(row?.flags, ['REMOTE']);
    assert.ok(p.kernel.endpoints(1).some((e) => e.ep === E));
  });

  it('a request taken by a primary whose node crashes is replayed at the promoted backup', () => {
    const { net, p, b, c } = group();
    const req = c.call(4, { op: 'sendrec', dst: E, type: 7, payload: bytes(1, 2) });
    net.run();
    assert.equal(takeRequest(p, 1).source, 310);
    net.crash(P);
    net.run();
    assert.equal(c.code(4, req), undefined, 'the client waits (no ENOTCONN)');
    const row = c.kernel.endpoints(1).find((e) => e.ep === E);
    assert.ok(row?.flags.includes('FAILOVER'), `flags ${row?.flags}`);
    // A call made during the outage waits too, on the backup's node.
    const local = b.call(3, { op: 'sendrec', dst: E, type: 8, payload: bytes(3) });
    assert.equal(b.code(3, local), undefined);
    b.kernel.promote(net.now, 1, E);
    net.run();
    const got = [takeRequest(b, 20), takeRequest(b, 20)].map((m) => [m.source, m.type, [...m.payload]]);
    assert.deepEqual(
      got.sort((x, y) => Number(x[0]) - Number(y[0])),
      [
        [210, 8, [3]],
        [310, 7, [1, 2]],
      ],
    );
    b.call(20, { op: 'reply', dst: 310, type: 1, payload: bytes(9) });
    b.call(20, { op: 'reply', dst: 210, type: 1, payload: bytes(8) });
    net.run();
    assert.deepEqual([...msgOf(c.result(4, req)).payload], [9]);
    assert.deepEqual([...msgOf(b.result(3, local)).payload], [8]);
    const after = c.kernel.endpoints(1).find((e) => e.ep === E);
    assert.equal(after?.node, B);
    assert.deepEqual(after?.flags, ['REMOTE']);
    assert.deepEqual(net.violations, []);
  });

  it("the primary's process dies: queued and taken calls from every node wait and reach the new primary once", () => {
    const { net, p, b, c } = group();
    const fromC = c.call(4, { op: 'sendrec', dst: E, type: 1, payload: bytes(31) });
    const fromP = p.call(2, { op: 'sendrec', dst: E, type: 1, payload: bytes(11) });
    net.run();
    // One request taken (not answered), the other still queued when the process dies.
    takeRequest(p, 1);
    p.kernel.detach(net.now, 1);
    net.run();
    assert.equal(c.code(4, fromC), undefined);
    assert.equal(p.code(2, fromP), undefined);
    const fromB = b.call(3, { op: 'send', dst: E, type: 2, payload: bytes(21) });
    b.kernel.promote(net.now, 1, E);
    net.run();
    const sources: number[] = [];
    for (;;) {
      const id = b.call(20, { op: 'receive', src: ANY, nowait: true });
      const r = b.result(20, id);
      if (r === undefined || !r.ok) break;
      sources.push(msgOf(r).source);
      if (msgOf(r).kind === 'request')
        b.call(20, { op: 'reply', dst: msgOf(r).source, type: 0, payload: bytes() });
    }
    net.run();
    assert.deepEqual(
      sources.sort((x, y) => x - y),
      [110, 210, 310],
    );
    assert.equal(c.code(4, fromC), 'ok');
    assert.equal(p.code(2, fromP), 'ok');
    assert.equal(b.code(3, fromB), 'ok');
    assert.deepEqual(net.violations, []);
  });

  it("the new primary's bind overtaking the old primary's unbind still moves the call (no loss, no double)", () => {
    const { net, p, b, c } = group();
    const req = c.call(4, { op: 'sendrec', dst: E, type: 1, payload: bytes(5) });
    net.run();
    takeRequest(p, 1);
    p.kernel.detach(net.now, 1);
    b.kernel.promote(net.now, 1, E);
    // B's frames first: C learns the new primary before it hears that the old one died.
    net.queue.sort(
      (x, y) => Number(x.kind === 'frame' && x.from === P) - Number(y.kind === 'frame' && y.from === P),
    );
    net.run();
    assert.equal(takeRequest(b, 20).source, 310);
    const none = b.call(20, { op: 'receiveRequest', nowait: true });
    assert.equal(b.code(20, none), 'ETIMEDOUT', 'delivered once');
    b.call(20, { op: 'reply', dst: 310, type: 0, payload: bytes(6) });
    net.run();
    assert.deepEqual([...msgOf(c.result(4, req)).payload], [6]);
  });

  it('held calls honour their timeout, and end with EDSTDIED when the group is given up', () => {
    const { net, b, c } = group();
    net.crash(P);
    const a = c.call(4, { op: 'sendrec', dst: E, type: 1, payload: bytes(1) });
    const d = b.call(3, { op: 'send', dst: E, type: 1, payload: bytes(2) });
    c.kernel.cancel(net.now, 4, a, 'ETIMEDOUT');
    assert.equal(c.code(4, a), 'ETIMEDOUT');
    b.kernel.setReplicated(net.now, 1, E, false);
    assert.equal(b.code(3, d), 'EDSTDIED');
    assert.deepEqual(net.violations, []);
  });

  it('without replication nothing changes: callers of a crashed node fail with ENOTCONN', () => {
    const { net, p, c } = group(false);
    const req = c.call(4, { op: 'sendrec', dst: E, type: 1, payload: bytes(1) });
    net.run();
    takeRequest(p, 1);
    net.crash(P);
    assert.equal(c.code(4, req), 'ENOTCONN');
  });

  it('promote needs an attached backup', () => {
    const { net, p } = group();
    assert.throws(() => p.kernel.promote(net.now, 1, E), /no backup/);
    assert.throws(() => net.n(C).kernel.promote(net.now, 1, E), /no backup/);
  });
});
