/**
 * `dvs up` and `dvs down`: a local cluster of N daemons on loopback, each a separate OS process in its own
 * process group, described by DIR/cluster.json.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { newToken, writeTokenFile } from '../../api/auth.js';
import type { ClusterNode } from '../../node/options.js';
import { signalGroup } from '../../node/processes.js';
import type { NodeStatus } from '../../protocol/admin.js';
import { DvsError, dvsError } from '../../protocol/errors.js';
import {
  type ClusterFileOnDisk,
  callEach,
  callNode,
  pidAlive,
  readClusterFile,
  sleep,
  waitPidsGone,
  writeClusterFile,
} from '../cluster.js';
import { type Ctx, dirHint, interruptSignal } from '../context.js';
import { prepareClusterTls } from './ca.js';

export interface UpOptions {
  nodes: number;
  detach: boolean;
  basePort?: number;
  /** How long to wait for every node and link to come up, ms. */
  timeoutMs: number;
  logLevel?: string;
  /** `embedded` (node 0 hosts it, the others use `embedded:0`) or `etcd://...`; omitted: no store. */
  store?: string;
  /** Mutual TLS on node links: a cluster CA in DIR/ca (made if missing) and a certificate per node. */
  tls?: boolean;
  /** HTTPS API of every node (`auto`: with `tls`, the default; `on` needs `tls`; `off`: plain HTTP). */
  apiTls?: 'auto' | 'on' | 'off';
}

export interface DownOptions {
  /** How long to wait for daemons to exit after node.shutdown before SIGKILL, ms. */
  timeoutMs: number;
}

const LOOPBACK = '127.0.0.1';

/**
 * True if `node.pid` is alive and (where /proc can tell) really is this node's daemon, so a stale cluster
 * file never makes us signal an unrelated process that reused the pid.
 */
export async function daemonAlive(node: ClusterNode): Promise<boolean> {
  if (!pidAlive(node.pid)) return false;
  try {
    const cmdline = await readFile(`/proc/${node.pid}/cmdline`, 'utf8');
    return cmdline.split('\0').includes(node.socket);
  } catch {
    // No /proc (or the process just went away): trust the pid.
    return pidAlive(node.pid);
  }
}

