import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY, NOTIFY_TYPE } from '../../../src/kernel/index.js';
import type { DvsError } from '../../../src/protocol/errors.js';
import { bytes, msgOf, Net } from './harness.js';

/** One node, DC 1, sessions 1..n attached to endpoints 101..100+n. */
function oneNode(n = 3, over = {}) {
  const net = new Net([1]);
  net.dc(1, over);
  const k = net.n(1);
  for (let i = 1; i <= n; i++) k.attach(i, 1, 100 + i);
  return { net, k };
}

describe('kernel: DCs and binding', () => {
  it('creates, finds and removes DCs; rejects duplicates and bad configs', () => {
    const net = new Net([1]);
    const k = net.n(1).kernel;
    net.dc(1);
    assert.equal(k.findDc('dc1')?.id, 1);
    assert.equal(k.findDc(1)?.name, 'dc1');
    assert.throws(
      () => net.dc(1),
      (e: DvsError) => e.code === 'EEXIST',
    );
    assert.throws(
      () => net.dc(2, { name: 'dc1' }),
      (e: DvsError) => e.code === 'EEXIST',
    );
    assert.throws(
      () => net.dc(3, { maxPayload: 0 }),
      (e: DvsError) => e.code === 'EINVAL',
    );
    assert.throws(
      () => k.createDc({ ...k.findDc(1)!, id: 4, name: 'x', nodes: [2] }),
      (e: DvsError) => e.code === 'EINVAL',
    );
    net.n(1).attach(7, 1, 100, 4242);
    assert.deepEqual(k.removeDc(net.now, 1), [4242]);
    assert.equal(k.listDcs().length, 0);
    assert.throws(
      () => k.removeDc(net.now, 1),
      (e: DvsError) => e.code === 'ENOENT',
    );
  });

  it('reserve: WAITBIND until the right pid attaches; senders queue meanwhile', () => {
    const net = new Net([1]);
    net.dc(1);
    const k = net.n(1);
    k.kernel.reserve(net.now, 1, 200, 555, 'fs');
    assert.deepEqual(k.kernel.endpoints(1)[0]?.flags, ['WAITBIND']);
    k.attach(1, 1, 101);
    const s = k.call(1, { op: 'send', dst: 200, type: 9, payload: bytes(1) });
    assert.equal(k.code(1, s), undefined);
    assert.throws(
      () => k.attach(2, 1, 200, 999),
      (e: DvsError) => e.code === 'EBOUND',
    );
    k.attach(2, 1, 200, 555);
    const row = k.kernel.endpoints(1).find((r) => r.ep === 200)!;
    assert.equal(row.kind, 'local');
    assert.equal(row.name, 'fs');
    assert.deepEqual(row.flags, []);
    const r = k.call(2, { op: 'receive', src: ANY, nowait: true });
    assert.equal(msgOf(k.result(2, r)).type, 9);
    assert.equal(k.code(1, s), 'ok');
  });

  it('attach: EBOUND on a bound endpoint, ENOENT on an unknown DC, EINVAL twice', () => {
    const { net, k } = oneNode(1);
    assert.throws(
      () => k.attach(2, 1, 101),
      (e: DvsError) => e.code === 'EBOUND',
    );
    assert.throws(
      () => k.attach(2, 9, 101),
      (e: DvsError) => e.code === 'ENOENT',
    );
    assert.throws(
      () => k.attach(1, 1, 102),
      (e: DvsError) => e.code === 'EINVAL',
    );
    assert.throws(
      () => k.attach(3, 1, -1),
      (e: DvsError) => e.code === 'EINVAL',
    );
    assert.deepEqual(k.kernel.procEndpoint(1), { dc: 1, ep: 101 });
    assert.equal(net.violations.length, 0);
  });

  it('a call from a session that is not attached fails ENOTBOUND', () => {
    const { k } = oneNode(1);
    const c = k.call(9, { op: 'receive', src: ANY, nowait: true });
    assert.equal(k.code(9, c), 'ENOTBOUND');
  });
});

