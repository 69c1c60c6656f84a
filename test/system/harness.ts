/**
 * System harness: dvs nodes as Linux network namespaces (modelled on lodestar's crucible and nats' nst,
 * with "Docker" replaced by "network namespace"). Needs root, iproute2 (`ip`), util-linux (`nsenter`) and
 * nftables (`nft`); {@link systemSkipReason} says why a suite must skip when one is missing.
 *
 * Topology of one run (`<run>` is a short random id, so parallel runs never collide, containers.md P8):
 * ```
 *   netns dvs-<run>-lan:  bridge br0, ports n0..n{N-1}                       (the "physical LAN" switch)
 *   netns dvs-<run>-n<i>: eth0 (veth peer of n<i>), 10.X.Y.(10+i)/24          (node i)
 *                         daemon: nsenter --net=/run/netns/dvs-<run>-n<i> node bin/dvs.js node start ...
 *   <tmp>/node<i>/dvk.sock, daemon.log                                        (files: reachable from here)
 * ```
 * The veths are created directly inside their namespaces (`ip link add eth0 netns A type veth peer name
 * n<i> netns B`), so no interface of a run ever appears in the root namespace, and in-namespace names stay
 * far below the 15-character limit (P6). The daemons run in the node namespaces (nsenter, not `ip netns
 * exec`, P7), but their local sockets are files, so this process uses the SDK and the admin client on them
 * directly. Node-link traffic only crosses the namespaces' own bridge: nothing leaves the machine.
 *
 * Every resource is registered on a LIFO stack of cleanup closures the moment it exists; {@link
 * NetnsCluster.stop} runs the stack in reverse even after a failure half-way, and an exit/signal guard runs
 * it for clusters a crashed or interrupted test process left behind. {@link leftovers} then proves nothing
 * of the run remains.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants,
  cpSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import type { DcConfig, NodeId } from '../../src/kernel/types.js';
import type { AdminMethod, AdminMethods, LinkInfo, NodeStatus } from '../../src/protocol/admin.js';
import { DvsError } from '../../src/protocol/errors.js';
import { AdminClient } from '../../src/sdk/admin.js';
import { etcdMemberArgs, etcdSkipReason, findEtcd } from '../integration/cluster/etcd-harness.js';
import { check, REPO } from '../integration/harness.js';

export { check };

const run = promisify(execFile);
const CLI = join(REPO, 'bin/dvs.js');
/** Node-link TCP port inside every node namespace (each namespace has its own port space). */
export const NODE_PORT = 7000;
/** etcd client and peer ports inside the namespaces of the nodes hosting a member. */
export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

/** Options of {@link NetnsCluster.start}. */
export interface NetnsClusterOptions {
  /** Number of node namespaces and daemons (default 3, at most 200). */
  nodes?: number;
  /** Heartbeat period on every node link, ms (default 100). */
  heartbeatMs?: number;
  /** A peer silent this long is declared dead, ms (default 1000). */
  deadAfterMs?: number;
  /** Daemon log level (default debug: the logs are what a failed system test leaves to read). */
  logLevel?: string;
  /**
   * Run an etcd cluster inside the node namespaces: one member on each listed node (3 or 5 of them),
   * listening on that node's LAN address, and start every daemon with `--store etcd://<members>`. Default:
   * no store (static peers only).
   */
  etcdOn?: number[];
  /** etcd heartbeat interval, ms (default 50: the tuned timing of reference/coordination.md). */
  etcdHeartbeatMs?: number;
  /** etcd election timeout, ms (default 300). */
  etcdElectionMs?: number;
  /** Aborts a start in progress (what was created is torn down). */
  signal?: AbortSignal;
}

/** One etcd member of a {@link NetnsCluster} started with `etcdOn`. */
export interface NetnsEtcdMember {
  /** The node whose namespace it runs in. */
  node: NodeId;
  name: string;
  /** `ip:2379`, reachable from the node namespaces (not from the root namespace). */
  client: string;
  dataDir: string;
  logFile: string;
  proc: ChildProcess | undefined;
}

