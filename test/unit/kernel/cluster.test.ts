/**
 * Kernel additions for the cluster store: updateDc, learnRemote/forgetRemote (the directory as a second
 * source of what bind/unbind frames carry), idempotent nodeUp/nodeDown, and the onLocalBind/onLocalUnbind
 * hooks the daemon uses to write the directory.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ANY, type DcId, type Endpoint, Kernel, type KernelIO } from '../../../src/kernel/index.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { bytes, msgOf, Net } from './harness.js';

const rows = (net: Net, node: number, dc = 1) =>
  net
    .n(node)
    .kernel.endpoints(dc)
    .map((r) => [r.ep, r.node, r.kind]);

/** Nodes 1 and 2 linked, DC 1 on both, endpoint 201 bound on node 2 but its bind frame lost on the way. */
function unannounced() {
  const net = new Net([1, 2]);
  net.dc(1);
  net.connect();
  net.n(2).attach(3, 1, 201);
  assert.ok(net.dropBetween(1, 2) > 0, 'the bind frame was queued and is dropped');
  assert.deepEqual(rows(net, 1), []);
  return net;
}

describe('kernel: learnRemote / forgetRemote', () => {
  it('a location learned from the directory alone is enough for a sendrec round trip', () => {
    const net = unannounced();
    const [a, b] = [net.n(1), net.n(2)];
    a.attach(1, 1, 101);
    net.run();
    a.kernel.learnRemote(net.now, 1, 201, 2, { kind: 'self', name: 'srv', pid: 3 });
    assert.deepEqual(rows(net, 1), [
      [101, 1, 'self'],
      [201, 2, 'remote'],
    ]);
    assert.equal(a.kernel.endpoints(1).find((r) => r.ep === 201)?.name, 'srv');
    const req = a.call(1, { op: 'sendrec', dst: 201, type: 7, payload: bytes(1, 2) });
    const srv = b.call(3, { op: 'receiveRequest', nowait: false });
    net.run();
    assert.equal(msgOf(b.result(3, srv)).source, 101);
    b.call(3, { op: 'reply', dst: 101, type: 8, payload: bytes(9) });
    net.run();
    const got = msgOf(a.result(1, req));
    assert.equal(got.type, 8);
    assert.deepEqual([...got.payload], [9]);
    assert.deepEqual(net.violations, []);
  });

  it('is idempotent, and agrees with the bind frame that arrives later', () => {
    const net = new Net([1, 2]);
    net.dc(1);
    net.connect();
    const a = net.n(1);
    a.kernel.learnRemote(net.now, 1, 201, 2, { kind: 'self', name: 'x', pid: 3 });
    a.kernel.learnRemote(net.now, 1, 201, 2, { kind: 'self', name: 'x', pid: 3 });
    net.n(2).attach(3, 1, 201);
    net.run();
    assert.deepEqual(rows(net, 1), [[201, 2, 'remote']]);
    assert.deepEqual(a.warnings(), []);
  });

  it('forgetRemote is ignored while the link to the node is up (its own frames are authoritative)', () => {
    const net = new Net([1, 2]);
    net.dc(1);
    net.connect();
    const [a, b] = [net.n(1), net.n(2)];
    a.attach(1, 1, 101);
    b.attach(3, 1, 201);
    net.run();
    const send = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes(1) });
    net.run();
    // The store dropped 201 (node 2 lost its lease in a partition) but node 2 is alive and says it is bound.
    a.kernel.forgetRemote(net.now, 1, 201, 2);
    assert.deepEqual(rows(net, 1), [
      [101, 1, 'self'],
      [201, 2, 'remote'],
    ]);
    b.call(3, { op: 'receive', src: ANY, nowait: true });
    net.run();
    assert.equal(a.code(1, send), 'ok');
    // If the node then does go down, what the directory dropped goes with it (not left as NODEDOWN).
    a.kernel.nodeDown(net.now, 2);
    assert.deepEqual(rows(net, 1), [[101, 1, 'self']]);
  });

  it('a forgotten entry that its node announces again (sync after a heal) is kept when the node goes down', () => {
    const net = new Net([1, 2]);
    net.dc(1);
    net.connect();
    const [a, b] = [net.n(1), net.n(2)];
    b.attach(3, 1, 201);
    net.run();
    a.kernel.forgetRemote(net.now, 1, 201, 2);
    a.kernel.nodeUp(net.now, 2); // asks node 2 for its list: 201 is re-learned
    net.run();
    a.kernel.nodeDown(net.now, 2);
    assert.deepEqual(rows(net, 1), [[201, 2, 'remote']]);
  });

  it('forgetRemote removes what the directory taught about a node whose link is not up, once', () => {
    const net = unannounced();
    const a = net.n(1);
    a.attach(1, 1, 101);
    a.kernel.learnRemote(net.now, 1, 201, 2, { kind: 'self', name: 'srv', pid: 3 });
    a.kernel.nodeDown(net.now, 2);
    a.kernel.forgetRemote(net.now, 1, 201, 2);
    a.kernel.forgetRemote(net.now, 1, 201, 2);
    assert.deepEqual(rows(net, 1), [[101, 1, 'self']]);
    assert.deepEqual(net.violations, []);
  });

  it('forgetRemote for another node than the known location changes nothing', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1);
    net.connect();
    net.n(2).attach(3, 1, 201);
    net.run();
    net.n(1).kernel.forgetRemote(net.now, 1, 201, 3);
    assert.deepEqual(rows(net, 1), [[201, 2, 'remote']]);
  });

  it('a stale directory location is corrected by the EMOVED bounce and the message replayed', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1);
    net.connect();
    const [a, c] = [net.n(1), net.n(3)];
    a.attach(1, 1, 101);
    c.attach(5, 1, 301);
    net.run();
    // The directory (wrongly, or late) says 301 lives on node 2.
    a.kernel.learnRemote(net.now, 1, 301, 2, { kind: 'self', name: 'ep301', pid: 5 });
    assert.deepEqual(rows(net, 1), [
      [101, 1, 'self'],
      [301, 2, 'remote'],
    ]);
    const recv = c.call(5, { op: 'receive', src: ANY, nowait: false });
    const send = a.call(1, { op: 'send', dst: 301, type: 4, payload: bytes(4) });
    net.run();
    assert.equal(a.code(1, send), 'ok');
    assert.equal(msgOf(c.result(5, recv)).type, 4);
    assert.deepEqual(rows(net, 1), [
      [101, 1, 'self'],
      [301, 3, 'remote'],
    ]);
  });

  it('ignores this node, an unknown DC, and (with a warning) a node outside the DC or a local endpoint', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1, { nodes: [1, 2] });
    const a = net.n(1);
    a.attach(1, 1, 101);
    a.kernel.learnRemote(net.now, 1, 150, 1, { kind: 'self', name: 'me', pid: 1 });
    a.kernel.learnRemote(net.now, 9, 150, 2, { kind: 'self', name: 'x', pid: 1 });
    a.kernel.learnRemote(net.now, 1, 150, 3, { kind: 'self', name: 'x', pid: 1 });
    a.kernel.learnRemote(net.now, 1, 101, 2, { kind: 'self', name: 'x', pid: 1 });
    assert.deepEqual(rows(net, 1), [[101, 1, 'self']]);
    assert.equal(a.warnings().length, 2);
  });

  it('a location learned for a node that is down is flagged NODEDOWN', () => {
    const net = new Net([1, 2]);
    net.dc(1);
    net.connect();
    net.crash(2);
    net.n(1).kernel.learnRemote(net.now, 1, 201, 2, { kind: 'self', name: 'x', pid: 1 });
    assert.deepEqual(net.n(1).kernel.endpoints(1)[0]?.flags, ['REMOTE', 'NODEDOWN']);
  });
});

