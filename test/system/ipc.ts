/**
 * IPC helpers shared by the system tests: servers, error assertions, directory waits. Kept out of
 * harness.ts, which only knows namespaces and daemons.
 */
import assert from 'node:assert/strict';
import { AdminClient } from '../../src/sdk/admin.js';
import type { Dvk, SmrStatus } from '../../src/sdk/index.js';
import { DvsError } from '../../src/sdk/index.js';
import { check, type NetnsCluster } from './harness.js';

export const enc = new TextEncoder();
export const dec = new TextDecoder();

/** Assert that `p` rejects with a DvsError of `code`. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DvsError, `expected DvsError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return true;
  });
}

/** The stable code of a DvsError, or a description of anything else. */
export function codeOf(e: unknown): string {
  return e instanceof DvsError ? e.code : `not a DvsError: ${String(e)}`;
}

/**
 * Answer every request to `d` with type + 1 and the payload upper-cased, until `signal` aborts or the
 * connection fails (its node died). Never rejects: the test checks the answers on the client side.
 */
export async function serve(d: Dvk, signal: AbortSignal): Promise<void> {
  for (;;) {
    let req: Awaited<ReturnType<Dvk['receiveRequest']>>;
    try {
      req = await d.receiveRequest({ signal });
    } catch {
      return;
    }
    try {
      await d.reply(req.source, {
        type: req.type + 1,
        payload: enc.encode(dec.decode(req.payload).toUpperCase()),
      });
    } catch {
      // the client gave up or its node died: serve the next one
    }
  }
}

/** One sendrec from `client` to `server`, checking the echo. */
export async function roundTrip(client: Dvk, server: number, timeout = 5000): Promise<void> {
  const text = `from ${client.endpoint} to ${server}`;
  const r = await client.sendrec(server, { type: 7, payload: enc.encode(text) }, { timeout });
  assert.equal(r.source, server);
  assert.equal(r.type, 8);
  assert.equal(dec.decode(r.payload), text.toUpperCase());
}

/** Wait until every node of `on` lists every endpoint of `eps` in `dc` (bind announcements are asynchronous). */
export async function waitEndpoints(
  c: NetnsCluster,
  on: number[],
  dc: string,
  eps: number[],
  timeoutMs = 10_000,
): Promise<void> {
  let missing: string[] = [];
  await check(
    async () => {
      missing = [];
      for (const i of on) {
        const known = new Set((await c.admin(i, 'ep.list', { dc })).map((e) => e.ep));
        const lack = eps.filter((ep) => !known.has(ep));
        if (lack.length > 0) missing.push(`node ${i} lacks ${lack.join(',')}`);
      }
      return missing.length === 0;
    },
    timeoutMs,
    `endpoints ${eps.join(',')} known on nodes ${on.join(',')}`,
  ).catch((e: unknown) => {
    throw new Error(`${(e as Error).message} (${missing.join('; ')})`);
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The local replica's state-machine status on node `node` (src/sdk/smr.ts SmrStatus), through `smr.status`. */
export async function smrStatus(c: NetnsCluster, node: number, dc: string, ep: number): Promise<SmrStatus> {
  const a = await AdminClient.connect(c.node(node).socket, { timeout: 2000 });
  try {
    return (await a.service('smr.status', { dc, ep }, { timeout: 8000 })) as SmrStatus;
  } finally {
    await a.close();
  }
}

/** The nodes node `i` lists as holding a replica of `ep` (`dvs ep ls` roles), comma-separated. */
export async function replicaNodes(c: NetnsCluster, i: number, dc: string, ep: number): Promise<string> {
  return (await c.admin(i, 'ep.list', { dc }))
    .filter((e) => e.ep === ep && e.role === 'replica')
    .map((e) => e.node)
    .join(',');
}
