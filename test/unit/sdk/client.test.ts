/**
 * The SDK's client logic without sockets: a fake connection records the frames the client writes, and the
 * test plays the daemon by feeding frames back.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Received } from '../../../src/kernel/types.js';
import { ANY } from '../../../src/kernel/types.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { FrameDecoder } from '../../../src/protocol/frame.js';
import type { HelloOkFrame, ProcFrame } from '../../../src/protocol/proc-frames.js';
import { decodeProcFrame, ProcFrameWriter } from '../../../src/protocol/proc-frames.js';
import { Dvk, RECEIVE_AHEAD } from '../../../src/sdk/client.js';
import type { ConnHandlers, ProcConnection } from '../../../src/sdk/conn.js';

class FakeConn {
  readonly out = new ProcFrameWriter();
  handlers: ConnHandlers | undefined;
  closed = false;
  bind(h: ConnHandlers): void {
    this.handlers = h;
  }
  schedule(): void {}
  flushNow(): void {}
  async close(): Promise<void> {
    this.closed = true;
    this.handlers?.closed(new DvsError('ENOTCONN', 'closed'));
  }
  /** Frames the client wrote since the last call. */
  written(): ProcFrame[] {
    const buf = this.out.take();
    if (!buf) return [];
    return new FrameDecoder().push(buf).map((b) => decodeProcFrame(b));
  }
  /** Deliver a frame as the daemon would. */
  deliver(f: ProcFrame): void {
    const w = new ProcFrameWriter();
    w.frame(f);
    for (const b of new FrameDecoder().push(w.take()!)) this.handlers!.frame(decodeProcFrame(b));
  }
}

const HELLO: HelloOkFrame = {
  op: 'helloOk',
  callId: 1,
  node: 3,
  dc: 7,
  dcName: 'test',
  endpoint: 100,
  maxPayload: 64,
  postWindow: 4,
};

function setup(): { conn: FakeConn; dvk: Dvk } {
  const conn = new FakeConn();
  const dvk = new Dvk(conn as unknown as ProcConnection, HELLO);
  return { conn, dvk };
}

/** Resolves to 'pending' if `p` has not settled after the current microtasks. */
async function state(p: Promise<unknown>): Promise<'pending' | 'resolved' | 'rejected'> {
  let s: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(
    () => {
      s = 'resolved';
    },
    () => {
      s = 'rejected';
    },
  );
  await new Promise((r) => setImmediate(r));
  return s;
}

function code(c: string) {
  return (e: unknown) => e instanceof DvsError && e.code === c;
}

describe('sdk client - post windows', () => {
  test('posts within the window resolve at once with a shared promise; the next waits for credit', async () => {
    const { conn, dvk } = setup();
    const ps = [1, 2, 3, 4].map((i) => dvk.post(200, { type: i }));
    assert.equal(ps[0], ps[3], 'no promise allocated per post while there is credit');
    const fifth = dvk.post(200, { type: 5, payload: Uint8Array.of(9) });
    assert.equal(await state(fifth), 'pending');
    assert.deepEqual(
      conn.written().map((f) => (f.op === 'post' ? [f.dst, f.type] : f.op)),
      [
        [200, 1],
        [200, 2],
        [200, 3],
        [200, 4],
      ],
    );
    // Another destination has its own window.
    assert.equal(await state(dvk.post(201, { type: 1 })), 'resolved');
    conn.written();
    const flushed = dvk.flush();
    conn.deliver({ op: 'credit', dst: 200, n: 1 });
    assert.equal(await state(fifth), 'resolved');
    const w = conn.written();
    assert.equal(w.length, 1);
    assert.ok(w[0]!.op === 'post' && w[0]!.type === 5 && w[0]!.payload[0] === 9);
    assert.equal(await state(flushed), 'pending');
    conn.deliver({ op: 'credit', dst: 200, n: 4 });
    assert.equal(await state(flushed), 'pending', 'destination 201 still has a post outstanding');
    conn.deliver({ op: 'credit', dst: 201, n: 1 });
    assert.equal(await state(flushed), 'resolved');
  });

  test('a failed post rejects queued posts, the next post to that destination once, and flush once', async () => {
    const { conn, dvk } = setup();
    for (let i = 0; i < 4; i++) await dvk.post(300, { type: i });
    const queued = dvk.post(300, { type: 9 });
    const flushed = dvk.flush();
    conn.deliver({ op: 'postFailed', dst: 300, code: 'EDSTDIED', n: 4 });
    await assert.rejects(queued, code('EDSTDIED'));
    await assert.rejects(flushed, code('EDSTDIED'));
    // The queued post took the per-destination report; flush has reported too: clean slate.
    await dvk.post(300, { type: 1 });
    conn.deliver({ op: 'postFailed', dst: 300, code: 'ENOTBOUND', n: 1 });
    await assert.rejects(dvk.post(300, { type: 2 }), code('ENOTBOUND'));
    await assert.rejects(dvk.flush(), code('ENOTBOUND'));
    await dvk.flush();
  });

  test('oversized payloads and bad types are rejected locally', async () => {
    const { dvk } = setup();
    await assert.rejects(dvk.post(5, { type: 1, payload: new Uint8Array(65) }), code('EMSGSIZE'));
    await assert.rejects(dvk.post(5, { type: 1.5 }), code('EINVAL'));
    await assert.rejects(dvk.send(5, { type: 1, payload: new Uint8Array(65) }), code('EMSGSIZE'));
    await assert.rejects(dvk.send(-1, { type: 1 }), code('EINVAL'));
  });
});

