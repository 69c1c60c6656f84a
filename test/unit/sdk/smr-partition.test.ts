/**
 * State-machine replication under partitions, without sockets: the primary-view rule, the re-send of pending
 * requests, and a {@link StateMachine} driven through a fake connection that plays the daemon and the GCS
 * (views and deliveries fed by the test, multicasts and replies recorded).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ViewId } from '../../../src/gcs/types.js';
import type { Endpoint, NodeId, Received } from '../../../src/kernel/types.js';
import { DvsError } from '../../../src/protocol/errors.js';
import type { Dvk, OutMessage } from '../../../src/sdk/client.js';
import {
  decodeSmrRequest,
  encodeSmrRequest,
  isPrimaryView,
  type PendingRequest,
  resendable,
  StateMachine,
} from '../../../src/sdk/smr.js';

const EP = 100;

describe('isPrimaryView', () => {
  test('more than half of the fixed size, whatever the size', () => {
    for (let size = 1; size <= 7; size++) {
      for (let m = 0; m <= size + 2; m++) assert.equal(isPrimaryView(m, size), 2 * m > size, `${m}/${size}`);
    }
  });
  test('two disjoint views of one group are never both primary', () => {
    for (let size = 1; size <= 7; size++)
      for (let a = 0; a <= size; a++) assert.ok(!(isPrimaryView(a, size) && isPrimaryView(size - a, size)));
  });
  test('size 0 (a daemon that does not say): every view is primary', () => {
    assert.ok(isPrimaryView(1, 0));
  });
});

describe('resendable', () => {
  const p = (seq: number, sentIn: string | undefined): PendingRequest => ({
    session: 1,
    seq,
    msg: new Uint8Array([seq]),
    sentIn,
  });
  test('every pending request not multicast in the given view', () => {
    const got = resendable([p(1, undefined), p(2, '1.0.0.0'), p(3, '2.0.0.0')], '2.0.0.0').map((x) => x.seq);
    assert.deepEqual(got, [1, 2]);
  });
});

/** A Dvk stand-in: the daemon's group service and a request queue. */
class FakeDvk {
  readonly endpoint = EP;
  readonly multicasts: { payload: Uint8Array; order: string }[] = [];
  readonly replies: { dst: Endpoint; msg: OutMessage }[] = [];
  private readonly subs = new Map<number, (d: unknown) => void>();
  private nextSub = 1;
  private readonly requests: Received[] = [];
  private waiting: ((r: Received) => void) | undefined;
  private viewSeq = 0;
  private viewId: ViewId = { epoch: 0, coord: 0, inc: 0, seq: 0 };
  private msgSeq = 0;

  constructor(readonly node: NodeId) {}

  async service(method: string, params: Record<string, unknown>): Promise<unknown> {
    if (method === 'group.join') return { name: params.name, member: { node: this.node, ep: EP } };
    if (method === 'group.multicast') {
      this.multicasts.push({ payload: params.payload as Uint8Array, order: params.order as string });
    }
    return null;
  }
  subscribe(fn: (d: unknown) => void): number {
    this.subs.set(this.nextSub, fn);
    return this.nextSub++;
  }
  unsubscribe(sub: number): void {
    this.subs.delete(sub);
  }
  receiveRequest(opts?: { signal?: AbortSignal }): Promise<Received> {
    const r = this.requests.shift();
    if (r !== undefined) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      opts?.signal?.addEventListener('abort', () => reject(new DvsError('EABORTED')), { once: true });
    });
  }
  async reply(dst: Endpoint, msg: OutMessage): Promise<void> {
    this.replies.push({ dst, msg });
  }

  /** A client's call reaches this replica (its contact). */
  call(client: Endpoint, type = 1): void {
    const r: Received = { source: client, type, payload: new Uint8Array(0), kind: 'request' };
    const w = this.waiting;
    this.waiting = undefined;
    if (w !== undefined) w(r);
    else this.requests.push(r);
  }
  view(nodes: NodeId[]): void {
    this.viewId = { epoch: 1, coord: 0, inc: 0, seq: ++this.viewSeq };
    this.emit({
      t: 'view',
      view: {
        id: this.viewId,
        group: `dvs.smr.${EP}`,
        members: nodes.map((n) => ({ node: n, ep: EP })),
        reason: 'join',
      },
    });
  }
  deliver(payload: Uint8Array, from: NodeId, transitional = false): void {
    this.emit({
      t: 'msg',
      sender: { node: from, ep: EP },
      order: 'safe',
      payload,
      seq: ++this.msgSeq,
      view: this.viewId,
      ...(transitional ? { transitional: true } : {}),
    });
  }
  private emit(d: unknown): void {
    for (const fn of this.subs.values()) fn(d);
  }
}

const settle = () => new Promise((r) => setTimeout(r, 10));

