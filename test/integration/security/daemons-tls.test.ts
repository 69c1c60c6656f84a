/**
 * Real node daemons with mutual TLS on their links (three daemons in this process, each with its own
 * sockets, files and logger; credentials made as `dvs up --tls` makes them): IPC across nodes works, and a
 * fourth daemon without TLS, listed as a peer, is refused by every TLS node and never linked.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DcConfig } from '../../../src/kernel/types.js';
import { type NodeDaemon, startNode } from '../../../src/node/daemon.js';
import type { PeerConfig } from '../../../src/protocol/admin.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { initCa, issueNodeTls } from '../../../src/security/ca-dir.js';
import { caDirOf, tlsPathsIn } from '../../../src/security/paths.js';
import { check, freePorts } from '../harness.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

describe('daemons with TLS node links', () => {
  let dir: string;
  let peers: PeerConfig[];
  const daemons: NodeDaemon[] = [];
  const open: Dvk[] = [];
  const socket = (i: number) => join(dir, `node${i}`, 'dvk.sock');

  async function admin<T>(i: number, fn: (c: AdminClient) => Promise<T>): Promise<T> {
    const c = await AdminClient.connect(socket(i), { timeout: 2000 });
    try {
      return await fn(c);
    } finally {
      await c.close();
    }
  }

  const linkState = async (i: number, j: number) =>
    admin(
      i,
      async (c) => (await c.call('status', {}, { timeout: 2000 })).links.find((l) => l.node === j)?.state,
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-tls-daemons-'));
    await initCa(caDirOf(dir));
    const ports = await freePorts(4);
    peers = ports.map((p, id) => ({ id, name: `node${id}`, address: `127.0.0.1:${p}` }));
    for (let id = 0; id < 4; id++) {
      const dataDir = join(dir, `node${id}`);
      // Node 3 has no certificate: it speaks plain TCP.
      let tls: ReturnType<typeof tlsPathsIn> | undefined;
      if (id < 3) {
        const tlsDir = join(dataDir, 'tls');
        await issueNodeTls({ caDir: caDirOf(dir), nodeId: id, tlsDir, names: { ips: ['127.0.0.1'] } });
        tls = tlsPathsIn(tlsDir);
      }
      daemons.push(
        await startNode({
          nodeId: id,
          listen: peers[id]!.address,
          socket: socket(id),
          dataDir,
          peers: peers.filter((p) => p.id !== id),
          heartbeatMs: 100,
          deadAfterMs: 1000,
          logLevel: 'debug',
          logFile: join(dataDir, 'daemon.log'),
          ...(tls ? { tls } : {}),
        }),
      );
    }
    await check(
      async () => {
        for (const i of [0, 1, 2])
          for (const j of [0, 1, 2]) if (i !== j && (await linkState(i, j)) !== 'up') return false;
        return true;
      },
      15_000,
      'TLS links among nodes 0, 1, 2',
    );
    const config: DcConfig = {
      id: 1,
      name: 'app',
      nodes: [0, 1, 2],
      maxPayload: 4096,
      sysEndpoints: 64,
      postWindow: 1024,
    };
    for (const i of [0, 1, 2]) await admin(i, (c) => c.call('dc.create', { config }, { timeout: 5000 }));
  });

  after(async () => {
    await Promise.allSettled(open.map((d) => d.close()));
    // Removing the DC first takes its container (as root) down with it, whatever stop() does.
    for (const i of [0, 1, 2]) {
      await admin(i, (c) => c.call('dc.remove', { dc: 'app' }, { timeout: 10_000 })).catch(() => {});
    }
    for (const d of daemons.reverse()) await d.stop();
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  });

  test('processes on different nodes exchange messages over the TLS links', async () => {
    const a = await connect({ socket: socket(0), dc: 'app', endpoint: 100, timeout: 5000 });
    open.push(a);
    const b = await connect({ socket: socket(2), dc: 'app', endpoint: 200, timeout: 5000 });
    open.push(b);
    const server = (async () => {
      for (let i = 0; i < 3; i++) {
        const req = await b.receiveRequest({ timeout: 10_000 });
        await b.reply(req.source, {
          type: req.type + 1,
          payload: enc.encode(dec.decode(req.payload).toUpperCase()),
        });
      }
    })();
    for (const word of ['one', 'two', 'three']) {
      // The first call may race the bind announcement of 200 reaching node 0: retry until it is known.
      const r = await check(
        () => a.sendrec(200, { type: 41, payload: enc.encode(word) }, { timeout: 5000 }),
        10_000,
        `sendrec ${word}`,
      );
      assert.equal(r.type, 42);
      assert.equal(dec.decode(r.payload), word.toUpperCase());
    }
    await server;
  });

  test('a daemon without TLS is refused by the TLS nodes and never linked', async () => {
    for (const i of [0, 1, 2]) assert.notEqual(await linkState(i, 3), 'up');
    for (const j of [0, 1, 2]) assert.notEqual(await linkState(3, j), 'up');
    // Lower ids dial: nodes 0..2 dial node 3, whose plain listener drops their TLS handshake. Each TLS node
    // logs a warning naming node 3's address (once per distinct reason, not once per retry).
    for (const i of [0, 1, 2]) {
      const refusals = await check(
        async () => {
          const text = await readFile(join(dir, `node${i}`, 'daemon.log'), 'utf8');
          const lines = text
            .split('\n')
            .filter((l) => l.includes('"node link refused"'))
            .map((l) => JSON.parse(l) as Record<string, unknown>);
          return lines.length > 0 ? lines : null;
        },
        10_000,
        `node ${i} logs the refusal`,
      );
      assert.ok(refusals);
      assert.equal(refusals[0]!.remote, peers[3]!.address);
      assert.equal(refusals[0]!.level, 40);
    }
  });
});
