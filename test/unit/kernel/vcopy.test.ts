import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { COPY_CHUNK, COPY_WINDOW } from '../../../src/kernel/index.js';
import { Net } from './harness.js';

function pattern(n: number, seed = 7): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/**
 * Nodes 1..3, DC 1 on all. Sessions: 10 = system endpoint 10 on node `rq`, 1 = ep 101 (source) on node
 * `sn`, 2 = ep 102 (destination) on node `dn`.
 */
function setup(rq: number, sn: number, dn: number, size: number) {
  const net = new Net([1, 2, 3]);
  net.dc(1);
  net.connect();
  net.n(rq).attach(10, 1, 10);
  net.n(sn).attach(1, 1, 101);
  net.n(dn).attach(2, 1, 102);
  net.run();
  const src = pattern(size);
  const dst = new Uint8Array(size + 16);
  net.n(sn).memory(1, 5, src, 'r');
  net.n(dn).memory(2, 6, dst, 'rw');
  return { net, src, dst };
}

describe('kernel: vcopy placements', () => {
  const size = COPY_CHUNK * (COPY_WINDOW + 2) + 123; // more chunks than the window, and a short last one
  const placements: [string, number, number, number][] = [
    ['all on one node', 1, 1, 1],
    ['source remote', 1, 2, 1],
    ['destination remote', 1, 1, 2],
    ['source and destination on one other node', 1, 2, 2],
    ['three nodes', 1, 2, 3],
  ];
  for (const [name, rq, sn, dn] of placements) {
    it(`copies every byte: ${name}`, () => {
      const { net, src, dst } = setup(rq, sn, dn, size);
      const r = net.n(rq);
      const c = r.call(10, {
        op: 'vcopy',
        src: { ep: 101, grant: 5, offset: 0 },
        dst: { ep: 102, grant: 6, offset: 16 },
        bytes: size,
      });
      net.run();
      assert.equal(r.code(10, c), 'ok');
      assert.deepEqual(dst.subarray(16), src);
      assert.deepEqual(dst.subarray(0, 16), new Uint8Array(16));
      assert.equal(
        net
          .n(sn)
          .kernel.endpoints(1)
          .find((e) => e.ep === 101)?.counters.copyBytes,
        size,
      );
      // The data goes source -> destination directly, never through a requester on a third node.
      if (rq !== sn && rq !== dn) {
        assert.deepEqual(
          [...new Set(r.sent.map((f) => f.frame.t).filter((t) => t.startsWith('copy')))],
          ['copyReq'],
        );
      }
      for (const n of net.nodes.values())
        assert.ok(n.kernel.endpoints(1).every((e) => !e.flags.includes('ONCOPY')));
      assert.equal(net.violations.length, 0);
    });
  }

  it('keeps at most the window of chunks in flight and marks the parties ONCOPY meanwhile', () => {
    const { net } = setup(1, 1, 2, COPY_CHUNK * 10);
    const a = net.n(1);
    a.autoGrants = false;
    a.call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: COPY_CHUNK * 10,
    });
    assert.equal(a.eventsOf(1, 'grantRead').length, COPY_WINDOW);
    const flags = (ep: number) => a.kernel.endpoints(1).find((e) => e.ep === ep)?.flags;
    assert.deepEqual(flags(10), ['ONCOPY']);
    assert.deepEqual(flags(101), ['ONCOPY']);
  });

  it('a copy within one process (requester is both parties) works without privilege', () => {
    const net = new Net([1]);
    net.dc(1);
    const k = net.n(1);
    k.attach(1, 1, 101);
    const buf = pattern(100);
    k.memory(1, 1, buf, 'rw');
    const c = k.call(1, {
      op: 'vcopy',
      src: { ep: 101, grant: 1, offset: 0 },
      dst: { ep: 101, grant: 1, offset: 50 },
      bytes: 50,
    });
    net.run();
    assert.equal(k.code(1, c), 'ok');
    assert.deepEqual(buf.subarray(50), pattern(100).subarray(0, 50));
  });
});