describe('kernel: updateDc', () => {
  it('removing a node unbinds what was known there and fails senders waiting on it', () => {
    const net = new Net([1, 2, 3]);
    net.dc(1);
    net.connect();
    const [a, b] = [net.n(1), net.n(2)];
    a.attach(1, 1, 101);
    b.attach(3, 1, 201);
    net.n(3).attach(5, 1, 301);
    net.run();
    const send = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes(1) });
    net.run();
    assert.equal(a.code(1, send), undefined);
    const cfg = a.kernel.findDc(1)!;
    a.kernel.updateDc(net.now, { ...cfg, nodes: [1, 3] });
    assert.equal(a.code(1, send), 'EDSTDIED');
    assert.deepEqual(rows(net, 1), [
      [101, 1, 'self'],
      [301, 3, 'remote'],
    ]);
    assert.deepEqual(a.kernel.findDc(1)?.nodes, [1, 3]);
    // Frames from the removed node are no longer accepted for this DC.
    b.call(3, { op: 'notify', dst: 101 });
    net.run();
    assert.ok(a.warnings().some((w) => w.msg === 'frame from a node outside the DC'));
    assert.deepEqual(net.violations, []);
  });

  it('adding a linked node asks it for its endpoints', () => {
    const net = new Net([1, 2]);
    net.connect();
    const base = { maxPayload: 4096, sysEndpoints: 64, postWindow: 16 };
    net.n(1).kernel.createDc({ id: 1, name: 'd', nodes: [1], ...base });
    net.n(2).kernel.createDc({ id: 1, name: 'd', nodes: [1, 2], ...base });
    net.n(2).attach(3, 1, 201);
    net.run();
    assert.deepEqual(rows(net, 1), [], 'node 1 drops frames from node 2 while 2 is outside the DC');
    net.n(1).kernel.updateDc(net.now, { id: 1, name: 'd', nodes: [1, 2], ...base });
    net.run();
    assert.deepEqual(rows(net, 1), [[201, 2, 'remote']]);
  });

  it('rejects an unknown DC, a renamed one and one without this node', () => {
    const net = new Net([1, 2]);
    const cfg = net.dc(1);
    const k = net.n(1).kernel;
    const code = (f: () => void) => {
      try {
        f();
        return 'ok';
      } catch (e) {
        return e instanceof DvsError ? e.code : 'throw';
      }
    };
    assert.equal(
      code(() => k.updateDc(net.now, { ...cfg, id: 5 })),
      'ENOENT',
    );
    assert.equal(
      code(() => k.updateDc(net.now, { ...cfg, name: 'other' })),
      'EINVAL',
    );
    assert.equal(
      code(() => k.updateDc(net.now, { ...cfg, nodes: [2] })),
      'EINVAL',
    );
    assert.deepEqual(k.findDc(1)?.nodes, [1, 2]);
  });
});

