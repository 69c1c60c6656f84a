import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY, NOTIFY_TYPE } from '../../../src/kernel/index.js';
import { bytes, msgOf, Net } from './harness.js';

/** Nodes 1 and 2 in DC 1; sessions 1,2 on node 1 (eps 101,102), sessions 3,4 on node 2 (eps 201,202). */
function pair() {
  const net = new Net([1, 2]);
  net.dc(1);
  net.connect();
  const a = net.n(1);
  const b = net.n(2);
  a.attach(1, 1, 101);
  a.attach(2, 1, 102);
  b.attach(3, 1, 201);
  b.attach(4, 1, 202);
  net.run();
  return { net, a, b };
}

describe('kernel: directory between nodes', () => {
  it('a DC created after the link came up asks the linked peers for their endpoints (syncReq)', () => {
    const net = new Net([1, 2]);
    net.connect(); // links up before any DC exists: the syncs carry nothing
    net.n(2).kernel.createDc({
      id: 1,
      name: 'late',
      nodes: [1, 2],
      maxPayload: 64,
      sysEndpoints: 8,
      postWindow: 4,
    });
    net.n(2).attach(3, 1, 201); // the bind broadcast is dropped at node 1, which has no DC 1 yet
    net.run();
    net.n(1).kernel.createDc({
      id: 1,
      name: 'late',
      nodes: [1, 2],
      maxPayload: 64,
      sysEndpoints: 8,
      postWindow: 4,
    });
    net.run();
    assert.deepEqual(
      net
        .n(1)
        .kernel.endpoints(1)
        .map((r) => [r.ep, r.node, r.kind]),
      [[201, 2, 'remote']],
    );
    assert.equal(net.violations.length, 0);
  });

  it('binds are broadcast and a sync on nodeUp lists every local endpoint', () => {
    const { net, a, b } = pair();
    const row = a.kernel.endpoints(1).find((r) => r.ep === 201)!;
    assert.equal(row.kind, 'remote');
    assert.equal(row.node, 2);
    assert.deepEqual(row.flags, ['REMOTE']);
    // A node that comes up later learns everything from the sync alone.
    const net2 = new Net([1, 2]);
    net2.dc(1);
    net2.n(1).attach(1, 1, 101);
    net2.n(2).attach(3, 1, 201);
    net2.run();
    assert.equal(net2.n(1).kernel.endpoints(1).length, 1, 'nothing learned before the link is up');
    net2.connect();
    assert.deepEqual(
      net2
        .n(1)
        .kernel.endpoints(1)
        .map((r) => [r.ep, r.node]),
      [
        [101, 1],
        [201, 2],
      ],
    );
    assert.equal(net.violations.length + net2.violations.length, 0);
    assert.equal(b.warnings().length, 0);
  });

  it('an unbind is broadcast: the peer forgets the endpoint', () => {
    const { net, a, b } = pair();
    b.kernel.detach(net.now, 4);
    net.run();
    assert.equal(
      a.kernel.endpoints(1).some((r) => r.ep === 202),
      false,
    );
    assert.equal(a.code(1, a.call(1, { op: 'send', dst: 202, type: 1, payload: bytes() })), 'ENOTBOUND');
  });

  it('a sync replaces what we knew: endpoints missing from it are unbound and their waiters woken', () => {
    const { net, a, b } = pair();
    const r = a.call(1, { op: 'receive', src: 202, nowait: false });
    // Node 2 forgets 202 while its frames to node 1 are lost, then the link comes back.
    b.kernel.detach(net.now, 4);
    net.dropBetween(1, 2);
    b.kernel.nodeUp(net.now, 1);
    net.run();
    assert.equal(a.code(1, r), 'ESRCDIED');
    assert.deepEqual(
      a.kernel.endpoints(1).map((x) => x.ep),
      [101, 102, 201],
    );
  });
});

