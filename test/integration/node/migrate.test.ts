/**
 * Live migration through real daemons on loopback: a client on node 0 runs sendrec in a loop against a
 * counter server (examples/counter-server.js, state moved by the SDK's onMigrate hooks) while the server is
 * migrated 0 → 1 → 2 → 0 ... : zero errors, every reply's counter consecutive. Also a server without hooks
 * (restarted without state, no request lost) and the bad-input cases.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { MigrationResult } from '../../../src/protocol/admin.js';
import { DvsError } from '../../../src/protocol/errors.js';
import { connect, type Dvk } from '../../../src/sdk/index.js';
import { check, REPO, TestCluster } from '../harness.js';

const COUNTER = join(REPO, 'examples/counter-server.js');
const ECHO = join(REPO, 'examples/echo-server.js');
const SERVER = 100;

const codeOf = (e: unknown) => (e instanceof DvsError ? e.code : String(e));

for (const store of [false, true]) {
  describe(`migration through daemons (${store ? 'embedded store' : 'no store'})`, () => {
    let c: TestCluster;
    const clients: Dvk[] = [];

    before(async () => {
      c = await TestCluster.start({
        nodes: 3,
        heartbeatMs: 100,
        deadAfterMs: 1500,
        ...(store ? { stores: ['embedded', 'embedded:0', 'embedded:0'] } : {}),
      });
      await c.waitLinks();
      if (store) {
        await c.waitMembers([0, 1, 2]);
        await c.admin(0, 'dc.create', {
          config: {
            id: 1,
            name: 'app',
            nodes: [0, 1, 2],
            maxPayload: 4096,
            sysEndpoints: 64,
            postWindow: 1024,
          },
        });
        await check(async () => (await c.admin(2, 'dc.list', {})).length === 1, 5000, 'DC on node 2');
      } else {
        await c.createDc({ id: 1, name: 'app' });
      }
    });
    after(async () => {
      for (const d of clients) await d.close().catch(() => undefined);
      await c?.stop();
    });

    const where = async (ep: number) =>
      (await c.admin(0, 'ep.list', { dc: 'app' })).find((e) => e.ep === ep)?.node;

    test('a counter server migrated 0 → 1 → 2 → 0 ten times under sendrec load: zero errors, counters consecutive', async (t) => {
      await c.admin(0, 'proc.run', { dc: 'app', ep: SERVER, cmd: [process.execPath, COUNTER] });
      const client = await connect({ socket: c.nodes[0]!.socket, dc: 'app', endpoint: 200, timeout: 5000 });
      clients.push(client);
      await check(async () => (await where(SERVER)) === 0, 15_000, 'server bound on node 0');
      const values: number[] = [];
      const errors: string[] = [];
      let stop = false;
      const load = (async () => {
        while (!stop) {
          try {
            const r = await client.sendrec(SERVER, { type: 1 }, { timeout: 10_000 });
            values.push(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getFloat64(0, true));
          } catch (e) {
            errors.push(codeOf(e));
          }
        }
      })();
      await check(() => values.length > 20, 15_000, 'load flowing');
      const results: MigrationResult[] = [];
      const path = [1, 2, 0, 1, 2, 0, 1, 2, 0, 1];
      for (const to of path) {
        // Any node answers: the call goes to the node where the endpoint lives.
        const r = await c.admin(to === 0 ? 2 : 0, 'proc.migrate', { dc: 'app', ep: SERVER, to });
        results.push(r);
        assert.equal(r.to, to);
        assert.equal(r.stateful, true);
        const before = values.length;
        await check(() => values.length > before + 5, 15_000, `load flowing after the move to ${to}`);
      }
      stop = true;
      await load;
      assert.deepEqual(errors, [], 'no client call failed');
      for (let i = 1; i < values.length; i++) {
        assert.equal(values[i], values[i - 1]! + 1, `reply ${i}: ${values[i]} after ${values[i - 1]}`);
      }
      assert.equal(values[0], 1);
      assert.equal(await where(SERVER), 1);
      const freeze = results.map((r) => r.freezeMs).sort((a, b) => a - b);
      t.diagnostic(`freeze ms: median ${freeze[freeze.length >> 1]} max ${freeze[freeze.length - 1]}`);
      const procs = await c.admin(1, 'proc.list', { dc: 'app' });
      assert.ok(
        procs.some((p) => p.ep === SERVER && p.exit === null),
        'the server runs on node 1',
      );
    });

    test('a server without hooks is restarted at the destination; requests queued meanwhile are served', async () => {
      await c.admin(1, 'proc.run', { dc: 'app', ep: 101, cmd: [process.execPath, ECHO] });
      await check(async () => (await where(101)) === 1, 5000, 'echo server bound on node 1');
      const client = await connect({ socket: c.nodes[2]!.socket, dc: 'app', endpoint: 201, timeout: 5000 });
      clients.push(client);
      const ask = async (text: string) => {
        const r = await client.sendrec(
          101,
          { type: 1, payload: new TextEncoder().encode(text) },
          { timeout: 10_000 },
        );
        return new TextDecoder().decode(r.payload);
      };
      assert.equal(await ask('one'), 'ONE');
      const r = await c.admin(1, 'proc.migrate', { dc: 'app', ep: 101, to: 2 });
      assert.equal(r.stateful, false);
      assert.equal(await ask('two'), 'TWO');
      assert.equal(await where(101), 2);
    });

    test('bad requests name the problem and leave the endpoint where it was', async () => {
      const fails = async (params: { dc: string; ep: number; to: number }, code: string, re: RegExp) => {
        await assert.rejects(c.admin(0, 'proc.migrate', params), (e: unknown) => {
          assert.equal(codeOf(e), code);
          assert.match((e as Error).message, re);
          return true;
        });
      };
      const at = await where(SERVER);
      await fails({ dc: 'app', ep: SERVER, to: 7 }, 'EINVAL', /not a node of DC/);
      await fails({ dc: 'app', ep: SERVER, to: at! }, 'EINVAL', /already lives/);
      await fails({ dc: 'app', ep: 555, to: 1 }, 'ENOTBOUND', /not bound/);
      // A process not started by dvs run cannot be restarted elsewhere.
      const own = await connect({ socket: c.nodes[0]!.socket, dc: 'app', endpoint: 300, timeout: 5000 });
      clients.push(own);
      await fails({ dc: 'app', ep: 300, to: 1 }, 'EINVAL', /dvs run/);
      assert.equal(await where(SERVER), at);
    });
  });
}
