/**
 * The process side of snapshots without sockets (pure; kept beside the integration test it supports): the
 * marker wire format pinned byte by byte, and the SDK agent's Chandy–Lamport rules driven by hand.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Endpoint, Received } from '../../../src/kernel/types.js';
import { DvsError } from '../../../src/protocol/errors.js';
import {
  decodeMarker,
  encodeMarker,
  SNAPSHOT_MARKER_TYPE,
  SnapshotAgent,
  type SnapshotHost,
} from '../../../src/sdk/snapshot.js';

describe('snapshot marker wire format', () => {
  test('layout: version, flags, count u16 LE, run u32 LE, endpoints u32 LE', () => {
    const b = encodeMarker({ run: 0xdeadbeef, participants: [100, 70_000] });
    assert.deepEqual([...b], [1, 0, 2, 0, 0xef, 0xbe, 0xad, 0xde, 100, 0, 0, 0, 0x70, 0x11, 0x01, 0x00]);
    assert.deepEqual(decodeMarker(b), { run: 0xdeadbeef, participants: [100, 70_000] });
    assert.equal(SNAPSHOT_MARKER_TYPE, -0x534e4150);
  });

  test('round trip for any run and participants', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 50 }),
        (run, participants) => {
          assert.deepEqual(decodeMarker(encodeMarker({ run, participants })), { run, participants });
        },
      ),
    );
  });

  test('a payload that is not a marker is EPROTO', () => {
    const good = encodeMarker({ run: 1, participants: [5] });
    for (const bad of [new Uint8Array(3), Uint8Array.of(2, ...good.subarray(1)), good.subarray(0, 10)]) {
      assert.throws(
        () => decodeMarker(bad),
        (e: unknown) => e instanceof DvsError && e.code === 'EPROTO',
      );
    }
  });
});

interface Report {
  run: number;
  state?: Uint8Array;
  channels?: { src: Endpoint; msgs: Received[] }[];
  error?: unknown;
}

function fakeHost(endpoint: Endpoint) {
  const posts: { dst: Endpoint; type: number; payload: Uint8Array }[] = [];
  const reports: Report[] = [];
  const host: SnapshotHost & { isBusy: boolean } = {
    endpoint,
    isBusy: false,
    post: async (dst, msg) => {
      posts.push({ dst, ...msg });
    },
    service: async (method, params) => {
      assert.equal(method, 'snapshot.report');
      reports.push(params as unknown as Report);
      return { ok: true };
    },
    busy: () => host.isBusy,
  };
  return { host, posts, reports };
}

const marker = (source: Endpoint, run: number, participants: Endpoint[]): Received => ({
  source,
  type: SNAPSHOT_MARKER_TYPE,
  kind: 'post',
  payload: encodeMarker({ run, participants }),
});
const token = (source: Endpoint): Received => ({ source, type: 1, kind: 'send', payload: Uint8Array.of(7) });
const immediate = () => new Promise((r) => setImmediate(r));

describe('snapshot agent (Chandy–Lamport in the SDK)', () => {
  test('begin while waiting in the SDK: state now, markers to the others, channels until their markers', async () => {
    const { host, posts, reports } = fakeHost(2);
    let held = 1;
    const agent = new SnapshotAgent(host, { save: () => Uint8Array.of(held) });
    host.isBusy = true;
    agent.command({ op: 'begin', run: 9, participants: [1, 2, 3] });
    await immediate();
    assert.deepEqual(
      posts.map((p) => p.dst),
      [1, 3],
    );
    assert.ok(posts.every((p) => p.type === SNAPSHOT_MARKER_TYPE));
    held = 2;
    // After the cut: a message from 1 before 1's marker is in flight; one after it is not.
    assert.equal(agent.filter(token(1)), false);
    assert.equal(agent.filter(marker(1, 9, [1, 2, 3])), true);
    assert.equal(agent.filter(token(1)), false);
    assert.equal(agent.filter(token(3)), false);
    assert.equal(reports.length, 0);
    assert.equal(agent.filter(marker(3, 9, [1, 2, 3])), true);
    await immediate();
    assert.equal(reports.length, 1);
    const r = reports[0]!;
    assert.equal(r.run, 9);
    assert.deepEqual([...r.state!], [1]);
    assert.deepEqual(
      r.channels!.map((c) => [c.src, c.msgs.length]),
      [
        [1, 1],
        [3, 1],
      ],
    );
  });

  test('begin while the application is elsewhere: the state is taken at its next SDK call', async () => {
    const { host, posts } = fakeHost(2);
    let saves = 0;
    const agent = new SnapshotAgent(host, {
      save: () => {
        saves++;
        return new Uint8Array(0);
      },
    });
    agent.command({ op: 'begin', run: 4, participants: [1, 2] });
    await immediate();
    assert.equal(saves, 0);
    assert.equal(agent.pending, true);
    agent.fire();
    assert.equal(saves, 1);
    assert.equal(agent.pending, false);
    assert.deepEqual(
      posts.map((p) => p.dst),
      [1],
    );
  });

  test("a peer's marker first: state recorded then, that channel empty, the later begin ignored", async () => {
    const { host, posts, reports } = fakeHost(3);
    let saves = 0;
    const agent = new SnapshotAgent(host, {
      save: () => {
        saves++;
        return Uint8Array.of(saves);
      },
    });
    assert.equal(agent.filter(marker(1, 5, [1, 2, 3])), true);
    assert.equal(saves, 1);
    assert.deepEqual(
      posts.map((p) => p.dst),
      [1, 2],
    );
    host.isBusy = true;
    agent.command({ op: 'begin', run: 5, participants: [1, 2, 3] });
    await immediate();
    assert.equal(saves, 1);
    agent.filter(token(1));
    agent.filter(token(2));
    agent.filter(marker(2, 5, [1, 2, 3]));
    await immediate();
    assert.equal(reports.length, 1);
    assert.deepEqual(
      reports[0]!.channels!.map((c) => [c.src, c.msgs.length]),
      [[2, 1]],
    );
  });

  test('abort drops the run; its late markers are consumed and start nothing', async () => {
    const { host, reports } = fakeHost(2);
    let saves = 0;
    const agent = new SnapshotAgent(host, {
      save: () => {
        saves++;
        return new Uint8Array(0);
      },
    });
    assert.equal(agent.filter(marker(1, 8, [1, 2, 3])), true);
    agent.command({ op: 'abort', run: 8 });
    assert.equal(agent.filter(marker(3, 8, [1, 2, 3])), true);
    assert.equal(agent.filter(token(1)), false);
    await immediate();
    assert.equal(saves, 1);
    assert.equal(reports.length, 0);
  });

  test('a save() that throws is reported as the run failing', async () => {
    const { host, reports } = fakeHost(2);
    const agent = new SnapshotAgent(host, {
      save: () => {
        throw new DvsError('EINVAL', 'no');
      },
    });
    agent.filter(marker(1, 3, [1, 2]));
    await immediate();
    assert.equal(reports.length, 1);
    assert.equal((reports[0]!.error as { code: string }).code, 'EINVAL');
  });
});
