/**
 * IpcStats and monitorSnapshot (src/node/metrics.ts): what `dvs top` and the dvs_endpoint_* metrics read.
 * A stub kernel stands in for the real one: the wrapper must pass every call through unchanged and count
 * bytes and latencies per endpoint; the snapshot joins kernel rows, IPC stats and process usage.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import type { Call, EndpointInfo, KernelApi, Received } from '../../../src/kernel/types.js';
import { IpcStats, monitorSnapshot, registerIpcMetrics } from '../../../src/node/metrics.js';

function stubKernel(log: string[]): KernelApi {
  const row: EndpointInfo = {
    dc: 1,
    ep: 100,
    name: 'srv',
    node: 0,
    pid: 42,
    kind: 'self',
    flags: [],
    sendTo: null,
    getFrom: null,
    queued: 3,
    pendingNotify: 0,
    counters: { lclSent: 5, rmtSent: 2, received: 4, notifies: 0, copyBytes: 0 },
  };
  const remote: EndpointInfo = { ...row, ep: 200, node: 1, kind: 'remote', pid: -1 };
  const received: Received = { source: 200, type: 1, payload: new Uint8Array(7), kind: 'post' };
  return {
    call: (_n: number, proc: number, callId: number, c: Call) => log.push(`call ${proc} ${callId} ${c.op}`),
    post: (_n: number, proc: number, dst: number) => log.push(`post ${proc} ${dst}`),
    receiveAhead: () => [received, received],
    detach: (_n: number, proc: number) => log.push(`detach ${proc}`),
    procEndpoint: (proc: number) => (proc === 1 ? { dc: 1, ep: 100 } : undefined),
    listDcs: () => [
      { id: 1, name: 'demo', nodes: [0, 1], maxPayload: 4096, sysEndpoints: 64, postWindow: 64 },
    ],
    endpoints: () => [row, remote],
  } as unknown as KernelApi;
}

describe('IpcStats', () => {
  it('passes calls through and counts bytes, errors and latencies per endpoint', () => {
    const log: string[] = [];
    const k = stubKernel(log);
    const stats = new IpcStats(k);
    const w = stats.wrap(k);
    w.call(0, 1, 7, { op: 'sendrec', dst: 200, type: 1, payload: new Uint8Array(10) });
    w.call(0, 1, 8, { op: 'send', dst: 200, type: 1, payload: new Uint8Array(5) });
    w.post(0, 1, 200, 1, new Uint8Array(3));
    assert.equal(w.receiveAhead(0, 1, 200, 10).length, 2);
    // A session that is not attached is passed through and not counted.
    w.call(0, 9, 1, { op: 'send', dst: 200, type: 1, payload: new Uint8Array(99) });
    const reply: Received = { source: 200, type: 1, payload: new Uint8Array(20), kind: 'send' };
    stats.complete(1, 7, { ok: true, msg: reply });
    stats.complete(1, 8, { ok: false, code: 'EDSTDIED' });
    assert.deepEqual(log, ['call 1 7 sendrec', 'call 1 8 send', 'post 1 200', 'call 9 1 send']);
    const [s] = stats.list();
    assert.ok(s);
    assert.equal(s.bytesSent, 18);
    assert.equal(s.bytesReceived, 14 + 20);
    assert.equal(s.errors, 1);
    assert.equal(s.latency.sendrec.count, 1);
    assert.equal(s.latency.send.count, 1);
    assert.ok(s.latency.sendrec.totalMs >= 0 && s.latency.sendrec.maxMs === s.latency.sendrec.totalMs);
    w.detach(0, 1);
    assert.deepEqual(stats.list(), []);
  });

  it('joins kernel rows, stats and process usage in a snapshot, local endpoints only', () => {
    const k = stubKernel([]);
    const stats = new IpcStats(k);
    stats.wrap(k).call(0, 1, 1, { op: 'send', dst: 200, type: 1, payload: new Uint8Array(4) });
    const snap = monitorSnapshot({
      nodeId: 0,
      kernel: k,
      ipc: stats,
      procs: [{ dc: 1, ep: 100, cpu: 0.25, rssBytes: 1000 }],
    });
    assert.equal(snap.endpoints.length, 1);
    const e = snap.endpoints[0]!;
    assert.deepEqual(
      {
        ep: e.ep,
        dcName: e.dcName,
        sent: e.sent,
        received: e.received,
        queued: e.queued,
        bytesSent: e.bytesSent,
      },
      { ep: 100, dcName: 'demo', sent: 7, received: 4, queued: 3, bytesSent: 4 },
    );
    assert.equal(e.cpu, 0.25);
    assert.equal(e.latency.send?.count, 0);
  });

  it('exposes dvs_endpoint_* metrics', async () => {
    const k = stubKernel([]);
    const stats = new IpcStats(k);
    stats.wrap(k).post(0, 1, 200, 1, new Uint8Array(11));
    const registry = new Registry();
    registerIpcMetrics(registry, { endpoints: () => k.endpoints(1).filter((e) => e.node === 0), ipc: stats });
    const text = await registry.metrics();
    assert.match(text, /dvs_endpoint_queue_depth\{dc="1",ep="100"\} 3/);
    assert.match(text, /dvs_endpoint_bytes_total\{dc="1",ep="100",direction="sent"\} 11/);
    assert.match(text, /dvs_endpoint_messages_total\{dc="1",ep="100",direction="sent"\} 7/);
    assert.match(text, /dvs_dc_queue_depth\{dc="1"\} 3/);
  });
});