describe('sdk client - calls', () => {
  test('a timeout sends CANCEL and the call settles with what the daemon answers', async () => {
    const { conn, dvk } = setup();
    const p = dvk.receive(ANY, { timeout: 5 });
    const [recv] = conn.written();
    assert.ok(recv?.op === 'receive' && recv.src === ANY && !recv.nowait && recv.ahead === RECEIVE_AHEAD);
    await new Promise((r) => setTimeout(r, 20));
    const [cancel] = conn.written();
    assert.deepEqual(cancel, { op: 'cancel', callId: recv.callId, reason: 'ETIMEDOUT' });
    assert.equal(await state(p), 'pending', 'the daemon decides');
    const msg: Received = { source: 9, type: 4, payload: Uint8Array.of(1), kind: 'send' };
    conn.deliver({ op: 'result', callId: recv.callId, code: null, msg });
    const m = await p;
    assert.equal(m.source, 9);
    assert.equal(m.type, 4);
  });

  test('timeout 0 is a nowait receive; daemon errors keep their code and text', async () => {
    const { conn, dvk } = setup();
    const p = dvk.receive(ANY, { timeout: 0 });
    const [recv] = conn.written();
    assert.ok(recv?.op === 'receive' && recv.nowait);
    conn.deliver({ op: 'result', callId: recv.callId, code: 'ETIMEDOUT', message: 'nothing there' });
    await assert.rejects(
      p,
      (e: unknown) => e instanceof DvsError && e.code === 'ETIMEDOUT' && e.message === 'nothing there',
    );
  });

  test('receive-ahead messages serve later receives without a round trip, per-pair FIFO kept', async () => {
    const { conn, dvk } = setup();
    const p = dvk.receive();
    const [recv] = conn.written();
    assert.ok(recv?.op === 'receive');
    const m = (source: number, type: number, kind: Received['kind']): Received => ({
      source,
      type,
      payload: new Uint8Array(0),
      kind,
    });
    conn.deliver({ op: 'result', callId: recv.callId, code: null, msg: m(1, 0, 'post') });
    conn.deliver({ op: 'result', callId: recv.callId, code: null, msg: m(1, 1, 'post'), more: true });
    conn.deliver({ op: 'result', callId: recv.callId, code: null, msg: m(2, 2, 'post'), more: true });
    conn.deliver({ op: 'result', callId: recv.callId, code: null, msg: m(1, 3, 'request'), more: true });
    conn.deliver({ op: 'result', callId: recv.callId, code: null, msg: m(3, 4, 'request'), more: true });
    assert.equal((await p).type, 0);
    // Request from 1 sits behind a post from 1: the request from 3 is the first eligible one.
    assert.equal((await dvk.receiveRequest()).type, 4);
    assert.equal((await dvk.receive(2)).type, 2);
    assert.equal((await dvk.receive()).type, 1);
    assert.equal((await dvk.receiveRequest()).type, 3);
    assert.deepEqual(conn.written(), [], 'all served locally');
    const next = dvk.receive();
    assert.equal(conn.written()[0]?.op, 'receive');
    await dvk.close();
    await assert.rejects(next, code('ENOTCONN'));
  });

  test('close rejects pending calls and later calls with ENOTCONN', async () => {
    const { dvk } = setup();
    const p = dvk.sendrec(5, { type: 1 });
    await dvk.close();
    await assert.rejects(p, code('ENOTCONN'));
    await assert.rejects(dvk.notify(5), code('ENOTCONN'));
    await assert.rejects(dvk.post(5, { type: 1 }), code('ENOTCONN'));
  });
});

describe('sdk client - grants', () => {
  test('GRANT_READ / GRANT_WRITE are served from the granted buffer with range and access checks', async () => {
    const { conn, dvk } = setup();
    const src = Uint8Array.of(1, 2, 3, 4, 5);
    const gp = dvk.grant(src, 'r');
    const [g] = conn.written();
    assert.ok(g?.op === 'grant' && g.size === 5 && g.access === 'r');
    conn.deliver({ op: 'result', callId: g.callId, code: null });
    const grant = await gp;
    conn.deliver({ op: 'grantRead', xfer: 11, grant: grant.id, offset: 1, length: 3 });
    conn.deliver({ op: 'grantRead', xfer: 12, grant: grant.id, offset: 4, length: 3 });
    conn.deliver({ op: 'grantWrite', xfer: 13, grant: grant.id, offset: 0, data: Uint8Array.of(9) });
    conn.deliver({ op: 'grantRead', xfer: 14, grant: 999, offset: 0, length: 1 });
    const answers = conn.written();
    assert.deepEqual(
      answers.map((f) =>
        f.op === 'grantData' ? [f.xfer, f.code, [...f.data]] : f.op === 'grantWritten' ? [f.xfer, f.code] : f,
      ),
      [
        [11, null, [2, 3, 4]],
        [12, 'EFAULT', []],
        [13, 'EFAULT'],
        [14, 'ENOENT', []],
      ],
    );
    assert.deepEqual([...src], [1, 2, 3, 4, 5], 'a read-only grant is never written');
  });
});
