/**
 * LinkManagers over real TCP on 127.0.0.1, several in one process.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import type { NodeFrame, NodeId } from '../../../src/kernel/types.js';
import type { PeerConfig } from '../../../src/protocol/admin.js';
import { encodeFrames, FrameWriter } from '../../../src/protocol/frame.js';
import { encodeNodeFrame } from '../../../src/protocol/node-frames.js';
import { LinkManager } from '../../../src/proxy/links.js';
import { encodeHello, writeDataHeader } from '../../../src/proxy/wire.js';

interface Node {
  id: NodeId;
  mgr: LinkManager;
  frames: { from: NodeId; frame: NodeFrame }[];
  events: string[];
  logs: Record<string, unknown>[];
}

const started: LinkManager[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((m) => m.stop()));
});

async function node(
  id: NodeId,
  peers: PeerConfig[],
  opts: { listen?: string; heartbeatMs?: number; deadAfterMs?: number; incarnation?: string } = {},
): Promise<Node> {
  const n: Node = { id, mgr: undefined as unknown as LinkManager, frames: [], events: [], logs: [] };
  const logger = pino(
    { level: 'debug' },
    { write: (s: string) => n.logs.push(JSON.parse(s) as Record<string, unknown>) },
  );
  n.mgr = new LinkManager({
    nodeId: id,
    name: `node${id}`,
    incarnation: opts.incarnation ?? randomUUID(),
    listen: opts.listen ?? '127.0.0.1:0',
    peers,
    heartbeatMs: opts.heartbeatMs ?? 50,
    deadAfterMs: opts.deadAfterMs ?? 5000,
    logger,
    handlers: {
      frame: (from, frame) => n.frames.push({ from, frame }),
      nodeUp: (x) => n.events.push(`up:${x}`),
      nodeDown: (x) => n.events.push(`down:${x}`),
    },
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

function post(i: number): NodeFrame {
  return {
    t: 'msg',
    dc: 1,
    src: 10,
    dst: 20,
    kind: 'post',
    op: i,
    type: 0,
    payload: Uint8Array.of(i & 0xff),
  };
}

function opsFrom(n: Node, from: NodeId): number[] {
  return n.frames
    .filter((f) => f.from === from && f.frame.t === 'msg')
    .map((f) => (f.frame as { op: number }).op);
}

/** Two nodes linked: b (higher id) listens, a dials it. */
async function pair(opts: { heartbeatMs?: number; deadAfterMs?: number } = {}): Promise<[Node, Node]> {
  const b = await node(2, [peer(1)], opts);
  const a = await node(1, [peer(2, b.mgr.address)], opts);
  await waitFor('link up', () => a.events.includes('up:2') && b.events.includes('up:1'));
  return [a, b];
}

