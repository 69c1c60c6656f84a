/**
 * The daemon's side of src/isolation/ (docs/isolation.md): one {@link Isolation} per node, the DC specs the
 * daemon was given (limits, LAN place), and the admin operations on them.
 *
 * ```
 *  admin dc.create / store DC create ──▶ ensureDc(cfg, spec)   container + cgroup limits + LAN veth
 *  admin dc.remove / store DC remove ──▶ removeDc(dc)          every process killed through the cgroup
 *  ProcessManager.spawn ──spawner──────▶ Isolation.spawn       `dvs run` inside the DC's container
 *  admin dc.set|stats|pause|resume|lanPeers|isolation, proc.exec
 *  start(): Isolation.start + what a previous daemon left ──▶ ensureDc adopts it; finishStart() sweeps the rest
 * ```
 *
 * Processes in a container reach the DVK at `/run/dvs/<socket name>`: the host directory
 * `<dataDir>/run/<dc>/` is bind-mounted there and holds that DC's own socket (a DC-locked listener of the
 * local server: bind only in this DC, DVK services only), so the container sees only its socket, not the
 * node's logs and store.
 *
 * Without root (or with `isolation: 'off'`) the daemon says so once in its log, processes run as plain
 * children (the spawner declines), and limits or a LAN are refused with ENOTSUP.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import {
  DC_ADDR_PREFIX,
  DC_ISO_PREFIX,
  DC_LAN_PREFIX,
  dcAddrKey,
  dcIsoKey,
  dcLanKey,
  dcNameKey,
  encodeValue,
} from '../cluster/keys.js';
import { type MirrorEvent, PrefixMirror } from '../cluster/mirror.js';
import type { ClusterStore } from '../cluster/store.js';
import {
  CONTAINER_SOCKET_DIR,
  type ContainerProcess,
  containerMac,
  type DcLimits,
  type DcSpec,
  dcNames,
  type ExecOptions,
  formatBytes,
  formatLimits,
  hostPrefixes,
  Isolation,
  type LanPeers,
  listNetns,
  nextFreeAddress,
  parseLimits,
  validateLanPrefix,
} from '../isolation/index.js';
import type { DcConfig, DcId, Endpoint, KernelApi, NodeId } from '../kernel/types.js';
import type {
  DcIsolationInfo,
  DcIsolationSpec,
  DcLimitsText,
  DcStatsInfo,
  ExecInfo,
  IsolationStatus,
  LanMember,
} from '../protocol/admin.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { kernelWith } from './kernel-view.js';
import type { ProcessSpawner, SpawnedProcess } from './processes.js';

/** Options of {@link IsolationWiring}. */
export interface IsolationWiringOptions {
  nodeId: NodeId;
  nodeName: string;
  dataDir: string;
  /** The daemon's DVK socket (its file name is the one containers see at /run/dvs). */
  socket: string;
  /** The node-link listen address host:port: its host names the underlay device when `lan` is `auto`. */
  listen: string;
  logger: Logger;
  registry?: Registry;
  /** `off` forces plain processes; default `auto` (containers when root and the tools are there). */
  mode?: 'auto' | 'off';
  /** Name prefix of this node's objects (2-5 of [a-z0-9]); default derived from the data dir. */
  prefix?: string;
  cgroup?: 'auto' | 'v1' | 'v2';
  /**
   * The underlay of DC LANs: explicit, `auto` (default: the interface holding the listen address, if it
   * is not loopback or a wildcard), or `off`.
   */
  lan?: { dev: string; localIp: string } | 'auto' | 'off';
  /** The cluster store, once open (`--store`): DC limits and LAN places are kept there. */
  store?: () => ClusterStore | undefined;
  /**
   * Serve DC `dc`'s processes on the socket `path` (inside its container at /run/dvs): sessions there may
   * only bind in that DC and only call DVK services (LocalServer.listenForDc). `undefined` path: stop.
   */
  dcSocket?: (dc: DcId, path: string | undefined) => Promise<void>;
}

/** `/dvs/dciso/<name>`: a DC's limits (text, `max` = removed) and LAN prefix. */
export interface StoredIsolation {
  limits?: DcLimitsText;
  lan?: string;
}

/** Timeout of one cluster store call made here, ms. */
const STORE_TIMEOUT_MS = 5000;

/** How long spawn waits for the process behind nsenter to exist (it forks right away). */
const INNER_PID_WAIT_MS = 2000;

