/**
 * Rules of the SLOTS member state machine (src/services/slots/member.ts): water marks, donation size cap,
 * the next member always answering, urgent requests and ENOSPC, primary reassignment after a crash, frozen
 * slots in a partition, status transfer to joiners, merge reconciliation, and the message sizes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pack } from 'msgpackr';
import type { DvsError } from '../../../src/protocol/errors.js';
import {
  decodeOwners,
  encodeOwners,
  initialOwners,
  SlotsMember,
  slotsParams,
} from '../../../src/services/slots/member.js';
import {
  type MemberId,
  memberId,
  NO_OWNER,
  type SlotsConfig,
  type SlotsMsg,
  type ViewReason,
} from '../../../src/services/slots/types.js';

const FIRST = 64;

/** A hand-driven group: multicasts queue up; `flush()` delivers them in order to the given receivers. */
class Net {
  readonly members = new Map<MemberId, SlotsMember>();
  readonly queue: { from: MemberId; msg: SlotsMsg }[] = [];
  readonly granted = new Map<number, number>();
  readonly failed = new Map<number, DvsError>();
  readonly errors: string[] = [];
  private viewSeq = 0;

  constructor(readonly cfg: SlotsConfig) {}

  add(id: MemberId): SlotsMember {
    const m = new SlotsMember(id, this.cfg, {
      multicast: (msg) => this.queue.push({ from: id, msg }),
      allocated: (req, slot) => this.granted.set(req, slot),
      failed: (req, err) => this.failed.set(req, err),
      log: (level, msg) => {
        if (level === 'error') this.errors.push(msg);
      },
    });
    this.members.set(id, m);
    return m;
  }

  get(id: MemberId): SlotsMember {
    const m = this.members.get(id);
    if (m === undefined) throw new Error(`no member ${id}`);
    return m;
  }

  /** Install a view on `members`; `sides` lists the transitional sets (default: one side = everyone). */
  view(members: MemberId[], reason: ViewReason, sides: MemberId[][] = [members]): void {
    const id = ++this.viewSeq;
    for (const side of sides)
      for (const m of side) this.get(m).onView({ id, members, reason, transitional: side });
  }

  /** Deliver queued messages in order to `to` until nothing is left; returns what was delivered. */
  flush(to: MemberId[], max = 1000): SlotsMsg[] {
    const out: SlotsMsg[] = [];
    while (this.queue.length > 0 && max-- > 0) {
      const { from, msg } = this.queue.shift() as { from: MemberId; msg: SlotsMsg };
      out.push(msg);
      for (const m of to) this.get(m).deliver(from, msg);
    }
    return out;
  }

  /** Deliver only the next queued message. */
  step(to: MemberId[]): { from: MemberId; msg: SlotsMsg } {
    const e = this.queue.shift();
    if (e === undefined) throw new Error('nothing queued');
    for (const m of to) this.get(m).deliver(e.from, e.msg);
    return e;
  }
}

const n = (node: number, inc = 0): MemberId => memberId(node, inc);

/** Three first incarnations of nodes 1..3 in one view, tables settled. */
function trio(extra: Partial<SlotsConfig> = {}): Net {
  const net = new Net({ nodes: [1, 2, 3], firstSlot: FIRST, total: 30, ...extra });
  for (const id of [n(1), n(2), n(3)]) net.add(id);
  net.view([n(1), n(2), n(3)], 'join', [[n(1)], [n(2)], [n(3)]]);
  net.flush([n(1), n(2), n(3)]);
  return net;
}

function allocateMany(m: SlotsMember, count: number, from = 1): number[] {
  const reqs: number[] = [];
  for (let k = 0; k < count; k++) {
    m.allocate(from + k);
    reqs.push(from + k);
  }
  return reqs;
}

