/**
 * A network partition {0,1} | {2,3,4} made with nftables inside the node namespaces, under continuous
 * cross-partition send() streams: each side keeps working, calls across fail with ENOTCONN once the dead
 * time has passed, and after the heal traffic across resumes with no acknowledged message lost.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ANY, connect, type Dvk } from '../../src/sdk/index.js';
import { check, leftovers, NetnsCluster, systemSkipReason } from './harness.js';
import { codeOf, rejectsWith, roundTrip, serve, sleep, waitEndpoints } from './ipc.js';

const NODES = 5;
const DEAD_AFTER_MS = 1000;
const MARGIN_MS = 3000;
const LEFT = [0, 1];
const RIGHT = [2, 3, 4];
const server = (i: number) => 100 + i;
const client = (i: number) => 200 + i;
const receiver = (i: number) => 400 + i;
const sender = (i: number) => 500 + i;
/** Each node streams to a receiver on the other side. */
const CROSS: Record<number, number> = { 0: 2, 1: 4, 2: 1, 3: 0, 4: 0 };

/** A loop of rendezvous sends, numbered; what completed OK is what the receiver acknowledged. */
interface Stream {
  from: number;
  to: number;
  /** Seqs whose send() resolved. */
  ok: number[];
  /** Error codes seen, with counts. */
  errors: Map<string, number>;
  attempted: number;
  done: Promise<void>;
}

