/**
 * Real daemons (separate OS processes) on loopback, real SDK connections over their Unix sockets:
 * IPC on one node and across three, process and node death, DC isolation, dvs run.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ANY, connect, type Dvk, DvsError } from '../../../src/sdk/index.js';
import { check, REPO, TestCluster } from '../harness.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DvsError, `expected DvsError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

describe('three-node cluster', () => {
  let c: TestCluster;
  const open: Dvk[] = [];
  const at = async (node: number, endpoint: number, dc = 'app'): Promise<Dvk> => {
    const d = await connect({ socket: c.nodes[node]!.socket, dc, endpoint, timeout: 5000 });
    open.push(d);
    return d;
  };

  before(async () => {
    c = await TestCluster.start({ nodes: 3, heartbeatMs: 100, deadAfterMs: 1000 });
    await c.createDc({ id: 1, name: 'app' });
    await c.createDc({ id: 2, name: 'other' });
  });
  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    await c?.stop();
  });

  test('send/receive and sendrec across nodes, in pair order', async () => {
    const a = await at(0, 100);
    const b = await at(1, 200);
    // wait until node 0 knows endpoint 200 (bind announcements travel over the link)
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 200),
      5000,
      'ep 200 known',
    );
    // one blocking call at a time per endpoint: a second concurrent send gets EBUSY
    const first = a.send(200, { type: 0 }, { timeout: 200 });
    await rejectsWith(a.send(200, { type: 0 }), 'EBUSY');
    // a send that timed out across nodes was withdrawn from the receiver's queue: it is never delivered
    await rejectsWith(first, 'ETIMEDOUT');
    await rejectsWith(b.receive(100, { timeout: 0 }), 'ETIMEDOUT');
    const sends = (async () => {
      for (const i of [1, 2, 3]) await a.send(200, { type: i, payload: enc.encode(`m${i}`) });
    })();
    const got: number[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await b.receive(100, { timeout: 5000 });
      assert.equal(m.source, 100);
      assert.equal(dec.decode(m.payload), `m${m.type}`);
      got.push(m.type);
    }
    await sends;
    assert.deepEqual(got, [1, 2, 3]);

    const server = (async () => {
      const req = await b.receiveRequest({ timeout: 5000 });
      assert.equal(req.kind, 'request');
      await b.reply(req.source, {
        type: req.type + 1,
        payload: enc.encode(dec.decode(req.payload).toUpperCase()),
      });
    })();
    const r = await a.sendrec(200, { type: 41, payload: enc.encode('ping') }, { timeout: 5000 });
    await server;
    assert.equal(r.type, 42);
    assert.equal(dec.decode(r.payload), 'PING');
  });

  test('notify coalesces and is delivered before queued messages', async () => {
    const a = await at(0, 101);
    const n = await at(0, 102);
    const b = await at(2, 201);
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 201),
      5000,
      'ep 201',
    );
    const sent = a.send(201, { type: 5 });
    await a.notify(201); // notify may run while the same endpoint is blocked in send
    await n.notify(201);
    await n.notify(201);
    await check(
      async () => {
        const row = (await c.admin(2, 'ep.list', { dc: 'app' })).find((e) => e.ep === 201);
        return row?.queued === 1 && row.pendingNotify === 2;
      },
      5000,
      'one message and two coalesced notifications pending at 201',
    );
    const first = await b.receive(ANY, { timeout: 5000 });
    const second = await b.receive(ANY, { timeout: 5000 });
    const third = await b.receive(ANY, { timeout: 5000 });
    assert.deepEqual(
      [first, second, third].map((m) => [m.kind, m.source]),
      [
        ['notify', 101],
        ['notify', 102],
        ['send', 101],
      ],
    );
    assert.ok(typeof first.timestamp === 'number' && first.timestamp > 0);
    await sent;
    await rejectsWith(b.receive(ANY, { timeout: 0 }), 'ETIMEDOUT');
  });

  test('post: 20k messages across nodes arrive once and in order; flush waits for consumption', async () => {
    const a = await at(0, 110);
    const b = await at(1, 210);
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 210),
      5000,
      'ep 210',
    );
    const N = 20_000;
    const payload = new Uint8Array(4);
    const view = new DataView(payload.buffer);
    const producer = (async () => {
      for (let i = 0; i < N; i++) {
        view.setUint32(0, i, true);
        await a.post(210, { type: 9, payload });
      }
      await a.flush({ timeout: 20_000 });
    })();
    for (let i = 0; i < N; i++) {
      const m = await b.receive(110, { timeout: 10_000 });
      assert.equal(m.kind, 'post');
      const v = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength).getUint32(0, true);
      if (v !== i) assert.fail(`post ${i} arrived as ${v}`);
    }
    await producer;
  });

  test('vcopy 1 MiB across nodes, and by a privileged third party on a third node', async () => {
    const src = await at(0, 120);
    const dst = await at(1, 220);
    const sys = await at(2, 10); // endpoint 10 < sysEndpoints: privileged
    await check(
      async () => {
        const eps = (await c.admin(2, 'ep.list', { dc: 'app' })).map((e) => e.ep);
        const eps0 = (await c.admin(0, 'ep.list', { dc: 'app' })).map((e) => e.ep);
        return eps.includes(120) && eps.includes(220) && eps0.includes(220);
      },
      5000,
      'endpoints known',
    );
    const data = new Uint8Array(1 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    const target = new Uint8Array(1 << 20);
    const gs = await src.grant(data, 'r');
    const gd = await dst.grant(target, 'w');
    await src.vcopy({ ep: 120, grant: gs.id, offset: 0 }, { ep: 220, grant: gd.id, offset: 0 }, data.length, {
      timeout: 20_000,
    });
    assert.deepEqual(target, data);

    target.fill(0);
    await sys.vcopy({ ep: 120, grant: gs.id, offset: 1000 }, { ep: 220, grant: gd.id, offset: 0 }, 5000, {
      timeout: 20_000,
    });
    assert.deepEqual(target.subarray(0, 5000), data.subarray(1000, 6000));

    // a user endpoint may not copy between two others; ranges are checked by the owners
    const user = await at(2, 300);
    await rejectsWith(
      user.vcopy({ ep: 120, grant: gs.id, offset: 0 }, { ep: 220, grant: gd.id, offset: 0 }, 10),
      'EPERM',
    );
    await rejectsWith(
      src.vcopy(
        { ep: 120, grant: gs.id, offset: (1 << 20) - 10 },
        { ep: 220, grant: gd.id, offset: 0 },
        100,
        {
          timeout: 5000,
        },
      ),
      'EFAULT',
    );
  });

  test('a process that exits wakes its blocked peers with a died error (across nodes)', async () => {
    const a = await at(0, 130);
    const b = await at(2, 230);
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 230),
      5000,
      'ep 230',
    );
    const blocked = a.send(230, { type: 1 });
    await check(
      async () => (await c.admin(2, 'ep.list', { dc: 'app' })).find((e) => e.ep === 230)?.queued === 1,
      5000,
      'message queued at 230',
    );
    await b.close();
    await rejectsWith(blocked, 'EDSTDIED');
  });

  test('DC isolation: an endpoint of another DC cannot be addressed', async () => {
    const x = await at(0, 140, 'other');
    const y = await at(1, 240, 'app');
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 240),
      5000,
      'ep 240',
    );
    await rejectsWith(x.send(240, { type: 1 }, { timeout: 2000 }), 'ENOTBOUND');
    assert.ok(y.endpoint === 240);
  });

  test('dvs run: the example echo server answers a client on another node', async () => {
    const info = await c.admin(1, 'proc.run', {
      dc: 'app',
      ep: 150,
      cmd: [process.execPath, `${REPO}/examples/echo-server.js`],
      cwd: REPO,
    });
    assert.ok(info.pid > 0);
    const client = await at(0, 250);
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 150),
      5000,
      'ep 150',
    );
    const r = await client.sendrec(150, { type: 3, payload: enc.encode('hello') }, { timeout: 10_000 });
    assert.equal(dec.decode(r.payload), 'HELLO');
    const rows = await c.admin(1, 'ep.list', { dc: 'app' });
    const row = rows.find((e) => e.ep === 150);
    assert.equal(row?.pid, info.pid);
    assert.equal(row?.kind, 'local');
    const killed = await c.admin(1, 'proc.kill', { dc: 'app', ep: 150 });
    assert.ok(killed.exit !== null);
    await check(
      async () => !(await c.admin(1, 'ep.list', { dc: 'app' })).some((e) => e.ep === 150),
      5000,
      'ep 150 unbound after kill',
    );
  });

  test('a node that dies fails the calls waiting on it with ENOTCONN; other traffic goes on', async () => {
    const a = await at(0, 160);
    await at(2, 260); // lives on node 2, which we kill
    const b = await at(1, 261);
    await check(
      async () => {
        const eps = (await c.admin(0, 'ep.list', { dc: 'app' })).map((e) => e.ep);
        return eps.includes(260) && eps.includes(261);
      },
      5000,
      'eps known',
    );
    const blocked = a.sendrec(260, { type: 1 });
    await check(
      async () => (await c.admin(2, 'ep.list', { dc: 'app' })).find((e) => e.ep === 260)?.queued === 1,
      5000,
      'queued at 260',
    );
    await c.killNode(2);
    await rejectsWith(blocked, 'ENOTCONN');
    await rejectsWith(a.send(260, { type: 1 }, { timeout: 5000 }), 'ENOTCONN');
    const ok = b.receive(160, { timeout: 5000 });
    await a.send(261, { type: 2 });
    assert.equal((await ok).type, 2);
  });

  test('a restarted node rejoins: links come back, its new endpoints are reachable', async () => {
    c.restartNode(2);
    await c.waitLinks();
    await c.admin(2, 'dc.create', {
      config: { id: 1, name: 'app', nodes: [0, 1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 },
    });
    const z = await at(2, 270);
    const a = await at(0, 170);
    await check(
      async () => (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 270),
      5000,
      'ep 270',
    );
    // the endpoint of the dead incarnation is gone everywhere
    assert.ok(!(await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 260));
    const got = z.receive(170, { timeout: 5000 });
    await a.send(270, { type: 77 });
    assert.equal((await got).type, 77);
  });

  test('a send cycle across two nodes is refused with EDEADLK', async () => {
    const p = await at(0, 180);
    const q = await at(1, 280);
    await check(
      async () =>
        (await c.admin(0, 'ep.list', { dc: 'app' })).some((e) => e.ep === 280) &&
        (await c.admin(1, 'ep.list', { dc: 'app' })).some((e) => e.ep === 180),
      5000,
      'eps known',
    );
    const first = p.send(280, { type: 1 });
    await check(
      async () => (await c.admin(1, 'ep.list', { dc: 'app' })).find((e) => e.ep === 280)?.queued === 1,
      5000,
      'queued at 280',
    );
    await rejectsWith(q.send(180, { type: 2 }, { timeout: 5000 }), 'EDEADLK');
    const m = await q.receive(180, { timeout: 5000 });
    assert.equal(m.type, 1);
    await first;
  });

  test('each daemon serves Prometheus metrics: links, endpoints, messages', async () => {
    const st = await c.status(0);
    assert.ok(st.metrics, 'status names the metrics URL');
    const res = await fetch(st.metrics);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /^dvs_link_up\{peer="1",node="0"\} 1$/m);
    assert.match(text, /^dvs_link_frames_sent_total\{peer="1",node="0"\} [1-9]\d*$/m);
    assert.match(text, /^dvs_kernel_endpoints\{location="local",node="0"\} [1-9]\d*$/m);
    assert.match(text, /^dvs_ipc_messages\{what="sent_remote",node="0"\} [1-9]\d*$/m);
    assert.match(text, /^dvs_process_process_cpu_seconds_total/m);
    const none = await fetch(st.metrics.replace('/metrics', '/nope'));
    assert.equal(none.status, 404);
  });
});
