/**
 * The local cluster as the CLI sees it: the cluster file (DIR/cluster.json), the daemons' pids, and admin
 * calls to one node or to all of them.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterFile, ClusterNode } from '../node/options.js';
import type { AdminMethod, AdminMethods } from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { AdminClient } from '../sdk/admin.js';

/**
 * The cluster file as the CLI writes it: the contract's {@link ClusterFile} plus `stoppedAt`, set by
 * `dvs down` (the file is kept so `dvs status` can still name the nodes and their logs).
 */
export type ClusterFileOnDisk = ClusterFile & { stoppedAt?: number };

export function clusterFilePath(dir: string): string {
  return join(dir, 'cluster.json');
}

/** Reads DIR/cluster.json, or undefined if there is none. EPROTO if it is not a cluster file. */
export async function readClusterFile(dir: string): Promise<ClusterFileOnDisk | undefined> {
  let text: string;
  try {
    text = await readFile(clusterFilePath(dir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw dvsError('EINVAL', `cannot read ${clusterFilePath(dir)}: ${(e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw dvsError('EPROTO', `${clusterFilePath(dir)} is not valid JSON`);
  }
  const f = parsed as Partial<ClusterFileOnDisk>;
  if (f.version !== 1 || !Array.isArray(f.nodes)) {
    throw dvsError('EPROTO', `${clusterFilePath(dir)} is not a dvs cluster file (version 1)`);
  }
  return f as ClusterFileOnDisk;
}

/** Reads the cluster file; ENOENT with a hint to run `dvs up` if there is none. */
export async function requireCluster(dir: string): Promise<ClusterFileOnDisk> {
  const f = await readClusterFile(dir);
  if (f === undefined) throw dvsError('ENOENT', `no cluster in ${dir} (start one with: dvs up --dir ${dir})`);
  return f;
}

/** Writes the cluster file atomically (write + rename), so a reader never sees half of it. */
export async function writeClusterFile(dir: string, f: ClusterFileOnDisk): Promise<void> {
  const tmp = `${clusterFilePath(dir)}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(f, null, 2)}\n`);
  await rename(tmp, clusterFilePath(dir));
}

/** True if a process with this pid exists (signal 0 probes without signalling). */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until none of `pids` is alive, or `timeoutMs` passes. Returns the pids still alive. */
export async function waitPidsGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(pidAlive);
    if (left.length === 0 || Date.now() >= end) return left;
    await sleep(50);
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Default timeout of one admin call from the CLI, ms. */
export const CALL_TIMEOUT_MS = 5000;

/**
 * One admin call to `node`: connect, call, close. A node whose socket does not answer is ENOTCONN with a
 * message naming it; errors the daemon returns keep their code.
 */
export async function callNode<M extends AdminMethod>(
  node: ClusterNode,
  method: M,
  params: AdminMethods[M]['params'],
  timeoutMs = CALL_TIMEOUT_MS,
): Promise<AdminMethods[M]['result']> {
  const client = await connectNode(node, Math.min(timeoutMs, CALL_TIMEOUT_MS));
  try {
    return await client.call(method, params, { timeout: timeoutMs });
  } catch (e) {
    const err = DvsError.from(e);
    if (err.details?.node === undefined) {
      throw new DvsError(err.code, `node ${node.id}: ${err.message}`, { ...err.details, node: node.id });
    }
    throw err;
  } finally {
    await client.close().catch(() => {});
  }
}

/** Result of asking every node: per node, the value or the error. */
export type PerNode<T> =
  | { node: ClusterNode; ok: true; value: T }
  | { node: ClusterNode; ok: false; error: DvsError };

/** Calls `method` on each of `nodes` in parallel; never throws (failures are per node). */
export async function callEach<M extends AdminMethod>(
  nodes: ClusterNode[],
  method: M,
  params: AdminMethods[M]['params'],
  timeoutMs = CALL_TIMEOUT_MS,
): Promise<PerNode<AdminMethods[M]['result']>[]> {
  return Promise.all(
    nodes.map(async (node): Promise<PerNode<AdminMethods[M]['result']>> => {
      try {
        return { node, ok: true, value: await callNode(node, method, params, timeoutMs) };
      } catch (e) {
        return { node, ok: false, error: DvsError.from(e) };
      }
    }),
  );
}

/**
 * With a cluster store any node answers for the cluster: call `method` on the first node whose socket
 * answers (in id order). Errors from a daemon that answered are final; ENOTCONN only if none answered.
 */
export async function callAny<M extends AdminMethod>(
  cluster: ClusterFile,
  method: M,
  params: AdminMethods[M]['params'],
  timeoutMs = CALL_TIMEOUT_MS,
): Promise<{ node: ClusterNode; value: AdminMethods[M]['result'] }> {
  return firstAnswering(cluster, async (node) => ({
    node,
    value: await callNode(node, method, params, timeoutMs),
  }));
}

/**
 * Connect to `node`'s admin socket. A socket that does not answer is ENOTCONN naming the node, with
 * `details.unreachable` so callers can tell it from an error of a daemon that answered.
 */
export async function connectNode(node: ClusterNode, timeoutMs = CALL_TIMEOUT_MS): Promise<AdminClient> {
  try {
    return await AdminClient.connect(node.socket, { timeout: timeoutMs });
  } catch (e) {
    throw new DvsError(
      'ENOTCONN',
      `node ${node.id} is not answering on ${node.socket}`,
      { node: node.id, unreachable: true },
      { cause: e },
    );
  }
}

/** Whether `e` is {@link connectNode}'s "not answering" (as opposed to an answer from a daemon). */
export function unreachable(e: unknown): boolean {
  return e instanceof DvsError && e.code === 'ENOTCONN' && e.details?.unreachable === true;
}

/**
 * Run `fn` on the nodes of the cluster in id order until one answers: a node whose socket does not answer
 * ({@link unreachable}) moves on to the next; any other outcome, value or error, is final. ENOTCONN if no
 * node answered.
 */
export async function firstAnswering<T>(
  cluster: ClusterFile,
  fn: (node: ClusterNode) => Promise<T>,
): Promise<T> {
  let last: DvsError | undefined;
  for (const node of cluster.nodes) {
    try {
      return await fn(node);
    } catch (e) {
      if (!unreachable(e)) throw e;
      last = e as DvsError;
    }
  }
  throw last ?? dvsError('ENOTCONN', 'no node of the cluster is answering');
}

/** The cluster node with id `id`; ENOENT naming the known ids otherwise. */
export function nodeById(cluster: ClusterFile, id: number): ClusterNode {
  const n = cluster.nodes.find((x) => x.id === id);
  if (n === undefined) {
    throw dvsError(
      'ENOENT',
      `no node ${id} in this cluster (nodes: ${cluster.nodes.map((x) => x.id).join(',')})`,
    );
  }
  return n;
}
