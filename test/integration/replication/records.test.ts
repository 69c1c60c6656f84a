/**
 * The replica group records (src/node/repl-record.ts) against the embedded store: creation bumps the epoch of
 * what an earlier group left, a CAS loses to a concurrent writer and is retried on the new value, a refusal is
 * thrown as is, a cut-off store fails the call (the fence never acts as if it wrote), an ambiguous write that
 * did land is recognised, and a bad value is reported, not decoded. The wire layout is pinned.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { EmbeddedStore } from '../../../src/cluster/embedded/store.js';
import type { ClusterStore } from '../../../src/cluster/store.js';
import {
  decodeReplRecord,
  encodeReplRecord,
  type ReplRecord,
  ReplRecords,
  replKey,
} from '../../../src/node/repl-record.js';
import { DvsError, dvsError } from '../../../src/protocol/errors.js';
import { CuttableStore } from '../cluster/services-suite.js';

describe('replica group records in the cluster store', () => {
  let dir: string;
  let store: EmbeddedStore;
  let cut: CuttableStore;
  let records: ReplRecords;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dvs-repl-rec-'));
    store = new EmbeddedStore({ dir, logger: pino({ level: 'silent' }) });
    await store.start();
    cut = new CuttableStore(store);
    records = new ReplRecords(cut);
  });
  after(async () => {
    await store?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('the value is JSON with a fixed layout; malformed values are refused', () => {
    const r: ReplRecord = { mode: 'primary-backup', primary: 0, members: [1, 2], epoch: 3 };
    assert.equal(
      new TextDecoder().decode(encodeReplRecord(r)),
      '{"mode":"primary-backup","primary":0,"members":[1,2],"epoch":3}',
    );
    assert.deepEqual(decodeReplRecord(encodeReplRecord(r)), r);
    assert.equal(replKey(4, 100), '/dvs/repl/4/100');
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    for (const bad of [
      'nope',
      { mode: 'other', members: [], epoch: 1 },
      { mode: 'state-machine', members: [1, -2], epoch: 1 },
      { mode: 'state-machine', members: [1], epoch: 0 },
      { mode: 'primary-backup', primary: 'x', members: [], epoch: 1 },
    ]) {
      assert.equal(
        decodeReplRecord(typeof bad === 'string' ? new TextEncoder().encode(bad) : enc(bad)),
        undefined,
      );
    }
  });

  test('create starts at epoch 1, and above whatever an earlier group of the endpoint left', async () => {
    const a = await records.create(1, 100, { mode: 'primary-backup', primary: 0, members: [1, 2] });
    assert.equal(a.epoch, 1);
    const b = await records.create(1, 100, { mode: 'primary-backup', primary: 2, members: [0] });
    assert.equal(b.epoch, 2);
    assert.deepEqual((await records.get(1, 100))?.rec, b);
    await records.remove(1, 100);
    assert.equal(await records.get(1, 100), undefined);
  });

  test('a CAS that lost a race is retried on the value the winner wrote', async () => {
    await records.create(1, 101, { mode: 'state-machine', members: [0, 1, 2] });
    let calls = 0;
    const out = await records.update(1, 101, (cur) => {
      calls++;
      if (calls === 1) {
        // Another node changes the record between our read and our CAS.
        void store.put(
          replKey(1, 101),
          encodeReplRecord({ ...cur!, members: [0, 1], epoch: cur!.epoch + 1 }),
        );
      }
      return { ...cur!, members: [...cur!.members, 3], epoch: cur!.epoch + 1 };
    });
    assert.ok(calls >= 2, `retried (${calls} calls)`);
    assert.deepEqual(out, { mode: 'state-machine', members: [0, 1, 3], epoch: 3 });
    assert.deepEqual((await records.get(1, 101))?.rec, out);
  });

  test('a refusal is thrown as is and writes nothing', async () => {
    const before = await records.get(1, 101);
    await assert.rejects(
      records.update(1, 101, () => {
        throw dvsError('ESTALE', 'not yours');
      }),
      (e: unknown) => e instanceof DvsError && e.code === 'ESTALE',
    );
    assert.equal((await records.get(1, 101))?.modRevision, before?.modRevision);
  });

  test('a cut-off store fails the call', async () => {
    cut.setCut(true);
    try {
      await assert.rejects(
        records.update(1, 101, (cur) => ({ ...cur!, epoch: cur!.epoch + 1 })),
        (e: unknown) => e instanceof DvsError && e.code === 'ENOTCONN',
      );
    } finally {
      cut.setCut(false);
    }
    assert.equal((await records.get(1, 101))?.rec.epoch, 3);
  });

  test('an ambiguous write that landed is recognised as done', async () => {
    // A client whose txn lands but whose answer is lost (what etcd reports as ambiguous).
    const lossy: ClusterStore = Object.assign(Object.create(cut) as ClusterStore, {
      txn: async (...args: Parameters<ClusterStore['txn']>) => {
        await cut.txn(...args);
        throw new DvsError('ENOTCONN', 'answer lost (test)', { ambiguous: true });
      },
    });
    const out = await new ReplRecords(lossy).update(1, 101, (cur) => ({ ...cur!, epoch: cur!.epoch + 1 }));
    assert.equal(out.epoch, 4);
    assert.equal((await records.get(1, 101))?.rec.epoch, 4);
  });

  test('a bad value under the key is reported (EPROTO), not decoded', async () => {
    await store.put(replKey(1, 102), new TextEncoder().encode('{"mode":1}'));
    await assert.rejects(records.get(1, 102), (e: unknown) => e instanceof DvsError && e.code === 'EPROTO');
  });
});