describe('kernel: IPC between nodes', () => {
  it('remote send is a rendezvous: completes when the remote receiver takes it', () => {
    const { net, a, b } = pair();
    const s = a.call(1, { op: 'send', dst: 201, type: 8, payload: bytes(1) });
    net.run();
    assert.equal(a.code(1, s), undefined);
    assert.equal(b.kernel.endpoints(1).find((r) => r.ep === 201)?.queued, 1);
    const r = b.call(3, { op: 'receive', src: 101, nowait: false });
    assert.deepEqual(msgOf(b.result(3, r)), { source: 101, type: 8, payload: bytes(1), kind: 'send' });
    assert.equal(a.code(1, s), undefined, 'the ack is still in flight');
    net.run();
    assert.equal(a.code(1, s), 'ok');
    assert.equal(a.kernel.endpoints(1).find((x) => x.ep === 101)?.counters.rmtSent, 1);
  });

  it('replyRecv across nodes: the reply goes out unacknowledged and the server receives the next request', () => {
    const { net, a, b } = pair();
    const c = a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes(5) });
    net.run();
    const rq = b.call(3, { op: 'receiveRequest', nowait: true });
    assert.equal(msgOf(b.result(3, rq)).source, 101);
    const rr = b.call(3, { op: 'replyRecv', dst: 101, type: 2, payload: bytes(6), nowait: false });
    net.run();
    assert.deepEqual(msgOf(a.result(1, c)), { source: 201, type: 2, payload: bytes(6), kind: 'send' });
    assert.equal(b.code(3, rr), undefined, 'still waiting for the next request');
    assert.deepEqual(
      b.kernel.endpoints(1).find((r) => r.ep === 201)?.flags,
      ['RECEIVING'],
      'NOMIGRATE cleared',
    );
    const c2 = a.call(2, { op: 'sendrec', dst: 201, type: 3, payload: bytes() });
    net.run();
    assert.equal(msgOf(b.result(3, rr)).source, 102);
    assert.equal(a.code(2, c2), undefined);
    assert.equal(net.violations.length, 0);
    assert.equal(b.warnings().length, 0);
  });

  it('sendrec across nodes: request, NOMIGRATE at the server, reply, replyAck', () => {
    const { net, a, b } = pair();
    const c = a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes(5) });
    net.run();
    const rq = b.call(3, { op: 'receiveRequest', nowait: true });
    assert.deepEqual(msgOf(b.result(3, rq)), { source: 101, type: 1, payload: bytes(5), kind: 'request' });
    assert.deepEqual(b.kernel.endpoints(1).find((r) => r.ep === 201)?.flags, ['NOMIGRATE']);
    const rp = b.call(3, { op: 'reply', dst: 101, type: 2, payload: bytes(6) });
    assert.equal(b.code(3, rp), undefined, 'a remote reply completes on its replyAck');
    net.run();
    assert.deepEqual(msgOf(a.result(1, c)), { source: 201, type: 2, payload: bytes(6), kind: 'send' });
    assert.equal(b.code(3, rp), 'ok');
    assert.deepEqual(b.kernel.endpoints(1).find((r) => r.ep === 201)?.flags, []);
  });

  it('a remote request is not acked when taken, only errors are', () => {
    const { net, a, b } = pair();
    a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes() });
    net.run();
    b.call(3, { op: 'receive', src: ANY, nowait: true });
    net.run();
    assert.equal(b.sent.filter((s) => s.frame.t === 'ack').length, 0);
  });

  it('remote notify (coalesced at the destination) and remote wakeup', () => {
    const { net, a, b } = pair();
    net.now = 5;
    assert.equal(a.code(1, a.call(1, { op: 'notify', dst: 201 })), 'ok');
    net.now = 6;
    a.call(1, { op: 'notify', dst: 201 });
    net.run();
    assert.equal(b.kernel.endpoints(1).find((r) => r.ep === 201)?.pendingNotify, 1);
    const r = b.call(3, { op: 'receive', src: 101, nowait: true });
    assert.deepEqual(msgOf(b.result(3, r)), {
      source: 101,
      type: NOTIFY_TYPE,
      payload: bytes(),
      kind: 'notify',
      timestamp: 5,
    });
    const w = b.call(3, { op: 'receive', src: ANY, nowait: false });
    assert.equal(a.code(1, a.call(1, { op: 'wakeup', dst: 201 })), 'ok');
    net.run();
    assert.equal(b.code(3, w), 'EWOKENUP');
  });

  it('reply to a remote endpoint that is not waiting: ENOTWAITING', () => {
    const { b } = pair();
    assert.equal(b.code(3, b.call(3, { op: 'reply', dst: 101, type: 0, payload: bytes() })), 'ENOTWAITING');
  });

  it('EMSGSIZE and ENOTBOUND are decided before any frame leaves', () => {
    const net = new Net([1, 2]);
    net.dc(1, { maxPayload: 2 });
    net.connect();
    net.n(1).attach(1, 1, 101);
    net.n(2).attach(3, 1, 201);
    net.run();
    const a = net.n(1);
    const before = a.sent.length;
    assert.equal(
      a.code(1, a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes(1, 2, 3) })),
      'EMSGSIZE',
    );
    assert.equal(a.code(1, a.call(1, { op: 'send', dst: 299, type: 1, payload: bytes() })), 'ENOTBOUND');
    assert.equal(a.sent.length, before);
  });
});

