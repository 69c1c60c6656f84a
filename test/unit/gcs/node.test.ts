/**
 * GcsNode on a small in-memory bus: views, the four delivery orders, input validation, flow control,
 * partition and merge views.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compareViewIds,
  type GcsEvent,
  type GroupId,
  type Member,
  type View,
} from '../../../src/gcs/types.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { Bus } from './bus.js';

const G: GroupId = { dc: 1, name: 'g' };
const m = (node: number, ep: number): Member => ({ node, ep });
const views = (evs: GcsEvent[]): View[] => evs.flatMap((e) => (e.kind === 'view' ? [e.view] : []));
const texts = (evs: GcsEvent[]): string[] =>
  evs.flatMap((e) => (e.kind === 'message' ? [new TextDecoder().decode(e.payload)] : []));
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

function code(fn: () => void): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof DvsError) return e.code;
    throw e;
  }
  return 'none';
}

function cluster(ids = [0, 1, 2]): Bus {
  const bus = new Bus(ids, { flushTimeoutMs: 50 });
  bus.announce();
  bus.run();
  return bus;
}

function joinAll(bus: Bus, members: Member[]): void {
  for (const x of members) bus.node(x.node).join(bus.now, 1, G, x);
  bus.run();
}

describe('GcsNode', () => {
  it('agrees on one configuration and gives every joiner the same views', () => {
    const bus = cluster();
    const s0 = bus.node(0).stats();
    for (const id of [1, 2]) assert.deepEqual(bus.node(id).stats().cfg, s0.cfg);
    assert.deepEqual(s0.nodes, [0, 1, 2]);
    joinAll(bus, [m(0, 100), m(1, 101), m(2, 102)]);
    const last = views(bus.of('0.100')).at(-1);
    assert.deepEqual(last?.members, [m(0, 100), m(1, 101), m(2, 102)]);
    assert.equal(last?.reason, 'join');
    for (const k of ['1.101', '2.102']) assert.deepEqual(views(bus.of(k)).at(-1), last);
    // The first view a joiner sees contains it; ids only grow.
    const v = views(bus.of('2.102'));
    assert.ok(v[0]?.members.some((x) => x.node === 2 && x.ep === 102));
    for (let i = 1; i < v.length; i++)
      assert.equal(compareViewIds((v[i - 1] as View).id, (v[i] as View).id), -1);
  });

  it('delivers every order to every member, in one total order, sender included', () => {
    const bus = cluster();
    const ms = [m(0, 100), m(1, 101), m(2, 102)];
    joinAll(bus, ms);
    const orders = ['fifo', 'causal', 'agreed', 'safe'] as const;
    for (let i = 0; i < 12; i++) {
      const s = ms[i % 3] as Member;
      bus.node(s.node).multicast(bus.now, 1, G, s, orders[i % 4] as (typeof orders)[number], bytes(`m${i}`));
    }
    bus.run();
    const seq0 = texts(bus.of('0.100'));
    assert.equal(seq0.length, 12);
    assert.deepEqual(texts(bus.of('1.101')), seq0);
    assert.deepEqual(texts(bus.of('2.102')), seq0);
    // fifo per sender
    for (const s of [0, 1, 2]) {
      const mine = seq0.filter((t) => Number(t.slice(1)) % 3 === s).map((t) => Number(t.slice(1)));
      assert.deepEqual(
        mine,
        [...mine].sort((a, b) => a - b),
      );
    }
    const safe = bus.of('1.101').find((e) => e.kind === 'message' && e.order === 'safe');
    assert.ok(safe !== undefined && safe.kind === 'message' && safe.transitional === undefined);
  });

  it('rejects bad input without disturbing anyone', () => {
    const bus = new Bus([0, 1], { maxPayload: 16 });
    bus.announce();
    bus.run();
    const a = m(0, 100);
    joinAll(bus, [a, m(1, 101)]);
    const before = bus.delivered.length;
    const n = bus.node(0);
    assert.equal(
      code(() => n.multicast(bus.now, 1, G, a, 'fifo', new Uint8Array(17))),
      'EMSGSIZE',
    );
    assert.equal(
      code(() => n.multicast(bus.now, 1, G, a, 'bogus' as 'fifo', new Uint8Array(1))),
      'EINVAL',
    );
    assert.equal(
      code(() => n.join(bus.now, 1, { dc: 2, name: 'g' }, a)),
      'EPERM',
    );
    assert.equal(
      code(() => n.multicast(bus.now, 2, G, a, 'fifo', new Uint8Array(1))),
      'EPERM',
    );
    assert.equal(
      code(() => n.join(bus.now, 1, { dc: 1, name: 'no spaces' }, a)),
      'EINVAL',
    );
    assert.equal(
      code(() => n.join(bus.now, 1, { dc: 1, name: 'x'.repeat(65) }, a)),
      'EINVAL',
    );
    assert.equal(
      code(() => n.join(bus.now, 1, G, m(1, 5))),
      'EINVAL',
    );
    assert.equal(
      code(() => n.join(bus.now, 1, G, a)),
      'EEXIST',
    );
    assert.equal(
      code(() => n.multicast(bus.now, 1, G, m(0, 7), 'fifo', new Uint8Array(1))),
      'ENOENT',
    );
    assert.equal(
      code(() => n.leave(bus.now, 1, G, m(0, 7))),
      'ENOENT',
    );
    bus.run();
    assert.equal(bus.delivered.length, before);
    n.multicast(bus.now, 1, G, a, 'agreed', new Uint8Array(16));
    bus.run();
    assert.equal(bus.delivered.length, before + 2);
  });

  it('expels a member that stops reading, with an expel view to the others', () => {
    const bus = new Bus([0, 1], { maxBacklog: 5 });
    bus.announce();
    bus.run();
    const reader = m(0, 100);
    const sleeper = m(1, 101);
    joinAll(bus, [reader, sleeper]);
    bus.node(0).consumed(reader, 100);
    for (let i = 0; i < 10; i++) {
      bus.node(0).multicast(bus.now, 1, G, reader, 'agreed', bytes(`m${i}`));
      bus.run();
      bus.node(0).consumed(reader, 100);
    }
    assert.deepEqual(bus.expelled, ['1.101']);
    assert.ok(bus.of(sleeper).length <= 6, 'the sleeper got nothing after its backlog limit');
    const last = views(bus.of(reader)).at(-1);
    assert.equal(last?.reason, 'expel');
    assert.deepEqual(last?.members, [reader]);
    assert.equal(texts(bus.of(reader)).length, 10);
    assert.equal(
      code(() => bus.node(1).multicast(bus.now, 1, G, sleeper, 'fifo', bytes('x'))),
      'EEXPELLED',
    );
  });

  it('a dead process leaves with reason crash', () => {
    const bus = cluster([0, 1]);
    joinAll(bus, [m(0, 100), m(1, 101)]);
    bus.node(1).memberGone(bus.now, m(1, 101));
    bus.run();
    const last = views(bus.of('0.100')).at(-1);
    assert.equal(last?.reason, 'crash');
    assert.deepEqual(last?.members, [m(0, 100)]);
  });

  it('splits into partition views and merges back', () => {
    const bus = cluster();
    joinAll(bus, [m(0, 100), m(1, 101), m(2, 102)]);
    bus.partition([0, 1], [2]);
    bus.run();
    const v0 = views(bus.of('0.100')).at(-1);
    const v2 = views(bus.of('2.102')).at(-1);
    assert.equal(v0?.reason, 'partition');
    assert.deepEqual(v0?.members, [m(0, 100), m(1, 101)]);
    assert.equal(v2?.reason, 'partition');
    assert.deepEqual(v2?.members, [m(2, 102)]);
    // Each side keeps working on its own.
    bus.node(2).multicast(bus.now, 1, G, m(2, 102), 'safe', bytes('alone'));
    bus.node(0).multicast(bus.now, 1, G, m(0, 100), 'safe', bytes('pair'));
    bus.run();
    assert.deepEqual(texts(bus.of('2.102')), ['alone']);
    assert.deepEqual(texts(bus.of('1.101')), ['pair']);
    bus.heal();
    bus.run();
    const merged = views(bus.of('2.102')).at(-1);
    assert.equal(merged?.reason, 'merge');
    assert.deepEqual(merged?.members, [m(0, 100), m(1, 101), m(2, 102)]);
    assert.deepEqual(views(bus.of('0.100')).at(-1), merged);
    const s = bus.node(0).stats();
    for (const id of [1, 2]) assert.deepEqual(bus.node(id).stats().cfg, s.cfg);
  });

  it('drops malformed frames with a log line', () => {
    const bus = cluster([0, 1]);
    bus.node(0).receive(bus.now, 1, { t: 'ordered', cfg: [1], first: 0, ops: [] });
    bus.node(0).receive(bus.now, 1, 'garbage');
    assert.equal(bus.logs.filter((l) => l.includes('malformed')).length, 2);
  });
});

describe('GcsNode batching', () => {
  it('queues multicasts during a view change and sends them in bounded batches, in order', () => {
    const bus = cluster([0, 1]);
    const a = m(1, 101);
    joinAll(bus, [m(0, 100), a]);
    // Node 0 (the coordinator) sees node 1 flap: a new round starts; node 1 stops once it accepts.
    bus.node(0).reachable(bus.now, new Set());
    bus.node(0).reachable(bus.now, new Set([1]));
    const n1 = bus.node(1);
    while (!n1.stats().flushing) assert.ok(bus.step(), 'node 1 never got the proposal');
    for (let i = 0; i < 600; i++) n1.multicast(bus.now, 1, G, a, 'fifo', bytes(`m${i}`));
    bus.run();
    const submits = bus.wire.filter((w) => w.from === 1 && w.t === 'submit');
    assert.ok(submits.length >= 3, 'split into several frames');
    assert.ok(submits.every((w) => w.ops <= 256));
    const got = texts(bus.of('0.100'));
    assert.deepEqual(
      got,
      Array.from({ length: 600 }, (_, i) => `m${i}`),
    );
  });
});
