/**
 * Five nodes in network namespaces: IPC across every pair, a node killed with SIGKILL (detected by the
 * others within the dead time, its callers failed with ENOTCONN, the rest unharmed), then restarted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type Dvk } from '../../src/sdk/index.js';
import { check, leftovers, NetnsCluster, systemSkipReason } from './harness.js';
import { codeOf, rejectsWith, roundTrip, serve, waitEndpoints } from './ipc.js';

const NODES = 5;
const DEAD_AFTER_MS = 1000;
/** Slack over the dead time for the detection deadline: scheduling on a loaded 2-core CI machine. */
const MARGIN_MS = 3000;
const VICTIM = 3;
const server = (i: number) => 100 + i;
const client = (i: number) => 200 + i;

describe('system: node crash and restart (5 nodes)', { skip: systemSkipReason() }, () => {
  let c: NetnsCluster;
  const stopServers = new AbortController();
  const serving: Promise<void>[] = [];
  /** Connections per node, closed when their node dies or at the end. */
  const conns = new Map<number, Dvk[]>();
  const clients = new Map<number, Dvk>();

  const bind = async (node: number, endpoint: number): Promise<Dvk> => {
    const d = await connect({ socket: c.node(node).socket, dc: 'app', endpoint, timeout: 5000 });
    conns.set(node, [...(conns.get(node) ?? []), d]);
    return d;
  };
  const closeNode = async (node: number) => {
    await Promise.allSettled((conns.get(node) ?? []).map((d) => d.close()));
    conns.delete(node);
  };
  /** A server and a client endpoint on `node`. */
  const populate = async (node: number) => {
    serving.push(serve(await bind(node, server(node)), stopServers.signal));
    clients.set(node, await bind(node, client(node)));
  };
  /** Every client of `nodes` calls every server of `nodes` (clients in parallel, each one call at a time). */
  const allPairs = async (nodes: number[]) => {
    await Promise.all(
      nodes.map(async (i) => {
        for (const j of nodes) await roundTrip(clients.get(i)!, server(j));
      }),
    );
  };
  const all = Array.from({ length: NODES }, (_, i) => i);
  const survivors = all.filter((i) => i !== VICTIM);

  before(async () => {
    c = await NetnsCluster.start({ nodes: NODES, heartbeatMs: 100, deadAfterMs: DEAD_AFTER_MS });
    await c.createDc({ id: 1, name: 'app' });
  });
  after(async () => {
    stopServers.abort();
    for (const n of [...conns.keys()]) await closeNode(n);
    await Promise.allSettled(serving);
    await c?.stop();
  });

  test('sendrec across all 25 ordered pairs of nodes', async () => {
    for (const i of all) await populate(i);
    await waitEndpoints(c, all, 'app', all.map(server));
    await allPairs(all);
  });

  test('kill -9 of a node: detected within the dead time, its callers get ENOTCONN, the rest goes on', async () => {
    // Callers blocked on the victim: a sendrec from every other node to an endpoint that never receives,
    // and a receive waiting on a specific endpoint of the victim.
    const sink = 300 + VICTIM;
    await bind(VICTIM, sink);
    await waitEndpoints(c, survivors, 'app', [sink]);
    // Outcomes are taken at once: they all settle in the same turn, and an unobserved rejection fails the test.
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
    await c.waitLinkState(survivors, [VICTIM], 'down', DEAD_AFTER_MS + MARGIN_MS);
    assert.deepEqual(
      await Promise.all(blocked),
      survivors.map(() => 'ENOTCONN'),
    );
    assert.equal(await receiving, 'ENOTCONN');
    await rejectsWith(clients.get(0)!.sendrec(server(VICTIM), { type: 1 }, { timeout: 5000 }), 'ENOTCONN');
    await closeNode(VICTIM);
    clients.delete(VICTIM);

    await allPairs(survivors);
    for (const i of survivors) {
      const st = await c.status(i);
      for (const j of survivors) if (j !== i) assert.equal(st.links.find((l) => l.node === j)?.state, 'up');
    }
  });

  test('the restarted node rejoins: links up, its new endpoints reachable from every node', async () => {
    const seen = (await c.status(0)).links.find((l) => l.node === VICTIM);
    assert.equal(seen?.state, 'down');
    await c.restartNode(VICTIM);
    await c.waitLinks();
    await c.admin(VICTIM, 'dc.create', {
      config: { id: 1, name: 'app', nodes: all, maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 },
    });
    await populate(VICTIM);
    await waitEndpoints(c, all, 'app', [server(VICTIM), client(VICTIM)]);
    // The dead incarnation's endpoints are gone everywhere (its sink was never rebound).
    for (const i of survivors) {
      assert.ok(!(await c.admin(i, 'ep.list', { dc: 'app' })).some((e) => e.ep === 300 + VICTIM));
    }
    for (const i of survivors) await roundTrip(clients.get(i)!, server(VICTIM));
    // The other way round: the survivors' servers were bound before the DC existed on the restarted node; it
    // learns them when its DC is created (it asks its linked peers for their lists), and later binds as usual.
    const fresh = survivors.map((i) => 110 + i);
    await Promise.all(
      survivors.map(async (i) => serving.push(serve(await bind(i, 110 + i), stopServers.signal))),
    );
    const older = survivors.map((i) => server(i));
    await waitEndpoints(c, [VICTIM], 'app', [...older, ...fresh]);
    for (const ep of [...older, ...fresh, server(VICTIM)]) await roundTrip(clients.get(VICTIM)!, ep);
  });

  test('teardown leaves no namespace, link, process or file of the run', async () => {
    stopServers.abort();
    for (const n of [...conns.keys()]) await closeNode(n);
    await Promise.allSettled(serving);
    await c.stop();
    assert.deepEqual(await leftovers(c), []);
  });
});
