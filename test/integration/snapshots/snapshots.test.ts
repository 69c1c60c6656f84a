/**
 * Distributed snapshots through real daemons on loopback: a token ring of six processes over three nodes
 * (examples/token-ring.js, rendezvous sends). In every snapshot the tokens held plus the tokens in flight
 * equal the tokens injected; a DC forked from a snapshot, and the DC restored from one, go on from the cut
 * (their own snapshots still count every token, and their pass counters start where the cut left them).
 * Bad input: unknown names, duplicates, a DC being migrated, a participant that never receives.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RestoreResult, SnapshotInfo, SnapshotRecord } from '../../../src/node/snapshots.js';
import type { ProcessInfo } from '../../../src/protocol/admin.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { AdminClient } from '../../../src/sdk/admin.js';
import { check, REPO, TestCluster } from '../harness.js';

const RING = join(REPO, 'examples/token-ring.js');
const DEAF = join(import.meta.dirname, 'deaf.js');
const SLOW = join(import.meta.dirname, 'slow-export.js');
const EPS = [100, 101, 102, 103, 104, 105];
const TOKENS = 3;
const TOKEN_TYPE = 1;

const codeOf = (e: unknown) => (e instanceof DvsError ? e.code : String(e));

interface RingState {
  held: number;
  passes: number;
}

function stateOf(b: Uint8Array | null): RingState {
  assert.ok(b !== null, 'every ring process has a state');
  return JSON.parse(new TextDecoder().decode(b)) as RingState;
}

/** Tokens in a cut: held by the processes plus in flight on the channels. */
function tokens(rec: SnapshotRecord): { held: number; inFlight: number; passes: number } {
  let held = 0;
  let passes = 0;
  for (const p of rec.procs) {
    const s = stateOf(p.state);
    held += s.held;
    passes += s.passes;
  }
  let inFlight = 0;
  for (const ch of rec.channels) for (const m of ch.msgs) if (m.type === TOKEN_TYPE) inFlight++;
  return { held, inFlight, passes };
}

