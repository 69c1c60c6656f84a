/**
 * One compliance suite (suite.ts) for every Transport implementation: TCP, Unix sockets and the in-memory
 * pair here, TLS in tls.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DvsError } from '../../../src/protocol/errors.js';
import { memoryPair } from '../../../src/transport/memory.js';
import { connectTcp, connectUnix, listenTcp, listenUnix, parseHostPort } from '../../../src/transport/net.js';
import type { Transport, TransportListener } from '../../../src/transport/transport.js';
import { type Fixture, transportCompliance } from './suite.js';

async function netFixture(kind: 'tcp' | 'unix'): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'dvs-transport-'));
  const listeners: TransportListener[] = [];
  const open: Transport[] = [];
  return {
    async pair(maxFrameBytes) {
      let accept!: (t: Transport) => void;
      const accepted = new Promise<Transport>((r) => {
        accept = r;
      });
      const onTransport = (t: Transport) => accept(t);
      const opts = maxFrameBytes === undefined ? { onTransport } : { onTransport, maxFrameBytes };
      const l =
        kind === 'tcp'
          ? await listenTcp({ ...opts, host: '127.0.0.1', port: 0 })
          : await listenUnix({ ...opts, path: join(dir, `s${listeners.length}.sock`) });
      listeners.push(l);
      const client =
        kind === 'tcp'
          ? await connectTcp({ ...parseHostPort(l.address), timeoutMs: 2000 })
          : await connectUnix({ path: l.address, timeoutMs: 2000 });
      const server = await accepted;
      open.push(client, server);
      return [client, server];
    },
    async teardown() {
      for (const t of open) t.close();
      await Promise.all(open.map((t) => t.closed()));
      await Promise.all(listeners.map((l) => l.close()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function memoryFixture(): Promise<Fixture> {
  const open: Transport[] = [];
  return {
    async pair(maxFrameBytes) {
      const p = memoryPair(maxFrameBytes === undefined ? {} : { maxFrameBytes });
      open.push(...p);
      return p;
    },
    async teardown() {
      for (const t of open) t.close();
      await Promise.all(open.map((t) => t.closed()));
    },
  };
}

const kinds: [string, () => Promise<Fixture>][] = [
  ['tcp', () => netFixture('tcp')],
  ['unix', () => netFixture('unix')],
  ['memory', memoryFixture],
];

for (const [name, make] of kinds) transportCompliance(name, make);

describe('dialing', () => {
  it('a refused dial rejects with ENOTCONN', async () => {
    const l = await listenTcp({ host: '127.0.0.1', port: 0, onTransport: (t) => t.close() });
    const { host, port } = parseHostPort(l.address);
    await l.close();
    await assert.rejects(
      connectTcp({ host, port, timeoutMs: 2000 }),
      (e) => e instanceof DvsError && e.code === 'ENOTCONN',
    );
  });

  it('an aborted dial rejects with EABORTED', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      connectTcp({ host: '127.0.0.1', port: 1, timeoutMs: 2000, signal: ac.signal }),
      (e) => e instanceof DvsError && e.code === 'EABORTED',
    );
  });

  it('parseHostPort accepts host:port and [v6]:port and rejects junk', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
    assert.deepEqual(parseHostPort('[::1]:9'), { host: '::1', port: 9 });
    for (const bad of ['x', ':1', 'h:99999', 'h:']) assert.throws(() => parseHostPort(bad));
  });
});
