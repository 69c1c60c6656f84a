/**
 * Helpers of the DC isolation system tests (dc-*.test.ts): the CLI run against a NetnsCluster (a
 * cluster.json naming its sockets), the fixture programs, and what a node's isolation prefix owns.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ClusterFile } from '../../src/node/options.js';
import { REPO } from '../integration/harness.js';
import type { NetnsCluster } from './harness.js';

const run = promisify(execFile);
const CLI = join(REPO, 'bin/dvs.js');
export const SDK = join(REPO, 'dist/src/sdk/index.js');

/** `dvs --dir <dir> ...args`: exit code, stdout, stderr (never throws on a non-zero exit). */
export async function dvs(
  dir: string,
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(process.execPath, [CLI, '--dir', dir, ...args], { timeout: 60_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

/** {@link dvs} that must succeed; its stdout. */
export async function ok(dir: string, ...args: string[]): Promise<string> {
  const r = await dvs(dir, ...args);
  assert.equal(r.code, 0, `dvs ${args.join(' ')} failed: ${r.err}${r.out}`);
  return r.out;
}

/**
 * A CLI directory for cluster `c` (cluster.json with its sockets, and `store` if it has one) and the fixture
 * programs in `c.dir`: server.mjs (binds with the SDK, then echoes on TCP 9000) and client.mjs ADDRESS.
 */
export function cliDir(c: NetnsCluster): string {
  const dir = join(c.dir, 'cli');
  mkdirSync(dir, { recursive: true });
  const file: ClusterFile = {
    version: 1,
    createdAt: Date.now(),
    nodes: c.nodes.map((n) => ({
      id: n.id,
      name: `node${n.id}`,
      address: n.address,
      socket: n.socket,
      metrics: '',
      dataDir: n.dataDir,
      pid: n.proc?.pid ?? 0,
    })),
    ...(c.storeUrl !== undefined ? { store: c.storeUrl } : {}),
  };
  writeFileSync(join(dir, 'cluster.json'), JSON.stringify(file));
  writeFileSync(
    join(c.dir, 'server.mjs'),
    [
      `const { connect } = await import(${JSON.stringify(SDK)});`,
      "const net = await import('node:net'); const os = await import('node:os');",
      'const dvk = await connect();',
      'net.createServer((s) => s.once("data", (d) => s.end("echo " + d + " from " + os.hostname() + " ep " + dvk.endpoint)))',
      "  .listen(9000, '0.0.0.0', () => console.log('listening'));",
    ].join('\n'),
  );
  writeFileSync(
    join(c.dir, 'client.mjs'),
    [
      "const net = await import('node:net');",
      'const s = net.connect(9000, process.argv[2], () => s.write("hello"));',
      "s.on('data', (d) => process.stdout.write(d)); s.on('error', (e) => { console.log(e.code); process.exitCode = 3; });",
    ].join('\n'),
  );
  return dir;
}

/** Every object a node prefix owns on this machine: named netns, cgroup dirs, links in the node netns. */
export async function objectsOf(prefix: string, nodeNs: string): Promise<string[]> {
  const found: string[] = [];
  for (const ns of readdirSync('/run/netns')) if (ns.startsWith(prefix)) found.push(`netns ${ns}`);
  for (const ctl of readdirSync('/sys/fs/cgroup')) {
    const dir = join('/sys/fs/cgroup', ctl, 'dvs');
    if (!existsSync(dir)) continue;
    for (const cg of readdirSync(dir)) if (cg.startsWith(prefix)) found.push(`cgroup ${ctl}/dvs/${cg}`);
  }
  // After the run the node namespace is gone, and its links with it.
  const links = existsSync(`/run/netns/${nodeNs}`)
    ? (await run('ip', ['-n', nodeNs, '-o', 'link', 'show'])).stdout
    : '';
  for (const line of links.split('\n')) {
    const name = /^\d+:\s+([^:@]+)/.exec(line)?.[1];
    if (name?.startsWith(prefix)) found.push(`link ${name}`);
  }
  return found;
}

/** Exists and is not a zombie (an orphan may wait for a reaper a while). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