describe('system: partition and heal under load (5 nodes)', { skip: systemSkipReason() }, () => {
  let c: NetnsCluster;
  const stop = new AbortController();
  const tasks: Promise<void>[] = [];
  const open: Dvk[] = [];
  const clients = new Map<number, Dvk>();
  /** Seqs received per sending endpoint, in arrival order. */
  const received = new Map<number, number[]>();
  const streams: Stream[] = [];
  let stopStreams = false;

  const bind = async (node: number, endpoint: number): Promise<Dvk> => {
    const d = await connect({ socket: c.node(node).socket, dc: 'app', endpoint, timeout: 5000 });
    open.push(d);
    return d;
  };

  const receiveLoop = async (d: Dvk) => {
    for (;;) {
      let m: Awaited<ReturnType<Dvk['receive']>>;
      try {
        m = await d.receive(ANY, { signal: stop.signal });
      } catch {
        return;
      }
      const seq = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getUint32(0, true);
      received.set(m.source, [...(received.get(m.source) ?? []), seq]);
    }
  };

  const sendLoop = (d: Dvk, from: number, to: number): Stream => {
    const s: Stream = { from, to, ok: [], errors: new Map(), attempted: 0, done: Promise.resolve() };
    s.done = (async () => {
      const payload = new Uint8Array(4);
      for (let seq = 0; !stopStreams; seq++) {
        new DataView(payload.buffer).setUint32(0, seq, true);
        s.attempted++;
        try {
          await d.send(receiver(to), { type: 1, payload }, { timeout: 10_000 });
          s.ok.push(seq);
        } catch (e) {
          const code = codeOf(e);
          s.errors.set(code, (s.errors.get(code) ?? 0) + 1);
          await sleep(10); // failures are immediate once the peer is down: do not spin
        }
      }
    })();
    return s;
  };

  const okCounts = () => streams.map((s) => s.ok.length);

  before(async () => {
    c = await NetnsCluster.start({ nodes: NODES, heartbeatMs: 100, deadAfterMs: DEAD_AFTER_MS });
    await c.createDc({ id: 1, name: 'app' });
    for (let i = 0; i < NODES; i++) {
      tasks.push(serve(await bind(i, server(i)), stop.signal));
      tasks.push(receiveLoop(await bind(i, receiver(i))));
      clients.set(i, await bind(i, client(i)));
    }
    const all = Array.from({ length: NODES }, (_, i) => i);
    await waitEndpoints(c, all, 'app', [...all.map(server), ...all.map(receiver)]);
    for (let i = 0; i < NODES; i++) {
      const d = await bind(i, sender(i));
      streams.push(sendLoop(d, i, CROSS[i]!));
    }
  });
  after(async () => {
    stopStreams = true;
    stop.abort();
    await Promise.allSettled(open.map((d) => d.close()));
    await Promise.allSettled([...tasks, ...streams.map((s) => s.done)]);
    await c?.stop();
  });

  test('partition: each side keeps working, calls across fail with ENOTCONN after the dead time', async () => {
    await check(() => okCounts().every((n) => n >= 20), 10_000, 'every stream flowing before the partition');
    await c.partition(LEFT, RIGHT);
    await c.waitLinkState(LEFT, RIGHT, 'down', DEAD_AFTER_MS + MARGIN_MS);
    await c.waitLinkState(RIGHT, LEFT, 'down', DEAD_AFTER_MS + MARGIN_MS);
    for (const side of [LEFT, RIGHT]) {
      for (const i of side) {
        const st = await c.status(i);
        for (const j of side) if (j !== i) assert.equal(st.links.find((l) => l.node === j)?.state, 'up');
        for (const j of side) await roundTrip(clients.get(i)!, server(j));
      }
    }
    await rejectsWith(clients.get(0)!.sendrec(server(2), { type: 1 }, { timeout: 5000 }), 'ENOTCONN');
    await rejectsWith(clients.get(4)!.sendrec(server(1), { type: 1 }, { timeout: 5000 }), 'ENOTCONN');
    await rejectsWith(clients.get(3)!.send(receiver(0), { type: 1 }, { timeout: 5000 }), 'ENOTCONN');
    // The streams across hit the partition too.
    await check(
      () => streams.every((s) => (s.errors.get('ENOTCONN') ?? 0) > 0),
      5000,
      'every stream failing with ENOTCONN',
    );
  });

  test('heal: links come back, traffic across works, no acknowledged send was lost', async () => {
    await c.heal();
    await c.waitLinks(DEAD_AFTER_MS + MARGIN_MS + 5000);
    const healed = okCounts();
    await check(
      () => okCounts().every((n, k) => n >= healed[k]! + 20),
      15_000,
      'every stream flowing again after the heal',
    );
    for (let i = 0; i < NODES; i++) await roundTrip(clients.get(i)!, server(CROSS[i]!));

    stopStreams = true;
    await Promise.all(streams.map((s) => s.done));
    // A completed send was taken by the receiving process; let the receive loops take what they prefetched.
    await check(
      () => streams.every((s) => s.ok.every((seq) => received.get(sender(s.from))?.includes(seq))),
      5000,
      'every acknowledged send received',
    ).catch(() => {
      // reported precisely below
    });
    for (const s of streams) {
      const got = received.get(sender(s.from)) ?? [];
      const seen = new Set(got);
      const lost = s.ok.filter((seq) => !seen.has(seq));
      assert.deepEqual(lost, [], `stream ${s.from}->${s.to}: acknowledged sends never received`);
      // Rendezvous sends from one endpoint: each seq at most once, in send order.
      for (let k = 1; k < got.length; k++) {
        assert.ok(got[k]! > got[k - 1]!, `stream ${s.from}->${s.to}: ${got[k]} after ${got[k - 1]}`);
      }
      assert.ok(
        got.every((seq) => seq < s.attempted),
        `stream ${s.from}->${s.to}: a seq never sent`,
      );
      const codes = [...s.errors.keys()];
      assert.deepEqual(codes, ['ENOTCONN'], `stream ${s.from}->${s.to} failed with ${codes.join(',')}`);
    }
  });

  test('teardown leaves no namespace, link, process or file of the run', async () => {
    stopStreams = true;
    stop.abort();
    await Promise.allSettled(open.map((d) => d.close()));
    await Promise.allSettled([...tasks, ...streams.map((s) => s.done)]);
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