describe('DC snapshots (token ring over 3 nodes)', () => {
  let c: TestCluster;

  const svc = async (node: number, method: string, params: Record<string, unknown>) => {
    const a = await AdminClient.connect(c.nodes[node]!.socket, { timeout: 2000 });
    try {
      return await a.service(method, params, { timeout: 60_000 });
    } finally {
      await a.close();
    }
  };
  const failsWith = async (p: Promise<unknown>, code: string) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal(codeOf(err), code, `expected ${code}, got ${String(err)}`);
  };
  const ringPids = async (dc: string) => {
    const all: ProcessInfo[] = [];
    for (const n of c.nodes) all.push(...(await c.admin(n.id, 'proc.list', { dc })));
    return all
      .filter((p) => p.exit === null)
      .map((p) => `${p.ep}:${p.pid}`)
      .sort();
  };
  const startRing = async (dc: string) => {
    for (const [i, ep] of EPS.entries()) {
      await c.admin(i % 3, 'proc.run', {
        dc,
        ep,
        cmd: [process.execPath, RING, EPS.join(','), ...(i === 0 ? [String(TOKENS)] : [])],
      });
    }
    await check(
      async () =>
        (await c.admin(0, 'ep.list', { dc })).filter((e) => EPS.includes(e.ep)).length === EPS.length,
      10_000,
      `ring ${dc} bound`,
    );
    // Each one prints once its hooks are declared.
    await check(
      async () => {
        for (const [i, ep] of EPS.entries()) if (!/token ring/.test(await logOf(i % 3, dc, ep))) return false;
        return true;
      },
      10_000,
      `ring ${dc} hooks declared`,
    );
  };
  const snapshot = async (dc: string, name?: string) => {
    const info = (await svc(0, 'snapshot.create', { dc, ...(name ? { name } : {}) })) as SnapshotInfo;
    return (await svc(1, 'snapshot.show', { name: info.name })) as SnapshotRecord;
  };
  const logOf = async (node: number, dc: string, ep: number) =>
    new TextDecoder().decode((await c.admin(node, 'logs.read', { dc, ep, offset: 0 })).data);
  const logsOf = async (dc: string) => {
    let text = '';
    for (const [i, ep] of EPS.entries()) text += await logOf(i % 3, dc, ep);
    return text;
  };

  before(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.createDc({ id: 1, name: 'ring' });
    await startRing('ring');
  });
  after(async () => {
    await c?.stop();
  });

  let cut: SnapshotRecord;

  test('every snapshot counts every token once (held + in flight = injected)', async () => {
    let sawInFlight = false;
    for (let i = 0; i < 6; i++) {
      const rec = await snapshot('ring', `ring-${i}`);
      assert.equal(rec.procs.length, EPS.length);
      assert.ok(
        rec.procs.every((p) => p.hooked && p.proc !== null),
        JSON.stringify(rec.procs.map((p) => ({ ...p, state: null }))),
      );
      const t = tokens(rec);
      assert.equal(t.held + t.inFlight, TOKENS, `snapshot ${i}: ${JSON.stringify(t)}`);
      assert.equal(rec.info.messages, t.inFlight);
      if (t.inFlight > 0) sawInFlight = true;
      cut = rec;
    }
    // Tokens wait at their receiver while it holds the previous one: some cut catches one in flight.
    assert.ok(sawInFlight, 'no snapshot recorded a message in flight');
    const list = (await svc(2, 'snapshot.ls', { dc: 'ring' })) as SnapshotInfo[];
    assert.deepEqual(
      list.map((i) => i.name),
      EPS.map((_, i) => `ring-${i}`),
    );
    // Markers never reach the application (the ring exits on any other message type).
    assert.equal((await ringPids('ring')).length, EPS.length);
    assert.doesNotMatch(await logsOf('ring'), /unexpected message/);
  });

  test('fork: a new DC starts from the cut and goes on (tokens conserved, counters continue)', async () => {
    const atCut = tokens(cut);
    const r = (await svc(2, 'snapshot.fork', { snapshot: cut.info.name, as: 'ring2' })) as RestoreResult;
    assert.equal(r.dc.name, 'ring2');
    assert.notEqual(r.dc.id, cut.config.id);
    assert.equal(r.started.length, EPS.length);
    assert.equal(r.messages, atCut.inFlight);
    assert.deepEqual(r.skipped, []);
    // Each process came back with its own state.
    await check(async () => /restored/.test(await logsOf('ring2')), 10_000, 'ring2 processes restored');
    const rec = await snapshot('ring2');
    const t = tokens(rec);
    assert.equal(t.held + t.inFlight, TOKENS, JSON.stringify(t));
    for (const p of rec.procs) {
      const before = stateOf(cut.procs.find((q) => q.ep === p.ep)!.state).passes;
      assert.ok(stateOf(p.state).passes >= before, `endpoint ${p.ep} went back before the cut`);
    }
    // It moves on: more passes than at the cut, eventually.
    await check(async () => tokens(await snapshot('ring2')).passes > atCut.passes, 15_000, 'ring2 progress');
    // The original ring was not touched.
    assert.equal((await ringPids('ring')).length, EPS.length);
  });

  test('restore: the DC is stopped and started again from the cut', async () => {
    const pidsBefore = await ringPids('ring');
    const r = (await svc(0, 'snapshot.restore', { dc: 'ring', snapshot: cut.info.name })) as RestoreResult;
    assert.equal(r.started.length, EPS.length);
    const pidsAfter = await ringPids('ring');
    assert.equal(pidsAfter.length, EPS.length);
    for (const p of pidsAfter) assert.ok(!pidsBefore.includes(p), `process ${p} was not restarted`);
    const rec = await snapshot('ring');
    const t = tokens(rec);
    assert.equal(t.held + t.inFlight, TOKENS, JSON.stringify(t));
  });

  test('bad input: typed errors, nothing changed', async () => {
    const pids = await ringPids('ring');
    const names = ((await svc(0, 'snapshot.ls', {})) as SnapshotInfo[]).map((i) => i.name);
    await failsWith(svc(0, 'snapshot.show', { name: 'nope' }), 'ENOENT');
    await failsWith(svc(0, 'snapshot.restore', { dc: 'ring', snapshot: 'nope' }), 'ENOENT');
    await failsWith(svc(0, 'snapshot.fork', { snapshot: 'nope', as: 'x' }), 'ENOENT');
    await failsWith(svc(0, 'snapshot.rm', { name: 'nope' }), 'ENOENT');
    await failsWith(svc(0, 'snapshot.create', { dc: 'nodc' }), 'ENOENT');
    await failsWith(svc(0, 'snapshot.create', { dc: 'ring', name: 'ring-0' }), 'EEXIST');
    await failsWith(svc(0, 'snapshot.create', { dc: 'ring', name: '../x' }), 'EINVAL');
    await failsWith(svc(0, 'snapshot.fork', { snapshot: 'ring-0', as: 'ring2' }), 'EEXIST');
    await failsWith(svc(0, 'snapshot.restore', { dc: 'ring2', snapshot: 'ring-0' }), 'EINVAL');
    assert.deepEqual(await ringPids('ring'), pids);
    assert.deepEqual(
      ((await svc(0, 'snapshot.ls', {})) as SnapshotInfo[]).map((i) => i.name),
      names,
    );
  });

  test('rm: the snapshot is gone from every node', async () => {
    await svc(1, 'snapshot.rm', { name: 'ring-1' });
    for (const n of [0, 1, 2]) {
      const names = ((await svc(n, 'snapshot.ls', {})) as SnapshotInfo[]).map((i) => i.name);
      assert.ok(!names.includes('ring-1'));
      assert.ok(names.includes('ring-2'));
    }
    await failsWith(svc(0, 'snapshot.show', { name: 'ring-1' }), 'ENOENT');
  });

  test('a DC being migrated: EBUSY, and the migration completes', async () => {
    await c.createDc({ id: 3, name: 'mig' });
    await c.admin(0, 'proc.run', { dc: 'mig', ep: 100, cmd: [process.execPath, SLOW] });
    // Its hooks are declared once it prints 'ready' (before that a migration would not wait for export).
    await check(async () => /ready/.test(await logOf(0, 'mig', 100)), 10_000, 'mig ready');
    const moving = c.admin(0, 'proc.migrate', { dc: 'mig', ep: 100, to: 1 });
    await check(async () => /exporting/.test(await logOf(0, 'mig', 100)), 10_000, 'export under way');
    await failsWith(svc(0, 'snapshot.create', { dc: 'mig', name: 'mig-busy' }), 'EBUSY');
    await failsWith(svc(1, 'snapshot.create', { dc: 'mig', name: 'mig-busy' }), 'EBUSY');
    const m = await moving;
    assert.equal(m.to, 1);
    const names = ((await svc(0, 'snapshot.ls', {})) as SnapshotInfo[]).map((i) => i.name);
    assert.ok(!names.includes('mig-busy'));
  });

  test('a participant that never receives: ETIMEDOUT, nothing stored, the DC runs on', async () => {
    await c.createDc({ id: 4, name: 'deaf' });
    await c.admin(0, 'proc.run', { dc: 'deaf', ep: 100, cmd: [process.execPath, DEAF] });
    await c.admin(1, 'proc.run', { dc: 'deaf', ep: 101, cmd: [process.execPath, RING, '101'] });
    await check(async () => (await c.admin(0, 'ep.list', { dc: 'deaf' })).length === 2, 10_000, 'deaf bound');
    // Both declare hooks before the snapshot starts (they print once they have).
    await check(
      async () =>
        /deaf at/.test(await logOf(0, 'deaf', 100)) && /token ring/.test(await logOf(1, 'deaf', 101)),
      10_000,
      'hooks declared',
    );
    await failsWith(svc(0, 'snapshot.create', { dc: 'deaf', name: 'deaf-1', timeoutMs: 1500 }), 'ETIMEDOUT');
    const names = ((await svc(0, 'snapshot.ls', {})) as SnapshotInfo[]).map((i) => i.name);
    assert.ok(!names.includes('deaf-1'));
    assert.equal((await c.admin(1, 'proc.list', { dc: 'deaf' })).filter((p) => p.exit === null).length, 1);
  });
});