describe('kernel: send / receive', () => {
  it('send is a rendezvous: completes only when the receiver takes it', () => {
    const { k } = oneNode();
    const s = k.call(1, { op: 'send', dst: 102, type: 5, payload: bytes(1, 2) });
    assert.equal(k.code(1, s), undefined);
    assert.deepEqual(k.kernel.endpoints(1).find((r) => r.ep === 101)?.flags, ['SENDING']);
    const r = k.call(2, { op: 'receive', src: ANY, nowait: false });
    assert.deepEqual(msgOf(k.result(2, r)), { source: 101, type: 5, payload: bytes(1, 2), kind: 'send' });
    assert.equal(k.code(1, s), 'ok');
  });

  it('a blocked receiver gets the message at once and the sender completes', () => {
    const { k } = oneNode();
    const r = k.call(2, { op: 'receive', src: 101, nowait: false });
    assert.deepEqual(k.kernel.endpoints(1).find((x) => x.ep === 102)?.flags, ['RECEIVING']);
    const s = k.call(1, { op: 'send', dst: 102, type: 1, payload: bytes() });
    assert.equal(msgOf(k.result(2, r)).source, 101);
    assert.equal(k.code(1, s), 'ok');
  });

  it('receive(src) skips other senders and leaves them queued in order', () => {
    const { k } = oneNode(4);
    const s1 = k.call(1, { op: 'send', dst: 104, type: 1, payload: bytes() });
    const s2 = k.call(2, { op: 'send', dst: 104, type: 2, payload: bytes() });
    const s3 = k.call(3, { op: 'send', dst: 104, type: 3, payload: bytes() });
    const r1 = k.call(4, { op: 'receive', src: 102, nowait: true });
    assert.equal(msgOf(k.result(4, r1)).type, 2);
    assert.equal(k.code(2, s2), 'ok');
    assert.equal(k.code(1, s1), undefined);
    const r2 = k.call(4, { op: 'receive', src: ANY, nowait: true });
    const r3 = k.call(4, { op: 'receive', src: ANY, nowait: true });
    assert.equal(msgOf(k.result(4, r2)).type, 1);
    assert.equal(msgOf(k.result(4, r3)).type, 3);
    assert.equal(k.code(1, s1), 'ok');
    assert.equal(k.code(3, s3), 'ok');
  });

  it('per-pair FIFO holds across post, send and request', () => {
    const { k } = oneNode(2);
    k.post(1, 102, 10);
    k.post(1, 102, 11);
    const s = k.call(1, { op: 'send', dst: 102, type: 12, payload: bytes() });
    const types: number[] = [];
    for (let i = 0; i < 3; i++) {
      types.push(msgOf(k.result(2, k.call(2, { op: 'receive', src: 101, nowait: true }))).type);
    }
    assert.deepEqual(types, [10, 11, 12]);
    assert.equal(k.code(1, s), 'ok');
  });

  it('nowait with nothing available: ETIMEDOUT; unknown source: ENOTBOUND; self: EINVAL', () => {
    const { k } = oneNode(2);
    assert.equal(k.code(1, k.call(1, { op: 'receive', src: ANY, nowait: true })), 'ETIMEDOUT');
    assert.equal(k.code(1, k.call(1, { op: 'receive', src: 150, nowait: false })), 'ENOTBOUND');
    assert.equal(k.code(1, k.call(1, { op: 'receive', src: 101, nowait: false })), 'EINVAL');
  });

  it('send errors: self EINVAL, unbound ENOTBOUND, too big EMSGSIZE, second blocking call EBUSY', () => {
    const { k } = oneNode(2, { maxPayload: 8 });
    assert.equal(k.code(1, k.call(1, { op: 'send', dst: 101, type: 1, payload: bytes() })), 'EINVAL');
    assert.equal(k.code(1, k.call(1, { op: 'send', dst: 150, type: 1, payload: bytes() })), 'ENOTBOUND');
    const big = new Uint8Array(9);
    assert.equal(k.code(1, k.call(1, { op: 'send', dst: 102, type: 1, payload: big })), 'EMSGSIZE');
    assert.equal(k.code(1, k.call(1, { op: 'sendrec', dst: 102, type: 1, payload: big })), 'EMSGSIZE');
    const s = k.call(1, { op: 'send', dst: 102, type: 1, payload: bytes() });
    assert.equal(k.code(1, k.call(1, { op: 'receive', src: ANY, nowait: false })), 'EBUSY');
    assert.equal(k.code(1, k.call(1, { op: 'sendrec', dst: 102, type: 1, payload: bytes() })), 'EBUSY');
    // Non-blocking calls still run alongside.
    assert.equal(k.code(1, k.call(1, { op: 'notify', dst: 102 })), 'ok');
    assert.equal(k.code(1, s), undefined);
  });
});