describe('kernel: deadlock between two nodes', () => {
  it('caught where the cycle closes when the first send is already queued', () => {
    const { net, a, b } = pair();
    const s1 = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    net.run();
    assert.equal(b.code(3, b.call(3, { op: 'send', dst: 101, type: 1, payload: bytes() })), 'EDEADLK');
    assert.equal(a.code(1, s1), undefined);
  });

  it('crossing sends: the arriving message closes the cycle and is refused EDEADLK', () => {
    const { net, a, b } = pair();
    const s1 = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    const s2 = b.call(3, { op: 'sendrec', dst: 101, type: 1, payload: bytes() });
    net.run();
    assert.equal(a.code(1, s1), 'EDEADLK');
    assert.equal(b.code(3, s2), 'EDEADLK');
    assert.equal(a.kernel.endpoints(1).find((r) => r.ep === 101)?.queued, 0);
  });

  it('a server waiting for nothing is not a cycle: client -> server, server sends to a third endpoint', () => {
    const { net, a, b } = pair();
    a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes() });
    net.run();
    b.call(3, { op: 'receive', src: ANY, nowait: true });
    const s = b.call(3, { op: 'send', dst: 102, type: 1, payload: bytes() });
    net.run();
    assert.equal(b.code(3, s), undefined);
    // But sending back to the waiting client closes a cycle.
    const net2 = pair();
    net2.a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes() });
    net2.net.run();
    net2.b.call(3, { op: 'receive', src: ANY, nowait: true });
    assert.equal(
      net2.b.code(3, net2.b.call(3, { op: 'send', dst: 101, type: 1, payload: bytes() })),
      'EDEADLK',
    );
  });
});

describe('kernel: cancel between nodes', () => {
  it('cancel of a queued remote send withdraws it and completes with the reason', () => {
    const { net, a, b } = pair();
    const s = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    net.run();
    a.kernel.cancel(net.now, 1, s, 'ETIMEDOUT');
    assert.equal(a.code(1, s), undefined, 'waits for the remote verdict');
    net.run();
    assert.equal(a.code(1, s), 'ETIMEDOUT');
    assert.equal(b.kernel.endpoints(1).find((r) => r.ep === 201)?.queued, 0);
    assert.equal(b.code(3, b.call(3, { op: 'receive', src: ANY, nowait: true })), 'ETIMEDOUT');
  });

  it('cancel racing the take: the message was delivered, so the call completes ok', () => {
    const { net, a, b } = pair();
    const s = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    net.run();
    b.call(3, { op: 'receive', src: ANY, nowait: true }); // takes it: ack(null) is queued to node 1
    a.kernel.cancel(net.now, 1, s, 'EABORTED'); // cancel crosses the ack
    net.run();
    assert.equal(a.code(1, s), 'ok');
    assert.equal(net.violations.length, 0);
  });

  it('cancel of a sendrec after the server took it: ends at once there; the late reply gets ENOTWAITING', () => {
    const { net, a, b } = pair();
    const c = a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes() });
    net.run();
    b.call(3, { op: 'receiveRequest', nowait: true });
    a.kernel.cancel(net.now, 1, c, 'ETIMEDOUT');
    net.run();
    assert.equal(a.code(1, c), 'ETIMEDOUT');
    assert.equal(b.code(3, b.call(3, { op: 'reply', dst: 101, type: 1, payload: bytes() })), 'ENOTWAITING');
  });

  it('a reply that crosses the cancel wins: the client gets the reply', () => {
    const { net, a, b } = pair();
    const c = a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes() });
    net.run();
    b.call(3, { op: 'receiveRequest', nowait: true });
    const rp = b.call(3, { op: 'reply', dst: 101, type: 9, payload: bytes() });
    a.kernel.cancel(net.now, 1, c, 'ETIMEDOUT');
    net.run();
    assert.equal(msgOf(a.result(1, c)).type, 9);
    assert.equal(b.code(3, rp), 'ok');
    assert.equal(net.violations.length, 0);
  });
});

