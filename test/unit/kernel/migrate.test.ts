/**
 * Kernel side of live migration (KernelMigrationApi): the endpoint moves from node S to node D with its
 * queued messages, pending notifications and posts; nothing is lost, failed or duplicated, and a call in
 * progress is never split.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Received } from '../../../src/kernel/index.js';
import { ANY } from '../../../src/kernel/index.js';
import { bytes, msgOf, Net } from './harness.js';

const S = 1;
const D = 2;
const X = 3;
/** The migrating server endpoint, its process at S (session 1) and its new process at D (session 20). */
const E = 100;

/**
 * Nodes 1 (S), 2 (D), 3 (X) in DC 1. E is bound at S; clients: 110 at S (session 2), 210 at D (session 3),
 * 310 at X (session 4).
 */
function three() {
  const net = new Net([S, D, X]);
  net.dc(1);
  net.connect();
  const [s, d, x] = [net.n(S), net.n(D), net.n(X)];
  s.attach(1, 1, E);
  s.attach(2, 1, 110);
  d.attach(3, 1, 210);
  x.attach(4, 1, 310);
  net.run();
  return { net, s, d, x };
}

/** Move E from S to D: reserve at D, commit at S, attach session 20 at D, announce. */
function migrate(net: Net) {
  const [s, d] = [net.n(S), net.n(D)];
  d.kernel.migrateIn(net.now, 1, E, 20, { notes: [], wokenUp: false });
  const carry = s.kernel.migrateOut(net.now, 1, E, D);
  d.attach(20, 1, E, 20);
  d.kernel.migrateActivate(net.now, 1, E);
  net.run();
  return carry;
}

/** Receive everything queued for session `proc` (nowait), in order. */
function drain(node: ReturnType<Net['n']>, proc: number): Received[] {
  const out: Received[] = [];
  for (;;) {
    const id = node.call(proc, { op: 'receive', src: ANY, nowait: true });
    const r = node.result(proc, id);
    if (r === undefined || !r.ok || r.msg === undefined) return out;
    out.push(r.msg);
  }
}

