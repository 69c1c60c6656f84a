/**
 * Leader kill under load on a real 3-member etcd cluster (heartbeat 50 ms, election 300 ms): writes and a
 * watch keep working; no acknowledged write is missing from the watch, no event is missing, reordered or
 * duplicated; a write reported as failed without `ambiguous` never shows up. The write-unavailability window
 * around each kill is reported as a test diagnostic (it is a measurement, not an assertion).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { pino } from 'pino';
import { EtcdStore } from '../../../src/cluster/etcd/store.js';
import type { Watch, WatchEnd, WatchEvent } from '../../../src/cluster/store.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { EtcdTestCluster, etcdSkipReason, waitFor } from './etcd-harness.js';

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const dec = new TextDecoder();

const ROUNDS = 2;
const BEFORE_KILL_MS = 400;
const AFTER_KILL_MS = 1_500;
/**
 * A write sent just before the kill, or forwarded by a follower to the dead leader, is lost and only ends
 * at its deadline (it cannot be retried: it may have applied). So the unavailability a writer sees is about
 * max(election, its own timeout): recipes that need fast failover use short write timeouts, as here.
 */
const WRITE_TIMEOUT_MS = 250;

it('etcd leader kill: writes and a watch keep working, nothing acknowledged is lost', {
  skip: etcdSkipReason(),
}, async (t) => {
  const cluster = await EtcdTestCluster.start({ members: 3 });
  const writer = new EtcdStore({ endpoints: cluster.endpoints, logger, callTimeoutMs: 1_000 });
  const reader = new EtcdStore({ endpoints: cluster.endpoints, logger, callTimeoutMs: 1_000 });
  let pinned: EtcdStore | undefined;
  try {
    await writer.start();
    await reader.start();
    const prefix = '/failover/';
    const from = (await reader.get(prefix, { prefix: true })).revision + 1;

    // Two watches: one through all members, one pinned to the first victim (its stream breaks at the kill and
    // must resume from its last revision once that member is back).
    const leader0 = await cluster.leader();
    const pinnedLog: string[] = [];
    const pinnedLogger = pino({ level: 'info' }, { write: (line: string) => void pinnedLog.push(line) });
    pinned = new EtcdStore({
      endpoints: [cluster.endpoints[leader0]!],
      logger: pinnedLogger,
      callTimeoutMs: 1_000,
    });
    await pinned.start();
    const all = record(reader, prefix, from);
    const one = record(pinned, prefix, from);

    // The writer: one put after another, each key unique, every outcome recorded.
    const acked = new Map<number, { rev: number; startedAt: number; at: number }>();
    const ambiguous = new Set<number>();
    const failed = new Set<number>();
    let stopWriting = false;
    let i = 0;
    const writing = (async () => {
      while (!stopWriting) {
        const n = i++;
        const startedAt = Date.now();
        try {
          const rev = await writer.put(key(prefix, n), enc.encode(String(n)), {
            timeout: WRITE_TIMEOUT_MS,
          });
          acked.set(n, { rev, startedAt, at: Date.now() });
        } catch (e) {
          assert.ok(e instanceof DvsError, `not a DvsError: ${String(e)}`);
          if (e.details?.ambiguous === true) ambiguous.add(n);
          else failed.add(n);
        }
      }
    })();

    const windows: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      await sleep(BEFORE_KILL_MS);
      const leader = round === 0 ? leader0 : await cluster.leader();
      const killedAt = Date.now();
      await cluster.killMember(leader);
      await sleep(AFTER_KILL_MS);
      // Writes keep working: some write issued after the kill was acknowledged.
      const after = [...acked.values()].filter((a) => a.startedAt >= killedAt).map((a) => a.at);
      assert.ok(
        after.length > 0,
        `round ${round}: no write acknowledged in ${AFTER_KILL_MS} ms after the kill`,
      );
      windows.push(Math.min(...after) - killedAt);
      await cluster.restartMember(leader);
    }
    stopWriting = true;
    await writing;
    // A last acknowledged write: every earlier write, ambiguous ones included, has a lower revision.
    const last = i++;
    const lastRev = await writer.put(key(prefix, last), enc.encode(String(last)), { timeout: 5_000 });
    acked.set(last, { rev: lastRev, startedAt: Date.now(), at: Date.now() });

    // Both watches catch up with everything that may have been written, and saw the same thing.
    const seen = new Map<number, number>();
    for (const [name, rec] of [
      ['watch via all members', all],
      ['watch pinned to the first victim', one],
    ] as const) {
      await waitFor(() => (rec.batches.at(-1)?.revision ?? 0) >= lastRev, 10_000, `${name} to catch up`);
      rec.watch.cancel();
      assert.deepEqual(rec.ends, [], `${name} ended`);
      const got = verify(name, rec.batches, acked, ambiguous);
      if (seen.size === 0) for (const [k, v] of got) seen.set(k, v);
      else assert.deepEqual(got, seen, `${name} differs from the first watch`);
    }

    // The pinned watch really lost its stream and resumed (not just stayed connected).
    assert.ok(
      pinnedLog.some((l) => l.includes('etcd watch resumed')),
      'the pinned watch never resumed after its member was killed',
    );

    const appliedAmbiguous = [...ambiguous].filter((n) => seen.has(n)).length;
    t.diagnostic(
      `writes: ${acked.size} acked, ${ambiguous.size} ambiguous (${appliedAmbiguous} of them applied), ` +
        `${failed.size} failed cleanly; first acked write started after each leader kill, acked after: ${windows.map((x) => `${x} ms`).join(', ')}`,
    );
  } finally {
    await writer.stop();
    await reader.stop();
    await pinned?.stop();
    await cluster.stop();
  }
});