describe('kernel: notify and wakeup', () => {
  it('pending notifications come before messages, lowest source first, coalesced with first timestamp', () => {
    const { net, k } = oneNode(4);
    const s = k.call(1, { op: 'send', dst: 104, type: 7, payload: bytes() });
    net.now = 10;
    k.call(3, { op: 'notify', dst: 104 });
    net.now = 20;
    k.call(2, { op: 'notify', dst: 104 });
    net.now = 30;
    k.call(3, { op: 'notify', dst: 104 });
    assert.equal(k.kernel.endpoints(1).find((r) => r.ep === 104)?.pendingNotify, 2);
    const a = msgOf(k.result(4, k.call(4, { op: 'receive', src: ANY, nowait: true })));
    const b = msgOf(k.result(4, k.call(4, { op: 'receive', src: ANY, nowait: true })));
    const c = msgOf(k.result(4, k.call(4, { op: 'receive', src: ANY, nowait: true })));
    assert.deepEqual(a, { source: 102, type: NOTIFY_TYPE, payload: bytes(), kind: 'notify', timestamp: 20 });
    assert.deepEqual(b, { source: 103, type: NOTIFY_TYPE, payload: bytes(), kind: 'notify', timestamp: 10 });
    assert.equal(c.kind, 'send');
    assert.equal(k.code(1, s), 'ok');
  });

  it('notify to a matching blocked receiver delivers at once; receive(src) picks its notification', () => {
    const { net, k } = oneNode(3);
    const r = k.call(3, { op: 'receive', src: 102, nowait: false });
    k.call(1, { op: 'notify', dst: 103 });
    assert.equal(k.code(3, r), undefined);
    net.now = 77;
    k.call(2, { op: 'notify', dst: 103 });
    assert.deepEqual(msgOf(k.result(3, r)), {
      source: 102,
      type: NOTIFY_TYPE,
      payload: bytes(),
      kind: 'notify',
      timestamp: 77,
    });
    const r2 = k.call(3, { op: 'receive', src: 101, nowait: true });
    assert.equal(msgOf(k.result(3, r2)).source, 101);
  });

  it('notify to an unbound endpoint fails ENOTBOUND', () => {
    const { k } = oneNode(1);
    assert.equal(k.code(1, k.call(1, { op: 'notify', dst: 150 })), 'ENOTBOUND');
  });

  it('wakeup: a blocked receive(ANY) gets EWOKENUP; otherwise the next receive(ANY) does', () => {
    const { k } = oneNode(2);
    const r = k.call(2, { op: 'receive', src: ANY, nowait: false });
    assert.equal(k.code(1, k.call(1, { op: 'wakeup', dst: 102 })), 'ok');
    assert.equal(k.code(2, r), 'EWOKENUP');
    k.call(1, { op: 'wakeup', dst: 102 });
    assert.deepEqual(k.kernel.endpoints(1).find((x) => x.ep === 102)?.flags, ['WOKENUP']);
    // A receive from a specific source is not woken.
    assert.equal(k.code(2, k.call(2, { op: 'receive', src: 101, nowait: true })), 'ETIMEDOUT');
    assert.equal(k.code(2, k.call(2, { op: 'receive', src: ANY, nowait: false })), 'EWOKENUP');
    assert.equal(k.code(2, k.call(2, { op: 'receive', src: ANY, nowait: true })), 'ETIMEDOUT');
  });
});