describe('SLOTS member: parameters and initial table', () => {
  it('derives the thesis defaults and splits the initial table by node', () => {
    const p = slotsParams({ nodes: [1, 2, 3], firstSlot: FIRST, total: 30 });
    assert.deepEqual(p, {
      total: 30,
      firstSlot: FIRST,
      lowWater: 5,
      highWater: 10,
      maxDonation: 4,
      maxOwned: 20,
      waitForDonation: true,
    });
    const t = initialOwners({ nodes: [3, 1, 2], firstSlot: FIRST, total: 6 });
    assert.deepEqual([...t], [n(1), n(2), n(3), n(1), n(2), n(3)]);
  });

  it('three fresh members settle on the initial table and allocate their own slots at once', () => {
    const net = trio();
    for (const id of [n(1), n(2), n(3)]) {
      assert.equal(net.get(id).phase, 'running');
      assert.equal(net.get(id).ownedCount, 10);
    }
    net.get(n(2)).allocate(7);
    const slot = net.granted.get(7);
    assert.ok(slot !== undefined);
    assert.equal(net.get(n(1)).ownerOf(slot), n(2));
    assert.deepEqual(net.errors, []);
  });

  it('owner tables run-length encode and decode; bad runs are EPROTO', () => {
    const t = initialOwners({ nodes: [1, 2], firstSlot: 0, total: 5 });
    t[1] = n(1);
    const rle = encodeOwners(t);
    assert.deepEqual(rle, [n(1), 3, n(2), 1, n(1), 1]);
    assert.deepEqual([...decodeOwners(rle, 5)], [...t]);
    assert.throws(() => decodeOwners([n(1), 4], 5), { code: 'EPROTO' });
    assert.throws(() => decodeOwners([n(1), 6], 5), { code: 'EPROTO' });
  });

  it('messages are small: a full donation is about 30 bytes of MessagePack', () => {
    const don: SlotsMsg = { t: 'don', round: 12, to: n(3, 2), slots: [120, 121, 122, 123] };
    const req: SlotsMsg = { t: 'req', round: 12, needed: 7, urgent: false };
    assert.ok(pack(don).length <= 40, `don is ${pack(don).length} bytes`);
    assert.ok(pack(req).length <= 40, `req is ${pack(req).length} bytes`);
  });
});