describe('kernel: idempotent nodeUp / nodeDown', () => {
  it('a second nodeDown fails nothing twice; a second nodeUp leaves the peer with the same view', () => {
    const net = new Net([1, 2]);
    net.dc(1);
    net.connect();
    const [a, b] = [net.n(1), net.n(2)];
    a.attach(1, 1, 101);
    b.attach(3, 1, 201);
    net.run();
    const send = a.call(1, { op: 'send', dst: 201, type: 1, payload: bytes(1) });
    net.run();
    net.crash(2);
    net.crash(2);
    assert.equal(a.code(1, send), 'ENOTCONN');
    assert.equal(a.done.filter((d) => d.proc === 1 && d.callId === send).length, 1);
    a.kernel.nodeUp(net.now, 2);
    b.kernel.nodeUp(net.now, 1);
    net.run();
    const view = () => [rows(net, 1), rows(net, 2)];
    const once = view();
    assert.deepEqual(once[0], [
      [101, 1, 'self'],
      [201, 2, 'remote'],
    ]);
    a.kernel.nodeUp(net.now, 2);
    b.kernel.nodeUp(net.now, 1);
    net.run();
    assert.deepEqual(view(), once);
    assert.deepEqual(a.kernel.endpoints(1).find((r) => r.ep === 201)?.flags, ['REMOTE']);
    assert.deepEqual(net.violations, []);
  });
});

describe('kernel: onLocalBind / onLocalUnbind', () => {
  it('reports local binds and unbinds, not remote knowledge', () => {
    const seen: string[] = [];
    const io: KernelIO = {
      complete: () => {},
      toProc: () => {},
      toNode: () => {},
      log: () => {},
      onLocalBind: (dc: DcId, ep: Endpoint, info) => seen.push(`bind ${dc}/${ep} ${info.kind} ${info.pid}`),
      onLocalUnbind: (dc: DcId, ep: Endpoint) => seen.push(`unbind ${dc}/${ep}`),
    };
    const k = new Kernel({ nodeId: 1, io });
    k.createDc({ id: 1, name: 'd', nodes: [1, 2], maxPayload: 64, sysEndpoints: 8, postWindow: 4 });
    k.attach(0, 1, 1, 100, { pid: 42 });
    k.reserve(0, 1, 110, 43);
    k.learnRemote(0, 1, 200, 2, { kind: 'self', name: 'r', pid: 7 });
    k.forgetRemote(0, 1, 200, 2);
    k.detach(0, 1);
    k.unbind(0, 1, 110);
    assert.deepEqual(seen, ['bind 1/100 self 42', 'bind 1/110 local 43', 'unbind 1/100', 'unbind 1/110']);
  });
});
