import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY } from '../../../src/kernel/index.js';
import { bytes, msgOf, Net, type TestNode } from './harness.js';

function take(k: TestNode, proc: number, n: number): number[] {
  const types: number[] = [];
  for (let i = 0; i < n; i++)
    types.push(msgOf(k.result(proc, k.call(proc, { op: 'receive', src: ANY, nowait: true }))).type);
  return types;
}

function credits(k: TestNode, proc: number): number[] {
  return k.eventsOf(proc, 'credit').map((e) => e.n);
}

describe('kernel: post (local)', () => {
  it('credits come back batched at max(1, window/4), and flushed when the sender has nothing queued', () => {
    const net = new Net([1]);
    net.dc(1, { postWindow: 8 });
    const k = net.n(1);
    k.attach(1, 1, 101);
    k.attach(2, 1, 102);
    for (let i = 0; i < 5; i++) k.post(1, 102, i);
    assert.deepEqual(credits(k, 1), []);
    assert.deepEqual(take(k, 2, 1), [0]);
    assert.deepEqual(credits(k, 1), [], 'one consumed, below the batch of 2 and more queued');
    take(k, 2, 1);
    assert.deepEqual(credits(k, 1), [2]);
    take(k, 2, 2);
    assert.deepEqual(credits(k, 1), [2, 2]);
    take(k, 2, 1);
    assert.deepEqual(credits(k, 1), [2, 2, 1], 'last one flushed: nothing left queued');
    assert.ok(k.eventsOf(1, 'credit').every((e) => e.dst === 102));
  });

  it('receiveAhead takes only posts from the head, stops at a send or a notification, and returns credits', () => {
    const net = new Net([1]);
    net.dc(1, { postWindow: 8 });
    const k = net.n(1);
    k.attach(1, 1, 101);
    k.attach(2, 1, 102);
    k.attach(3, 1, 103);
    for (let i = 0; i < 3; i++) k.post(1, 102, i);
    const send = k.call(3, { op: 'send', dst: 102, type: 50, payload: new Uint8Array(0) });
    k.post(1, 102, 3);
    const ahead = k.kernel.receiveAhead(0, 2, ANY, 100);
    assert.deepEqual(
      ahead.map((m) => [m.source, m.type, m.kind]),
      [
        [101, 0, 'post'],
        [101, 1, 'post'],
        [101, 2, 'post'],
      ],
    );
    assert.equal(k.code(3, send), undefined, 'the send stays pending: only a real receive takes it');
    assert.deepEqual(take(k, 2, 2), [50, 3]);
    assert.equal(k.code(3, send), 'ok');
    // a pending notification stops it too (notifications first)
    k.post(1, 102, 4);
    k.call(3, { op: 'notify', dst: 102 });
    assert.deepEqual(k.kernel.receiveAhead(0, 2, ANY, 100), []);
    // limit and source filter
    k.post(3, 102, 9);
    assert.deepEqual(take(k, 2, 1), [-1], 'the notification');
    assert.deepEqual(
      k.kernel.receiveAhead(0, 2, 103, 100).map((m) => m.type),
      [9],
    );
    assert.deepEqual(k.kernel.receiveAhead(0, 2, ANY, 0), []);
    assert.deepEqual(take(k, 2, 1), [4]);
    assert.ok(credits(k, 1).reduce((a, b) => a + b, 0) === 5, 'every consumed post was credited back');
  });

  it('the source enforces the window: the excess is dropped with postFailed ENOSPC and logged', () => {
    const net = new Net([1]);
    net.dc(1, { postWindow: 4 });
    const k = net.n(1);
    k.attach(1, 1, 101);
    k.attach(2, 1, 102);
    for (let i = 0; i < 6; i++) k.post(1, 102, i);
    assert.deepEqual(k.eventsOf(1, 'postFailed'), [
      { ev: 'postFailed', dst: 102, code: 'ENOSPC', n: 1 },
      { ev: 'postFailed', dst: 102, code: 'ENOSPC', n: 1 },
    ]);
    assert.ok(k.warnings().some((l) => /window/.test(l.msg)));
    assert.deepEqual(take(k, 2, 4), [0, 1, 2, 3]);
    assert.equal(
      credits(k, 1).reduce((a, b) => a + b, 0),
      4,
    );
    k.post(1, 102, 9);
    assert.deepEqual(take(k, 2, 1), [9]);
  });

  it('a post to a blocked receiver is delivered at once and credited at once', () => {
    const net = new Net([1]);
    net.dc(1);
    const k = net.n(1);
    k.attach(1, 1, 101);
    k.attach(2, 1, 102);
    const r = k.call(2, { op: 'receive', src: ANY, nowait: false });
    k.post(1, 102, 33, bytes(3, 3));
    assert.deepEqual(msgOf(k.result(2, r)), { source: 101, type: 33, payload: bytes(3, 3), kind: 'post' });
    assert.deepEqual(credits(k, 1), [1]);
  });

  it('failures come back as postFailed: unbound, too big, to self, from a backup', () => {
    const net = new Net([1, 2]);
    net.dc(1, { maxPayload: 4 });
    net.connect();
    const k = net.n(1);
    k.attach(1, 1, 101);
    k.post(1, 150);
    k.post(1, 101);
    k.post(1, 150, 1, new Uint8Array(5));
    k.kernel.attach(net.now, 3, 1, 103, { pid: 3, kind: 'backup', primaryNode: 2 });
    k.post(3, 101);
    assert.deepEqual(
      k.eventsOf(1, 'postFailed').map((e) => e.code),
      ['ENOTBOUND', 'EINVAL', 'EMSGSIZE'],
    );
    assert.deepEqual(k.eventsOf(3, 'postFailed'), [{ ev: 'postFailed', dst: 101, code: 'EPERM', n: 1 }]);
  });

  it('posts queued to a destination that dies fail EDSTDIED (consumed ones are credited first)', () => {
    const net = new Net([1]);
    net.dc(1, { postWindow: 16 });
    const k = net.n(1);
    k.attach(1, 1, 101);
    k.attach(2, 1, 102);
    for (let i = 0; i < 5; i++) k.post(1, 102, i);
    take(k, 2, 1);
    k.kernel.detach(net.now, 2);
    assert.deepEqual(credits(k, 1), [1]);
    assert.deepEqual(k.eventsOf(1, 'postFailed'), [{ ev: 'postFailed', dst: 102, code: 'EDSTDIED', n: 4 }]);
  });
});