/** The daemon's isolation: see the module doc. */
export class IsolationWiring {
  private readonly o: IsolationWiringOptions;
  private readonly log: Logger;
  private iso: Isolation | undefined;
  private readonly prefix: string;
  private readonly socketDir: string;
  /** What each DC was created with here (limits as applied, LAN place). */
  private readonly specs = new Map<DcId, DcSpec>();
  /** ensureFromStore calls in progress (finishStart waits for them). */
  private readonly applying = new Set<Promise<void>>();
  /** DCs a previous daemon left on this node, not yet adopted or swept. */
  private readonly leftovers = new Set<DcId>();
  /** ensureDc/removeDc per DC, chained: a create and a remove of one DC never interleave. */
  private readonly chains = new Map<DcId, Promise<unknown>>();
  private underlay: { dev: string; localIp: string } | undefined;
  /** With a store: every DC's isolation spec and LAN members, kept current (limits and peers follow). */
  private mirrors: { iso: PrefixMirror<StoredIsolation>; lan: PrefixMirror<LanMember> } | undefined;

  constructor(o: IsolationWiringOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'isolation-wiring' });
    this.prefix = o.prefix ?? defaultPrefix(o.dataDir, o.nodeId);
    this.socketDir = join(o.dataDir, 'run');
  }

  /** Detects the mode, links the socket for containers, notes what a previous daemon left. */
  async start(): Promise<void> {
    this.underlay = await this.findUnderlay();
    this.iso = new Isolation({
      nodeId: this.o.nodeId,
      nodeName: this.o.nodeName,
      prefix: this.prefix,
      logger: this.o.logger,
      ...(this.o.registry ? { registry: this.o.registry } : {}),
      mode: this.o.mode ?? 'auto',
      ...(this.o.cgroup ? { cgroup: this.o.cgroup } : {}),
      socketDir: this.socketDir,
      socketDirFor: (dc) => join(this.socketDir, String(dc)),
      ...(this.underlay ? { lan: this.underlay } : {}),
    });
    await this.iso.start();
    const info = this.iso.describe();
    if (info.mode === 'off') {
      this.log.warn(
        { reason: info.reason },
        `isolation is OFF: DC processes run without namespaces or limits (development only): ${info.reason}`,
      );
      return;
    }
    await mkdir(this.socketDir, { recursive: true });
    for (const f of await this.iso.list()) this.leftovers.add(f.dc);
    await this.sweepAbandoned().catch((e: unknown) =>
      this.log.warn({ err: e }, 'sweeping containers of vanished daemons failed'),
    );
    this.log.info(
      { ...info, leftovers: [...this.leftovers], underlay: this.underlay ?? null },
      'isolation on: DC processes run in containers',
    );
  }

  /**
   * Containers of other daemons of this machine that are gone for good: a container whose `/run/dvs`
   * source (the owner's `<dataDir>/run`, in its pid 1's command line) no longer exists can never be adopted
   * (a test cluster killed and its temp dir deleted, a node decommissioned), so the next daemon to start
   * removes it. Only names of the default prefix form are considered; a live owner's are never touched.
   */
  private async sweepAbandoned(): Promise<void> {
    for (const ns of await listNetns()) {
      const m = /^(d[0-9a-z]{4})c([1-9]\d{0,7})$/.exec(ns);
      if (!m?.[1] || !m[2] || m[1] === this.prefix) continue;
      const dir = initSocketDir(ns);
      if (dir === undefined || dir === '' || existsSync(dir)) continue;
      const other = new Isolation({
        nodeId: this.o.nodeId,
        nodeName: this.o.nodeName,
        prefix: m[1],
        logger: this.log,
        ...(this.o.cgroup ? { cgroup: this.o.cgroup } : {}),
      });
      await other.start();
      await other.removeDc(Number(m[2]));
      this.log.info({ netns: ns, socketDir: dir }, 'removed the container of a daemon that is gone for good');
    }
  }

  /**
   * After the DCs this node still hosts were applied (ensureDc adopted their containers): removes every
   * container, cgroup and LAN device a previous daemon left for DCs no longer here. `hosts` says which DCs
   * the node still holds (the kernel's): theirs are kept even if setting them up failed.
   */
  async finishStart(hosts: (dc: DcId) => boolean = () => false): Promise<number[]> {
    await this.watchStore();
    // A DC from the store is applied in two steps (its spec read from the store, then ensureDc): wait for
    // both, or a leftover still being adopted would be swept under it (its process killed).
    await Promise.allSettled([...this.applying]);
    await Promise.allSettled([...this.chains.values()]);
    const swept: number[] = [];
    for (const dc of [...this.leftovers]) {
      // A DC this node hosts whose container could not be set up yet keeps it: its process may still run.
      // One with a create or remove in progress (an admin call: the local socket serves during start) is
      // left to it: a create adopts or replaces the leftover.
      if (this.specs.has(dc) || hosts(dc) || this.chains.has(dc)) continue;
      this.leftovers.delete(dc);
      // In the DC's chain: a create arriving now waits for the sweep, then builds a fresh container.
      await this.chain(dc, async () => {
        if (this.specs.has(dc)) return false;
        await this.removeObjects(dc);
        return true;
      }).then(
        (removed) => {
          if (removed) swept.push(dc);
        },
        (e: unknown) => this.log.error({ err: e, dc }, 'sweeping a leftover DC failed'),
      );
    }
    if (swept.length > 0) this.log.info({ swept }, 'swept containers of DCs no longer on this node');
    return swept;
  }

  /**
   * With `remove` (a clean daemon stop, after its processes were stopped) every container of this node
   * goes; without, they keep running for the next daemon to adopt.
   */
  async stop(opts: { remove?: boolean } = {}): Promise<void> {
    this.mirrors?.iso.stop();
    this.mirrors?.lan.stop();
    await Promise.allSettled([...this.chains.values()]);
    if (opts.remove && this.enabled) {
      for (const dc of [...this.specs.keys()]) {
        await this.removeDc(dc).catch((e: unknown) =>
          this.log.error({ err: e, dc }, 'removing a container at stop failed'),
        );
      }
    }
    await this.iso?.stop();
  }

  /** Mode, reason, cgroup driver (for `status`). */
  status(): IsolationStatus {
    const d = this.iso?.describe();
    if (!d) return { mode: 'off', reason: 'not started', cgroup: 'none', lan: false, prefix: this.prefix };
    return {
      mode: d.mode,
      reason: d.reason,
      cgroup: d.cgroup,
      ...(d.cgroupDetail !== undefined ? { cgroupDetail: d.cgroupDetail } : {}),
      lan: d.lan,
      prefix: d.prefix,
    };
  }

  /**
   * The kernel as the local socket should see it: a process in a container binds (HELLO) with the pid it
   * has there; `hostPid` maps it to the host pid `dvs run` reserved the endpoint for, so the endpoint table
   * and ProcessInfo agree on one pid. Identity when isolation is off.
   */
  kernelView(kernel: KernelApi, hostPid: (dc: DcId, ep: Endpoint, pid: number) => number): KernelApi {
    return kernelWith(kernel, {
      attach: (now, proc, dc, ep, opts) =>
        kernel.attach(now, proc, dc, ep, this.enabled ? { ...opts, pid: hostPid(dc, ep, opts.pid) } : opts),
    });
  }

  /** Whether processes run in containers. */
  get enabled(): boolean {
    return this.iso?.mode() === 'container';
  }

  /** DVS_SOCKET for a process of a DC: inside a container, the socket's path there. */
  socketFor(): string {
    return this.enabled ? `${CONTAINER_SOCKET_DIR}/${basename(this.o.socket)}` : this.o.socket;
  }

  /**
   * Checks a DC's isolation spec against this node without creating anything (limits, LAN prefix against
   * the host's networks and the other DCs here). EINVAL / ENOTSUP.
   */
  async validate(cfg: DcConfig, spec?: DcIsolationSpec): Promise<DcSpec> {
    const s = this.toSpec(cfg, spec);
    await this.need().validate(s);
    return s;
  }

  /** Creates (or adopts) the DC's container here, with its limits and LAN place. Idempotent. */
  ensureDc(cfg: DcConfig, spec?: DcIsolationSpec): Promise<void> {
    return this.chain(cfg.id, async () => {
      const s = this.toSpec(cfg, spec);
      const iso = this.need();
      await this.openDcSocket(cfg.id);
      if (this.leftovers.delete(cfg.id)) {
        const adopted = await iso.adopt([s]);
        if (adopted.includes(cfg.id)) {
          this.specs.set(cfg.id, s);
          this.log.info({ dc: cfg.id }, 'adopted the container a previous daemon left');
          return;
        }
        // Half a container (no live pid 1, or no cgroup): start clean.
        await this.removeObjects(cfg.id);
      }
      if (this.specs.has(cfg.id) && spec === undefined) return;
      await iso.ensureDc(s);
      this.specs.set(cfg.id, s);
    });
  }

  /** Removes the DC's container, cgroup and LAN devices here (its processes are killed). */
  removeDc(dc: DcId): Promise<void> {
    return this.chain(dc, async () => {
      this.specs.delete(dc);
      this.leftovers.delete(dc);
      await this.removeObjects(dc);
      await this.closeDcSocket(dc);
    });
  }

  /**
   * The DC's own socket, in the directory its container sees at /run/dvs: a process there reaches the DVK
   * through it, can bind only in this DC and call only DVK services (never the admin methods: no `dc rm`,
   * `run` or `node shutdown` from inside a container), and sees nothing else of the data dir.
   */
  private async openDcSocket(dc: DcId): Promise<void> {
    if (!this.enabled || this.o.dcSocket === undefined) return;
    const dir = join(this.socketDir, String(dc));
    await mkdir(dir, { recursive: true });
    await this.o.dcSocket(dc, join(dir, basename(this.o.socket)));
  }

  private async closeDcSocket(dc: DcId): Promise<void> {
    if (this.o.dcSocket === undefined) return;
    await this.o.dcSocket(dc, undefined).catch(() => undefined);
    await rm(join(this.socketDir, String(dc)), { recursive: true, force: true }).catch(() => undefined);
  }

  /**
   * Isolation.removeDc, once more if it fails: the host end of the veth goes away with the container's
   * namespace asynchronously, so a `link del` listed a moment before can find nothing; the second pass
   * sees what is really left.
   */
  private async removeObjects(dc: DcId): Promise<void> {
    try {
      await this.need().removeDc(dc);
    } catch (e) {
      this.log.debug({ err: e, dc }, 'removing the DC container: second pass');
      await new Promise((r) => setTimeout(r, 100));
      await this.need().removeDc(dc);
    }
  }

  /** Whether this node holds the DC. */
  has(dc: DcId): boolean {
    return this.specs.has(dc);
  }

  /**
   * For ProcessManager: spawns in the DC's container; declines (undefined: a plain child) when
   * isolation is off.
   */
  readonly spawner: ProcessSpawner = async (req, env, stdio) => {
    if (!this.enabled) return undefined;
    await this.chains.get(req.dc);
    const iso = this.need();
    const p = await iso.spawn(req.dc, {
      cmd: req.cmd,
      env: { ...env, DVS_SOCKET: this.socketFor() },
      ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
      stdio,
    });
    return this.wrap(req.dc, p);
  };

  private async wrap(dc: DcId, p: ContainerProcess): Promise<SpawnedProcess> {
    let done = false;
    void p.exited.then(() => {
      done = true;
    });
    let inner = p.innerPid();
    const end = Date.now() + INNER_PID_WAIT_MS;
    while (inner === undefined && !done && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 5));
      inner = p.innerPid();
    }
    const containerPid = inner === undefined ? undefined : nsPid(inner);
    const exited = p.exited.then((x) => ({
      code: x.code,
      signal: x.signal,
      ...(x.oomKilled ? { oomKilled: true, reason: this.oomReason(dc) } : {}),
    }));
    return {
      pid: inner ?? p.pid,
      ...(containerPid !== undefined ? { containerPid } : {}),
      exited,
      kill: (signal) => {
        p.kill(signal);
      },
    };
  }

  private oomReason(dc: DcId): string {
    const mem = this.specs.get(dc)?.limits?.memoryBytes;
    return mem == null ? 'killed: out of memory' : `killed: out of memory at ${formatBytes(mem)}`;
  }

  /** This node's isolation of DC `dc`. */
  async info(dc: DcId): Promise<DcIsolationInfo> {
    const spec = this.specOf(dc);
    const iso = this.need();
    const st = await iso.stats(dc);
    const names = dcNames(this.prefix, dc);
    const found = this.enabled ? (await iso.list()).find((f) => f.dc === dc) : undefined;
    return {
      dc,
      node: this.o.nodeId,
      mode: iso.mode(),
      limits: formatLimits(st.limits),
      ...(spec.lan && this.underlay
        ? {
            lan: {
              node: this.o.nodeId,
              underlay: this.underlay.localIp,
              mac: spec.lan.mac ?? containerMac(dc, this.o.nodeId),
              address: spec.lan.address,
              prefix: spec.lan.prefix,
            },
          }
        : {}),
      running: st.running,
      ...(found?.initPid !== undefined ? { initPid: found.initPid } : {}),
      ...(this.enabled ? { netns: names.netns } : {}),
    };
  }

  /** Changes limits live (`max` removes one). */
  async setLimits(dc: DcId, text: DcLimitsText): Promise<DcIsolationInfo> {
    const spec = this.specOf(dc);
    const update = parseLimitsText(text);
    const limits = await this.need().setLimits(dc, update);
    this.specs.set(dc, { ...spec, limits });
    this.log.info({ dc, limits: formatLimits(limits) }, 'DC limits changed');
    return this.info(dc);
  }

  async stats(dc: DcId): Promise<DcStatsInfo> {
    this.specOf(dc);
    const iso = this.need();
    const st = await iso.stats(dc);
    const cg = st.cgroup;
    return {
      dc,
      node: this.o.nodeId,
      mode: iso.mode(),
      limits: formatLimits(st.limits),
      running: st.running,
      ...(cg?.memory ? { memory: cg.memory } : {}),
      ...(cg?.cpu ? { cpu: cg.cpu } : {}),
      ...(cg?.pids ? { pids: cg.pids } : {}),
      ...(cg?.io ? { io: cg.io } : {}),
      ...(cg ? { procs: cg.procs, frozen: cg.frozen } : {}),
    };
  }

  async pause(dc: DcId, signal?: AbortSignal): Promise<void> {
    this.specOf(dc);
    await this.need().pause(dc, signal ? { signal } : {});
  }

  async resume(dc: DcId, signal?: AbortSignal): Promise<void> {
    this.specOf(dc);
    await this.need().resume(dc, signal ? { signal } : {});
  }

  /** Static forwarding to the DC's other containers (everyone but this node in `members`). */
  async setLanPeers(dc: DcId, members: readonly LanMember[]): Promise<void> {
    const spec = this.specOf(dc);
    if (!spec.lan) throw dvsError('EINVAL', `DC ${dc} has no LAN`);
    const others = members.filter((m) => m.node !== this.o.nodeId);
    const peers: LanPeers = {
      nodes: [...new Set(others.map((m) => m.underlay))],
      macs: others.map((m) => ({ mac: m.mac, node: m.underlay })),
    };
    await this.need().setLanPeers(dc, peers);
    this.specs.set(dc, { ...spec, lan: { ...spec.lan, peers } });
  }

  async exec(dc: DcId, cmd: string[], opts: ExecOptions): Promise<ExecInfo> {
    this.specOf(dc);
    const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env };
    const r = await this.need().exec(dc, cmd, { ...opts, env: { ...env, DVS_SOCKET: this.socketFor() } });
    return { code: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr, oomKilled: r.oomKilled };
  }

  // ───────────────────────────── with a cluster store ─────────────────────────────

  /**
   * `dc.create` with a store: validates the spec (limit syntax; the LAN prefix against every other DC's
   * and this node's networks) and writes `/dvs/dciso/<name>` before the DC exists. EINVAL names the clash.
   */
  async storeSpec(name: string, spec: StoredIsolation, signal?: AbortSignal): Promise<void> {
    if (!this.enabled) {
      throw dvsError('ENOTSUP', `isolation is off on node ${this.o.nodeId} (${this.status().reason})`);
    }
    const store = this.needStore();
    if (spec.limits) parseLimitsText(spec.limits);
    const o = { timeout: STORE_TIMEOUT_MS, ...(signal ? { signal } : {}) };
    if (spec.lan !== undefined) {
      if (!this.underlay) throw this.noUnderlay();
      const others: Record<string, string> = {};
      for (const kv of (await store.get(DC_ISO_PREFIX, { ...o, prefix: true })).kvs) {
        const other = kv.key.slice(DC_ISO_PREFIX.length);
        const v = decodeStored(kv.value);
        if (other !== name && v?.lan) others[other] = v.lan;
      }
      validateLanPrefix(spec.lan, others, await hostPrefixes());
    }
    // Only while no DC has the name: a failed create must never overwrite (or later drop) another's spec.
    const res = await store.txn(
      [{ key: dcNameKey(name), target: 'createRevision', op: '==', value: 0 }],
      [{ op: 'put', key: dcIsoKey(name), value: encodeValue(spec) }],
      [],
      o,
    );
    if (!res.succeeded) throw dvsError('EEXIST', `DC name '${name}' is taken`, { name });
  }

  /** The DC is gone from the store: its spec, LAN members and address claims go too. */
  async dropSpec(name: string, dc: DcId): Promise<void> {
    const store = this.o.store?.();
    if (!store) return;
    const o = { timeout: STORE_TIMEOUT_MS };
    await store.txn(
      [],
      [
        { op: 'delete', key: dcIsoKey(name) },
        { op: 'delete', key: `${DC_LAN_PREFIX}${dc}/`, prefix: true },
        { op: 'delete', key: `${DC_ADDR_PREFIX}${dc}/`, prefix: true },
      ],
      [],
      o,
    );
  }

  /** `dc.set` with a store: merges into `/dvs/dciso/<name>` (every node applies it from its watch). */
  async storeSetLimits(name: string, text: DcLimitsText): Promise<void> {
    const store = this.needStore();
    parseLimitsText(text);
    const o = { timeout: STORE_TIMEOUT_MS };
    for (let attempt = 0; attempt < 16; attempt++) {
      const kv = (await store.get(dcIsoKey(name), o)).kvs[0];
      const cur = (kv && decodeStored(kv.value)) ?? {};
      const next: StoredIsolation = { ...cur, limits: { ...cur.limits, ...text } };
      const res = await store.txn(
        [{ key: dcIsoKey(name), target: 'modRevision', op: '==', value: kv?.modRevision ?? 0 }],
        [{ op: 'put', key: dcIsoKey(name), value: encodeValue(next) }],
        [],
        o,
      );
      if (res.succeeded) return;
    }
    throw dvsError('EBUSY', `could not change the limits of DC '${name}': too many concurrent changes`);
  }

  /**
   * A DC arrived from the store: its container with the stored limits, and (if it has a LAN) an address
   * claimed in the store, this node's member record, and the other members as forwarding entries.
   */
  ensureFromStore(cfg: DcConfig): Promise<void> {
    const p = this.applyFromStore(cfg);
    this.applying.add(p);
    const done = () => this.applying.delete(p);
    p.then(done, done);
    return p;
  }

  private async applyFromStore(cfg: DcConfig): Promise<void> {
    const store = this.o.store?.();
    if (!store || !this.enabled) return this.ensureDc(cfg);
    const o = { timeout: STORE_TIMEOUT_MS };
    const kv = (await store.get(dcIsoKey(cfg.name), o)).kvs[0];
    const stored = kv ? decodeStored(kv.value) : undefined;
    let lan: { prefix: string; address: string } | undefined;
    if (stored?.lan !== undefined) {
      // Never a DC without its LAN: the failure is logged by the caller and shown by `dc show`.
      if (!this.underlay) throw this.noUnderlay();
      lan = { prefix: stored.lan, address: await this.claimAddress(store, cfg.id, stored.lan) };
    }
    await this.ensureDc(cfg, {
      ...(stored?.limits ? { limits: stored.limits } : {}),
      ...(lan ? { lan } : {}),
    });
    if (lan) await this.refreshPeers(cfg.id);
  }

  /** This node's address on DC `dc`'s LAN: the one it holds, or the lowest free one, claimed in one txn. */
  private async claimAddress(store: ClusterStore, dc: DcId, prefix: string): Promise<string> {
    const o = { timeout: STORE_TIMEOUT_MS };
    const mine = (await store.get(dcLanKey(dc, this.o.nodeId), o)).kvs[0];
    const held = mine ? decodeMember(mine.value) : undefined;
    if (held) return held.address;
    for (let attempt = 0; attempt < 64; attempt++) {
      const used = (await store.get(`${DC_ADDR_PREFIX}${dc}/`, { ...o, prefix: true })).kvs.map((k) =>
        k.key.slice(`${DC_ADDR_PREFIX}${dc}/`.length),
      );
      const address = nextFreeAddress(prefix, used);
      const member: LanMember = {
        node: this.o.nodeId,
        underlay: this.underlay?.localIp ?? '',
        mac: containerMac(dc, this.o.nodeId),
        address,
      };
      const res = await store.txn(
        [
          { key: dcAddrKey(dc, address), target: 'createRevision', op: '==', value: 0 },
          { key: dcLanKey(dc, this.o.nodeId), target: 'createRevision', op: '==', value: 0 },
        ],
        [
          { op: 'put', key: dcAddrKey(dc, address), value: encodeValue({ node: this.o.nodeId }) },
          { op: 'put', key: dcLanKey(dc, this.o.nodeId), value: encodeValue(member) },
        ],
        [],
        o,
      );
      if (res.succeeded) return address;
    }
    throw dvsError('EBUSY', `could not claim an address on the LAN of DC ${dc}`);
  }

  /** Forwarding entries of DC `dc` from the store's member records. */
  private async refreshPeers(dc: DcId): Promise<void> {
    const store = this.o.store?.();
    if (!store || !this.specs.get(dc)?.lan) return;
    const kvs = (await store.get(`${DC_LAN_PREFIX}${dc}/`, { timeout: STORE_TIMEOUT_MS, prefix: true })).kvs;
    const members = kvs.flatMap((kv) => decodeMember(kv.value) ?? []);
    await this.chain(dc, () => this.setLanPeers(dc, members));
  }

  /** Limits changed by `dc set` on any node, and LAN members joining or leaving, follow the store. */
  private async watchStore(): Promise<void> {
    const store = this.o.store?.();
    if (!store || !this.enabled || this.mirrors) return;
    const iso = new PrefixMirror<StoredIsolation>({
      store,
      prefix: DC_ISO_PREFIX,
      logger: this.log,
      decode: (kv) => {
        const v = decodeStored(kv.value);
        if (!v) throw dvsError('EPROTO', `bad isolation spec under ${kv.key}`);
        return v;
      },
      onEvents: (evs) => this.onIsoEvents(evs),
    });
    const lan = new PrefixMirror<LanMember>({
      store,
      prefix: DC_LAN_PREFIX,
      logger: this.log,
      decode: (kv) => {
        const v = decodeMember(kv.value);
        if (!v) throw dvsError('EPROTO', `bad LAN member under ${kv.key}`);
        return v;
      },
      onEvents: (evs) => {
        const dcs = new Set(evs.map((e) => Number(e.key.slice(DC_LAN_PREFIX.length).split('/')[0])));
        for (const dc of dcs) {
          this.refreshPeers(dc).catch((e: unknown) =>
            this.log.warn({ err: e, dc }, 'cannot update the DC LAN forwarding entries'),
          );
        }
      },
    });
    this.mirrors = { iso, lan };
    await iso.start();
    await lan.start();
  }

  private onIsoEvents(evs: MirrorEvent<StoredIsolation>[]): void {
    for (const ev of evs) {
      if (ev.type !== 'put' || !ev.value.limits) continue;
      const name = ev.key.slice(DC_ISO_PREFIX.length);
      const dc = [...this.specs.values()].find((s) => s.name === name)?.dc;
      if (dc === undefined) continue;
      const limits = ev.value.limits;
      this.chain(dc, () => this.setLimits(dc, limits)).catch((e: unknown) =>
        this.log.warn({ err: e, dc }, 'cannot apply DC limits from the store'),
      );
    }
  }

  private noUnderlay(): DvsError {
    return dvsError(
      'ENOTSUP',
      `node ${this.o.nodeId} has no underlay for DC LANs (its link address ${this.o.listen} is not on a LAN interface)`,
    );
  }

  private needStore(): ClusterStore {
    const s = this.o.store?.();
    if (!s) throw dvsError('ENOTCONN', 'no cluster store');
    return s;
  }

  private specOf(dc: DcId): DcSpec {
    const s = this.specs.get(dc);
    if (!s) throw dvsError('ENOENT', `DC ${dc} has no container on node ${this.o.nodeId}`, { dc });
    return s;
  }

  private toSpec(cfg: DcConfig, spec?: DcIsolationSpec): DcSpec {
    const limits: DcLimits = spec?.limits ? parseLimitsText(spec.limits) : {};
    const prev = this.specs.get(cfg.id);
    if (spec?.lan && spec.lan.address === undefined) {
      throw dvsError('EINVAL', `DC '${cfg.name}': a LAN needs this node's address`);
    }
    return {
      dc: cfg.id,
      name: cfg.name,
      limits: spec?.limits ? limits : (prev?.limits ?? {}),
      ...(spec?.lan
        ? { lan: { prefix: spec.lan.prefix, address: spec.lan.address ?? '' } }
        : prev?.lan
          ? { lan: prev.lan }
          : {}),
    };
  }

  private need(): Isolation {
    if (!this.iso) throw dvsError('ENOTCONN', 'isolation not started');
    return this.iso;
  }

  private chain<T>(dc: DcId, op: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(dc) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(op);
    this.chains.set(dc, next);
    void next.then(
      () => this.chains.get(dc) === next && this.chains.delete(dc),
      () => this.chains.get(dc) === next && this.chains.delete(dc),
    );
    return next;
  }

  private async findUnderlay(): Promise<{ dev: string; localIp: string } | undefined> {
    const lan = this.o.lan ?? 'auto';
    if (lan === 'off') return undefined;
    if (lan !== 'auto') return lan;
    const host = this.o.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith('127.') || host === '0.0.0.0') return undefined;
    const out = await new Promise<string>((res) => {
      execFile('ip', ['-o', '-4', 'addr', 'show'], { timeout: 5000 }, (err, stdout) =>
        res(err ? '' : stdout),
      );
    });
    for (const line of out.split('\n')) {
      const m = /^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+\.\d+)\//.exec(line);
      if (m?.[2] === host && m[1] !== undefined) return { dev: m[1].replace(/@.*$/, ''), localIp: host };
    }
    return undefined;
  }
}

