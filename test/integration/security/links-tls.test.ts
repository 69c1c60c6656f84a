/**
 * Node links with mutual TLS (LinkManagers in one process, real TLS over 127.0.0.1, credentials on disk as
 * `dvs ca init` / `dvs node join` write them): a valid node links; a node from another CA, a plain TCP
 * peer, and a peer whose certificate is for another node than it claims are refused and logged.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { NodeFrame, NodeId } from '../../../src/kernel/types.js';
import type { PeerConfig } from '../../../src/protocol/admin.js';
import { LinkManager } from '../../../src/proxy/links.js';
import { encodeHello } from '../../../src/proxy/wire.js';
import { initCa, issueNodeTls } from '../../../src/security/ca-dir.js';
import { loadTlsCredentials } from '../../../src/security/credentials.js';
import type { TlsPaths } from '../../../src/security/paths.js';
import { parseHostPort } from '../../../src/transport/net.js';
import { connectTls, listenTls } from '../../../src/transport/tls.js';
import type { Transport, TransportListener } from '../../../src/transport/transport.js';

interface Node {
  id: NodeId;
  mgr: LinkManager;
  frames: { from: NodeId; frame: NodeFrame }[];
  events: string[];
  logs: Record<string, unknown>[];
}

let dir: string;
/** tls[caName][nodeId]: credentials of node `nodeId` issued by CA `caName`. */
const tls: Record<string, Record<number, TlsPaths>> = {};
const started: LinkManager[] = [];
const closers: (() => Promise<void> | void)[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dvs-links-tls-'));
  for (const caName of ['good', 'other']) {
    const caDir = join(dir, caName, 'ca');
    await initCa(caDir);
    tls[caName] = {};
    for (const id of [1, 2, 3, 4]) {
      tls[caName][id] = await issueNodeTls({
        caDir,
        nodeId: id,
        tlsDir: join(dir, caName, `node${id}`),
        names: { ips: ['127.0.0.1'] },
      });
    }
  }
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await Promise.all(started.splice(0).map((m) => m.stop()));
});

async function node(id: NodeId, peers: PeerConfig[], creds: TlsPaths | undefined): Promise<Node> {
  const n: Node = { id, mgr: undefined as unknown as LinkManager, frames: [], events: [], logs: [] };
  const logger = pino(
    { level: 'debug' },
    { write: (s: string) => n.logs.push(JSON.parse(s) as Record<string, unknown>) },
  );
  n.mgr = new LinkManager({
    nodeId: id,
    name: `node${id}`,
    incarnation: randomUUID(),
    listen: '127.0.0.1:0',
    peers,
    heartbeatMs: 50,
    deadAfterMs: 5000,
    logger,
    handlers: {
      frame: (from, frame) => n.frames.push({ from, frame }),
      nodeUp: (x) => n.events.push(`up:${x}`),
      nodeDown: (x) => n.events.push(`down:${x}`),
    },
    ...(creds ? { tls: creds } : {}),
  });
  await n.mgr.start();
  started.push(n.mgr);
  return n;
}