describe('kernel: post (between nodes)', () => {
  function twoNodes(window: number) {
    const net = new Net([1, 2]);
    net.dc(1, { postWindow: window });
    net.connect();
    net.n(1).attach(1, 1, 101);
    net.n(2).attach(2, 1, 201);
    net.run();
    return { net, a: net.n(1), b: net.n(2) };
  }

  it('remote posts arrive in order and credits return as frames, batched', () => {
    const { net, a, b } = twoNodes(8);
    for (let i = 0; i < 5; i++) a.post(1, 201, i);
    net.run();
    assert.deepEqual(take(b, 2, 5), [0, 1, 2, 3, 4]);
    net.run();
    assert.deepEqual(credits(a, 1), [2, 2, 1]);
    assert.equal(b.sent.filter((s) => s.frame.t === 'credit').length, 3);
  });

  it('the destination enforces the window too (a sender ignoring it gets postFailed ENOSPC)', () => {
    const { net, a, b } = twoNodes(2);
    // Forge frames as a misbehaving node 1 would send them, bypassing its source-side window.
    for (let i = 0; i < 3; i++) {
      b.kernel.fromNode(net.now, 1, {
        t: 'msg',
        dc: 1,
        src: 101,
        dst: 201,
        kind: 'post',
        op: 0,
        type: i,
        payload: bytes(),
      });
    }
    net.run();
    assert.equal(b.kernel.endpoints(1).find((r) => r.ep === 201)?.queued, 2);
    assert.deepEqual(a.eventsOf(1, 'postFailed'), [{ ev: 'postFailed', dst: 201, code: 'ENOSPC', n: 1 }]);
    assert.ok(b.warnings().some((l) => /window/.test(l.msg)));
  });

  it('remote destination death: consumed posts credited, queued ones failed EDSTDIED', () => {
    const { net, a, b } = twoNodes(16);
    for (let i = 0; i < 4; i++) a.post(1, 201, i);
    net.run();
    take(b, 2, 1);
    b.kernel.detach(net.now, 2);
    net.run();
    assert.deepEqual(credits(a, 1), [1]);
    assert.deepEqual(a.eventsOf(1, 'postFailed'), [{ ev: 'postFailed', dst: 201, code: 'EDSTDIED', n: 3 }]);
    a.post(1, 201);
    assert.deepEqual(a.eventsOf(1, 'postFailed').at(-1), {
      ev: 'postFailed',
      dst: 201,
      code: 'ENOTBOUND',
      n: 1,
    });
  });

  it('node down: outstanding posts fail ENOTCONN; posts already queued from the dead node are delivered', () => {
    const { net, a, b } = twoNodes(16);
    a.post(1, 201, 1);
    a.post(1, 201, 2);
    net.run();
    b.post(2, 101, 7);
    b.kernel.nodeDown(net.now, 1);
    a.kernel.nodeDown(net.now, 2);
    net.queue.length = 0;
    assert.deepEqual(a.eventsOf(1, 'postFailed'), [{ ev: 'postFailed', dst: 201, code: 'ENOTCONN', n: 2 }]);
    assert.deepEqual(b.eventsOf(2, 'postFailed'), [{ ev: 'postFailed', dst: 101, code: 'ENOTCONN', n: 1 }]);
    assert.deepEqual(take(b, 2, 2), [1, 2]);
    b.post(2, 101);
    assert.equal(b.eventsOf(2, 'postFailed').at(-1)?.code, 'ENOTCONN');
  });

  it('node down also fails posts to a destination already unbound whose failure reports died with the node', () => {
    // Found by the simulator (seed 2351): the unbind arrives, the postFail answers are lost in the crash.
    const { net, a, b } = twoNodes(16);
    for (let i = 0; i < 3; i++) a.post(1, 201, i);
    b.kernel.detach(net.now, 2); // queues the unbind behind the three posts
    for (let i = 0; i < 4; i++) net.step(); // posts reach node 2 (answered postFail), the unbind reaches node 1
    assert.ok(!a.kernel.endpoints(1).some((e) => e.ep === 201), 'node 1 forgot endpoint 201');
    net.crash(2); // the postFail frames die with node 2
    assert.deepEqual(a.eventsOf(1, 'postFailed'), [{ ev: 'postFailed', dst: 201, code: 'ENOTCONN', n: 3 }]);
  });
});