describe('kernel: death between nodes', () => {
  it('remote destination dies: queued sender gets EDSTDIED, client of a taken request ESRCDIED', () => {
    const { net, a, b } = pair();
    const s = a.call(1, { op: 'send', dst: 202, type: 1, payload: bytes() });
    const c = a.call(2, { op: 'sendrec', dst: 202, type: 2, payload: bytes() });
    net.run();
    b.call(4, { op: 'receive', src: 102, nowait: true });
    b.kernel.detach(net.now, 4);
    net.run();
    assert.equal(a.code(1, s), 'EDSTDIED');
    assert.equal(a.code(2, c), 'ESRCDIED');
  });

  it('a remote sender dies: its queued send is dropped at the destination without an ack', () => {
    const { net, a, b } = pair();
    a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    net.run();
    a.kernel.detach(net.now, 1);
    net.run();
    assert.equal(b.kernel.endpoints(1).find((r) => r.ep === 201)?.queued, 0);
    assert.equal(b.sent.filter((f) => f.frame.t === 'ack').length, 0);
  });

  it('a remote client dies after its request was taken: the reply gets ENOTWAITING', () => {
    const { net, a, b } = pair();
    a.call(1, { op: 'sendrec', dst: 201, type: 1, payload: bytes() });
    net.run();
    b.call(3, { op: 'receiveRequest', nowait: true });
    a.kernel.detach(net.now, 1);
    net.run();
    assert.deepEqual(b.kernel.endpoints(1).find((r) => r.ep === 201)?.flags, []);
    assert.equal(b.code(3, b.call(3, { op: 'reply', dst: 101, type: 1, payload: bytes() })), 'ENOTWAITING');
  });

  it('a receiver waiting on a remote source that dies gets ESRCDIED', () => {
    const { net, a, b } = pair();
    const r = a.call(1, { op: 'receive', src: 201, nowait: false });
    b.kernel.detach(net.now, 3);
    net.run();
    assert.equal(a.code(1, r), 'ESRCDIED');
  });
});

describe('kernel: node down', () => {
  it('fails what waits on the node with ENOTCONN and flags its endpoints until nodeUp + sync', () => {
    const { net, a, b } = pair();
    const s = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    const r = a.call(2, { op: 'receive', src: 202, nowait: false });
    net.run();
    b.call(3, { op: 'receive', src: ANY, nowait: false });
    net.crash(2);
    assert.equal(a.code(1, s), 'ENOTCONN');
    assert.equal(a.code(2, r), 'ENOTCONN');
    assert.deepEqual(a.kernel.endpoints(1).find((x) => x.ep === 201)?.flags, ['REMOTE', 'NODEDOWN']);
    assert.equal(a.code(1, a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() })), 'ENOTCONN');
    assert.equal(a.code(1, a.call(1, { op: 'notify', dst: 201 })), 'ENOTCONN');
    assert.equal(a.code(2, a.call(2, { op: 'receive', src: 201, nowait: false })), 'ENOTCONN');
    // The link comes back: sync clears the flags.
    a.kernel.nodeUp(net.now, 2);
    b.kernel.nodeUp(net.now, 1);
    net.run();
    assert.deepEqual(a.kernel.endpoints(1).find((x) => x.ep === 201)?.flags, ['REMOTE']);
    const s2 = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    net.run();
    net.run();
    assert.equal(a.code(1, s2), undefined);
    b.call(3, { op: 'receive', src: ANY, nowait: true });
    net.run();
    assert.equal(a.code(1, s2), 'ok');
  });

  it('a late nodeDown after the link came back is undone by the next nodeUp alone (it asks the peer for its list)', () => {
    const { net, a } = pair();
    net.run();
    // The membership reports node 2 down after the link is already up again (its sync was applied), then up:
    // node 2 itself saw nothing and sends no new sync of its own.
    a.kernel.nodeDown(net.now, 2);
    assert.deepEqual(a.kernel.endpoints(1).find((x) => x.ep === 201)?.flags, ['REMOTE', 'NODEDOWN']);
    a.kernel.nodeUp(net.now, 2);
    net.run();
    assert.deepEqual(a.kernel.endpoints(1).find((x) => x.ep === 201)?.flags, ['REMOTE']);
    const n = a.call(1, { op: 'notify', dst: 201 });
    net.run();
    assert.equal(a.code(1, n), 'ok');
  });

  it('messages queued from the dead node are dropped (sends), a reply waiting for its replyAck fails', () => {
    const { net, a, b } = pair();
    a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes() });
    const c = b.call(4, { op: 'sendrec', dst: 102, type: 1, payload: bytes() });
    net.run();
    a.call(2, { op: 'receiveRequest', nowait: true });
    const rp = a.call(2, { op: 'reply', dst: 202, type: 1, payload: bytes() });
    b.kernel.nodeDown(net.now, 1);
    a.kernel.nodeDown(net.now, 2);
    net.queue.length = 0;
    assert.equal(b.kernel.endpoints(1).find((x) => x.ep === 201)?.queued, 0);
    assert.equal(a.code(2, rp), 'ENOTCONN');
    assert.equal(b.code(4, c), 'ENOTCONN');
  });
});