describe('node links', () => {
  it('delivers frames both ways, in order, with every kind of frame', async () => {
    const [a, b] = await pair();
    const frames: NodeFrame[] = [
      post(1),
      { t: 'ack', dc: 1, src: 1, dst: 2, op: 3, code: 'EMOVED', node: 4 },
      { t: 'reply', dc: 1, src: 1, dst: 2, op: 3, type: 4, payload: new Uint8Array(5000).fill(3) },
      { t: 'notify', dc: 1, src: 1, dst: 2, ts: 1234.5 },
      { t: 'credit', dc: 1, src: 1, dst: 2, n: 7 },
      { t: 'bind', dc: 1, ep: 5, name: 'fs' },
    ];
    for (const f of frames) assert.equal(a.mgr.send(2, f), true);
    b.mgr.send(1, post(9));
    await waitFor('frames', () => b.frames.length === frames.length && a.frames.length === 1);
    const norm = (f: NodeFrame) =>
      Object.fromEntries(Object.entries(f).map(([k, v]) => [k, v instanceof Uint8Array ? [...v] : v]));
    assert.deepEqual(
      b.frames.map((f) => norm(f.frame)),
      frames.map(norm),
    );
    assert.deepEqual(opsFrom(a, 2), [9]);
    const info = a.mgr.info()[0]!;
    assert.equal(info.state, 'up');
    assert.equal(info.framesSent, frames.length);
    await waitFor('acks', () => a.mgr.info()[0]!.unacked === 0);
  });

  it('delivers 20k frames exactly once in order while connections are destroyed mid-stream', async () => {
    const [a, b] = await pair();
    const N = 20_000;
    let drops = 0;
    const chaos = setInterval(() => {
      const side =
        Math.random() < 0.5 ? a.mgr.disconnect(2, 'test chaos') : b.mgr.disconnect(1, 'test chaos');
      if (side) drops++;
    }, 4);
    try {
      for (let i = 1; i <= N; i++) {
        a.mgr.send(2, post(i));
        b.mgr.send(1, post(i));
        if (i % 250 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      await waitFor('all frames', () => opsFrom(b, 1).length >= N && opsFrom(a, 2).length >= N, 60_000);
    } finally {
      clearInterval(chaos);
    }
    const expected = Array.from({ length: N }, (_, i) => i + 1);
    assert.deepEqual(opsFrom(b, 1), expected);
    assert.deepEqual(opsFrom(a, 2), expected);
    assert.ok(drops > 0, 'the test dropped no connection');
    assert.deepEqual(a.events, ['up:2']);
    assert.deepEqual(b.events, ['up:1']);
    const ai = a.mgr.info()[0]!;
    assert.ok(ai.reconnects > 0);
    assert.equal(ai.framesDropped, 0);
  });

  it('a restarted peer (new incarnation) gives nodeDown then nodeUp, and the link works again', async () => {
    const [a, b] = await pair();
    const address = b.mgr.address;
    a.mgr.send(2, post(1));
    await waitFor('first frame', () => b.frames.length === 1);
    await b.mgr.stop();
    const b2 = await node(2, [peer(1)], { listen: address });
    await waitFor('restart seen', () => a.events.length === 3 && b2.events.includes('up:1'));
    assert.deepEqual(a.events, ['up:2', 'down:2', 'up:2']);
    a.mgr.send(2, post(2));
    b2.mgr.send(1, post(3));
    await waitFor('frames after restart', () => b2.frames.length === 1 && opsFrom(a, 2).length === 1);
    assert.deepEqual(opsFrom(b2, 1), [2]);
    assert.deepEqual(opsFrom(a, 2), [3]);
  });

  it('a killed peer is declared dead, frames to it are dropped, and it comes back up', async () => {
    const [a, b] = await pair({ heartbeatMs: 50, deadAfterMs: 300 });
    const address = b.mgr.address;
    await b.mgr.stop();
    await waitFor('nodeDown', () => a.events.includes('down:2'));
    assert.equal(a.mgr.info()[0]!.state, 'down');
    assert.equal(a.mgr.send(2, post(1)), false);
    assert.equal(a.mgr.info()[0]!.framesDropped, 1);
    assert.ok(a.logs.some((l) => l.msg === 'node declared dead' && l.node === 2));
    const b2 = await node(2, [peer(1)], { listen: address, heartbeatMs: 50, deadAfterMs: 300 });
    await waitFor('back up', () => a.events.length === 3 && b2.events.includes('up:1'));
    assert.deepEqual(a.events, ['up:2', 'down:2', 'up:2']);
    a.mgr.send(2, post(2));
    await waitFor('frame after return', () => b2.frames.length === 1);
    assert.deepEqual(opsFrom(b2, 1), [2]);
  });

  it('measures heartbeat RTT and links three nodes pairwise', async () => {
    const c = await node(3, [peer(1), peer(2)]);
    const b = await node(2, [peer(1), peer(3, c.mgr.address)]);
    const a = await node(1, [peer(2, b.mgr.address), peer(3, c.mgr.address)]);
    await waitFor('mesh', () => a.events.length === 2 && b.events.length === 2 && c.events.length === 2);
    a.mgr.send(3, post(13));
    b.mgr.send(3, post(23));
    c.mgr.send(1, post(31));
    await waitFor('mesh frames', () => c.frames.length === 2 && a.frames.length === 1);
    assert.deepEqual(opsFrom(c, 1), [13]);
    assert.deepEqual(opsFrom(c, 2), [23]);
    await waitFor('rtt', () => a.mgr.info().every((l) => l.rttMs !== null));
  });

  it('drops frames for unknown nodes and refuses unencodable frames', async () => {
    const [a] = await pair();
    assert.equal(a.mgr.send(99, post(1)), false);
    assert.equal(a.mgr.droppedUnknownNode, 1);
    assert.throws(() => a.mgr.send(2, { ...post(1), dc: 0 }), /dc 0/);
  });
});

describe('node links under hostile input', () => {
  function raw(address: string, bytes: Uint8Array): Promise<void> {
    const [host, port] = address.split(':');
    return new Promise((resolve) => {
      // end(): a truncated frame then EOF must close cleanly too, without waiting for the HELLO timeout.
      const s = net.connect({ host: host!, port: Number(port) }, () => s.end(bytes));
      sockets.push(s);
      s.on('error', () => {});
      s.on('close', () => resolve());
      // Whatever happens, do not hang: the listener must close us, or we give up after a while.
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 2000).unref();
    });
  }

  it('a peer that completes the HELLO and then goes silent is declared dead', async () => {
    const b = await node(5, [peer(3)], { heartbeatMs: 50, deadAfterMs: 300 });
    const [host, port] = b.mgr.address.split(':');
    const s = net.connect({ host: host!, port: Number(port) }, () =>
      s.write(
        encodeFrames([
          encodeHello({
            nodeId: 3,
            name: 'mute',
            incarnation: randomUUID(),
            epoch: 1,
            peerIncarnation: '',
            peerEpoch: 0,
            received: 0,
          }),
        ]),
      ),
    );
    sockets.push(s);
    s.on('error', () => {});
    await waitFor('silent peer declared dead', () => b.events.includes('down:3'));
    assert.deepEqual(b.events, ['up:3', 'down:3']);
    assert.ok(b.logs.some((l) => l.msg === 'peer silent' && l.node === 3));
  });

  it('closes bad connections with a logged reason and keeps serving a good peer', async () => {
    // b (id 5) knows a real peer 1 and a phantom peer 3 that the fuzzer impersonates.
    const b = await node(5, [peer(1), peer(3)]);
    const a = await node(1, [peer(5, b.mgr.address)]);
    await waitFor('link up', () => a.events.includes('up:5'));
    const reconnectsBefore = a.mgr.info()[0]!.reconnects;
    const hello = (nodeId: number) =>
      encodeHello({
        nodeId,
        name: 'x',
        incarnation: randomUUID(),
        epoch: 1,
        peerIncarnation: '',
        peerEpoch: 0,
        received: 0,
      });
    const w = new FrameWriter();
    writeDataHeader(w, 5, 0);
    const gap = w.take()!;
    const cases: Uint8Array[] = [
      Uint8Array.of(0, 0, 0, 0),
      Uint8Array.of(0xff, 0xff, 0xff, 0x7f, 1, 2, 3),
      encodeFrames([hello(9)]),
      encodeFrames([hello(5)]),
      encodeFrames([hello(7)]),
      encodeFrames([Uint8Array.of(0xf1, 0x58, 0x58, 0x58, 0x58, 1, 0x80)]),
      encodeFrames([encodeNodeFrame(post(1))]),
      Buffer.concat([encodeFrames([hello(3)]), Uint8Array.of(5, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0x00)]),
      Buffer.concat([encodeFrames([hello(3)]), gap, encodeFrames([encodeNodeFrame(post(1))])]),
      Buffer.concat([encodeFrames([hello(3)]), encodeFrames([Uint8Array.of(0xf2, 1)])]),
    ];
    for (let i = 0; i < 40; i++) {
      const len = 1 + Math.floor(Math.random() * 200);
      cases.push(Uint8Array.from({ length: len }, () => Math.floor(Math.random() * 256)));
    }
    for (let i = 0; i < cases.length; i += 10) {
      await Promise.all(cases.slice(i, i + 10).map((bytes) => raw(b.mgr.address, bytes)));
    }
    const warnings = b.logs.filter((l) => l.msg === 'node link connection closed' && l.level === 40);
    assert.ok(warnings.length >= 10, `only ${warnings.length} warnings`);
    assert.ok(warnings.every((l) => typeof l.reason === 'string'));
    assert.ok(b.logs.some((l) => typeof l.reason === 'string' && /unknown node 9/.test(l.reason as string)));
    assert.ok(b.logs.some((l) => typeof l.reason === 'string' && /own node id/.test(l.reason as string)));
    // The good peer was never disturbed and still works both ways.
    a.mgr.send(5, post(1));
    b.mgr.send(1, post(2));
    await waitFor('good peer', () => opsFrom(b, 1).length === 1 && opsFrom(a, 5).length === 1);
    assert.equal(a.mgr.info()[0]!.reconnects, reconnectsBefore);
    assert.deepEqual(a.events, ['up:5']);
    assert.equal(b.frames.filter((f) => f.from === 3).length, 0);
  });
});