describe('kernel: sendrec / receiveRequest / reply', () => {
  it('sendrec waits for the reply; the server is NOMIGRATE and the client ATOMIC until it answers', () => {
    const { k } = oneNode(2);
    const c = k.call(1, { op: 'sendrec', dst: 102, type: 3, payload: bytes(9) });
    const rq = k.call(2, { op: 'receiveRequest', nowait: false });
    assert.deepEqual(msgOf(k.result(2, rq)), { source: 101, type: 3, payload: bytes(9), kind: 'request' });
    assert.equal(k.code(1, c), undefined);
    const rows = k.kernel.endpoints(1);
    assert.deepEqual(rows.find((r) => r.ep === 101)?.flags, ['ATOMIC']);
    assert.deepEqual(rows.find((r) => r.ep === 102)?.flags, ['NOMIGRATE']);
    assert.equal(k.code(2, k.call(2, { op: 'reply', dst: 101, type: 4, payload: bytes(8) })), 'ok');
    assert.deepEqual(msgOf(k.result(1, c)), { source: 102, type: 4, payload: bytes(8), kind: 'send' });
    assert.deepEqual(k.kernel.endpoints(1).find((r) => r.ep === 102)?.flags, []);
    // Replying twice: nobody waits any more.
    assert.equal(k.code(2, k.call(2, { op: 'reply', dst: 101, type: 4, payload: bytes() })), 'ENOTWAITING');
  });

  it('replyRecv answers one client and takes the next request in the same call', () => {
    const { k } = oneNode(3);
    const c1 = k.call(1, { op: 'sendrec', dst: 103, type: 1, payload: bytes(1) });
    const rq = k.call(3, { op: 'receiveRequest', nowait: false });
    assert.equal(msgOf(k.result(3, rq)).source, 101);
    // nothing else queued yet: the replyRecv blocks after replying
    const rr = k.call(3, { op: 'replyRecv', dst: 101, type: 10, payload: bytes(7), nowait: false });
    assert.deepEqual(msgOf(k.result(1, c1)), { source: 103, type: 10, payload: bytes(7), kind: 'send' });
    assert.equal(k.code(3, rr), undefined);
    assert.deepEqual(k.kernel.endpoints(1).find((r) => r.ep === 103)?.flags, ['RECEIVING']);
    const c2 = k.call(2, { op: 'sendrec', dst: 103, type: 2, payload: bytes(2) });
    assert.deepEqual(msgOf(k.result(3, rr)), { source: 102, type: 2, payload: bytes(2), kind: 'request' });
    // a failed reply completes the call with its error and receives nothing
    const bad = k.call(3, { op: 'replyRecv', dst: 101, type: 0, payload: bytes(), nowait: false });
    assert.equal(k.code(3, bad), 'ENOTWAITING');
    assert.deepEqual(k.kernel.endpoints(1).find((r) => r.ep === 103)?.flags, ['NOMIGRATE']);
    // nowait: reply, then ETIMEDOUT when no request is queued
    const nw = k.call(3, { op: 'replyRecv', dst: 102, type: 20, payload: bytes(), nowait: true });
    assert.equal(msgOf(k.result(2, c2)).type, 20);
    assert.equal(k.code(3, nw), 'ETIMEDOUT');
    // exclusive like any blocking call
    k.call(3, { op: 'receive', src: ANY, nowait: false });
    assert.equal(
      k.code(3, k.call(3, { op: 'replyRecv', dst: 101, type: 0, payload: bytes(), nowait: false })),
      'EBUSY',
    );
  });

  it('reply to an endpoint not waiting for us: ENOTWAITING (never served, or waiting for another server)', () => {
    const { k } = oneNode(3);
    assert.equal(k.code(2, k.call(2, { op: 'reply', dst: 101, type: 0, payload: bytes() })), 'ENOTWAITING');
    k.call(1, { op: 'sendrec', dst: 103, type: 1, payload: bytes() });
    k.call(3, { op: 'receive', src: ANY, nowait: true });
    assert.equal(k.code(2, k.call(2, { op: 'reply', dst: 101, type: 0, payload: bytes() })), 'ENOTWAITING');
    assert.equal(k.code(3, k.call(3, { op: 'reply', dst: 101, type: 0, payload: bytes() })), 'ok');
  });

  it('receiveRequest: a request may not overtake the same sender earlier post; other senders may', () => {
    const { k } = oneNode(3);
    k.post(1, 103, 50);
    const c1 = k.call(1, { op: 'sendrec', dst: 103, type: 51, payload: bytes() });
    const c2 = k.call(2, { op: 'sendrec', dst: 103, type: 52, payload: bytes() });
    const r = k.call(3, { op: 'receiveRequest', nowait: true });
    assert.equal(msgOf(k.result(3, r)).type, 52);
    assert.equal(k.code(3, k.call(3, { op: 'receiveRequest', nowait: true })), 'ETIMEDOUT');
    assert.equal(msgOf(k.result(3, k.call(3, { op: 'receive', src: ANY, nowait: true }))).type, 50);
    assert.equal(msgOf(k.result(3, k.call(3, { op: 'receiveRequest', nowait: true }))).type, 51);
    assert.equal(k.code(1, c1), undefined);
    assert.equal(k.code(2, c2), undefined);
  });

  it('a blocked receiveRequest is not handed a request queued behind the sender post, nor notifications', () => {
    const { k } = oneNode(2);
    k.post(1, 102, 60);
    const r = k.call(2, { op: 'receiveRequest', nowait: false });
    k.call(1, { op: 'notify', dst: 102 });
    k.call(1, { op: 'sendrec', dst: 102, type: 61, payload: bytes() });
    assert.equal(k.code(2, r), undefined);
    assert.equal(k.kernel.endpoints(1).find((x) => x.ep === 102)?.queued, 2);
  });
});

