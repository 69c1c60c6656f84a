/**
 * The isolation facade end to end, as root: two "nodes" (network namespaces joined by a bridge in a third
 * one, like test/system/harness.ts but without daemons), each with an {@link Isolation}. DC 1 (alpha) has
 * a container on both nodes and a VXLAN LAN 172.31.77.0/24 with a 20 Mbit/s cap on node 1; DC 2 (beta)
 * and DC 3 (gamma, memory-limited) live on node 0 only.
 *
 * Checks: container basics (hostname, own /proc, only lo+eth0, the DVK socket dir bind-mounted), a TCP
 * stream across nodes over the DC LAN, DCs cannot see each other's processes nor reach each other's LAN
 * or the underlay, the bandwidth cap holds within 10% both ways, an OOM kill is reported as such, pause
 * and resume, bad input refused before anything is created, adopt/sweep by a restarted daemon, and at the
 * end nothing is left (namespaces, links, cgroups, processes).
 *
 * Every name carries this run's id; teardown runs even after a failure.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { detectCgroups } from '../../src/isolation/cgroup.js';
import {
  containerMac,
  type DcSpec,
  Isolation,
  type IsolationOptions,
  nextFreeAddress,
} from '../../src/isolation/index.js';

const RUN = randomBytes(2).toString('hex');
const PREFIXES = [`q${RUN.slice(0, 3)}a`, `q${RUN.slice(0, 3)}b`];
const CG_PARENT = `dvs-t${RUN}`;
const LAN_NS = `dvs-${RUN}-lan`;
const NODE_NS = [`dvs-${RUN}-n0`, `dvs-${RUN}-n1`];
const NET3 = Number.parseInt(RUN.slice(0, 2), 16);
const UNDERLAY = [`10.201.${NET3}.11`, `10.201.${NET3}.12`];
const LAN = '172.31.77.0/24';
const NODE = process.execPath;
const ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
const CAP_BPS = 20_000_000;

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root (namespaces, cgroups, VXLAN)';
  for (const t of ['ip', 'tc', 'bridge', 'unshare', 'nsenter', 'setsid', 'ps']) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      return `missing ${t} (Debian iproute2 / util-linux / procps)`;
    }
  }
  if (detectCgroups().kind === 'none') return 'no usable cgroup hierarchy';
  return undefined;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();
}

/** Sends data to host:port; mode `bytes N` (deterministic content) or `time MS` (as fast as allowed). */
const CLIENT = `
const net = require('node:net'), crypto = require('node:crypto');
const [host, port, mode, arg] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
const sha = crypto.createHash('sha256');
let reply = '';
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(0); });
s.on('data', (d) => { reply += d; });
s.on('end', () => { console.log(JSON.stringify({ sent: sha.digest('hex'), reply: JSON.parse(reply) })); });
s.on('connect', async () => {
  const chunk = Buffer.alloc(64 * 1024);
  const t0 = Date.now();
  for (let i = 0; ; i++) {
    if (mode === 'bytes' && i * chunk.length >= Number(arg)) break;
    if (mode === 'time' && Date.now() - t0 >= Number(arg)) break;
    chunk.fill(i & 255);
    sha.update(chunk);
    if (!s.write(Buffer.from(chunk))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
});`;

/** Receives one stream per connection, answers with its size, hash and receive duration. */
const SERVER = `
const net = require('node:net'), crypto = require('node:crypto');
const [host, port] = process.argv.slice(1);
net.createServer((c) => {
  const sha = crypto.createHash('sha256');
  let n = 0, t0 = 0, t1 = 0;
  c.on('data', (d) => { const now = performance.now(); if (!t0) t0 = now; t1 = now; n += d.length; sha.update(d); });
  c.on('end', () => c.end(JSON.stringify({ n, sha: sha.digest('hex'), ms: t1 - t0 })));
}).listen(Number(port), host, () => console.log('listening'));`;

/**
 * Last resort when the run is interrupted before `after` (the runner killing the file): everything of this
 * run, found by name, its processes killed by pid. Synchronous, so it can run from process 'exit'.
 */