describe('SLOTS member: water marks, donations and the next member', () => {
  it('requests only when free slots fall below the low water mark, asking up to the high water mark', () => {
    const net = trio();
    const a = net.get(n(1));
    allocateMany(a, 5);
    assert.equal(a.freeCount, 5);
    assert.equal(net.queue.length, 0, 'at the low water mark: no request yet');
    a.allocate(6);
    assert.equal(a.freeCount, 4);
    assert.deepEqual(
      net.queue.map((q) => q.msg),
      [{ t: 'req', round: 1, needed: 6, urgent: false }],
    );
  });

  it('donors give at most maxDonation slots, their share, and only their surplus', () => {
    const net = trio({ total: 60, lowWater: 2, maxDonation: 4 });
    const a = net.get(n(1));
    // n1 owns 20; use 19 so it asks for highWater(20) - 1 = 19.
    allocateMany(a, 19);
    const reqs = net.queue.filter((q) => q.msg.t === 'req');
    assert.equal(reqs.length, 1);
    // Deliver the request: each of the two donors' share is ceil(19/2) = 10, capped at 4.
    net.flush([n(1), n(2), n(3)], 1);
    const dons = net.queue.map((q) => q.msg).filter((m) => m.t === 'don');
    assert.equal(dons.length, 2);
    for (const d of dons) {
      assert.equal(d.t === 'don' && d.slots.length, 4);
      assert.equal(d.t === 'don' && d.to, n(1));
    }
    // Slots being donated are neither free nor allocatable at the donor until delivered.
    assert.equal(net.get(n(2)).freeCount, 16);
    net.flush([n(1), n(2), n(3)]);
    assert.equal(a.ownedCount, 28);
    assert.equal(net.get(n(2)).ownedCount, 16);
    // Every table agrees on the new owners.
    assert.deepEqual([...net.get(n(2)).table()], [...a.table()]);
    assert.deepEqual([...net.get(n(3)).table()], [...a.table()]);
  });

  it("a member with nothing to spare stays silent when it is not the requester's next member", () => {
    const net = trio();
    allocateMany(net.get(n(2)), 5, 100); // n2 at the low water mark: no surplus
    net.flush([n(1), n(2), n(3)]);
    allocateMany(net.get(n(3)), 6, 200); // n3 asks; its next member is n1 (ring by node id)
    const sent = net.flush([n(1), n(2), n(3)]);
    assert.equal(sent.filter((m) => m.t === 'req').length, 1);
    const dons = sent.filter((m) => m.t === 'don');
    assert.equal(dons.length, 1, 'only n1 answers');
    assert.equal(net.get(n(3)).pendingRound, null, "the round ended with the next member's answer");
  });

  it("the requester's next member always answers, with nothing if it has nothing to spare", () => {
    const net = trio();
    allocateMany(net.get(n(3)), 5, 100); // n3 (next of n2) at the low water mark
    net.flush([n(1), n(2), n(3)]);
    allocateMany(net.get(n(2)), 6, 200); // n2 asks
    net.step([n(1), n(2), n(3)]);
    const fromN3 = net.queue.find((q) => q.from === n(3));
    assert.ok(fromN3 !== undefined, 'n3 answered');
    assert.deepEqual(fromN3.msg.t === 'don' && fromN3.msg.slots, []);
    assert.notEqual(net.get(n(2)).pendingRound, null);
    net.flush([n(1), n(2), n(3)]);
    assert.equal(net.get(n(2)).pendingRound, null);
    assert.equal(net.get(n(2)).ownedCount, 13, 'n1 gave its share ceil(6 / 2) = 3');
  });

  it('an urgent request is answered by everyone; a member below low water still gives one slot', () => {
    const net = trio();
    // n2 and n3 keep 2 free each (below low water); n1 uses everything.
    allocateMany(net.get(n(2)), 8, 100);
    allocateMany(net.get(n(3)), 8, 200);
    net.flush([n(1), n(2), n(3)]);
    const a = net.get(n(1));
    allocateMany(a, 10, 1);
    net.flush([n(1), n(2), n(3)]);
    const before = net.granted.size;
    a.allocate(50);
    assert.deepEqual(
      net.queue.map((q) => q.msg.t === 'req' && q.msg.urgent),
      [true],
    );
    net.flush([n(1), n(2), n(3)]);
    assert.equal(net.granted.size, before + 1, 'the waiting allocation got a donated slot');
    assert.equal(net.failed.size, 0);
  });

  it('fails with ENOSPC only when an urgent round brings nothing', () => {
    const net = trio();
    for (const [id, base] of [
      [n(1), 1],
      [n(2), 100],
      [n(3), 200],
    ] as const) {
      allocateMany(net.get(id), 10, base);
      net.flush([n(1), n(2), n(3)]);
    }
    net.get(n(1)).allocate(500);
    const msgs = net.flush([n(1), n(2), n(3)]);
    assert.equal(msgs.filter((m) => m.t === 'don').length, 2, 'both others answered the urgent request');
    assert.equal(net.failed.get(500)?.code, 'ENOSPC');
    assert.equal(net.granted.get(500), undefined);
  });

  it('alone in its view with nothing free: ENOSPC at once, no message', () => {
    const net = new Net({ nodes: [1, 2], firstSlot: FIRST, total: 4 });
    const a = net.add(n(1));
    net.view([n(1)], 'join', [[n(1)]]);
    allocateMany(a, 3, 1);
    assert.equal(net.granted.size, 2);
    assert.equal(net.failed.get(3)?.code, 'ENOSPC');
    assert.equal(net.queue.length, 0);
  });

  it('after a fruitless refill, it does not ask again until a slot is freed', () => {
    const net = trio();
    allocateMany(net.get(n(2)), 5, 100);
    allocateMany(net.get(n(3)), 5, 200);
    net.flush([n(1), n(2), n(3)]);
    const a = net.get(n(1));
    allocateMany(a, 6, 1); // free 4 < 5: asks; n2 (next) answers empty, n3 stays silent
    const sent = net.flush([n(1), n(2), n(3)]);
    assert.deepEqual(
      sent.map((m) => m.t),
      ['req', 'don'],
    );
    assert.equal(a.stats.rounds, 1);
    a.allocate(7); // free 3, still below low water: no new round
    assert.equal(net.queue.length, 0);
    assert.equal(a.stats.rounds, 1);
    a.free(net.granted.get(1) as number);
    a.allocate(8); // a slot was freed: refills are allowed again
    assert.equal(a.stats.rounds, 2);
    assert.throws(() => a.free(FIRST + 29), { code: 'EINVAL' });
  });
});