describe('kernel: deadlock detection (local)', () => {
  it('a send closing a cycle fails EDEADLK instead of blocking', () => {
    const { k } = oneNode(3);
    const a = k.call(1, { op: 'send', dst: 102, type: 1, payload: bytes() });
    const b = k.call(2, { op: 'send', dst: 103, type: 1, payload: bytes() });
    assert.equal(k.code(3, k.call(3, { op: 'send', dst: 101, type: 1, payload: bytes() })), 'EDEADLK');
    assert.equal(k.code(1, a), undefined);
    assert.equal(k.code(2, b), undefined);
  });

  it('waiting for a reply is a wait-for edge too', () => {
    const { k } = oneNode(2);
    k.call(1, { op: 'sendrec', dst: 102, type: 1, payload: bytes() });
    k.call(2, { op: 'receiveRequest', nowait: true });
    assert.equal(k.code(2, k.call(2, { op: 'send', dst: 101, type: 1, payload: bytes() })), 'EDEADLK');
  });

  it('no false positive when the destination will receive', () => {
    const { k } = oneNode(2);
    const a = k.call(1, { op: 'send', dst: 102, type: 1, payload: bytes() });
    const r = k.call(2, { op: 'receive', src: ANY, nowait: false });
    assert.equal(k.code(2, r), 'ok');
    assert.equal(k.code(1, a), 'ok');
  });
});

describe('kernel: cancel (local)', () => {
  it('a queued send is withdrawn; a blocked receive ends; a waiting client ends and the late reply gets ENOTWAITING', () => {
    const { k, net } = oneNode(3);
    const s = k.call(1, { op: 'send', dst: 102, type: 1, payload: bytes() });
    k.kernel.cancel(net.now, 1, s, 'ETIMEDOUT');
    assert.equal(k.code(1, s), 'ETIMEDOUT');
    assert.equal(k.code(2, k.call(2, { op: 'receive', src: ANY, nowait: true })), 'ETIMEDOUT');
    const r = k.call(2, { op: 'receive', src: ANY, nowait: false });
    k.kernel.cancel(net.now, 2, r, 'EABORTED');
    assert.equal(k.code(2, r), 'EABORTED');
    const c = k.call(3, { op: 'sendrec', dst: 102, type: 1, payload: bytes() });
    k.call(2, { op: 'receiveRequest', nowait: true });
    k.kernel.cancel(net.now, 3, c, 'ETIMEDOUT');
    assert.equal(k.code(3, c), 'ETIMEDOUT');
    assert.equal(k.code(2, k.call(2, { op: 'reply', dst: 103, type: 1, payload: bytes() })), 'ENOTWAITING');
    // Cancelling something already completed does nothing.
    k.kernel.cancel(net.now, 3, c, 'EABORTED');
    assert.equal(net.violations.length, 0);
  });
});