describe('kernel: EMOVED bounce and replay', () => {
  it('a send to a stale location is bounced with the new node and replayed there', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1);
    net.connect();
    const [a, b, c] = [net.n(1), net.n(2), net.n(3)];
    a.attach(1, 1, 101);
    c.attach(5, 1, 301);
    net.run();
    // Node 1 is told (stale) that 301 lives at node 2; node 2 knows it is at node 3.
    a.kernel.fromNode(net.now, 2, { t: 'bind', dc: 1, ep: 301, kind: 'self', name: 'x', pid: 1 });
    assert.equal(a.kernel.endpoints(1).find((r) => r.ep === 301)?.node, 2);
    const s = a.call(1, { op: 'send', dst: 301, type: 4, payload: bytes(4) });
    a.post(1, 301, 5);
    net.run();
    const ack = b.sent.find((f) => f.frame.t === 'ack');
    assert.deepEqual(ack?.frame, { t: 'ack', dc: 1, src: 301, dst: 101, op: 1, code: 'EMOVED', node: 3 });
    assert.equal(a.kernel.endpoints(1).find((r) => r.ep === 301)?.node, 3);
    assert.equal(c.kernel.endpoints(1).find((r) => r.ep === 301)?.queued, 2);
    const m1 = msgOf(c.result(5, c.call(5, { op: 'receive', src: ANY, nowait: true })));
    const m2 = msgOf(c.result(5, c.call(5, { op: 'receive', src: ANY, nowait: true })));
    assert.deepEqual([m1.type, m2.type].sort(), [4, 5]);
    net.run();
    assert.equal(a.code(1, s), 'ok');
    assert.deepEqual(a.eventsOf(1, 'credit'), [{ ev: 'credit', dst: 301, n: 1 }]);
    assert.equal(a.eventsOf(1, 'postFailed').length, 0);
  });
});

