/**
 * Five nodes in network namespaces running with a 3-member etcd cluster inside the namespaces of nodes 0, 2
 * and 3 (`--store etcd://...`): a node crash (daemon and its etcd member, kill -9) is seen by every node,
 * its endpoints leave every directory, its callers fail, the rest is undisturbed, and the restarted node
 * catches up from the store alone; then a partition {0,1} | {2,3,4} where {2,3,4} holds 2 of the 3
 * members: IPC goes on inside each side, store writes only on the majority side, and after the heal every
 * node's DC list and directory converge with no acknowledged send lost.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DcConfig } from '../../src/kernel/types.js';
import { ANY, connect, type Dvk } from '../../src/sdk/index.js';
import { check, etcdSystemSkipReason, leftovers, NetnsCluster } from './harness.js';
import { codeOf, roundTrip, serve, sleep, waitEndpoints } from './ipc.js';

const NODES = 5;
/**
 * Link dead time; the lease TTL is this rounded up to seconds (3 s). Not 1 s: the etcd client picks a member
 * per call, and a keepalive whose attempt lands on a member cut off by the partition times out (500 ms) -
 * with a 1 s TTL two such attempts in a row expire the lease of a node on the majority side, which then
 * briefly drops out of the directory (observed in about 1 run of 5).
 */
const DEAD_AFTER_MS = 2500;
/** Slack over the dead time for detection deadlines: scheduling on a loaded 2-core machine. */
const MARGIN_MS = 4000;
const ETCD_ON = [0, 2, 3];
const VICTIM = 3;
const LEFT = [0, 1];
const RIGHT = [2, 3, 4];
const all = Array.from({ length: NODES }, (_, i) => i);
const survivors = all.filter((i) => i !== VICTIM);
const server = (i: number) => 100 + i;
const client = (i: number) => 200 + i;
const receiver = (i: number) => 400 + i;
const sender = (i: number) => 500 + i;
const APP: Partial<DcConfig> & { id: number; name: string } = { id: 1, name: 'app' };

/** A loop of numbered rendezvous sends; what resolved OK is what the receiver took. */
interface Stream {
  from: number;
  to: number;
  ok: number[];
  errors: Map<string, number>;
  stop: boolean;
  done: Promise<void>;
}

