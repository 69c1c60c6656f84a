/**
 * The kernel is authoritative on cancellation: when a message reaches a receiver whose timeout already fired
 * (the CANCEL is in flight), the receive settles with the message, and nothing is lost.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import type { CallId, ProcId } from '../../../src/kernel/types.js';
import type { Dvk } from '../../../src/sdk/index.js';
import { connect } from '../../../src/sdk/index.js';
import { FakeKernel } from './fake-kernel.js';
import type { TestNode } from './harness.js';
import { DC, startNode } from './harness.js';
import { rejectsWith } from './ipc-suite.js';

/** Runs `beforeCancel` when a CANCEL reaches the kernel, before the kernel handles it. */
class RacyKernel extends FakeKernel {
  beforeCancel: (() => void) | undefined;
  cancels = 0;
  override cancel(now: number, proc: ProcId, callId: CallId, reason: 'ETIMEDOUT' | 'EABORTED'): void {
    this.cancels++;
    const f = this.beforeCancel;
    this.beforeCancel = undefined;
    f?.();
    super.cancel(now, proc, callId, reason);
  }
}

let node: TestNode;
let kernel: RacyKernel;
const clients: Dvk[] = [];

beforeEach(async () => {
  node = await startNode((opts) => {
    kernel = new RacyKernel(opts);
    return kernel;
  });
});
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  await node.stop();
});

async function client(endpoint: number): Promise<Dvk> {
  const c = await connect({ socket: node.socket, dc: DC.name, endpoint });
  clients.push(c);
  return c;
}

test('a message that beats the CANCEL is delivered, not lost to ETIMEDOUT', async () => {
  await client(100);
  const b = await client(101);
  kernel.beforeCancel = () => kernel.post(Date.now(), kernel.procOf(100)!, 101, 77, Uint8Array.of(1, 2, 3));
  const m = await b.receive(100, { timeout: 20 });
  assert.equal(kernel.cancels, 1);
  assert.equal(m.type, 77);
  assert.deepEqual([...m.payload], [1, 2, 3]);
});

test('an abort that beats the message settles EABORTED and the message stays queued', async () => {
  const a = await client(100);
  const b = await client(101);
  const ac = new AbortController();
  const p = assert.rejects(b.receive(100, { signal: ac.signal }), rejectsWith('EABORTED'));
  setTimeout(() => ac.abort(), 10);
  await p;
  await a.post(101, { type: 5 });
  const m = await b.receive(100, { timeout: 1000 });
  assert.equal(m.type, 5);
});

test('close() with a receive pending: a message taken before the cancel resolves the receive, nothing is lost', async () => {
  await client(100);
  const b = await client(101);
  clients.splice(clients.indexOf(b), 1);
  const pending = b.receive(100);
  await new Promise((r) => setTimeout(r, 20)); // the RECEIVE is waiting at the daemon
  // A message reaches the kernel just before the CANCEL that close() sends: the pending receive takes it.
  kernel.beforeCancel = () => kernel.post(Date.now(), kernel.procOf(100)!, 101, 9, Uint8Array.of(7));
  await b.close();
  const m = await pending;
  assert.equal(kernel.cancels, 1);
  assert.equal(m.type, 9, 'the receive resolved with the message instead of losing it');
  assert.deepEqual([...m.payload], [7]);
});

test('close() with a receive pending and nothing arriving: the receive rejects EABORTED', async () => {
  const b = await client(101);
  clients.splice(clients.indexOf(b), 1);
  const pending = assert.rejects(b.receive(100), rejectsWith('EABORTED'));
  await new Promise((r) => setTimeout(r, 20));
  await b.close();
  await pending;
});