describe('SLOTS member: views', () => {
  it("crash: the primary (lowest node) takes the dead member's slots, including those it had in use", () => {
    const net = trio();
    allocateMany(net.get(n(3)), 4, 100);
    net.flush([n(1), n(2), n(3)]);
    net.view([n(1), n(2)], 'crash');
    const p = net.get(n(1));
    assert.equal(p.ownedCount, 20);
    assert.equal(p.freeCount, 20, 'slots used by processes of the crashed node are free again');
    assert.equal(net.get(n(2)).ownedCount, 10);
    assert.deepEqual([...net.get(n(2)).table()], [...p.table()]);
  });

  it('crash of the primary: the next lowest becomes primary', () => {
    const net = trio();
    net.view([n(2), n(3)], 'crash');
    assert.equal(net.get(n(2)).ownedCount, 20);
    assert.equal(net.get(n(3)).ownedCount, 10);
  });

  it("partition: the other side's slots are frozen; each side allocates only its own", () => {
    const net = trio();
    net.view([n(1), n(2)], 'partition');
    net.view([n(3)], 'partition');
    assert.equal(net.get(n(1)).ownedCount, 10);
    assert.equal(net.get(n(3)).ownedCount, 10);
    for (let s = FIRST; s < FIRST + 30; s++) {
      const owners = [n(1), n(2), n(3)].filter((m) => net.get(m).canAllocate(s));
      assert.ok(owners.length <= 1, `slot ${s} allocatable at ${owners}`);
    }
    // n3 alone cannot get more than its own 10.
    const got = allocateMany(net.get(n(3)), 11, 100).filter((r) => net.granted.has(r));
    assert.equal(got.length, 10);
    assert.equal(net.failed.get(110)?.code, 'ENOSPC');
  });

  it('join: the primary transfers the table; a restarted node (new incarnation) owns nothing of its old life', () => {
    const net = trio();
    allocateMany(net.get(n(3)), 2, 100);
    net.view([n(1), n(2)], 'crash');
    const back = net.add(n(3, 1));
    net.view([n(1), n(2), n(3, 1)], 'join', [[n(1), n(2)], [n(3, 1)]]);
    assert.equal(back.phase, 'merging');
    const all = [n(1), n(2), n(3, 1)];
    const statuses = [net.step(all).msg, net.step(all).msg];
    assert.deepEqual(
      statuses.map((m) => m.t === 'status' && m.owners === null),
      [false, true],
      'the old side sends its table; the fresh member sends "initial"',
    );
    assert.equal(back.phase, 'running');
    assert.deepEqual([...back.table()], [...net.get(n(1)).table()]);
    assert.equal(back.ownedCount, 0);
    assert.equal(net.get(n(1)).ownedCount + net.get(n(2)).ownedCount, 30);
    // Below its low water mark, the joiner asks at once and gets slots by donation.
    assert.deepEqual(
      net.queue.map((q) => q.msg.t),
      ['req'],
    );
    net.flush(all);
    assert.ok(back.ownedCount > 0);
    back.allocate(1);
    assert.ok(net.granted.has(1));
  });

  it('merge: sides claim their own slots; a donation cut by the partition leaves an orphan until a full view', () => {
    const net = new Net({ nodes: [1, 2, 3, 4], firstSlot: FIRST, total: 40, lowWater: 2 });
    const ids = [n(1), n(2), n(3), n(4)];
    for (const id of ids) net.add(id);
    net.view(
      ids,
      'join',
      ids.map((m) => [m]),
    );
    net.flush(ids);
    // n1 asks; n2 (its next member) donates; the partition {1,4} | {2,3} cuts: n2's side delivers the
    // donation (self delivery), n1's side does not.
    allocateMany(net.get(n(1)), 9, 1);
    net.step(ids); // the request
    const dons = net.queue.splice(0);
    const d2 = dons.find((d) => d.from === n(2));
    assert.ok(d2 !== undefined && d2.msg.t === 'don' && d2.msg.slots.length > 0);
    for (const m of [n(2), n(3)]) net.get(m).deliver(d2.from, d2.msg);
    net.view([n(1), n(4)], 'partition');
    net.view([n(2), n(3)], 'partition');
    const cutSlot = FIRST + (d2.msg.t === 'don' ? (d2.msg.slots[0] as number) : 0);
    assert.equal(net.get(n(1)).ownerOf(cutSlot), n(2));
    assert.equal(net.get(n(2)).ownerOf(cutSlot), n(1));
    assert.ok(!net.get(n(1)).canAllocate(cutSlot) && !net.get(n(2)).canAllocate(cutSlot));
    // Partial merge {1,2,4} (n3 still away): the cut slot is an orphan nobody may allocate.
    net.view([n(1), n(2), n(4)], 'merge', [[n(1), n(4)], [n(2)]]);
    net.flush([n(1), n(2), n(4)]);
    assert.equal(net.get(n(1)).ownerOf(cutSlot), NO_OWNER);
    assert.deepEqual([...net.get(n(2)).table()], [...net.get(n(1)).table()]);
    // n3's slots stay frozen with n3.
    assert.equal(net.get(n(1)).ownerOf(FIRST + 2), n(3));
    // Full merge: the orphan goes to the primary; every slot has a live owner.
    net.view(ids, 'merge', [[n(1), n(2), n(4)], [n(3)]]);
    net.flush(ids);
    assert.equal(net.get(n(4)).ownerOf(cutSlot), n(1));
    const t = net.get(n(1)).table();
    assert.ok([...t].every((o) => ids.includes(o)));
    for (const id of ids) assert.deepEqual([...net.get(id).table()], [...t]);
    assert.deepEqual(net.errors, []);
  });

  it("a view change during a merge aborts it; the next view exchanges the old sides' tables again", () => {
    const net = new Net({ nodes: [1, 2, 3], firstSlot: FIRST, total: 30 });
    for (const id of [n(1), n(2)]) net.add(id);
    net.view([n(1), n(2)], 'join', [[n(1)], [n(2)]]);
    net.flush([n(1), n(2)]);
    net.get(n(2)).allocate(1);
    const fresh = net.add(n(3));
    net.view([n(1), n(2), n(3)], 'join', [[n(1), n(2)], [n(3)]]);
    net.queue.splice(0); // statuses lost with the view
    // Partition {1} | {2,3} before the merge completed: n2 and n3 still hold different tables.
    net.view([n(1)], 'partition');
    net.view([n(2), n(3)], 'partition');
    assert.equal(net.get(n(2)).phase, 'merging', 'n2 and n3 must exchange tables again');
    net.flush([n(2), n(3)]);
    assert.equal(fresh.phase, 'running');
    assert.deepEqual([...fresh.table()], [...net.get(n(2)).table()]);
    assert.equal(fresh.ownedCount, 10);
    assert.deepEqual(net.errors, []);
  });
});