describe('kernel: death', () => {
  it('detach: queued senders get EDSTDIED, specific receivers and waiting clients ESRCDIED', () => {
    const { k, net } = oneNode(5);
    const s = k.call(1, { op: 'send', dst: 105, type: 1, payload: bytes() });
    const r = k.call(2, { op: 'receive', src: 105, nowait: false });
    const c = k.call(3, { op: 'sendrec', dst: 105, type: 1, payload: bytes() });
    const any = k.call(4, { op: 'receive', src: ANY, nowait: false });
    // 105 takes the request from 103 (after 101's send, which it leaves queued by asking for 103).
    assert.equal(msgOf(k.result(5, k.call(5, { op: 'receive', src: 103, nowait: true }))).kind, 'request');
    const own = k.call(5, { op: 'receive', src: 104, nowait: false });
    k.kernel.detach(net.now, 5);
    assert.equal(k.code(1, s), 'EDSTDIED');
    assert.equal(k.code(2, r), 'ESRCDIED');
    assert.equal(k.code(3, c), 'ESRCDIED');
    assert.equal(k.code(4, any), undefined);
    assert.equal(k.code(5, own), undefined, 'a detached session gets no completions');
    assert.equal(
      k.kernel.endpoints(1).some((x) => x.ep === 105),
      false,
    );
    assert.equal(k.kernel.procEndpoint(5), undefined);
  });

  it('a dead sender: its queued send is withdrawn, its queued posts are still delivered', () => {
    const { k, net } = oneNode(2);
    k.post(1, 102, 70);
    k.call(1, { op: 'send', dst: 102, type: 71, payload: bytes() });
    k.kernel.detach(net.now, 1);
    assert.equal(k.kernel.endpoints(1).find((x) => x.ep === 102)?.queued, 1);
    assert.equal(msgOf(k.result(2, k.call(2, { op: 'receive', src: ANY, nowait: true }))).type, 70);
    assert.equal(k.code(2, k.call(2, { op: 'receive', src: ANY, nowait: true })), 'ETIMEDOUT');
  });

  it('unbind by an operator ends the session own calls with ENOTBOUND and frees the endpoint', () => {
    const { k, net } = oneNode(2);
    const r = k.call(2, { op: 'receive', src: ANY, nowait: false });
    k.kernel.unbind(net.now, 1, 102);
    assert.equal(k.code(2, r), 'ENOTBOUND');
    assert.equal(k.code(2, k.call(2, { op: 'receive', src: ANY, nowait: true })), 'ENOTBOUND');
    k.attach(3, 1, 102);
    assert.throws(
      () => k.kernel.unbind(net.now, 1, 150),
      (e: DvsError) => e.code === 'ENOTBOUND',
    );
  });
});

describe('kernel: introspection', () => {
  it('endpoint rows carry counters, sendTo and getFrom', () => {
    const { k } = oneNode(2);
    k.call(1, { op: 'send', dst: 102, type: 1, payload: bytes() });
    k.call(1, { op: 'notify', dst: 102 });
    let rows = k.kernel.endpoints(1);
    assert.equal(rows.find((r) => r.ep === 101)?.sendTo, 102);
    assert.equal(rows.find((r) => r.ep === 102)?.queued, 1);
    k.call(2, { op: 'receive', src: ANY, nowait: true });
    k.call(2, { op: 'receive', src: ANY, nowait: true });
    k.call(2, { op: 'receive', src: 101, nowait: false });
    rows = k.kernel.endpoints(1);
    const r2 = rows.find((r) => r.ep === 102)!;
    assert.equal(r2.getFrom, 101);
    assert.deepEqual(r2.counters, { lclSent: 0, rmtSent: 0, received: 2, notifies: 1, copyBytes: 0 });
    assert.equal(rows.find((r) => r.ep === 101)?.counters.lclSent, 1);
  });
});