describe('kernel: migration', () => {
  it('queued sends from the source node, the destination node and a third node all reach the new location', () => {
    const { net, s, d, x } = three();
    const fromS = s.call(2, { op: 'send', dst: E, type: 1, payload: bytes(1) });
    const fromD = d.call(3, { op: 'send', dst: E, type: 2, payload: bytes(2) });
    const fromX = x.call(4, { op: 'send', dst: E, type: 3, payload: bytes(3) });
    net.run();
    assert.equal(s.kernel.endpoints(1).find((e) => e.ep === E)?.queued, 3);
    migrate(net);
    assert.deepEqual(
      d.kernel.endpoints(1).find((e) => e.ep === E)?.flags,
      [],
      'E is an ordinary local endpoint at D',
    );
    assert.deepEqual(s.kernel.endpoints(1).find((e) => e.ep === E)?.flags, ['REMOTE']);
    const got = drain(d, 20);
    assert.deepEqual(got.map((m) => m.type).sort(), [1, 2, 3]);
    net.run();
    assert.equal(s.code(2, fromS), 'ok');
    assert.equal(d.code(3, fromD), 'ok');
    assert.equal(x.code(4, fromX), 'ok');
    assert.deepEqual(net.violations, []);
    // X's queued send was bounced by S and replayed by X; D's own send came back to D.
    assert.equal(s.kernel.stats.migrationsOut, 1);
    assert.equal(d.kernel.stats.migrationsIn, 1);
    assert.equal(s.kernel.stats.emovedBounces, 2);
    assert.equal(x.kernel.stats.emovedReplays + d.kernel.stats.emovedReplays, 2);
  });

  it('a request queued at the source is answered from the destination', () => {
    const { net, s, d, x } = three();
    const c = x.call(4, { op: 'sendrec', dst: E, type: 7, payload: bytes(7) });
    net.run();
    migrate(net);
    const rq = d.call(20, { op: 'receiveRequest', nowait: true });
    assert.equal(msgOf(d.result(20, rq)).source, 310);
    const rp = d.call(20, { op: 'reply', dst: 310, type: 8, payload: bytes(8) });
    net.run();
    assert.equal(d.code(20, rp), 'ok');
    assert.equal(msgOf(x.result(4, c)).type, 8);
    assert.equal(s.warnings().length, 0);
  });

  it('a sender that still believes the old location is bounced and replays at the new one', () => {
    const { net, s, d, x } = three();
    d.kernel.migrateIn(net.now, 1, E, 20, { notes: [], wokenUp: false });
    s.kernel.migrateOut(net.now, 1, E, D);
    d.attach(20, 1, E, 20);
    // Not announced yet: X sends to S, S bounces with EMOVED(D), X replays at D.
    const c = x.call(4, { op: 'send', dst: E, type: 5, payload: bytes(5) });
    net.run();
    assert.equal(x.code(4, c), undefined);
    assert.deepEqual(
      drain(d, 20).map((m) => m.type),
      [5],
    );
    net.run();
    assert.equal(x.code(4, c), 'ok');
    d.kernel.migrateActivate(net.now, 1, E);
    net.run();
    assert.equal(x.kernel.endpoints(1).find((e) => e.ep === E)?.node, D);
  });

  it('posts queued or in flight move with the endpoint, in order per sender, and credits flow back', () => {
    const { net, s, d, x } = three();
    for (let i = 0; i < 5; i++) x.post(4, E, 10 + i);
    for (let i = 0; i < 3; i++) s.post(2, E, 20 + i);
    net.run();
    migrate(net);
    for (let i = 5; i < 8; i++) x.post(4, E, 10 + i);
    net.run();
    const got = drain(d, 20);
    net.run();
    assert.deepEqual(
      got.filter((m) => m.source === 310).map((m) => m.type),
      [10, 11, 12, 13, 14, 15, 16, 17],
    );
    assert.deepEqual(
      got.filter((m) => m.source === 110).map((m) => m.type),
      [20, 21, 22],
    );
    // Every post credited back: no window slot leaks on either sender.
    const credited = (n: ReturnType<Net['n']>, proc: number) =>
      n.eventsOf(proc, 'credit').reduce((a, ev) => a + ev.n, 0);
    assert.equal(credited(x, 4), 8);
    assert.equal(credited(s, 2), 3);
    assert.equal(x.eventsOf(4, 'postFailed').length, 0);
    assert.equal(s.eventsOf(2, 'postFailed').length, 0);
  });

  it('pending notifications are carried, and a notify that reaches the old node is forwarded', () => {
    const { net, s, d, x } = three();
    x.call(4, { op: 'notify', dst: E });
    net.run();
    d.kernel.migrateIn(net.now, 1, E, 20, { notes: [], wokenUp: false });
    const carry = s.kernel.migrateOut(net.now, 1, E, D);
    assert.deepEqual(
      carry.notes.map(([src]) => src),
      [310],
    );
    d.attach(20, 1, E, 20);
    d.kernel.migrateActivate(net.now, 1, E);
    // A notify from node 2's client sent to S before the announcement arrives: forwarded to D.
    s.call(2, { op: 'notify', dst: E });
    net.run();
    const got = drain(d, 20);
    assert.deepEqual(
      got.map((m) => m.source),
      [110],
    );
  });

  it('carried notifications are pending at the destination before the new process attaches', () => {
    const { net, s, d } = three();
    // The daemon passes what migrateOut returned to migrateIn (here in the other order, as a rollback-free
    // test of the carry alone).
    d.kernel.migrateIn(net.now, 1, E, 20, { notes: [[110, 42]], wokenUp: false });
    s.kernel.migrateOut(net.now, 1, E, D);
    d.attach(20, 1, E, 20);
    const r = d.call(20, { op: 'receive', src: ANY, nowait: true });
    const m = msgOf(d.result(20, r));
    assert.equal(m.source, 110);
    assert.equal(m.timestamp, 42);
  });

  it('refuses while the endpoint is inside a sendrec or owes a reply (a call is never split)', () => {
    const { net, s, d, x } = three();
    // E as a client, blocked in sendrec to 310.
    s.call(1, { op: 'sendrec', dst: 310, type: 1, payload: bytes() });
    net.run();
    d.kernel.migrateIn(net.now, 1, E, 20, { notes: [], wokenUp: false });
    assert.throws(() => s.kernel.migrateOut(net.now, 1, E, D), /EBUSY|inside a sendrec/);
    d.kernel.migrateAbort(net.now, 1, E, S);
    // 310 takes and answers it; then E serves a request from X and has not replied.
    const rq = x.call(4, { op: 'receiveRequest', nowait: true });
    assert.equal(msgOf(x.result(4, rq)).source, E);
    x.call(4, { op: 'reply', dst: E, type: 2, payload: bytes() });
    net.run();
    x.call(4, { op: 'sendrec', dst: E, type: 3, payload: bytes() });
    net.run();
    s.call(1, { op: 'receiveRequest', nowait: true });
    d.kernel.migrateIn(net.now, 1, E, 20, { notes: [], wokenUp: false });
    assert.throws(
      () => s.kernel.migrateOut(net.now, 1, E, D),
      (e: unknown) => (e as { code?: string }).code === 'EBUSY',
    );
    d.kernel.migrateAbort(net.now, 1, E, S);
    // Still bound at S, serving (the prototype's NOMIGRATE flag).
    assert.deepEqual(s.kernel.endpoints(1).find((e) => e.ep === E)?.flags, ['NOMIGRATE']);
  });

  it('an abort at the destination sends what queued there back to the source', () => {
    const { net, s, d } = three();
    d.kernel.migrateIn(net.now, 1, E, 20, { notes: [], wokenUp: false });
    // A local client at D now sees E as local (reserved) and queues there.
    const c = d.call(3, { op: 'send', dst: E, type: 9, payload: bytes(9) });
    net.run();
    d.kernel.migrateAbort(net.now, 1, E, S);
    net.run();
    assert.equal(d.kernel.endpoints(1).find((e) => e.ep === E)?.node, S);
    assert.deepEqual(
      drain(s, 1).map((m) => m.type),
      [9],
    );
    net.run();
    assert.equal(d.code(3, c), 'ok');
    assert.deepEqual(net.violations, []);
  });

  it('bad targets are refused and leave the endpoint untouched', () => {
    const { net, s } = three();
    assert.throws(() => s.kernel.migrateOut(net.now, 1, E, S), /not another node/);
    assert.throws(() => s.kernel.migrateOut(net.now, 1, E, 9), /not another node/);
    assert.throws(() => s.kernel.migrateOut(net.now, 1, 555, D), /not bound/);
    assert.deepEqual(s.kernel.endpoints(1).find((e) => e.ep === E)?.flags, []);
  });
});