describe('kernel: vcopy checks', () => {
  function run(rq: number, sn: number, dn: number, proc: number, over: Record<string, unknown>) {
    const { net } = setup(rq, sn, dn, 1000);
    net.n(sn).attach(3, 1, 103);
    const who = proc === 3 ? net.n(sn) : net.n(rq);
    const call = {
      op: 'vcopy' as const,
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: 1000,
      ...over,
    };
    const c = who.call(proc, call);
    net.run();
    return who.code(proc, c);
  }

  it('EPERM: a user endpoint that is neither party', () => {
    assert.equal(run(1, 1, 1, 3, {}), 'EPERM');
    assert.equal(run(1, 1, 2, 3, {}), 'EPERM');
  });

  it('EFAULT: source range outside the grant (local and remote source)', () => {
    assert.equal(run(1, 1, 1, 10, { bytes: 1001 }), 'EFAULT');
    assert.equal(run(1, 2, 1, 10, { src: { ep: 101, grant: 5, offset: 1 } }), 'EFAULT');
  });

  it('EFAULT: destination range outside the grant (local and remote destination, 3 nodes)', () => {
    assert.equal(run(1, 1, 1, 10, { dst: { ep: 102, grant: 6, offset: 17 } }), 'EFAULT');
    assert.equal(run(1, 2, 3, 10, { dst: { ep: 102, grant: 6, offset: 17 } }), 'EFAULT');
  });

  it('EFAULT: unknown grant or wrong access', () => {
    assert.equal(run(1, 1, 2, 10, { src: { ep: 101, grant: 99, offset: 0 } }), 'EFAULT');
    // Source grant 6 of 102 is 'rw' but 102's grant 5 does not exist; destination grant 5 of 102 neither.
    assert.equal(run(1, 2, 1, 10, { dst: { ep: 102, grant: 5, offset: 0 } }), 'EFAULT');
    const { net } = setup(1, 2, 3, 10);
    net.n(3).memory(2, 7, new Uint8Array(10), 'r');
    const c = net.n(1).call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 7, offset: 0 },
      bytes: 10,
    });
    net.run();
    assert.equal(net.n(1).code(10, c), 'EFAULT');
  });

  it('ENOTBOUND for an unbound party, EINVAL for a malformed reference', () => {
    assert.equal(run(1, 1, 2, 10, { dst: { ep: 150, grant: 6, offset: 0 } }), 'ENOTBOUND');
    assert.equal(run(1, 1, 2, 10, { bytes: -1 }), 'EINVAL');
  });

  it('the source process failing a read fails the copy with its code', () => {
    const { net } = setup(1, 2, 1, 1000);
    net.n(2).mem.get(1)?.delete(5); // the memory vanished: the harness answers EFAULT
    const c = net.n(1).call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: 1000,
    });
    net.run();
    assert.equal(net.n(1).code(10, c), 'EFAULT');
  });
});

describe('kernel: vcopy failures midway', () => {
  const big = COPY_CHUNK * COPY_WINDOW * 3;

  it('cancel stops the copy: no more chunks are read', () => {
    const { net } = setup(1, 2, 3, big);
    const a = net.n(1);
    const c = a.call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: big,
    });
    for (let i = 0; i < 4; i++) net.step();
    a.kernel.cancel(net.now, 10, c, 'EABORTED');
    assert.equal(a.code(10, c), 'EABORTED');
    net.run();
    assert.ok(net.n(2).eventsOf(1, 'grantRead').length < big / COPY_CHUNK);
    assert.ok(
      net
        .n(2)
        .kernel.endpoints(1)
        .every((e) => !e.flags.includes('ONCOPY')),
    );
    assert.equal(net.violations.length, 0);
  });

  it('the destination node going down fails the copy ENOTCONN', () => {
    const { net } = setup(1, 2, 3, big);
    const a = net.n(1);
    const c = a.call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: big,
    });
    for (let i = 0; i < 6; i++) net.step();
    net.crash(3);
    net.run();
    assert.equal(a.code(10, c), 'ENOTCONN');
  });

  it('the source dying midway fails the copy ESRCDIED', () => {
    const { net } = setup(1, 2, 1, big);
    const a = net.n(1);
    const c = a.call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: big,
    });
    for (let i = 0; i < 3; i++) net.step();
    net.n(2).kernel.detach(net.now, 1);
    net.run();
    assert.equal(a.code(10, c), 'ESRCDIED');
  });

  it('a revoke midway fails the copy EFAULT', () => {
    const { net } = setup(1, 1, 2, big);
    const a = net.n(1);
    const c = a.call(10, {
      op: 'vcopy',
      src: { ep: 101, grant: 5, offset: 0 },
      dst: { ep: 102, grant: 6, offset: 0 },
      bytes: big,
    });
    a.call(1, { op: 'revoke', grant: 5 });
    net.run();
    assert.equal(a.code(10, c), 'EFAULT');
  });
});