/** `{memory: '256M', cpus: 'max'}` -> DcLimits (`max` = remove). Node capacity is checked by Isolation. */
export function parseLimitsText(text: DcLimitsText): DcLimits {
  if (typeof text !== 'object' || text === null) throw dvsError('EINVAL', 'limits must be an object');
  const out: DcLimits = {};
  const rest: Record<string, string> = {};
  for (const [k, v] of Object.entries(text)) {
    if (v === undefined) continue;
    if (String(v) === 'max') {
      const field = LIMIT_FIELD[k];
      if (field === undefined) throw dvsError('EINVAL', `unknown limit '${k}'`);
      out[field] = null;
    } else rest[k] = String(v);
  }
  // Capacity (cores, memory) is validated by Isolation.validate against this node.
  return { ...parseLimits(rest, { cpus: Number.MAX_SAFE_INTEGER }), ...out };
}

const LIMIT_FIELD: Record<string, keyof DcLimits> = {
  memory: 'memoryBytes',
  cpus: 'cpus',
  pids: 'pids',
  'io-bps': 'ioBps',
  'net-bps': 'netBps',
};

/**
 * `d` + 4 base-36 characters of a hash of the data dir and node id: unique among the daemons of a machine
 * (two cannot share a data dir), stable across restarts (so a restarted daemon finds its containers).
 */