describe('DC snapshots with a cluster store (index in the store, fork through the DC registry)', () => {
  let c: TestCluster;
  const RING3 = [100, 101, 102];
  const svc = async (node: number, method: string, params: Record<string, unknown>) => {
    const a = await AdminClient.connect(c.nodes[node]!.socket, { timeout: 2000 });
    try {
      return await a.service(method, params, { timeout: 60_000 });
    } finally {
      await a.close();
    }
  };
  const logOf = async (node: number, dc: string, ep: number) =>
    new TextDecoder().decode((await c.admin(node, 'logs.read', { dc, ep, offset: 0 })).data);

  before(async () => {
    c = await TestCluster.start({ stores: ['embedded', 'embedded:0', 'embedded:0'] });
    await c.admin(0, 'dc.create', {
      config: { id: 1, name: 'ring', nodes: [0, 1, 2], maxPayload: 4096, sysEndpoints: 64, postWindow: 1024 },
    });
    await check(async () => (await c.admin(2, 'dc.list', {})).length === 1, 5000, 'DC on node 2');
    for (const [i, ep] of RING3.entries()) {
      await c.admin(i, 'proc.run', {
        dc: 'ring',
        ep,
        cmd: [process.execPath, RING, RING3.join(','), ...(i === 0 ? ['2'] : [])],
        env: { TR_MODE: 'post' },
      });
    }
    await check(
      async () => {
        for (const [i, ep] of RING3.entries())
          if (!/token ring/.test(await logOf(i, 'ring', ep))) return false;
        return true;
      },
      10_000,
      'ring hooks declared',
    );
  });
  after(async () => {
    await c?.stop();
  });

  test('snapshot, list from any node, fork into a store-allocated DC, remove', async () => {
    const info = (await svc(0, 'snapshot.create', { dc: 'ring', name: 'cut' })) as SnapshotInfo;
    assert.equal(info.processes, 3);
    for (const n of [1, 2]) {
      const names = ((await svc(n, 'snapshot.ls', { dc: 'ring' })) as SnapshotInfo[]).map((i) => i.name);
      assert.deepEqual(names, ['cut']);
    }
    const rec = (await svc(2, 'snapshot.show', { name: 'cut' })) as SnapshotRecord;
    const t = tokens(rec);
    assert.equal(t.held + t.inFlight, 2, JSON.stringify(t));
    const r = (await svc(1, 'snapshot.fork', { snapshot: 'cut', as: 'ring2' })) as RestoreResult;
    assert.equal(r.started.length, 3);
    assert.notEqual(r.dc.id, 1);
    await check(
      async () => {
        const again = (await svc(0, 'snapshot.create', { dc: 'ring2' })) as SnapshotInfo;
        const t2 = tokens((await svc(0, 'snapshot.show', { name: again.name })) as SnapshotRecord);
        assert.equal(t2.held + t2.inFlight, 2, JSON.stringify(t2));
        return t2.passes > t.passes;
      },
      15_000,
      'ring2 goes on from the cut',
    );
    await svc(2, 'snapshot.rm', { name: 'cut' });
    const left = ((await svc(0, 'snapshot.ls', {})) as SnapshotInfo[]).map((i) => i.name);
    assert.ok(!left.includes('cut'));
    assert.ok(left.length >= 1);
  });
});
