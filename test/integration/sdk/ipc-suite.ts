/**
 * SDK <-> LocalServer <-> kernel over a real Unix socket: the same suite runs against the fake kernel and the
 * real one (each test file picks the kernel).
 */
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dvk } from '../../../src/sdk/index.js';
import { AdminClient, ANY, connect, DvsError, NOTIFY_TYPE } from '../../../src/sdk/index.js';
import { check } from '../harness.js';
import type { KernelFactory, TestNode } from './harness.js';
import { DC, held, slowAborted, startNode } from './harness.js';

export function rejectsWith(code: string) {
  return (e: unknown) => {
    assert.ok(e instanceof DvsError, `expected DvsError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return true;
  };
}

export function ipcSuite(kernelName: string, makeKernel: KernelFactory): void {
  describe(`sdk over local socket (${kernelName} kernel)`, () => {
    let node: TestNode;
    const clients: Dvk[] = [];
    const admins: AdminClient[] = [];

    async function client(endpoint: number): Promise<Dvk> {
      const c = await connect({ socket: node.socket, dc: DC.name, endpoint, timeout: 2000 });
      clients.push(c);
      return c;
    }

    beforeEach(async () => {
      node = await startNode(makeKernel);
    });
    afterEach(async () => {
      for (const c of clients.splice(0)) await c.close();
      for (const a of admins.splice(0)) await a.close();
      await node.stop();
    });

    test('connect reports where we are bound', async () => {
      const a = await client(100);
      assert.equal(a.dc, DC.id);
      assert.equal(a.dcName, DC.name);
      assert.equal(a.endpoint, 100);
      assert.equal(a.node, 1);
      assert.equal(a.postWindow, DC.postWindow);
      const byId = await connect({ socket: node.socket, dc: DC.id, endpoint: 101 });
      clients.push(byId);
      assert.equal(byId.dcName, DC.name);
    });

    test('connect takes its defaults from DVS_SOCKET, DVS_DC and DVS_ENDPOINT', async () => {
      const saved = { ...process.env };
      process.env.DVS_SOCKET = node.socket;
      process.env.DVS_DC = String(DC.id);
      process.env.DVS_ENDPOINT = '102';
      try {
        const c = await connect();
        clients.push(c);
        assert.equal(c.endpoint, 102);
        assert.equal(c.dc, DC.id);
      } finally {
        process.env = saved;
      }
    });

    test('connect errors: unknown DC, endpoint taken, nobody listening, nothing configured', async () => {
      await assert.rejects(
        connect({ socket: node.socket, dc: 'nope', endpoint: 100 }),
        rejectsWith('ENOENT'),
      );
      await client(100);
      await assert.rejects(
        connect({ socket: node.socket, dc: DC.name, endpoint: 100 }),
        rejectsWith('EBOUND'),
      );
      await assert.rejects(
        connect({ socket: `${node.socket}.missing`, dc: DC.name, endpoint: 5 }),
        rejectsWith('ENOTCONN'),
      );
      const saved = { ...process.env };
      delete process.env.DVS_SOCKET;
      try {
        await assert.rejects(connect({ dc: DC.name, endpoint: 5 }), rejectsWith('EINVAL'));
      } finally {
        process.env = saved;
      }
    });

    test('send is a rendezvous: it resolves once the receiver took the message', async () => {
      const a = await client(100);
      const b = await client(101);
      let sent = false;
      const p = a.send(101, { type: 42, payload: Buffer.from('hi') }).then(() => {
        sent = true;
      });
      await sleep(20);
      assert.equal(sent, false);
      const m = await b.receive(ANY);
      assert.equal(m.source, 100);
      assert.equal(m.type, 42);
      assert.equal(m.kind, 'send');
      assert.equal(Buffer.from(m.payload).toString(), 'hi');
      await p;
      assert.equal(sent, true);
    });

    test('sendrec / receiveRequest / reply', async () => {
      const server = await client(100);
      const c1 = await client(101);
      const serve = (async () => {
        for (let i = 0; i < 3; i++) {
          const q = await server.receiveRequest({ timeout: 2000 });
          assert.equal(q.kind, 'request');
          await server.reply(q.source, { type: q.type + 1, payload: q.payload });
        }
      })();
      for (let i = 0; i < 3; i++) {
        const r = await c1.sendrec(100, { type: i, payload: Uint8Array.of(i) }, { timeout: 2000 });
        assert.equal(r.source, 100);
        assert.equal(r.type, i + 1);
        assert.deepEqual([...r.payload], [i]);
      }
      await serve;
      await assert.rejects(server.reply(101, { type: 0 }), rejectsWith('ENOTWAITING'));
    });

    test('replyReceive: a server loop with one round trip per request', async () => {
      const srv = await client(120);
      const c1 = await client(121);
      const c2 = await client(122);
      const server = (async () => {
        let req = await srv.receiveRequest({ timeout: 5000 });
        for (let i = 0; i < 199; i++) {
          req = await srv.replyReceive(
            req.source,
            { type: req.type * 2, payload: req.payload },
            { timeout: 5000 },
          );
        }
        await srv.reply(req.source, { type: req.type * 2 });
      })();
      const ask = async (c: Dvk, base: number) => {
        for (let i = 0; i < 100; i++)
          assert.equal((await c.sendrec(120, { type: base + i }, { timeout: 5000 })).type, (base + i) * 2);
      };
      await Promise.all([ask(c1, 1000), ask(c2, 5000)]);
      await server;
      // a reply to someone not waiting fails and receives nothing
      await assert.rejects(srv.replyReceive(121, { type: 1 }), rejectsWith('ENOTWAITING'));
      await assert.rejects(srv.receiveRequest({ timeout: 0 }), rejectsWith('ETIMEDOUT'));
    });

    test('notify is delivered as a notification with a timestamp', async () => {
      const a = await client(10);
      const b = await client(11);
      const before = Date.now();
      await a.notify(11);
      await a.notify(11); // coalesced
      const m = await b.receive(ANY, { timeout: 1000 });
      assert.equal(m.kind, 'notify');
      assert.equal(m.source, 10);
      assert.equal(m.type, NOTIFY_TYPE);
      assert.ok(typeof m.timestamp === 'number' && m.timestamp >= before - 1000);
      await assert.rejects(b.receive(ANY, { timeout: 0 }), rejectsWith('ETIMEDOUT'));
    });

    test('wakeup makes receive(ANY) fail with EWOKENUP', async () => {
      const a = await client(100);
      const b = await client(101);
      const woken = assert.rejects(b.receive(ANY, { timeout: 2000 }), rejectsWith('EWOKENUP'));
      await sleep(10);
      await a.wakeup(101);
      await woken;
    });

    test('post + flush: 100k messages arrive once, in order', async () => {
      const a = await client(100);
      const b = await client(101);
      const N = 100_000;
      const receiver = (async () => {
        for (let i = 0; i < N; i++) {
          const m = await b.receive(100, { timeout: 5000 });
          assert.equal(m.kind, 'post');
          const v = Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.length).readUInt32LE(0);
          if (v !== i) assert.fail(`message ${i} carried ${v}`);
        }
      })();
      const payload = Buffer.alloc(16);
      for (let i = 0; i < N; i++) {
        payload.writeUInt32LE(i, 0);
        await a.post(101, { type: 1, payload });
      }
      await a.flush({ timeout: 10_000 });
      await receiver;
      await assert.rejects(b.receive(ANY, { timeout: 0 }), rejectsWith('ETIMEDOUT'));
    });

    test('posts and sends of one pair stay in order; receive-ahead never takes a send', async () => {
      const a = await client(110);
      const b = await client(111);
      const c = await client(112);
      // more posts than the window: the tail waits for credit inside a's SDK, and the send must not overtake it
      const N = a.postWindow + 50;
      const posted: Promise<void>[] = [];
      for (let i = 0; i < N; i++) posted.push(a.post(111, { type: i }));
      let sendDone = false;
      const sent = a.send(111, { type: -2 }).then(() => {
        sendDone = true;
      });
      const notified = (async () => {
        // a post from another sender, then a send: receive-ahead on b brings c's post but must stop at the send
        await c.post(111, { type: -3 });
      })();
      await notified;
      const types: number[] = [];
      const fromA: number[] = [];
      while (fromA.length < N) {
        const m = await b.receive(ANY, { timeout: 5000 });
        types.push(m.type);
        if (m.source === 110) fromA.push(m.type);
      }
      assert.deepEqual(
        fromA,
        Array.from({ length: N }, (_, i) => i),
      );
      // The send is queued behind the posts but not received yet: give a wrongly early completion time to show.
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(sendDone, false, 'send completed before the application received it');
      const last = await b.receive(110, { timeout: 5000 });
      assert.equal(last.type, -2);
      await sent;
      await Promise.all(posted);
      if (!types.includes(-3)) assert.equal((await b.receive(112, { timeout: 5000 })).type, -3);
    });

    test('post to an unbound endpoint: the next post and flush report the failure', async () => {
      const a = await client(100);
      await a.post(555, { type: 1 });
      await assert.rejects(a.flush({ timeout: 2000 }), rejectsWith('ENOTBOUND'));
      await assert.rejects(a.post(555, { type: 1 }), rejectsWith('ENOTBOUND'));
      await a.flush({ timeout: 1000 });
    });

    test('grant + vcopy copies between two processes', async () => {
      const a = await client(100);
      const b = await client(101);
      const src = Buffer.alloc(200_000);
      for (let i = 0; i < src.length; i++) src[i] = (i * 7) & 0xff;
      const dst = Buffer.alloc(200_100);
      const ga = await a.grant(src, 'r');
      const gb = await b.grant(dst, 'w');
      assert.equal(ga.size, src.length);
      await a.vcopy(
        { ep: 100, grant: ga.id, offset: 0 },
        { ep: 101, grant: gb.id, offset: 100 },
        src.length,
        {
          timeout: 5000,
        },
      );
      assert.ok(dst.subarray(100).equals(src));
      assert.ok(dst.subarray(0, 100).equals(Buffer.alloc(100)));
      // Out of range and write into a read-only grant fail with EFAULT.
      await assert.rejects(
        a.vcopy({ ep: 100, grant: ga.id, offset: 1 }, { ep: 101, grant: gb.id, offset: 0 }, src.length),
        rejectsWith('EFAULT'),
      );
      await assert.rejects(
        b.vcopy({ ep: 101, grant: gb.id, offset: 0 }, { ep: 100, grant: ga.id, offset: 0 }, 10),
        rejectsWith('EFAULT'),
      );
      await ga.revoke();
      await gb.revoke();
    });

    test('receive timeout 50 ms -> ETIMEDOUT; timeout 0 does not wait', async () => {
      const b = await client(101);
      await assert.rejects(b.receive(ANY, { timeout: 50 }), rejectsWith('ETIMEDOUT'));
      await assert.rejects(b.receive(ANY, { timeout: 0 }), rejectsWith('ETIMEDOUT'));
      // The session is still usable afterwards.
      const a = await client(100);
      const p = b.receive(100, { timeout: 2000 });
      await a.send(101, { type: 3 }, { timeout: 2000 });
      assert.equal((await p).type, 3);
    });

    test('AbortSignal cancels a blocked call with EABORTED', async () => {
      const b = await client(101);
      const ac = new AbortController();
      const p = b.receive(ANY, { signal: ac.signal });
      setTimeout(() => ac.abort(), 20);
      await assert.rejects(p, rejectsWith('EABORTED'));
      await assert.rejects(b.receive(ANY, { signal: AbortSignal.abort() }), rejectsWith('EABORTED'));
      // A send that nobody takes is withdrawn by its timeout.
      await client(100);
      await assert.rejects(b.send(100, { type: 1 }, { timeout: 30 }), rejectsWith('ETIMEDOUT'));
    });

    test('a client that closes mid-call: its pending call is cancelled (EABORTED), peers see it gone', async () => {
      const a = await client(100);
      const b = await client(101);
      const pending = a.receive(ANY);
      const requester = b.sendrec(100, { type: 1 }, { timeout: 2000 });
      const got = await pending;
      assert.equal(got.kind, 'request');
      const stuck = assert.rejects(a.receive(ANY), rejectsWith('EABORTED'));
      await a.close();
      await stuck;
      await assert.rejects(a.send(101, { type: 1 }), rejectsWith('ENOTCONN'));
      // b waited for a reply from the dead server.
      await assert.rejects(requester, rejectsWith('ESRCDIED'));
      await assert.rejects(b.send(100, { type: 1 }, { timeout: 2000 }), rejectsWith('ENOTBOUND'));
      // The endpoint is free again.
      const again = await client(100);
      assert.equal(again.endpoint, 100);
    });

    test('daemon stop: pending calls reject with ENOTCONN', async () => {
      const b = await client(101);
      const p = assert.rejects(b.receive(ANY), rejectsWith('ENOTCONN'));
      await node.server.stop();
      await p;
    });

    test('garbage on one socket closes only that session', async () => {
      const a = await client(100);
      const b = await client(101);
      const raw = createConnection(node.socket);
      await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
      const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
      raw.on('error', () => undefined);
      raw.write(Buffer.from([5, 0, 0, 0, 0xff, 1, 2, 3, 4]));
      await closed;
      // An oversized length prefix is rejected too.
      const raw2 = createConnection(node.socket);
      raw2.on('error', () => undefined);
      const closed2 = new Promise<void>((resolve) => raw2.once('close', () => resolve()));
      raw2.write(Buffer.from([0xff, 0xff, 0xff, 0x7f]));
      await closed2;
      const warns = node.logs.filter((l) => l.level === 40 && /protocol error/.test(l.msg));
      assert.equal(warns.length, 2);
      const p = b.receive(100, { timeout: 2000 });
      await a.send(101, { type: 9 }, { timeout: 2000 });
      assert.equal((await p).type, 9);
    });

    test('admin calls: results, DvsError codes, timeouts', async () => {
      const admin = await AdminClient.connect(node.socket, { timeout: 2000 });
      admins.push(admin);
      const st = (await admin.call('status', {}, { timeout: 2000 })) as unknown as { method: string };
      assert.equal(st.method, 'status');
      assert.deepEqual(node.adminCalls[0], { method: 'status', params: {} });
      await assert.rejects(
        admin.call('dc.remove', { dc: 'x' }, { timeout: 2000 }),
        (e: unknown) => e instanceof DvsError && e.code === 'ENOTSUP',
      );
      await assert.rejects(
        (admin.call as (m: string, p: unknown) => Promise<unknown>)('fail', {}),
        (e: unknown) => e instanceof DvsError && e.code === 'EPERM' && e.details?.why === 'test',
      );
      await assert.rejects(
        (admin.call as (m: string, p: unknown) => Promise<unknown>)('boom', {}),
        rejectsWith('EINTERNAL'),
      );
      await assert.rejects(
        (admin.call as (m: string, p: unknown, o: unknown) => Promise<unknown>)('slow', {}, { timeout: 30 }),
        rejectsWith('ETIMEDOUT'),
      );
      // The connection still works after a local timeout.
      assert.ok(await admin.call('status', {}, { timeout: 2000 }));
    });

    test('service calls from a process: caller identity, pushed events, cleanup on close, cancel on timeout', async () => {
      const c = await connect({ socket: node.socket, dc: DC.name, endpoint: 120, timeout: 2000 });
      assert.deepEqual(
        { ...((await c.service('whoami', {}, { timeout: 2000 })) as object), proc: 0 },
        { dc: DC.id, ep: 120, pid: process.pid, proc: 0 },
      );
      const got: unknown[] = [];
      const sub = c.subscribe((d) => got.push(d));
      assert.deepEqual(await c.service('push', { sub, n: 3 }, { timeout: 2000 }), { pushed: 3 });
      // Events travel on the same socket ahead of the result: all three are there when the call resolves.
      assert.deepEqual(got, [{ i: 0 }, { i: 1 }, { i: 2 }]);
      c.unsubscribe(sub);
      await c.service('push', { sub, n: 1 }, { timeout: 2000 });
      assert.equal(got.length, 3, 'events of a dropped subscription are ignored');

      const before = slowAborted.count;
      await assert.rejects(c.service('slow', {}, { timeout: 30 }), rejectsWith('ETIMEDOUT'));
      await check(() => slowAborted.count === before + 1, 2000, 'the daemon aborts the timed-out call');

      await c.service('hold', { key: 'k120' }, { timeout: 2000 });
      assert.ok(held.has('k120'));
      await c.close();
      await check(() => !held.has('k120'), 2000, 'the session close releases what it held');

      // The CLI's admin connection has no caller.
      const admin = await AdminClient.connect(node.socket, { timeout: 2000 });
      try {
        assert.equal(await admin.service('whoami', {}, { timeout: 2000 }), null);
      } finally {
        await admin.close();
      }
    });

    test('admin connection to a missing socket fails with ENOTCONN', async () => {
      await assert.rejects(
        AdminClient.connect(`${node.socket}.nope`, { timeout: 500 }),
        rejectsWith('ENOTCONN'),
      );
    });
  });
}