function peer(id: NodeId, address = '127.0.0.1:1'): PeerConfig {
  return { id, name: `node${id}`, address };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function warnings(n: Node, msg: string): Record<string, unknown>[] {
  return n.logs.filter((l) => l.level === 40 && l.msg === msg);
}

const notify = (ts: number): NodeFrame => ({ t: 'notify', dc: 1, src: 5, dst: 9, ts });

describe('node links over mutual TLS', () => {
  it('two nodes with certificates from the cluster CA link and exchange frames', async () => {
    const b = await node(2, [peer(1)], tls.good![2]);
    const a = await node(1, [peer(2, b.mgr.address)], tls.good![1]);
    await waitFor('link up', () => a.events.includes('up:2') && b.events.includes('up:1'));
    assert.ok(a.mgr.send(2, notify(1)));
    assert.ok(b.mgr.send(1, notify(2)));
    await waitFor('frames', () => a.frames.length === 1 && b.frames.length === 1);
    assert.deepEqual(b.frames[0], { from: 1, frame: notify(1) });
    assert.deepEqual(a.frames[0], { from: 2, frame: notify(2) });
    assert.equal(warnings(a, 'node link refused').length + warnings(b, 'node link refused').length, 0);
  });

  it('a node with a certificate from another CA is refused, and both sides say so', async () => {
    const b = await node(2, [peer(1)], tls.good![2]);
    const a = await node(1, [peer(2, b.mgr.address)], tls.other![1]);
    await waitFor('refusals logged', () => warnings(a, 'node link refused').length > 0);
    const w = warnings(a, 'node link refused')[0]!;
    assert.equal(w.remote, b.mgr.address);
    assert.match(String(w.reason), /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
    await waitFor('server refusal logged', () => warnings(b, 'node link refused').length > 0);
    assert.match(String(warnings(b, 'node link refused')[0]!.remote), /^127\.0\.0\.1:\d+$/);
    // It keeps retrying; each side logs the same refusal once, not once per retry.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(warnings(a, 'node link refused').length, 1);
    assert.deepEqual(a.events, []);
    assert.deepEqual(b.events, []);
  });

  it('a plain TCP node is refused by a TLS node', async () => {
    const b = await node(2, [peer(1)], tls.good![2]);
    const a = await node(1, [peer(2, b.mgr.address)], undefined);
    await waitFor('refusal logged', () => warnings(b, 'node link refused').length > 0);
    const w = warnings(b, 'node link refused')[0]!;
    assert.match(String(w.remote), /^127\.0\.0\.1:\d+$/);
    assert.ok(String(w.reason).length > 0);
    assert.deepEqual(a.events, []);
    assert.deepEqual(b.events, []);
  });

  it("a peer presenting node 2's certificate while claiming node 3 is refused (acceptor side)", async () => {
    const d = await node(4, [peer(3)], tls.good![4]);
    // The impostor has node 2's genuine credentials and says it is node 3.
    const creds = await loadTlsCredentials(tls.good![2]!);
    const t: Transport = await connectTls({ ...creds, ...parseHostPort(d.mgr.address), timeoutMs: 5000 });
    closers.push(() => t.close());
    t.start({ frame() {} });
    t.send(
      encodeHello({
        nodeId: 3,
        name: 'node3',
        incarnation: 'x',
        epoch: 0,
        peerIncarnation: '',
        peerEpoch: 0,
        received: 0,
      }),
    );
    await t.closed();
    await waitFor('refusal logged', () => warnings(d, 'node link connection closed').length > 0);
    const w = warnings(d, 'node link connection closed')[0]!;
    assert.equal(w.code, 'EAUTH');
    assert.match(String(w.reason), /HELLO claims node 3 but the certificate is node-2's/);
    assert.match(String(w.remote), /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(d.events, []);
  });

  it("a dialer refuses a listener presenting node 2's certificate at node 3's address", async () => {
    const creds = await loadTlsCredentials(tls.good![2]!);
    const accepted: Transport[] = [];
    const l: TransportListener = await listenTls({
      ...creds,
      host: '127.0.0.1',
      port: 0,
      onTransport: (t) => {
        accepted.push(t);
        t.start({ frame() {} });
      },
    });
    closers.push(() => l.close());
    closers.push(() => {
      for (const t of accepted) t.close();
    });
    const a = await node(1, [peer(3, l.address)], tls.good![1]);
    await waitFor('refusal logged', () => warnings(a, 'node link refused').length > 0);
    assert.match(String(warnings(a, 'node link refused')[0]!.reason), /node-2, not node-3/);
    assert.deepEqual(a.events, []);
  });

  it('refuses to start with credentials of another node', async () => {
    await assert.rejects(node(1, [peer(2)], tls.good![2]), (e) => (e as { code?: string }).code === 'EAUTH');
  });
});