function teardownSync(): void {
  const quiet = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).toString();
    } catch {
      return '';
    }
  };
  const ours = quiet('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => PREFIXES.some((p) => n.startsWith(p)) || n.startsWith(`dvs-${RUN}-`));
  for (const ns of ours) {
    for (const pid of quiet('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // Gone.
      }
    }
    quiet('ip', ['netns', 'del', ns]);
  }
  for (const m of new Set(Object.values(detectCgroups().v1))) {
    const parent = `${m}/${CG_PARENT}`;
    let dirs: string[] = [];
    try {
      dirs = readdirSync(parent, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      continue;
    }
    for (const d of dirs) {
      for (const pid of quiet('cat', [`${parent}/${d}/cgroup.procs`])
        .split(/\s+/)
        .filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // Gone.
        }
      }
      quiet('rmdir', [`${parent}/${d}`]);
    }
    quiet('rmdir', [parent]);
  }
}

describe('isolation: containers, limits, DC LAN', { skip: skipReason() }, () => {
  const cleanups: (() => void | Promise<void>)[] = [];
  const tmp = [0, 1].map((i) => mkdtempSync(join(tmpdir(), `dvs-iso-${RUN}-${i}-`)));
  const isos: Isolation[] = [];
  const logger = pino({ level: 'warn' });
  const opts = (i: number): IsolationOptions => ({
    nodeId: i + 1,
    nodeName: `n${i}`,
    prefix: PREFIXES[i] as string,
    logger,
    registry: new Registry(),
    cgroupParent: CG_PARENT,
    socketDir: tmp[i] as string,
    lan: { dev: 'eth0', localIp: UNDERLAY[i] as string },
    nodeNetns: NODE_NS[i] as string,
  });
  const alpha = (i: number): DcSpec => ({
    dc: 1,
    name: 'alpha',
    limits: { memoryBytes: 512 * 1024 ** 2, pids: 256, ...(i === 1 ? { netBps: CAP_BPS } : {}) },
    lan: {
      prefix: LAN,
      address: i === 0 ? nextFreeAddress(LAN, []) : nextFreeAddress(LAN, ['172.31.77.1']),
      peers: {
        nodes: [UNDERLAY[1 - i] as string],
        macs: [{ mac: containerMac(1, 2 - i), node: UNDERLAY[1 - i] as string }],
      },
    },
  });
  const beta: DcSpec = {
    dc: 2,
    name: 'beta',
    lan: { prefix: '172.31.78.0/24', address: '172.31.78.1', peers: { nodes: [], macs: [] } },
  };
  const gamma: DcSpec = { dc: 3, name: 'gamma', limits: { memoryBytes: 96 * 1024 ** 2, pids: 64 } };

  before(async () => {
    process.once('exit', teardownSync);
    // A signal would skip 'exit' (and so the teardown) unless it exits explicitly.
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => process.exit(130));
    ip('netns', 'add', LAN_NS);
    cleanups.push(() => void ip('netns', 'del', LAN_NS));
    ip('-n', LAN_NS, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', LAN_NS, 'link', 'set', 'br0', 'up');
    for (const i of [0, 1]) {
      const ns = NODE_NS[i] as string;
      ip('netns', 'add', ns);
      cleanups.push(() => void ip('netns', 'del', ns));
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', LAN_NS);
      ip('-n', LAN_NS, 'link', 'set', `p${i}`, 'master', 'br0', 'up');
      ip('-n', ns, 'addr', 'add', `${UNDERLAY[i]}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
    }
    for (const i of [0, 1]) {
      const iso = new Isolation(opts(i));
      await iso.start();
      isos.push(iso);
    }
  });

  after(async () => {
    for (const iso of isos) {
      for (const dc of iso.dcIds()) await iso.removeDc(dc).catch(() => {});
      await iso.sweep().catch(() => {});
    }
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch {
        // Keep tearing down.
      }
    }
    for (const d of tmp) rmSync(d, { recursive: true, force: true });
    for (const m of new Set(Object.values(detectCgroups().v1))) {
      try {
        rmdirSync(`${m}/${CG_PARENT}`);
      } catch {
        // Never created there, or already gone.
      }
    }
  });

  const a = () => isos[0] as Isolation;
  const b = () => isos[1] as Isolation;

  it('says which mode and cgroup driver it uses', () => {
    const info = a().describe();
    assert.equal(info.mode, 'container');
    assert.equal(info.cgroup, detectCgroups().kind);
    assert.equal(info.lan, true);
    assert.match(info.cgroupDetail ?? '', new RegExp(`cgroup ${info.cgroup}`));
  });

  it('refuses bad input before creating anything', async () => {
    const before = await a().list();
    await assert.rejects(a().ensureDc({ dc: 9, name: 'bad', limits: { cpus: 64 } }), {
      code: 'EINVAL',
      message: /more than the node's/,
    });
    await assert.rejects(
      a().ensureDc({
        dc: 9,
        name: 'bad',
        lan: { prefix: `10.201.${NET3}.0/25`, address: `10.201.${NET3}.5` },
      }),
      { code: 'EINVAL', message: /overlaps the host network/ },
    );
    await assert.rejects(a().ensureDc({ dc: 9, name: 'bad', lan: { prefix: LAN, address: '172.31.78.1' } }), {
      code: 'EINVAL',
      message: /not a host address/,
    });
    assert.deepEqual(await a().list(), before);
  });

  it('creates containers; each has its hostname, its own /proc, only lo and eth0', async () => {
    await a().ensureDc(alpha(0));
    await b().ensureDc(alpha(1));
    await a().ensureDc(beta);
    await assert.rejects(
      a().ensureDc({
        ...beta,
        dc: 4,
        name: 'clash',
        lan: { prefix: '172.31.78.0/25', address: '172.31.78.9' },
      }),
      {
        code: 'EINVAL',
        message: /overlaps 172.31.78.0\/24 of DC beta/,
      },
    );
    const r = await a().exec(
      1,
      ['sh', '-c', 'hostname; echo $$; ip -br link | cut -d" " -f1 | cut -d@ -f1 | sort | tr "\\n" " "'],
      { env: ENV },
    );
    assert.equal(r.code, 0, r.stderr);
    const [host, pid, links] = r.stdout.split('\n');
    assert.equal(host, 'alpha-n0');
    assert.ok(Number(pid) < 100, `pid ${pid} is not a pid of a fresh namespace`);
    assert.equal(links?.trim(), 'eth0 lo');
  });

  it('hides other DCs and the host from a container', async () => {
    const sleeper = await a().spawn(2, { cmd: ['sleep', '4321'], env: ENV });
    const mine = await a().exec(2, ['ps', '-eo', 'args'], { env: ENV });
    assert.match(mine.stdout, /sleep 4321/, 'positive control: DC 2 sees its own process');
    const other = await a().exec(1, ['ps', '-eo', 'args'], { env: ENV });
    assert.equal(other.code, 0, other.stderr);
    assert.doesNotMatch(other.stdout, /sleep 4321/);
    assert.doesNotMatch(other.stdout, /node --import|--test/, 'host processes visible');
    assert.ok(sleeper.kill('SIGKILL'));
    assert.equal((await sleeper.exited).signal, 'SIGKILL');
  });

  it('bind-mounts the node socket directory at /run/dvs', async () => {
    const got = new Promise<string>((resolve) => {
      const srv: Server = createServer((c) => {
        c.on('data', (d) => resolve(d.toString()));
      });
      srv.listen(join(tmp[0] as string, 'dvk.sock'));
      cleanups.push(() => void srv.close());
    });
    const r = await a().exec(
      1,
      [
        NODE,
        '-e',
        "const s=require('net').connect('/run/dvs/dvk.sock',()=>s.end('hello from '+require('os').hostname()))",
      ],
      { env: ENV },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await got, 'hello from alpha-n0');
  });

  it('carries a TCP stream between containers of one DC on two nodes', async () => {
    const server = await b().spawn(1, {
      cmd: [NODE, '-e', SERVER, '172.31.77.2', '7001'],
      env: ENV,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve) =>
      server.child.stdout?.on('data', (d: Buffer) => d.includes('listening') && resolve()),
    );
    const r = await a().exec(1, [NODE, '-e', CLIENT, '172.31.77.2', '7001', 'bytes', String(1024 * 1024)], {
      env: ENV,
      timeoutMs: 20_000,
    });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { sent: string; reply: { n: number; sha: string } };
    assert.equal(out.reply.n, 1024 * 1024);
    assert.equal(out.reply.sha, out.sent);
  });

  it('reconciles the static forwarding entries to exactly the peers given', async () => {
    const fdb = () =>
      (
        JSON.parse(
          execFileSync('bridge', [
            '-n',
            NODE_NS[0] as string,
            '-j',
            'fdb',
            'show',
            'dev',
            `${PREFIXES[0]}x1`,
          ]).toString(),
        ) as {
          mac: string;
          dst?: string;
        }[]
      )
        .filter((e) => e.dst !== undefined)
        .map((e) => `${e.mac} ${e.dst}`)
        .sort();
    const want = [`00:00:00:00:00:00 ${UNDERLAY[1]}`, `${containerMac(1, 2)} ${UNDERLAY[1]}`];
    assert.deepEqual(fdb(), want);
    await a().setLanPeers(1, {
      nodes: [UNDERLAY[1] as string, '10.201.0.99'],
      macs: [{ mac: '02:00:00:01:00:09', node: '10.201.0.99' }],
    });
    assert.deepEqual(
      fdb(),
      [
        `00:00:00:00:00:00 ${UNDERLAY[1]}`,
        '00:00:00:00:00:00 10.201.0.99',
        '02:00:00:01:00:09 10.201.0.99',
      ].sort(),
    );
    await a().setLanPeers(1, alpha(0).lan?.peers ?? { nodes: [], macs: [] });
    assert.deepEqual(fdb(), want);
  });

  it('keeps other DCs and the underlay unreachable from inside', async () => {
    const probe = (dc: number, host: string, port: string) =>
      a().exec(dc, [NODE, '-e', CLIENT, host, port, 'bytes', '1'], { env: ENV, timeoutMs: 10_000 });
    const fromBeta = JSON.parse((await probe(2, '172.31.77.2', '7001')).stdout) as { error?: string };
    assert.equal(fromBeta.error, 'ENETUNREACH');
    const toUnderlay = JSON.parse((await probe(1, UNDERLAY[1] as string, '22')).stdout) as { error?: string };
    assert.equal(toUnderlay.error, 'ENETUNREACH');
    const sameDc = JSON.parse((await probe(1, '172.31.77.2', '7001')).stdout) as { reply?: { n: number } };
    assert.equal(sameDc.reply?.n, 64 * 1024, 'positive control: DC 1 still reaches its peer');
  });

  it('holds the bandwidth cap within 10% into and out of the container', async (t) => {
    // Into node 1's container (tbf on its veth): node 0 sends to the server there.
    const into = await a().exec(1, [NODE, '-e', CLIENT, '172.31.77.2', '7001', 'time', '2500'], {
      env: ENV,
      timeoutMs: 20_000,
    });
    const rin = (JSON.parse(into.stdout) as { reply: { n: number; ms: number } }).reply;
    const inBps = (rin.n * 8) / (rin.ms / 1000);
    // Out of it (IFB on its veth's ingress): node 1 sends to a server on node 0.
    const server = await a().spawn(1, {
      cmd: [NODE, '-e', SERVER, '172.31.77.1', '7002'],
      env: ENV,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve) =>
      server.child.stdout?.on('data', (d: Buffer) => d.includes('listening') && resolve()),
    );
    const out = await b().exec(1, [NODE, '-e', CLIENT, '172.31.77.1', '7002', 'time', '2500'], {
      env: ENV,
      timeoutMs: 20_000,
    });
    const rout = (JSON.parse(out.stdout) as { reply: { n: number; ms: number } }).reply;
    const outBps = (rout.n * 8) / (rout.ms / 1000);
    t.diagnostic(
      `into ${(inBps / 1e6).toFixed(2)} Mbit/s, out of ${(outBps / 1e6).toFixed(2)} Mbit/s, cap 20`,
    );
    for (const [what, bps] of [
      ['into', inBps],
      ['out of', outBps],
    ] as const) {
      assert.ok(
        Math.abs(bps / CAP_BPS - 1) <= 0.1,
        `${what} the container: ${(bps / 1e6).toFixed(1)} Mbit/s, cap 20`,
      );
    }
    server.kill('SIGKILL');
  });

  it('reports an OOM kill as such, and other deaths as what they are', async () => {
    await a().ensureDc(gamma);
    const hog = await a().spawn(3, {
      cmd: [NODE, '-e', 'const a = []; for (;;) a.push(Buffer.alloc(8e6, 1));'],
      env: ENV,
    });
    assert.deepEqual(await hog.exited, { code: null, signal: 'SIGKILL', oomKilled: true });
    assert.ok(((await a().stats(3)).cgroup?.memory?.oomKills ?? 0) >= 1);
    const plain = await a().spawn(3, { cmd: ['sh', '-c', 'exit 3'], env: ENV });
    assert.deepEqual(await plain.exited, { code: 3, signal: null, oomKilled: false });
    const killed = await a().spawn(3, { cmd: ['sh', '-c', 'kill -9 $$'], env: ENV });
    assert.deepEqual(await killed.exited, { code: null, signal: 'SIGKILL', oomKilled: false });
  });

  it('changes limits later, validated first; pauses and resumes', async () => {
    await assert.rejects(a().setLimits(3, { cpus: 64 }), { code: 'EINVAL' });
    const limits = await a().setLimits(3, { cpus: 0.5, memoryBytes: 128 * 1024 ** 2 });
    assert.equal(limits.pids, 64);
    const st = await a().stats(3);
    assert.equal(st.cgroup?.cpu?.limitCpus, 0.5);
    assert.equal(st.cgroup?.memory?.limitBytes, 128 * 1024 ** 2);
    await a().pause(3);
    assert.equal((await a().stats(3)).cgroup?.frozen, true);
    await a().resume(3);
    assert.equal((await a().stats(3)).cgroup?.frozen, false);
    assert.equal((await a().exec(3, ['true'], { env: ENV })).code, 0);
  });

  it('lets a restarted daemon adopt what it still wants and sweep the rest', async () => {
    const restarted = new Isolation(opts(0));
    await restarted.start();
    isos[0] = restarted; // teardown goes through the new one from now on
    const found = await restarted.list();
    assert.deepEqual(
      found.map((f) => [f.dc, f.netns, f.cgroup, f.initPid !== undefined]),
      [
        [1, true, true, true],
        [2, true, true, true],
        [3, true, true, true],
      ],
    );
    assert.deepEqual(await restarted.adopt([alpha(0)]), [1]);
    assert.deepEqual(await restarted.sweep(), [2, 3]);
    assert.deepEqual(
      (await restarted.list()).map((f) => f.dc),
      [1],
    );
    const r = await restarted.exec(1, [NODE, '-e', CLIENT, '172.31.77.2', '7001', 'bytes', '65536'], {
      env: ENV,
    });
    assert.equal(
      (JSON.parse(r.stdout) as { reply: { n: number } }).reply.n,
      65536,
      'adopted DC lost its LAN',
    );
  });

  it('leaves nothing behind when the DCs are removed', async () => {
    for (const iso of isos) for (const dc of iso.dcIds()) await iso.removeDc(dc);
    for (const iso of isos) assert.deepEqual(await iso.list(), []);
    const netns = ip('netns', 'list');
    for (const p of PREFIXES) assert.doesNotMatch(netns, new RegExp(`^${p}`, 'm'));
    for (const ns of NODE_NS) {
      const links = ip('-n', ns, '-br', 'link')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[0]?.split('@')[0])
        .sort();
      assert.deepEqual(links, ['eth0', 'lo']);
    }
    for (const m of new Set(Object.values(detectCgroups().v1))) {
      let left: string[] = [];
      try {
        left = readdirSync(`${m}/${CG_PARENT}`, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => e.name);
      } catch {
        // No parent in this hierarchy.
      }
      assert.deepEqual(left, [], `cgroups left in ${m}`);
    }
    const ps = execFileSync('ps', ['-eo', 'args']).toString();
    assert.doesNotMatch(ps, /dvs-init alpha|dvs-init beta|dvs-init gamma|sleep 4321/);
  });
});