const key = (prefix: string, n: number): string => `${prefix}${String(n).padStart(6, '0')}`;

interface Recording {
  batches: { revision: number; events: WatchEvent[] }[];
  ends: WatchEnd[];
  watch: Watch;
}

function record(store: EtcdStore, prefix: string, from: number): Recording {
  const batches: Recording['batches'] = [];
  const ends: WatchEnd[] = [];
  const watch = store.watch(
    prefix,
    from,
    (events, revision) => batches.push({ revision, events }),
    (why) => ends.push(why),
  );
  return { batches, ends, watch };
}

/** Check one watch's deliveries against the writer's outcomes; returns write number -> revision seen. */
function verify(
  name: string,
  batches: Recording['batches'],
  acked: ReadonlyMap<number, { rev: number }>,
  ambiguous: ReadonlySet<number>,
): Map<number, number> {
  // Order: strictly increasing revisions, one batch per revision, every event carrying its batch revision.
  const seen = new Map<number, number>();
  let prev = 0;
  for (const b of batches) {
    assert.ok(b.revision > prev, `${name}: revision ${b.revision} delivered after ${prev}`);
    prev = b.revision;
    for (const ev of b.events) {
      assert.equal(ev.type, 'put');
      assert.equal(ev.kv.modRevision, b.revision);
      const n = Number(dec.decode(ev.kv.value));
      assert.ok(!seen.has(n), `${name}: write ${n} delivered twice`);
      seen.set(n, b.revision);
    }
  }
  // Completeness: every acknowledged write, at its acknowledged revision.
  for (const [n, a] of acked)
    assert.equal(seen.get(n), a.rev, `${name}: acknowledged write ${n} (rev ${a.rev})`);
  // A write reported failed without `ambiguous` did not apply; anything seen was acked or ambiguous.
  for (const n of seen.keys()) {
    assert.ok(
      acked.has(n) || ambiguous.has(n),
      `${name}: write ${n} seen but reported failed (not ambiguous)`,
    );
  }
  // No gap: only this test writes, so the delivered revisions are dense.
  const revs = batches.map((b) => b.revision);
  assert.equal(revs.length, (revs.at(-1) ?? 0) - (revs[0] ?? 0) + 1, `${name}: a revision is missing`);
  return seen;
}

it('a watch on a member that goes silent (SIGSTOP) resumes on another member, well before gRPC keepalive', {
  skip: etcdSkipReason(),
}, async () => {
  const cluster = await EtcdTestCluster.start({ members: 3 });
  const reader = new EtcdStore({ endpoints: cluster.endpoints, logger, callTimeoutMs: 1_000 });
  let stopped: number | undefined;
  let writer: EtcdStore | undefined;
  try {
    await reader.start();
    const prefix = '/silent/';
    const seen: string[] = [];
    const w = (await reader.watch(
      prefix,
      (await reader.get(prefix, { prefix: true })).revision + 1,
      (evs) => {
        for (const e of evs) seen.push(e.kv.key);
      },
      () => undefined,
    )) as Watch & { member?: string };
    await waitFor(() => w.member !== undefined, 5_000, 'the watch stream opened');
    // Freeze exactly the member carrying the watch: TCP stays up, nothing answers (like a partition that
    // drops packets). Write through the two others.
    stopped = cluster.endpoints.indexOf(w.member!);
    assert.ok(stopped >= 0, `watch member ${w.member} is one of ${cluster.endpoints.join(',')}`);
    process.kill(cluster.pid(stopped)!, 'SIGSTOP');
    writer = new EtcdStore({
      endpoints: cluster.endpoints.filter((_, i) => i !== stopped),
      logger,
      callTimeoutMs: 5_000,
    });
    await writer.start();
    await writer.put(`${prefix}k`, enc.encode('v'));
    // gRPC keepalive alone would take about 15 s; the progress probe resumes the stream within ~3 s.
    await waitFor(() => seen.includes(`${prefix}k`), 8_000, 'the event through another member');
    assert.notEqual(w.member, cluster.endpoints[stopped]);
  } finally {
    if (stopped !== undefined) process.kill(cluster.pid(stopped)!, 'SIGCONT');
    await writer?.stop();
    await reader.stop();
    await cluster.stop();
  }
});