/** One node of a {@link NetnsCluster}. */
export interface NetnsNode {
  id: NodeId;
  /** Its network namespace (under /run/netns). */
  ns: string;
  /** Its address on the LAN, without prefix length. */
  ip: string;
  /** Node-link address host:port (inside its namespace). */
  address: string;
  /** Local Unix socket (a file: usable from the root namespace). */
  socket: string;
  dataDir: string;
  logFile: string;
  /** The daemon of the current incarnation (undefined before the first start). */
  proc: ChildProcess | undefined;
}

/**
 * Why system tests cannot run here (not root, a tool missing), or undefined when they can. Suites pass it to
 * `describe(name, { skip: systemSkipReason() })` so a skip says what to install.
 */
export function systemSkipReason(): string | undefined {
  return baseSkipReason();
}

/** {@link systemSkipReason}, or why etcd cannot run (no binary): for suites started with `etcdOn`. */
export function etcdSystemSkipReason(): string | undefined {
  return baseSkipReason() ?? etcdSkipReason();
}

function baseSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'system tests need Linux network namespaces';
  if (process.getuid?.() !== 0) return 'system tests need root (network namespaces, nftables)';
  const missing = [
    ['ip', 'iproute2'],
    ['nsenter', 'util-linux'],
    ['nft', 'nftables'],
  ].filter(([tool]) => !onPath(tool!));
  if (missing.length > 0)
    return `missing ${missing.map(([t, pkg]) => `${t} (Debian ${pkg})`).join(', ')}: .ci/run installs them`;
  try {
    accessSync(join(REPO, 'dist/src/cli/main.js'));
  } catch {
    return 'the CLI is not built: run `npm run build` (scripts/test.sh does)';
  }
  return undefined;
}