/** A counter replica on `node` of a group of `size`, serving through a FakeDvk. */
async function replica(node: NodeId, size: number, boot: boolean) {
  const dvk = new FakeDvk(node);
  let counter = 0;
  const sm = new StateMachine(
    dvk as unknown as Dvk,
    {
      apply: () => ({ type: 1, payload: new Uint8Array([++counter]) }),
      snapshot: () => new Uint8Array([counter]),
      restore: (s) => {
        counter = s[0] ?? 0;
      },
    },
    boot,
    size,
  );
  const stop = new AbortController();
  const serving = sm.serve({ signal: stop.signal });
  // serve() has subscribed and asked to join; the first view the test feeds completes the join.
  await settle();
  const end = async () => {
    stop.abort();
    await serving;
  };
  return { dvk, sm, stop: end, counter: () => counter };
}

/** The request messages a replica multicast, decoded. */
const requestsSent = (dvk: FakeDvk) =>
  dvk.multicasts.filter((m) => m.payload[0] === 0x52).map((m) => ({ ...decodeSmrRequest(m.payload)!, m }));

describe('StateMachine under partitions (fake group)', () => {
  test('a request taken in a non-primary view is neither applied nor multicast; sent once primary', async () => {
    const r = await replica(0, 3, true);
    try {
      r.dvk.view([0]); // the first replica alone: synced (empty state), but not primary (1 of 3)
      await settle();
      assert.deepEqual([r.sm.status().synced, r.sm.status().primary], [true, false]);
      r.dvk.call(500);
      await settle();
      assert.equal(requestsSent(r.dvk).length, 0, 'nothing multicast in a non-primary view');
      assert.equal(r.sm.status().pending, 1);
      r.dvk.view([0, 1]); // primary (2 of 3)
      await settle();
      const sent = requestsSent(r.dvk);
      assert.equal(sent.length, 1, 'the pending request is multicast once primary');
      assert.equal(sent[0]!.m.order, 'safe');
      r.dvk.deliver(sent[0]!.m.payload, 0);
      await settle();
      assert.deepEqual(
        r.dvk.replies.map((x) => [x.dst, x.msg.payload?.[0]]),
        [[500, 1]],
      );
      assert.equal(r.sm.status().pending, 0);
    } finally {
      await r.stop();
    }
  });

  test('a synced replica in a non-primary view applies nothing, becomes unsynced, keeps its request', async () => {
    const r = await replica(0, 3, true);
    try {
      r.dvk.view([0]);
      r.dvk.view([0, 1, 2]);
      await settle();
      r.dvk.call(500);
      await settle();
      const [req] = requestsSent(r.dvk);
      assert.ok(req, 'multicast in the primary view');
      r.dvk.view([0]); // cut off: 1 of 3
      await settle();
      r.dvk.deliver(req.m.payload, 0); // (delivered late, in the non-primary view)
      await settle();
      assert.equal(r.counter(), 0, 'not applied');
      assert.deepEqual(r.dvk.replies, [], 'no reply from a minority');
      assert.deepEqual([r.sm.status().synced, r.sm.status().pending], [false, 1]);
    } finally {
      await r.stop();
    }
  });

  test('transitional deliveries count only if the next view is primary', async () => {
    for (const [next, applied] of [
      [[0, 1], 1],
      [[0], 0],
    ] as const) {
      const r = await replica(0, 3, true);
      try {
        r.dvk.view([0]);
        r.dvk.view([0, 1, 2]);
        await settle();
        const msg = encodeSmrRequest({ client: 600, session: 7, seq: 1, type: 1, body: new Uint8Array(0) });
        r.dvk.deliver(msg, 2, true);
        await settle();
        assert.equal(r.counter(), 0, 'held until the next view');
        r.dvk.view([...next]);
        await settle();
        assert.equal(r.counter(), applied, `next view ${next.join(',')}`);
      } finally {
        await r.stop();
      }
    }
  });

  test('a late copy of an answered request does not answer the client’s newer call', async () => {
    const r = await replica(0, 1, true);
    try {
      r.dvk.view([0]);
      await settle();
      r.dvk.call(500);
      await settle();
      const [first] = requestsSent(r.dvk);
      r.dvk.deliver(first!.m.payload, 0);
      await settle();
      r.dvk.call(500); // the client's next call
      await settle();
      r.dvk.deliver(first!.m.payload, 0); // a copy of the first (re-sent across a view change)
      await settle();
      assert.equal(r.counter(), 1, 'the copy is not applied (plain sendrec: the contact gave it an id)');
      assert.equal(r.dvk.replies.length, 1, 'the newer call is not answered with the older reply');
      const second = requestsSent(r.dvk)[1]!;
      r.dvk.deliver(second.m.payload, 0);
      await settle();
      assert.deepEqual(
        r.dvk.replies.map((x) => x.msg.payload?.[0]),
        [1, 2],
      );
    } finally {
      await r.stop();
    }
  });

  test('a primary view without any synced member waits: it never starts from the empty state', async () => {
    const r = await replica(3, 3, false); // a replacement
    try {
      r.dvk.view([3, 4]); // primary by count, but nobody synced in it
      await settle();
      const msg = encodeSmrRequest({ client: 600, session: 7, seq: 1, type: 1, body: new Uint8Array(0) });
      r.dvk.deliver(msg, 4);
      await settle();
      assert.equal(r.counter(), 0);
      assert.equal(r.sm.status().synced, false);
    } finally {
      await r.stop();
    }
  });
});