describe('kernel: isolation of frames', () => {
  it('frames from a node outside the DC, or for an unknown DC, are dropped and logged', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1, { nodes: [1, 2] });
    net.dc(2, { nodes: [1, 3], name: 'other' });
    const a = net.n(1);
    a.attach(1, 1, 101);
    const r = a.call(1, { op: 'receive', src: ANY, nowait: false });
    a.kernel.fromNode(net.now, 3, {
      t: 'msg',
      dc: 1,
      src: 301,
      dst: 101,
      kind: 'send',
      op: 1,
      type: 1,
      payload: bytes(),
    });
    a.kernel.fromNode(net.now, 2, {
      t: 'msg',
      dc: 9,
      src: 201,
      dst: 101,
      kind: 'send',
      op: 1,
      type: 1,
      payload: bytes(),
    });
    a.kernel.fromNode(net.now, 3, { t: 'notify', dc: 1, src: 301, dst: 101, ts: 1 });
    assert.equal(a.code(1, r), undefined);
    assert.equal(a.warnings().length, 3);
    assert.equal(a.sent.length, 0);
  });

  it('a spoofed source (bound here, or known on another node) is refused EPERM', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1);
    net.connect();
    const a = net.n(1);
    a.attach(1, 1, 101);
    net.n(3).attach(5, 1, 301);
    net.run();
    const r = a.call(1, { op: 'receive', src: ANY, nowait: false });
    a.kernel.fromNode(net.now, 2, {
      t: 'msg',
      dc: 1,
      src: 101,
      dst: 101,
      kind: 'send',
      op: 7,
      type: 1,
      payload: bytes(),
    });
    a.kernel.fromNode(net.now, 2, {
      t: 'msg',
      dc: 1,
      src: 301,
      dst: 101,
      kind: 'send',
      op: 8,
      type: 1,
      payload: bytes(),
    });
    assert.equal(a.code(1, r), undefined);
    assert.deepEqual(
      a.sent.filter((f) => f.frame.t === 'ack').map((f) => (f.frame as { code: unknown }).code),
      ['EPERM', 'EPERM'],
    );
    assert.equal(a.warnings().length, 2);
  });

  it('an unknown source is learned as remote at the sending node; oversize and unbound are nacked', () => {
    const net = new Net([1, 2]);
    net.dc(1, { maxPayload: 4 });
    const a = net.n(1);
    a.attach(1, 1, 101);
    a.kernel.fromNode(net.now, 2, {
      t: 'msg',
      dc: 1,
      src: 250,
      dst: 101,
      kind: 'post',
      op: 0,
      type: 3,
      payload: bytes(),
    });
    assert.deepEqual(a.kernel.endpoints(1).find((r) => r.ep === 250)?.node, 2);
    a.kernel.nodeUp(net.now, 2);
    a.kernel.fromNode(net.now, 2, {
      t: 'msg',
      dc: 1,
      src: 250,
      dst: 101,
      kind: 'send',
      op: 3,
      type: 3,
      payload: new Uint8Array(5),
    });
    a.kernel.fromNode(net.now, 2, {
      t: 'msg',
      dc: 1,
      src: 250,
      dst: 199,
      kind: 'send',
      op: 4,
      type: 3,
      payload: bytes(),
    });
    assert.deepEqual(
      a.sent.filter((f) => f.frame.t === 'ack').map((f) => (f.frame as { code: unknown }).code),
      ['EMSGSIZE', 'ENOTBOUND'],
    );
  });

  it('malformed frames are logged, never thrown', () => {
    const net = new Net([1, 2]);
    net.dc(1);
    const a = net.n(1);
    a.attach(1, 1, 101);
    const junk: unknown[] = [
      null,
      { t: 'msg', dc: 1, src: 'x', dst: 101, kind: 'send', op: 1, type: 1, payload: bytes() },
      { t: 'msg', dc: 1, src: 201, dst: 101, kind: 'weird', op: 1, type: 1, payload: bytes() },
      { t: 'msg', dc: 1, src: 201, dst: 101, kind: 'send', op: 1, type: 1, payload: 'nope' },
      { t: 'sync', dc: 0, dcs: 'x' },
      { t: 'bind', dc: 1, ep: -4 },
      { t: 'nonsense', dc: 1 },
      { t: 'copyReq', dc: 1 },
      { t: 'postFail', dc: 1, src: 201 },
    ];
    for (const f of junk) {
      assert.doesNotThrow(() => a.kernel.fromNode(net.now, 2, f as never));
    }
    assert.ok(a.warnings().length >= junk.length - 2);
  });
});

describe('kernel: backup endpoints', () => {
  it('a backup routes like a remote entry to the primary node; its own IPC fails EPERM', () => {
    const { net, a, b } = pair();
    b.kernel.detach(net.now, 4);
    net.run();
    b.attach(4, 1, 202);
    net.run();
    a.kernel.attach(net.now, 9, 1, 202, { pid: 9, kind: 'backup', primaryNode: 2 });
    assert.equal(a.code(9, a.call(9, { op: 'receive', src: ANY, nowait: true })), 'EPERM');
    assert.equal(a.code(9, a.call(9, { op: 'grant', grant: 1, size: 4, access: 'r' })), 'ok');
    const s = a.call(1, { op: 'send', dst: 202, type: 1, payload: bytes() });
    net.run();
    assert.equal(b.kernel.endpoints(1).find((r) => r.ep === 202)?.queued, 1);
    b.call(4, { op: 'receive', src: ANY, nowait: true });
    net.run();
    assert.equal(a.code(1, s), 'ok');
    const row = a.kernel.endpoints(1).find((r) => r.ep === 202)!;
    assert.equal(row.kind, 'backup');
    assert.deepEqual(row.flags, ['REMOTE', 'BACKUP']);
    // Detaching the backup leaves the knowledge of the primary.
    a.kernel.detach(net.now, 9);
    assert.equal(a.kernel.endpoints(1).find((r) => r.ep === 202)?.kind, 'remote');
  });
});
