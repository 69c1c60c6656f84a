/**
 * The DVK services over a real 3-member etcd cluster (each simulated client its own connection), plus
 * histories recorded while the etcd leader is SIGKILLed and restarted. Skips with the reason where etcd is
 * missing.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { EtcdStore } from '../../../src/cluster/etcd/store.js';
import { DvsError } from '../../../src/protocol/errors.js';
import {
  checkLinearizable,
  HistoryRecorder,
  type KvInput,
  type KvOutput,
  kvModel,
} from '../../lib/linearizability.js';
import { Prng } from '../../sim/prng.js';
import { EtcdTestCluster, etcdSkipReason } from '../cluster/etcd-harness.js';
import { logger, type ServicesBackend, servicesSuite } from './suite.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const skip = etcdSkipReason();

if (skip !== undefined) {
  it('DVK services (etcd, 3 members)', { skip }, () => {});
} else {
  let cluster: EtcdTestCluster | undefined;
  let clients: EtcdStore[] = [];
  before(async () => {
    cluster = await EtcdTestCluster.start({ members: 3 });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await cluster?.stop();
  });
  const etcd: ServicesBackend = {
    client: async () => {
      const s = new EtcdStore({ endpoints: cluster!.endpoints, logger, callTimeoutMs: 2_000 });
      await s.start();
      clients.push(s);
      return s;
    },
    releaseClients: async () => {
      const all = clients;
      clients = [];
      await Promise.all(all.map((c) => c.stop()));
    },
  };

  servicesSuite(
    'etcd, 3 members',
    () => etcd,
    (ctx) => {
      it('kv and consensus histories stay linearizable while the etcd leader is killed (seed 3)', async (t) => {
        const c = ctx();
        const dc = c.dc();
        const svcs = await Promise.all(Array.from({ length: 3 }, () => c.services(dc, 4_000)));
        const rec = new HistoryRecorder<KvInput, KvOutput>();
        const prng = new Prng(3);
        const decided: string[] = [];
        let stop = false;
        let unknown = 0;
        const workers = svcs.map(async (svc, w) => {
          // After an unknown outcome the "process" is replaced by a fresh one (a new client id), as in
          // Jepsen: a client never has two operations in flight.
          let client = w;
          for (let i = 0; !stop; i++) {
            const key = prng.pick(['a', 'b', 'c']);
            const r = prng.int(0, 9);
            const input: KvInput =
              r < 4
                ? { op: 'get', key }
                : r < 8
                  ? { op: 'put', key, value: `w${w}-${i}` }
                  : { op: 'cas', key, expect: null, value: `w${w}-${i}` };
            try {
              if (input.op === 'get') {
                await rec.record(
                  client,
                  input,
                  () =>
                    svc.kv.get(key).then(
                      (e) => dec.decode(e.value),
                      (e: unknown) => {
                        if (e instanceof DvsError && e.code === 'ENOENT') return null;
                        throw e;
                      },
                    ),
                  (value) => ({ value }),
                  () => 'drop',
                );
              } else if (input.op === 'put') {
                await rec.record(
                  client,
                  input,
                  () => svc.kv.put(key, enc.encode(input.value)),
                  () => ({}),
                );
              } else {
                await rec.record(
                  client,
                  input,
                  () => svc.kv.cas(key, { revision: 0 }, enc.encode(input.value ?? '')),
                  (res) => ({ succeeded: res.succeeded }),
                );
              }
            } catch (e) {
              if (!(e instanceof DvsError && e.code === 'EUNAVAIL')) {
                stop = true;
                throw e;
              }
              unknown++;
              client += 10;
            }
            if (i % 10 === 0) {
              const d = await svc.consensus
                .propose(`round-${Math.floor(i / 10)}`, enc.encode(`w${w}`))
                .catch(() => undefined);
              if (d) decided.push(`${d.instance}=${dec.decode(d.value)}`);
            }
          }
        });
        await new Promise((r) => setTimeout(r, 400));
        const leader = await cluster!.leader();
        await cluster!.killMember(leader);
        await new Promise((r) => setTimeout(r, 1_500));
        await cluster!.restartMember(leader);
        await new Promise((r) => setTimeout(r, 400));
        stop = true;
        await Promise.all(workers);

        t.diagnostic(`${rec.ops.length} ops (${unknown} with unknown outcome), ${decided.length} decisions`);
        assert.ok(rec.ops.length >= 50, `history has ${rec.ops.length} ops (${unknown} unknown)`);
        const r = checkLinearizable(kvModel, rec.ops);
        assert.equal(r.outcome, 'ok', `not linearizable:\n${r.longestPrefix?.join('\n')}`);
        // Every proposer of a round learned the same decision.
        const byRound = new Map<string, Set<string>>();
        for (const d of decided) {
          const [inst, v] = d.split('=') as [string, string];
          byRound.set(inst, (byRound.get(inst) ?? new Set()).add(v));
        }
        for (const [inst, vs] of byRound) assert.equal(vs.size, 1, `round ${inst}: ${[...vs].join(', ')}`);
      });
    },
  );
}