describe('system: etcd store in the namespaces, crash and partition (5 nodes)', {
  skip: etcdSystemSkipReason(),
}, () => {
  let c: NetnsCluster;
  const stopServers = new AbortController();
  const tasks: Promise<void>[] = [];
  const conns = new Map<number, Dvk[]>();
  const clients = new Map<number, Dvk>();
  /** Seqs received per sending endpoint, in arrival order. */
  const received = new Map<number, number[]>();
  const streams: Stream[] = [];

  const bind = async (node: number, endpoint: number): Promise<Dvk> => {
    const d = await connect({ socket: c.node(node).socket, dc: 'app', endpoint, timeout: 5000 });
    conns.set(node, [...(conns.get(node) ?? []), d]);
    return d;
  };
  const closeNode = async (node: number) => {
    await Promise.allSettled((conns.get(node) ?? []).map((d) => d.close()));
    conns.delete(node);
  };
  const populate = async (node: number) => {
    tasks.push(serve(await bind(node, server(node)), stopServers.signal));
    clients.set(node, await bind(node, client(node)));
  };
  const receiveLoop = async (d: Dvk) => {
    for (;;) {
      let m: Awaited<ReturnType<Dvk['receive']>>;
      try {
        m = await d.receive(ANY, { signal: stopServers.signal });
      } catch {
        return;
      }
      const seq = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getUint32(0, true);
      received.set(m.source, [...(received.get(m.source) ?? []), seq]);
    }
  };
  const startStream = async (from: number, to: number): Promise<Stream> => {
    const d = await bind(from, sender(from));
    const s: Stream = { from, to, ok: [], errors: new Map(), stop: false, done: Promise.resolve() };
    s.done = (async () => {
      const payload = new Uint8Array(4);
      for (let seq = 0; !s.stop; seq++) {
        new DataView(payload.buffer).setUint32(0, seq, true);
        try {
          await d.send(receiver(to), { type: 1, payload }, { timeout: 10_000 });
          s.ok.push(seq);
        } catch (e) {
          const code = codeOf(e);
          s.errors.set(code, (s.errors.get(code) ?? 0) + 1);
          await sleep(10); // failures are immediate while the peer is unreachable: do not spin
        }
      }
    })();
    streams.push(s);
    return s;
  };
  /** Every acknowledged seq of `s` received exactly once, in order. */
  const assertNoLoss = async (s: Stream) => {
    s.stop = true;
    await s.done;
    await check(
      () => s.ok.every((seq) => received.get(sender(s.from))?.includes(seq)),
      5000,
      `stream ${s.from}->${s.to}: every acknowledged send received`,
    ).catch(() => {
      // reported precisely below
    });
    const got = received.get(sender(s.from)) ?? [];
    const seen = new Set(got);
    assert.deepEqual(
      s.ok.filter((seq) => !seen.has(seq)),
      [],
      `stream ${s.from}->${s.to}: acknowledged sends never received`,
    );
    for (let k = 1; k < got.length; k++) {
      assert.ok(got[k]! > got[k - 1]!, `stream ${s.from}->${s.to}: ${got[k]} after ${got[k - 1]}`);
    }
  };
  const allPairs = async (nodes: number[]) => {
    await Promise.all(
      nodes.map(async (i) => {
        for (const j of nodes) await roundTrip(clients.get(i)!, server(j));
      }),
    );
  };
  /** What node `i` knows: its DCs by id and its directory of `app` as `ep@node`, sorted. */
  const view = async (i: number) => ({
    dcs: (await c.admin(i, 'dc.list', {})).map((d) => `${d.id}:${d.name}:${d.nodes.join('.')}`).sort(),
    eps: (await c.admin(i, 'ep.list', { dc: 'app' })).map((e) => `${e.ep}@${e.node}`).sort(),
  });
  const memberStates = async (i: number) =>
    new Map((await c.status(i)).cluster?.members.map((m) => [m.id, m.state]) ?? []);

  before(async () => {
    c = await NetnsCluster.start({
      nodes: NODES,
      heartbeatMs: 100,
      deadAfterMs: DEAD_AFTER_MS,
      etcdOn: ETCD_ON,
    });
  });
  after(async () => {
    for (const s of streams) s.stop = true;
    stopServers.abort();
    for (const n of [...conns.keys()]) await closeNode(n);
    await Promise.allSettled([...tasks, ...streams.map((s) => s.done)]);
    await c?.stop();
  });

  test('one dc create through node 0 reaches every node; binds reach every directory', async () => {
    assert.equal(c.storeUrl, `etcd://${ETCD_ON.map((i) => `${c.node(i).ip}:2379`).join(',')}`);
    await c.createDc(APP, { via: 0 });
    for (const i of all) {
      const st = await c.status(i);
      assert.equal(st.cluster?.store, c.storeUrl);
      assert.equal(st.cluster?.degraded, false);
      await check(
        async () => [...(await memberStates(i)).values()].filter((s) => s === 'up').length === NODES,
        10_000,
        `node ${i} seeing ${NODES} members up`,
      );
    }
    for (const i of all) await populate(i);
    await waitEndpoints(c, all, 'app', [...all.map(server), ...all.map(client)]);
    await allPairs(all);
  });

  test('kill -9 of node 3 and its etcd member: seen down everywhere, endpoints gone, callers fail, others undisturbed', async () => {
    const sink = 300 + VICTIM;
    await bind(VICTIM, sink);
    await waitEndpoints(c, survivors, 'app', [sink]);
    // Traffic that must not notice: a send stream between two survivors.
    tasks.push(receiveLoop(await bind(4, receiver(4))));
    await waitEndpoints(c, [1], 'app', [receiver(4)]);
    const bystander = await startStream(1, 4);
    await check(() => bystander.ok.length >= 20, 10_000, 'the 1->4 stream flowing');

    const blocked = survivors.map((i) =>
      clients
        .get(i)!
        .sendrec(sink, { type: 1 }, { timeout: 30_000 })
        .then(() => 'ok', codeOf),
    );
    const listener = await bind(0, 150);
    const receiving = listener.receive(client(VICTIM), { timeout: 30_000 }).then(() => 'ok', codeOf);
    await check(
      async () =>
        (await c.admin(VICTIM, 'ep.list', { dc: 'app' })).find((e) => e.ep === sink)?.queued ===
        survivors.length,
      5000,
      `${survivors.length} requests queued at ${sink}`,
    );

    await c.killNode(VICTIM);
    await c.killEtcd(VICTIM);
    await c.waitLinkState(survivors, [VICTIM], 'down', DEAD_AFTER_MS + MARGIN_MS);
    // Detection through the store too: its lease (TTL = dead time rounded up) expires.
    await check(
      async () => {
        for (const i of survivors) if ((await memberStates(i)).get(VICTIM) !== 'down') return false;
        return true;
      },
      DEAD_AFTER_MS + MARGIN_MS + 2000,
      `every survivor's membership seeing node ${VICTIM} down`,
    );
    // Which error depends on which report comes first: the link layer's death (ENOTCONN) or the lease
    // expiry unbinding the endpoint (a sendrec blocked on a dead endpoint fails ESRCDIED in the kernel).
    for (const code of await Promise.all(blocked)) {
      assert.ok(['ENOTCONN', 'EDSTDIED', 'ESRCDIED'].includes(code), code);
    }
    assert.ok(['ENOTCONN', 'ESRCDIED'].includes(await receiving), await receiving);
    // Its endpoints leave every directory (the lease carried them).
    await check(
      async () => {
        for (const i of survivors) {
          const eps = await c.admin(i, 'ep.list', { dc: 'app' });
          if (eps.some((e) => e.node === VICTIM)) return false;
        }
        return true;
      },
      MARGIN_MS + 2000,
      `node ${VICTIM}'s endpoints gone from every survivor`,
    );
    await closeNode(VICTIM);
    clients.delete(VICTIM);

    await allPairs(survivors);
    // The store still has a majority (members on 0 and 2): writes work.
    const extra = await c.createDc({ id: 2, name: 'extra', nodes: [1, 4] }, { via: 1 });
    assert.equal(extra.id, 2);
    await assertNoLoss(bystander);
    assert.deepEqual([...bystander.errors.keys()], [], 'the 1->4 stream saw errors');
  });

  test('node 3 restarted: rejoins, gets its DCs and the directory from the store, reachable both ways', async () => {
    await c.restartEtcd(VICTIM);
    // A restart within a TTL of the crash waits for the old registration to expire (TTL + 1 s).
    await c.restartNode(VICTIM);
    await c.waitLinks(15_000);
    // No dc.create on node 3: the registry's watch brings `app` (and not `extra`, which excludes it).
    await check(
      async () => (await c.admin(VICTIM, 'dc.list', {})).some((d) => d.name === 'app'),
      10_000,
      `node ${VICTIM} getting DC app from the store`,
    );
    assert.ok(!(await c.admin(VICTIM, 'dc.list', {})).some((d) => d.name === 'extra'));
    await waitEndpoints(c, [VICTIM], 'app', [...survivors.map(server), ...survivors.map(client)]);
    await populate(VICTIM);
    await waitEndpoints(c, all, 'app', [server(VICTIM), client(VICTIM)]);
    for (const i of all) {
      await check(
        async () => (await memberStates(i)).get(VICTIM) === 'up',
        10_000,
        `node ${i} seeing node ${VICTIM} up again`,
      );
      assert.ok(!(await c.admin(i, 'ep.list', { dc: 'app' })).some((e) => e.ep === 300 + VICTIM));
    }
    await allPairs(all);
  });

  test('partition {0,1} | {2,3,4}: IPC inside each side, store writes only on the majority side', async () => {
    for (const i of all) if (i !== 4) tasks.push(receiveLoop(await bind(i, receiver(i))));
    await waitEndpoints(c, all, 'app', all.map(receiver));
    // Across the partition-to-be, both ways.
    const across = [await startStream(0, 3), await startStream(2, 1)];
    await check(() => across.every((s) => s.ok.length >= 20), 10_000, 'the streams across flowing');

    await c.partition(LEFT, RIGHT);
    await c.waitLinkState(LEFT, RIGHT, 'down', DEAD_AFTER_MS + MARGIN_MS);
    await c.waitLinkState(RIGHT, LEFT, 'down', DEAD_AFTER_MS + MARGIN_MS);
    for (const side of [LEFT, RIGHT]) await allPairs(side);

    // Minority side (1 of 3 members): a store write fails with a clear error.
    const minority = await c
      .admin(1, 'dc.create', {
        config: { id: 3, name: 'left', nodes: LEFT, maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 },
      })
      .then(() => 'ok', codeOf);
    assert.ok(['ETIMEDOUT', 'ENOTCONN'].includes(minority), `dc.create on the minority side: ${minority}`);
    // Majority side (2 of 3): the same kind of write succeeds.
    // A node's etcd client may be talking to the member cut off on the other side: its first attempts time
    // out until the client tries another member, so the write is retried (EEXIST: an earlier attempt that
    // timed out was in fact applied). Node 4 then has the DC from its watch.
    const cfg = { id: 4, name: 'right', nodes: RIGHT, maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 };
    const attempts: string[] = [];
    await check(
      async () => {
        const r = await c.admin(4, 'dc.create', { config: cfg }).then(() => 'ok', codeOf);
        attempts.push(r);
        if (r === 'ok' || r === 'EEXIST') return true;
        assert.ok(['ETIMEDOUT', 'ENOTCONN'].includes(r), `dc.create on the majority side: ${r}`);
        return false;
      },
      45_000,
      'dc.create through node 4',
    ).catch((e: unknown) => {
      throw new Error(`${(e as Error).message} (attempts: ${attempts.join(',')})`);
    });
    // Node 4's watch may be attached to a member now cut off by the partition: the store's progress probe
    // notices the silence within ~2 s and resumes the watch on a live member from its last revision.
    await check(
      async () => (await c.admin(4, 'dc.list', {})).some((d) => d.id === 4 && d.name === 'right'),
      40_000,
      'DC right on node 4',
    );
    // Binds on both sides meanwhile: the majority's reach its store now, the minority's after the heal.
    await bind(1, 601);
    await bind(4, 604);
    await waitEndpoints(c, RIGHT, 'app', [604]);
    await waitEndpoints(c, [0], 'app', [601]);
    for (const i of LEFT) assert.ok((await c.status(i)).cluster !== undefined);
  });

  test('heal: links back, every node converges on the same DCs and directory, no acknowledged send lost', async () => {
    await c.heal();
    await c.waitLinks(DEAD_AFTER_MS + MARGIN_MS + 10_000);
    // dc.list shows the DCs a node takes part in: converged means each node has exactly the DCs of the
    // union that include it, and every node has the same directory of `app`.
    let views: { dcs: string[]; eps: string[] }[] = [];
    const dcsOf = (i: number, union: Set<string>) =>
      [...union].filter((d) => d.split(':')[2]!.split('.').map(Number).includes(i)).sort();
    await check(
      async () => {
        views = await Promise.all(all.map((i) => view(i)));
        const union = new Set(views.flatMap((v) => v.dcs));
        // Nodes cut off from the store lost their lease during the partition and re-assert their endpoints
        // after the heal: converged also means every node's servers are back in every view.
        const servers = all.map((j) => `${server(j)}@${j}`);
        return views.every(
          (v, i) =>
            JSON.stringify(v.dcs) === JSON.stringify(dcsOf(i, union)) &&
            JSON.stringify(v.eps) === JSON.stringify(views[0]!.eps) &&
            servers.every((e) => v.eps.includes(e)),
        );
      },
      20_000,
      'every node with the same DCs and directory',
    ).catch((e: unknown) => {
      throw new Error(
        `${(e as Error).message}\n${views.map((v, i) => `node ${i}: ${JSON.stringify(v)}`).join('\n')}`,
      );
    });
    const union = new Set(views.flatMap((v) => v.dcs));
    assert.deepEqual([...union].sort(), ['1:app:0.1.2.3.4', '2:extra:1.4', '4:right:2.3.4']);
    const eps = views[0]!.eps;
    assert.ok(eps.includes('601@1') && eps.includes('604@4'), eps.join(' '));
    for (const i of all) {
      await check(
        async () => [...(await memberStates(i)).values()].every((s) => s === 'up'),
        10_000,
        `node ${i} seeing every member up`,
      );
    }
    await allPairs(all);
    const healed = streams.filter((s) => !s.stop).map((s) => s.ok.length);
    await check(
      () => streams.filter((s) => !s.stop).every((s, k) => s.ok.length >= healed[k]! + 20),
      15_000,
      'the streams across flowing again',
    );
    for (const s of streams) await assertNoLoss(s);
  });

  test('teardown leaves no namespace, link, process or file of the run', async () => {
    for (const s of streams) s.stop = true;
    stopServers.abort();
    for (const n of [...conns.keys()]) await closeNode(n);
    await Promise.allSettled([...tasks, ...streams.map((s) => s.done)]);
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