/** Free loopback TCP ports: `count` ports from `base` (each checked) or chosen by the kernel. */
export async function pickPorts(count: number, base?: number): Promise<number[]> {
  if (base !== undefined && base + count - 1 > 65535) {
    throw dvsError('EINVAL', `--base-port ${base} leaves no room for ${count} ports below 65536`);
  }
  const servers = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const srv = createServer();
      servers.push(srv);
      const want = base === undefined ? 0 : base + i;
      await new Promise<void>((resolve, reject) => {
        srv.once('error', (e: NodeJS.ErrnoException) =>
          reject(
            e.code === 'EADDRINUSE'
              ? dvsError('EEXIST', `port ${want} on ${LOOPBACK} is in use (choose another --base-port)`)
              : DvsError.from(e),
          ),
        );
        srv.listen(want, LOOPBACK, resolve);
      });
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') throw dvsError('EINTERNAL', 'no port from listen()');
      ports.push(addr.port);
    }
    return ports;
  } finally {
    // Kept open until all are chosen, so the kernel cannot hand out the same port twice.
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** Last non-empty line of a file (a daemon's stderr), for error messages. */
async function lastLine(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  // A daemon that failed prints our own error line; do not nest the prefix.
  return (lines.at(-1) ?? '').replace(/^dvs: error: /, '').slice(0, 300);
}

/** `--store` of node `id` for `dvs up --store S`: with `embedded`, node 0 hosts it and the others use it. */
export function storeArgs(store: string | undefined, id: number): string[] {
  if (store === undefined) return [];
  if (store === 'embedded') return ['--store', id === 0 ? 'embedded' : 'embedded:0'];
  return ['--store', store];
}

/** `dvs up`. Returns the exit code. */
export async function up(ctx: Ctx, opts: UpOptions): Promise<number> {
  const dir = ctx.dir();
  const { out } = ctx;
  await mkdir(dir, { recursive: true });
  const existing = await readClusterFile(dir);
  if (existing) {
    const alive = [];
    for (const n of existing.nodes) if (await daemonAlive(n)) alive.push(n.id);
    if (alive.length > 0) {
      throw dvsError(
        'EEXIST',
        `a cluster is already running in ${dir} (nodes ${alive.join(',')}); stop it with: dvs down${dirHint(ctx)}`,
      );
    }
  }

  if (opts.apiTls === 'on' && !opts.tls) {
    throw dvsError('EINVAL', "--api-tls on needs --tls (the API serves the nodes' certificates)");
  }
  const n = opts.nodes;
  // Links P.., metrics P+N.., REST API P+2N.. (every node serves the API and the dashboard).
  const ports = await pickPorts(3 * n, opts.basePort);
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < n; i++) {
    const dataDir = join(dir, `node${i}`);
    nodes.push({
      id: i,
      name: `node${i}`,
      address: `${LOOPBACK}:${ports[i]}`,
      socket: join(dataDir, 'dvk.sock'),
      metrics: `${LOOPBACK}:${ports[n + i]}`,
      dataDir,
      pid: 0,
      api: `${LOOPBACK}:${ports[2 * n + i]}`,
    });
  }
  const cluster: ClusterFileOnDisk = {
    version: 1,
    createdAt: Date.now(),
    nodes,
    ...(opts.store !== undefined ? { store: opts.store } : {}),
  };
  const peers = nodes.map((x) => `${x.id}=${x.address}`).join(',');
  // A fresh API token per cluster, readable by the owner only; printed once below.
  const token = newToken();
  const tokenFile = apiTokenPath(dir);
  await writeTokenFile(tokenFile, token);
  const tlsDirs = opts.tls
    ? await prepareClusterTls(
        ctx,
        dir,
        nodes.map((x) => x.id),
      )
    : undefined;
  // An HTTPS API is recorded with the CA its clients verify it against (dvs api --json gives it to scripts).
  if (tlsDirs && opts.apiTls !== 'off') {
    for (const x of nodes) x.apiCa = join(tlsDirs.get(x.id)!, 'ca.crt');
  }
  // Flags meant for this process (a test runner, an inspector) must not leak into the daemons.
  const execArgv = process.execArgv.filter((a) => !/^--(test|inspect|watch)/.test(a));

  const interrupt = opts.detach ? undefined : interruptSignal();
  try {
    for (const node of nodes) {
      await mkdir(node.dataDir, { recursive: true });
      await rm(node.socket, { force: true });
      const stderrPath = join(node.dataDir, 'stderr.log');
      const fh = await open(stderrPath, 'a');
      try {
        const args = [
          ...execArgv,
          ctx.mainPath,
          'node',
          'start',
          '--node-id',
          String(node.id),
          '--name',
          node.name,
          '--listen',
          node.address,
          '--socket',
          node.socket,
          '--data',
          node.dataDir,
          '--metrics',
          node.metrics,
          '--log-file',
          join(node.dataDir, 'daemon.log'),
          ...(opts.logLevel ? ['--log-level', opts.logLevel] : []),
          ...(n > 1 ? ['--peers', peers] : []),
          ...storeArgs(opts.store, node.id),
          ...(tlsDirs ? ['--tls-dir', tlsDirs.get(node.id)!] : []),
          '--api',
          node.api!,
          '--api-token-file',
          tokenFile,
          ...(opts.apiTls !== undefined ? ['--api-tls', opts.apiTls] : []),
        ];
        const child = spawn(process.execPath, args, {
          detached: true,
          stdio: ['ignore', fh.fd, fh.fd],
          cwd: ctx.out.io.cwd,
          env: process.env,
        });
        await new Promise<void>((resolve, reject) => {
          child.once('spawn', resolve);
          child.once('error', (e) => reject(DvsError.from(e)));
        });
        child.unref();
        node.pid = child.pid ?? 0;
      } finally {
        await fh.close();
      }
      await writeFile(join(node.dataDir, 'daemon.pid'), `${node.pid}\n`);
    }
    await writeClusterFile(dir, cluster);
    await waitUntilUp(cluster, opts.timeoutMs, interrupt?.signal);
  } catch (e) {
    await teardown(cluster, dir, 2000);
    throw e;
  }

  printBanner(ctx, cluster, token);
  if (opts.detach || interrupt === undefined) return 0;
  try {
    out.note(out.colors.dim('Running in the foreground; press Ctrl-C to stop the cluster.'));
    // Also leave if every daemon died (someone ran `dvs down` from another terminal).
    while (!interrupt.signal.aborted && nodes.some((x) => pidAlive(x.pid)))
      await sleep(500, interrupt.signal);
  } finally {
    interrupt.dispose();
  }
  await down(ctx, { timeoutMs: 5000 });
  return 0;
}

/** Polls every node until it answers `status` with all its links up. */
async function waitUntilUp(
  cluster: ClusterFileOnDisk,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  const want = cluster.nodes.length - 1;
  let last = new Map<number, string>();
  for (;;) {
    if (signal?.aborted) throw dvsError('EABORTED', 'interrupted while the cluster was starting');
    for (const node of cluster.nodes) {
      if (!pidAlive(node.pid)) {
        const why = await lastLine(join(node.dataDir, 'stderr.log'));
        throw dvsError(
          'ENOTCONN',
          `node ${node.id} exited during start${why ? `: ${why}` : ''} (see ${join(node.dataDir, 'stderr.log')})`,
          { node: node.id },
        );
      }
    }
    const answers = await callEach(cluster.nodes, 'status', {}, 1000);
    last = new Map();
    for (const a of answers) {
      if (!a.ok) {
        last.set(a.node.id, 'not answering on its socket');
        continue;
      }
      const up = a.value.links.filter((l) => l.state === 'up').length;
      if (up < want) last.set(a.node.id, `${up} of ${want} links up`);
      else if (cluster.store !== undefined) {
        // With a store the node is ready once it registered and sees every node registered.
        const members = a.value.cluster?.members.filter((m) => m.state === 'up').length ?? 0;
        if (members < cluster.nodes.length)
          last.set(a.node.id, `${members} of ${cluster.nodes.length} nodes registered in the cluster store`);
      }
    }
    if (last.size === 0) return;
    if (Date.now() >= end) {
      const [id, why] = [...last.entries()][0]!;
      const node = cluster.nodes.find((x) => x.id === id)!;
      throw dvsError(
        'ETIMEDOUT',
        `node ${id} did not come up within ${timeoutMs} ms (${why}); see ${join(node.dataDir, 'daemon.log')}`,
        { node: id },
      );
    }
    await sleep(100, signal);
  }
}

/** DIR/api-token: the REST API bearer token of the local cluster (mode 0600). */
export function apiTokenPath(dir: string): string {
  return join(dir, 'api-token');
}

function printBanner(ctx: Ctx, cluster: ClusterFileOnDisk, token: string): void {
  const { out } = ctx;
  const c = out.colors;
  const d = dirHint(ctx);
  out.line(`${c.green('dvs cluster up')}: ${cluster.nodes.length} node(s) in ${ctx.dir()}`);
  out.table(
    ['NODE', 'NAME', 'LINKS', 'METRICS', 'PID', 'SOCKET'],
    cluster.nodes.map((x) => [x.id, x.name, x.address, `http://${x.metrics}/metrics`, x.pid, x.socket]),
  );
  const api = cluster.nodes[0]?.api;
  if (api !== undefined) {
    out.line('');
    const scheme = cluster.nodes[0]?.apiCa !== undefined ? 'https' : 'http';
    out.line(
      `REST API and dashboard on every node, e.g. ${scheme}://${api}/ (dvs dashboard${d} prints a link; dvs api${d} a curl line)`,
    );
    out.line(`API token (shown once; kept in ${apiTokenPath(ctx.dir())}, mode 0600): ${token}`);
  }
  out.line('');
  out.line(c.bold('Try next:'));
  const kvTip: [string, string][] =
    cluster.store === undefined
      ? []
      : [[`dvs kv put${d} greeting hello --dc demo`, "the DC's key/value space (also: dvs lock ls)"]];
  const tips: [string, string][] = [
    [`dvs dc create demo${d}`, 'a distributed container on every node'],
    [`dvs run${d} --dc demo --ep 100 --name echo -- node my-server.js`, 'a process bound to endpoint 100'],
    [`dvs ep ls${d} --dc demo`, 'the endpoint table'],
    ...kvTip,
    [`dvs status${d}`, 'nodes and links'],
    [`dvs down${d}`, 'stop everything'],
  ];
  for (const [cmd, what] of tips) out.line(`  ${cmd}\n      ${c.dim(what)}`);
}

/** Stops what `up` started, as far as it got; used when start-up fails. */
async function teardown(cluster: ClusterFileOnDisk, dir: string, timeoutMs: number): Promise<void> {
  const pids = cluster.nodes.map((x) => x.pid).filter((p) => p > 0);
  for (const pid of pids) signalGroup(pid, 'SIGTERM');
  const left = await waitPidsGone(pids, timeoutMs);
  for (const pid of left) signalGroup(pid, 'SIGKILL');
  await waitPidsGone(left, 2000);
  for (const x of cluster.nodes) {
    await rm(x.socket, { force: true });
    await rm(join(x.dataDir, 'daemon.pid'), { force: true });
  }
  if (existsSync(dir)) await writeClusterFile(dir, { ...cluster, stoppedAt: Date.now() }).catch(() => {});
}

/** `dvs down`. Idempotent: a stopped or missing cluster is reported, not an error. */
export async function down(ctx: Ctx, opts: DownOptions): Promise<number> {
  const dir = ctx.dir();
  const { out } = ctx;
  const cluster = await readClusterFile(dir);
  if (cluster === undefined) {
    out.line(`no cluster in ${dir}; nothing to stop`);
    return 0;
  }
  const alive: ClusterNode[] = [];
  for (const x of cluster.nodes) if (await daemonAlive(x)) alive.push(x);
  if (alive.length === 0) {
    for (const x of cluster.nodes) await rm(x.socket, { force: true });
    if (cluster.stoppedAt === undefined) await writeClusterFile(dir, { ...cluster, stoppedAt: Date.now() });
    out.line(`the cluster in ${dir} is not running; nothing to stop`);
    return 0;
  }

  // Processes started by `dvs run` live in their own process groups: remember them, in case a daemon
  // has to be SIGKILLed before it could stop them.
  const procPids = (await callEach(alive, 'proc.list', {}, 2000)).flatMap((r) =>
    r.ok ? r.value.filter((p) => p.exit === null).map((p) => p.pid) : [],
  );
  await callEach(alive, 'node.shutdown', {}, 3000);
  const stubborn = await waitPidsGone(
    alive.map((x) => x.pid),
    opts.timeoutMs,
  );
  for (const pid of stubborn) {
    out.note(`daemon pid ${pid} did not stop within ${opts.timeoutMs} ms; sending SIGKILL`);
    signalGroup(pid, 'SIGKILL');
  }
  await waitPidsGone(stubborn, 2000);
  for (const pid of procPids) if (pidAlive(pid)) signalGroup(pid, 'SIGKILL');

  for (const x of cluster.nodes) {
    await rm(x.socket, { force: true });
    await rm(join(x.dataDir, 'daemon.pid'), { force: true });
  }
  await writeClusterFile(dir, { ...cluster, stoppedAt: Date.now() });
  out.line(`stopped ${alive.length} node(s) in ${dir} (logs kept in ${join(dir, 'node*')})`);
  return 0;
}

/** Ping helper used by `status`: a node's status or undefined if its socket does not answer. */
export async function tryStatus(node: ClusterNode, timeoutMs: number): Promise<NodeStatus | undefined> {
  try {
    return await callNode(node, 'status', {}, timeoutMs);
  } catch {
    return undefined;
  }
}