function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin'])) {
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Run a command (no shell); a failure becomes an Error naming the command and its stderr. */
async function sh(cmd: string, args: string[], input?: string): Promise<string> {
  if (input !== undefined) {
    return new Promise((resolve, reject) => {
      const p = execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
      p.stdin?.end(input);
    });
  }
  try {
    return (await run(cmd, args, { timeout: 10_000 })).stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr?.trim() || err.message}`);
  }
}

/** Synchronous, failure-tolerant variant for teardown (also used from process 'exit', where nothing awaits). */
function shSync(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return '';
  }
}

/** A step of the teardown stack. Synchronous so the exit guard can run it too. */
interface Cleanup {
  what: string;
  run(): void;
}

/** Clusters started by this process and not yet stopped: the exit guard tears them down. */
const LIVE = new Set<NetnsCluster>();
let guarded = false;

/**
 * Once per test process: on exit, or on a signal that would skip 'exit' (the runner interrupting a file, a
 * broken pipe), run every live cluster's teardown stack, so an interrupted run leaves no namespace or daemon.
 */
function guardExit(): void {
  if (guarded) return;
  guarded = true;
  const teardownAll = () => {
    for (const c of LIVE) c.teardownSync();
  };
  process.once('exit', teardownAll);
  const codes = { SIGTERM: 15, SIGINT: 2, SIGHUP: 1, SIGPIPE: 13 } as const;
  for (const sig of Object.keys(codes) as (keyof typeof codes)[]) {
    // process.exit() emits 'exit', whose handler above tears down.
    process.once(sig, () => process.exit(128 + codes[sig]));
  }
}

function alive(p: ChildProcess | undefined): p is ChildProcess {
  return p !== undefined && p.exitCode === null && p.signalCode === null;
}

/**
 * N dvs node daemons, each in its own network namespace on a private bridged LAN, with faults a real
 * network has: crash (kill -9), restart, link down, partition (nftables), pause (SIGSTOP).
 *
 * @example
 * const c = await NetnsCluster.start({ nodes: 5, heartbeatMs: 100, deadAfterMs: 1000 });
 * try {
 *   await c.createDc({ id: 1, name: 'app' });
 *   await c.partition([0, 1], [2, 3, 4]);
 *   await c.heal();
 * } finally {
 *   await c.stop();
 *   assert.deepEqual(await leftovers(c), []);
 * }
 */
export class NetnsCluster implements RunIdentity {
  readonly nodes: NetnsNode[] = [];
  /** Every daemon PID started (all incarnations), for {@link leftovers}. */
  readonly pids: number[] = [];
  /** The LAN namespace holding the bridge. */
  readonly lanNs: string;
  /** The node namespaces' /24, e.g. `10.213.7` (node i is `.10+i`). */
  readonly subnet: string;
  /** The etcd members (empty without `etcdOn`). */
  readonly etcd: NetnsEtcdMember[] = [];
  private readonly cleanups: Cleanup[] = [];
  private readonly opts: Required<Omit<NetnsClusterOptions, 'signal'>>;
  /** Nodes with partition rules, with reset rules (see heal()). */
  private readonly partitioned = new Set<number>();
  private readonly resetting = new Set<number>();
  private stopped = false;

  private constructor(
    /** Short random id of this run: part of every name it creates. */
    readonly runId: string,
    /** Temp dir: one subdirectory per node (socket, data, daemon.log). */
    readonly dir: string,
    opts: NetnsClusterOptions,
  ) {
    const { signal: _signal, ...rest } = opts;
    this.opts = {
      nodes: 3,
      heartbeatMs: 100,
      deadAfterMs: 1000,
      logLevel: 'debug',
      etcdOn: [],
      etcdHeartbeatMs: 50,
      etcdElectionMs: 300,
      ...rest,
    };
    this.lanNs = `dvs-${runId}-lan`;
    // 10.200-249.x: away from the 10.0/10.1 ranges clouds and Docker tend to use. Only ever configured
    // inside this run's namespaces, so even a clash would stay invisible to the host.
    const r = randomBytes(2);
    this.subnet = `10.${200 + (r[0]! % 50)}.${r[1]!}`;
  }

  /** Build the LAN, the node namespaces and start one daemon per node; waits until every link is up. */
  static async start(opts: NetnsClusterOptions = {}): Promise<NetnsCluster> {
    const reason = systemSkipReason();
    if (reason) throw new DvsError('ENOTSUP', reason);
    const n = opts.nodes ?? 3;
    if (!(n >= 1 && n <= 200)) throw new DvsError('EINVAL', `nodes must be 1..200, got ${n}`);
    const members = opts.etcdOn ?? [];
    if (members.length > 0) {
      const why = etcdSkipReason();
      if (why) throw new DvsError('ENOTSUP', why);
      if (new Set(members).size !== members.length || members.some((i) => !(i >= 0 && i < n)))
        throw new DvsError(
          'EINVAL',
          `etcdOn must name distinct nodes of 0..${n - 1}, got ${members.join(',')}`,
        );
    }
    guardExit();
    const runId = randomBytes(3).toString('hex');
    const dir = mkdtempSync(join(tmpdir(), `dvs-sys-${runId}-`));
    const c = new NetnsCluster(runId, dir, opts);
    LIVE.add(c);
    c.defer(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    try {
      await c.build(opts.signal);
      if (members.length > 0) {
        // The daemons refuse to start without a reachable store: etcd first, all members at once (a
        // member alone has no quorum and never reports healthy).
        for (const i of members) c.etcd.push(c.etcdMember(i));
        for (const m of c.etcd) c.spawnEtcd(m, 'new');
        await Promise.all(c.etcd.map((m) => c.waitEtcdHealthy(m, 20_000)));
      }
      for (const node of c.nodes) await c.spawnNode(node);
      await c.waitLinks(15_000);
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  private defer(what: string, fn: () => void): void {
    this.cleanups.push({ what, run: fn });
  }

  /** Namespace-scoped `ip` command. */
  private ip(ns: string, ...args: string[]): Promise<string> {
    return sh('ip', ['-n', ns, ...args]);
  }

  private addNetns(ns: string): Promise<string> {
    // Registered before creation: a half-created namespace is deleted too (deleting a missing one is a no-op).
    this.defer(`delete netns ${ns}`, () => {
      // Anything still inside (a daemon we lost track of) is killed by PID first: a namespace with a live
      // process survives `ip netns del` as an anonymous one.
      for (const pid of shSync('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      shSync('ip', ['netns', 'del', ns]);
    });
    return sh('ip', ['netns', 'add', ns]);
  }

  private async build(signal: AbortSignal | undefined): Promise<void> {
    const lan = this.lanNs;
    await this.addNetns(lan);
    await this.ip(lan, 'link', 'set', 'lo', 'up');
    await this.ip(lan, 'link', 'add', 'br0', 'type', 'bridge');
    await this.ip(lan, 'link', 'set', 'br0', 'up');
    for (let i = 0; i < this.opts.nodes; i++) {
      signal?.throwIfAborted();
      const ns = `dvs-${this.runId}-n${i}`;
      const ip = `${this.subnet}.${10 + i}`;
      const nodeDir = join(this.dir, `node${i}`);
      await mkdir(nodeDir, { recursive: true });
      this.nodes.push({
        id: i,
        ns,
        ip,
        address: `${ip}:${NODE_PORT}`,
        socket: join(nodeDir, 'dvk.sock'),
        dataDir: nodeDir,
        logFile: join(nodeDir, 'daemon.log'),
        proc: undefined,
      });
      await this.addNetns(ns);
      await this.ip(ns, 'link', 'set', 'lo', 'up');
      await sh('ip', [
        'link',
        'add',
        'eth0',
        'netns',
        ns,
        'type',
        'veth',
        'peer',
        'name',
        `n${i}`,
        'netns',
        lan,
      ]);
      await this.ip(lan, 'link', 'set', `n${i}`, 'master', 'br0', 'up');
      await this.ip(ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
      await this.ip(ns, 'link', 'set', 'eth0', 'up');
    }
  }

  private async spawnNode(n: NetnsNode): Promise<ChildProcess> {
    if (this.stopped) throw new DvsError('EINVAL', 'cluster stopped');
    const peers = this.nodes.map((p) => `${p.id}=${p.address}`).join(',');
    const args = [
      `--net=/run/netns/${n.ns}`,
      process.execPath,
      CLI,
      'node',
      'start',
      '--node-id',
      String(n.id),
      '--listen',
      n.address,
      '--peers',
      peers,
      '--socket',
      n.socket,
      '--data',
      n.dataDir,
      '--heartbeat-ms',
      String(this.opts.heartbeatMs),
      '--dead-after-ms',
      String(this.opts.deadAfterMs),
      '--log-file',
      n.logFile,
      '--log-level',
      this.opts.logLevel,
      ...(this.storeUrl !== undefined ? ['--store', this.storeUrl] : []),
    ];
    // nsenter without --fork execs the daemon in place: the child's PID is the daemon's PID.
    const proc = spawn('nsenter', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    n.proc = proc;
    if (proc.pid !== undefined) this.pids.push(proc.pid);
    this.defer(`kill node${n.id} daemon (pid ${proc.pid})`, () => {
      if (alive(proc)) proc.kill('SIGKILL');
    });
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    proc.once('exit', (code, sig) => {
      if (code !== 0 && sig === null && err) process.stderr.write(`[node${n.id} exited ${code}] ${err}\n`);
    });
    await new Promise<void>((resolve, reject) => {
      proc.once('spawn', resolve);
      proc.once('error', reject);
    });
    return proc;
  }

  /** Admin call on node `i` (a fresh connection each time: robust across restarts). */
  async admin<M extends AdminMethod>(
    i: number,
    method: M,
    params: AdminMethods[M]['params'],
  ): Promise<AdminMethods[M]['result']> {
    const c = await AdminClient.connect(this.node(i).socket, { timeout: 2000 });
    try {
      return await c.call(method, params, { timeout: 10_000 });
    } finally {
      await c.close();
    }
  }

  async status(i: number): Promise<NodeStatus> {
    return this.admin(i, 'status', {});
  }

  /** State of node `i`'s link to `peer`, as its `status` reports it. */
  async linkState(i: number, peer: number): Promise<LinkInfo['state'] | undefined> {
    return (await this.status(i)).links.find((l) => l.node === peer)?.state;
  }

  /** Node `i`, or EINVAL. */
  node(i: number): NetnsNode {
    const n = this.nodes[i];
    if (n === undefined) throw new DvsError('EINVAL', `no node ${i} in this cluster`);
    return n;
  }

  /** Nodes whose daemon process is running. */
  liveNodes(): NetnsNode[] {
    return this.nodes.filter((n) => alive(n.proc));
  }

  /** Wait until each of `ids` (default: every running node) sees every other one's link up. */
  async waitLinks(timeoutMs = 15_000, ids = this.liveNodes().map((n) => n.id)): Promise<void> {
    await check(
      async () => {
        for (const i of ids) {
          const st = await this.status(i);
          for (const p of ids) {
            if (p !== i && st.links.find((l) => l.node === p)?.state !== 'up') return false;
          }
        }
        return true;
      },
      timeoutMs,
      `links up among nodes ${ids.join(',')}`,
    );
  }

  /** Wait until each node of `observers` reports every node of `targets` in `state`. */
  async waitLinkState(
    observers: number[],
    targets: number[],
    state: LinkInfo['state'],
    timeoutMs: number,
  ): Promise<void> {
    await check(
      async () => {
        for (const i of observers) {
          const st = await this.status(i);
          for (const p of targets) if (st.links.find((l) => l.node === p)?.state !== state) return false;
        }
        return true;
      },
      timeoutMs,
      `nodes ${observers.join(',')} seeing ${targets.join(',')} ${state}`,
    );
  }

  /**
   * Create a DC on every node it spans: without a store, admin `dc.create` on each (as the CLI does); with
   * etcd, once through `via` (default: the DC's first node), then wait until every node of it has the DC
   * from its watch.
   */
  async createDc(
    cfg: Partial<DcConfig> & { id: number; name: string },
    opts: { via?: number; timeoutMs?: number } = {},
  ): Promise<DcConfig> {
    const full: DcConfig = {
      nodes: this.nodes.map((n) => n.id),
      maxPayload: 4096,
      sysEndpoints: 64,
      postWindow: 1024,
      ...cfg,
    };
    if (this.storeUrl === undefined) {
      for (const id of full.nodes) await this.admin(id, 'dc.create', { config: full });
      return full;
    }
    const created = await this.admin(opts.via ?? full.nodes[0] ?? 0, 'dc.create', { config: full });
    await check(
      async () => {
        for (const id of full.nodes) {
          if (!(await this.admin(id, 'dc.list', {})).some((d) => d.id === created.id)) return false;
        }
        return true;
      },
      opts.timeoutMs ?? 10_000,
      `DC ${full.name} on nodes ${full.nodes.join(',')}`,
    );
    return created;
  }

  /** `--store` value of the daemons (`etcd://ip:2379,...`), undefined without `etcdOn`. */
  get storeUrl(): string | undefined {
    return this.etcd.length === 0 ? undefined : `etcd://${this.etcd.map((m) => m.client).join(',')}`;
  }

  /** The etcd member running in node `i`'s namespace, or EINVAL. */
  etcdMemberOf(i: number): NetnsEtcdMember {
    const m = this.etcd.find((x) => x.node === i);
    if (m === undefined) throw new DvsError('EINVAL', `node ${i} hosts no etcd member`);
    return m;
  }

  /** kill -9 node `i`'s etcd member by PID and wait until it is gone (its daemon keeps running). */
  async killEtcd(i: number): Promise<void> {
    const p = this.etcdMemberOf(i).proc;
    if (!alive(p)) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  /** Start node `i`'s etcd member again on its data dir; waits until it reports healthy. */
  async restartEtcd(i: number, timeoutMs = 20_000): Promise<void> {
    const m = this.etcdMemberOf(i);
    if (alive(m.proc)) throw new DvsError('EBUSY', `etcd member on node ${i} is still running`);
    this.spawnEtcd(m, 'existing');
    await this.waitEtcdHealthy(m, timeoutMs);
  }

  /** etcd member `i`'s log (zap JSON lines, warn and above), for failure messages. */
  async etcdLog(i: number): Promise<string> {
    return readFile(this.etcdMemberOf(i).logFile, 'utf8').catch(() => '');
  }

  private etcdMember(i: number): NetnsEtcdMember {
    const n = this.node(i);
    return {
      node: n.id,
      name: `m${n.id}`,
      client: `${n.ip}:${ETCD_CLIENT_PORT}`,
      dataDir: join(n.dataDir, 'etcd'),
      logFile: join(n.dataDir, 'etcd.log'),
      proc: undefined,
    };
  }

  /** Start an etcd member inside its node's namespace (nsenter execs it in place: the PID is etcd's). */
  private spawnEtcd(m: NetnsEtcdMember, state: 'new' | 'existing'): void {
    if (this.stopped) throw new DvsError('EINVAL', 'cluster stopped');
    const bin = findEtcd();
    if (bin === undefined) throw new DvsError('ENOTSUP', etcdSkipReason() ?? 'no etcd');
    mkdirSync(m.dataDir, { recursive: true });
    const n = this.node(m.node);
    const args = etcdMemberArgs({
      name: m.name,
      dataDir: m.dataDir,
      clientUrl: `http://${m.client}`,
      peerUrl: `http://${n.ip}:${ETCD_PEER_PORT}`,
      initialCluster: this.etcd
        .map((x) => `${x.name}=http://${this.node(x.node).ip}:${ETCD_PEER_PORT}`)
        .join(','),
      state,
      heartbeatMs: this.opts.etcdHeartbeatMs,
      electionMs: this.opts.etcdElectionMs,
    });
    const log = openSync(m.logFile, 'a');
    let proc: ChildProcess;
    try {
      proc = spawn('nsenter', [`--net=/run/netns/${n.ns}`, bin, ...args], { stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    m.proc = proc;
    if (proc.pid !== undefined) this.pids.push(proc.pid);
    this.defer(`kill etcd member ${m.name} (pid ${proc.pid})`, () => {
      if (alive(proc)) proc.kill('SIGKILL');
    });
  }

  /**
   * Poll member `m`'s /health from inside its node's namespace (the root namespace has no route to the
   * run's LAN): a one-line fetch in a node process entered with nsenter.
   */
  private async waitEtcdHealthy(m: NetnsEtcdMember, timeoutMs: number): Promise<void> {
    const probe =
      'fetch(process.argv[1],{signal:AbortSignal.timeout(1000)}).then(r=>r.json())' +
      ".then(b=>process.exit(b.health==='true'?0:1),()=>process.exit(1))";
    await check(
      async () => {
        if (!alive(m.proc)) throw new Error(`etcd member ${m.name} exited (log: ${m.logFile})`);
        try {
          await sh('nsenter', [
            `--net=/run/netns/${this.node(m.node).ns}`,
            process.execPath,
            '-e',
            probe,
            `http://${m.client}/health`,
          ]);
          return true;
        } catch {
          return false;
        }
      },
      timeoutMs,
      `etcd member ${m.name} healthy`,
    );
  }

  /** kill -9 node `i`'s daemon by PID and wait until it is gone. */
  async killNode(i: number): Promise<void> {
    const p = this.node(i).proc;
    if (!alive(p)) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  /** Start node `i` again (a new incarnation, same address, socket and data dir); waits for its socket. */
  async restartNode(i: number, timeoutMs = 10_000): Promise<void> {
    const n = this.node(i);
    if (alive(n.proc)) throw new DvsError('EBUSY', `node ${i} is still running`);
    const { pid } = await this.spawnNode(n);
    await check(async () => (await this.status(i)).pid === pid, timeoutMs, `node ${i} answering`);
  }

  /** Stop node `i` (SIGSTOP): its sockets stay open but it answers nothing. */
  pause(i: number): void {
    const p = this.node(i).proc;
    if (alive(p)) p.kill('SIGSTOP');
  }

  /** Let a paused node `i` run again (SIGCONT). */
  resume(i: number): void {
    const p = this.node(i).proc;
    if (alive(p)) p.kill('SIGCONT');
  }

  /** Cut node `i` off the LAN: its port on the bridge goes down (its own eth0 stays up, as a cable pull). */
  async linkDown(i: number): Promise<void> {
    await this.ip(this.lanNs, 'link', 'set', `n${this.node(i).id}`, 'down');
  }

  /** Plug node `i` back in. */
  async linkUp(i: number): Promise<void> {
    await this.ip(this.lanNs, 'link', 'set', `n${this.node(i).id}`, 'up');
  }

  /**
   * Split the cluster: inside every listed node's namespace an nftables table drops output to the nodes of
   * the other sides. Nodes not listed keep reaching everyone. Rules die with the namespace.
   */
  async partition(...sides: number[][]): Promise<void> {
    const sideOf = new Map<number, number>();
    sides.forEach((s, k) => {
      for (const i of s) {
        if (sideOf.has(i)) throw new DvsError('EINVAL', `node ${i} is on two sides`);
        this.node(i);
        sideOf.set(i, k);
      }
    });
    await this.heal();
    for (const [i, k] of sideOf) {
      const others = [...sideOf].filter(([, s]) => s !== k).map(([j]) => this.node(j).ip);
      if (others.length === 0) continue;
      const rules = [
        'table inet dvs_part {',
        '  chain out {',
        '    type filter hook output priority 0; policy accept;',
        `    ip daddr { ${others.join(', ')} } drop`,
        '  }',
        '}',
      ].join('\n');
      this.partitioned.add(i);
      await sh('nsenter', [`--net=/run/netns/${this.node(i).ns}`, 'nft', '-f', '-'], rules);
    }
  }

  /**
   * Reset node `i`'s TCP connections: an nftables table in its namespace answers every TCP segment arriving
   * from the LAN with a RST, so its peers' ends of the node links die (ECONNRESET) and new dials are refused,
   * until {@link heal}. Unlike {@link linkDown}, this makes the link layer reconnect and resend, not TCP.
   * (A `reject` in the output hook would not do: for the sender's own socket it acts as a silent drop.)
   */
  async resetTcp(i: number): Promise<void> {
    const rules = [
      'table inet dvs_rst {',
      '  chain in {',
      '    type filter hook input priority 0; policy accept;',
      `    ip saddr ${this.subnet}.0/24 meta l4proto tcp reject with tcp reset`,
      '  }',
      '}',
    ].join('\n');
    this.resetting.add(i);
    await sh('nsenter', [`--net=/run/netns/${this.node(i).ns}`, 'nft', '-f', '-'], rules);
  }

  /** Remove every partition and reset rule. */
  async heal(): Promise<void> {
    for (const [set, table] of [
      [this.partitioned, 'dvs_part'],
      [this.resetting, 'dvs_rst'],
    ] as const) {
      for (const i of set) {
        await sh('nsenter', [`--net=/run/netns/${this.node(i).ns}`, 'nft', 'delete', 'table', 'inet', table]);
      }
      set.clear();
    }
  }

  /** Node `i`'s daemon log (pino JSON lines; all incarnations), for failure messages. */
  async log(i: number): Promise<string> {
    return readFile(this.node(i).logFile, 'utf8').catch(() => '');
  }

  /**
   * Tear everything down: daemons get SIGTERM (so their logs are flushed), SIGKILL after 3 s; then the
   * cleanup stack runs in reverse (kill by PID, delete namespaces, remove the temp dir). Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      await this.stopDaemons();
      // DVS_KEEP_LOGS=1: keep every node's daemon log under test-results/ for a post-mortem.
      if (process.env.DVS_KEEP_LOGS === '1') {
        const keep = join(REPO, 'test-results', `netns-${this.runId}`);
        mkdirSync(keep, { recursive: true });
        for (const [i, n] of this.nodes.entries())
          cpSync(n.logFile, join(keep, `node${i}.log`), { force: true });
        process.stderr.write(`system harness: logs kept in ${keep}\n`);
      }
    } finally {
      this.teardownSync();
    }
  }

  private async stopDaemons(): Promise<void> {
    await Promise.all(
      this.nodes.map(async (n) => {
        const p = n.proc;
        if (!alive(p)) return;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGCONT'); // a paused daemon cannot handle SIGTERM
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }),
    );
  }

  /** Run the cleanup stack in reverse; every step runs even if an earlier one threw. @internal */
  teardownSync(): void {
    this.stopped = true;
    LIVE.delete(this);
    for (let c = this.cleanups.pop(); c !== undefined; c = this.cleanups.pop()) {
      try {
        c.run();
      } catch (e) {
        process.stderr.write(`system harness: cleanup "${c.what}" failed: ${String(e)}\n`);
      }
    }
  }
}

/** True if `pid` exists and is not a zombie (an orphan's zombie may wait long for a reaper in a container). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** What identifies a run's resources: {@link NetnsCluster} has all of it; a run in another process reports it. */
export interface RunIdentity {
  runId: string;
  dir: string;
  /** Every daemon PID the run started. */
  pids: readonly number[];
}

/**
 * What remains of a run: network namespaces and root-namespace links whose name carries its run id, its
 * daemons still alive, processes whose command line names its temp dir or namespaces, and the temp dir
 * itself. Empty after a clean {@link NetnsCluster.stop}.
 */
export async function leftovers(run: RunIdentity): Promise<string[]> {
  const found: string[] = [];
  for (const line of (await sh('ip', ['netns', 'list'])).split('\n')) {
    if (line.includes(run.runId)) found.push(`netns ${line.trim()}`);
  }
  for (const line of (await sh('ip', ['-o', 'link', 'show'])).split('\n')) {
    if (line.includes(run.runId)) found.push(`link ${line.trim()}`);
  }
  for (const pid of run.pids) {
    if (running(pid)) found.push(`daemon pid ${pid}`);
  }
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue; // exited while we looked
    }
    if ((cmd.includes(run.dir) || cmd.includes(`dvs-${run.runId}-`)) && running(Number(pid)))
      found.push(`process ${pid}: ${cmd.trim()}`);
  }
  try {
    accessSync(run.dir);
    found.push(`dir ${run.dir}`);
  } catch {
    // removed, as it should be
  }
  return found;
}

/**
 * Remove whatever remains of a run, by PID and by name: its daemons, its namespaces (with anything still in
 * them), its temp dir. For runs whose own teardown could not happen (a process killed with SIGKILL).
 */
export function purge(run: RunIdentity): void {
  for (const pid of run.pids) {
    if (!running(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  for (const line of shSync('ip', ['netns', 'list']).split('\n')) {
    const ns = line.split(' ')[0];
    if (!ns?.startsWith(`dvs-${run.runId}-`)) continue;
    for (const pid of shSync('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    shSync('ip', ['netns', 'del', ns]);
  }
  rmSync(run.dir, { recursive: true, force: true });
}