export function defaultPrefix(dataDir: string, nodeId: NodeId): string {
  const h = createHash('sha256')
    .update(`${resolve(dataDir)}\0${nodeId}`)
    .digest();
  return `d${(h.readUInt32BE(0) % 36 ** 4).toString(36).padStart(4, '0')}`;
}

/** The pid a host process has in its innermost pid namespace (`NSpid` last field). */
function nsPid(hostPid: number): number | undefined {
  try {
    const m = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${hostPid}/status`, 'utf8'));
    const last = m?.[1]?.trim().split(/\s+/).pop();
    return last === undefined ? undefined : Number(last);
  } catch {
    return undefined;
  }
}

function decodeStored(b: Uint8Array): StoredIsolation | undefined {
  try {
    const v = JSON.parse(Buffer.from(b).toString('utf8')) as StoredIsolation;
    if (typeof v !== 'object' || v === null) return undefined;
    if (v.lan !== undefined && typeof v.lan !== 'string') return undefined;
    if (v.limits !== undefined && (typeof v.limits !== 'object' || v.limits === null)) return undefined;
    return v;
  } catch {
    return undefined;
  }
}

function decodeMember(b: Uint8Array): LanMember | undefined {
  try {
    const v = JSON.parse(Buffer.from(b).toString('utf8')) as LanMember;
    const ok =
      Number.isInteger(v?.node) &&
      typeof v.underlay === 'string' &&
      typeof v.mac === 'string' &&
      typeof v.address === 'string';
    return ok ? v : undefined;
  } catch (e) {
    if (e instanceof DvsError) throw e;
    return undefined;
  }
}

/** The socket dir (`/run/dvs` source) a container's pid 1 was started with, from its command line. */
function initSocketDir(netns: string): string | undefined {
  let pids: string[];
  try {
    pids = execFileSync('ip', ['netns', 'pids', netns], {
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .split(/\s+/)
      .filter(Boolean);
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('dvs-init');
      if (i >= 0) return argv[i + 2];
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}
