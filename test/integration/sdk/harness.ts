/**
 * Test harness: a LocalServer on a Unix socket in a fresh temp dir, wired to a kernel (the real one or the
 * fake), with a fake admin handler and a logger whose lines the test can inspect.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { KernelApi, KernelIO } from '../../../src/kernel/types.js';
import { DEFAULT_MAX_PAYLOAD } from '../../../src/kernel/types.js';
import type { AdminHandler } from '../../../src/node/local-server.js';
import { LocalServer } from '../../../src/node/local-server.js';
import { DvsError } from '../../../src/protocol/errors.js';

export type KernelFactory = (opts: { nodeId: number; io: KernelIO }) => KernelApi;

export interface TestNode {
  dir: string;
  socket: string;
  kernel: KernelApi;
  server: LocalServer;
  /** Parsed pino lines written so far. */
  logs: Array<{ level: number; msg: string } & Record<string, unknown>>;
  /** Admin calls seen by the fake handler. */
  adminCalls: Array<{ method: string; params: unknown }>;
  stop(): Promise<void>;
}

export const DC = {
  id: 7,
  name: 'test',
  nodes: [1],
  maxPayload: DEFAULT_MAX_PAYLOAD,
  sysEndpoints: 64,
  postWindow: 1024,
};

/** Keys registered by the fake `hold` method and not yet released by their session's close. */
export const held = new Set<string>();
/** How many `slow` calls saw their signal abort (a client timeout sends `$cancel`). */
export const slowAborted = { count: 0 };

/** The fake admin handler: `echo` returns its params, `fail` throws EPERM, `slow` waits for its signal. */
export const fakeAdmin: AdminHandler = async (method, params, ctx) => {
  const signal = ctx.signal;
  if (method === 'echo' || method === 'status') return { method, params };
  if (method === 'fail') {
    throw new DvsError('EPERM', 'not allowed', { why: 'test' });
  }
  if (method === 'boom') throw new Error('handler bug');
  // Service-channel probes: who is calling, pushed events, cleanup on session close.
  if (method === 'whoami') return ctx.caller ?? null;
  if (method === 'restricted') return ctx.restricted === true;
  if (method === 'push') {
    const { sub, n } = params as { sub: number; n: number };
    for (let i = 0; i < n; i++) ctx.push(sub, { i });
    return { pushed: n };
  }
  if (method === 'hold') {
    const { key } = params as { key: string };
    held.add(key);
    ctx.onClose(() => held.delete(key));
    return null;
  }
  if (method === 'slow') {
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    slowAborted.count++;
    return null;
  }
  throw new DvsError('ENOTSUP', `unknown method ${method}`);
};

export async function startNode(
  makeKernel: KernelFactory,
  dc = DC,
  extra: { maxUnreadBytes?: number } = {},
): Promise<TestNode> {
  const dir = await mkdtemp(join(tmpdir(), 'dvs-sdk-'));
  const socket = join(dir, 'dvk.sock');
  const logs: TestNode['logs'] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line));
      cb();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  let server: LocalServer | undefined;
  const io: KernelIO = {
    complete: (proc, callId, result) => server?.complete(proc, callId, result),
    toProc: (proc, ev) => server?.toProc(proc, ev),
    toNode: () => undefined,
    log: (level, msg, fields) => logger[level](fields ?? {}, msg),
  };
  const kernel = makeKernel({ nodeId: 1, io });
  kernel.createDc(dc);
  const adminCalls: TestNode['adminCalls'] = [];
  server = new LocalServer({
    path: socket,
    kernel,
    logger,
    ...extra,
    admin: (method, params, ctx) => {
      adminCalls.push({ method, params });
      return fakeAdmin(method, params, ctx);
    },
  });
  await server.start();
  const s = server;
  return {
    dir,
    socket,
    kernel,
    server: s,
    logs,
    adminCalls,
    stop: async () => {
      await s.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
