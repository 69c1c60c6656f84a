/** A fake node behind the AdminCaller interface: just enough of the admin methods for API tests. */
import type { AdminCaller } from '../../../src/api/caller.js';
import type { DcConfig, EndpointInfo } from '../../../src/kernel/types.js';
import type { EventLog } from '../../../src/node/events.js';
import type {
  AdminMethod,
  AdminMethods,
  LinkInfo,
  NodeLoad,
  NodeStatus,
  ProcessInfo,
} from '../../../src/protocol/admin.js';
import { dvsError } from '../../../src/protocol/errors.js';

export class FakeNode implements AdminCaller {
  readonly dcs = new Map<number, DcConfig>();
  /** Limits in force per DC (`key=value,...`), LAN places, frozen DCs. */
  readonly limits = new Map<number, string>();
  readonly lans = new Map<number, { prefix: string; address: string }>();
  readonly lanPeers = new Map<number, unknown[]>();
  readonly frozen = new Set<number>();
  /** The DC kv (every node shares one, as with a store), locks and groups. */
  kv: Map<string, Uint8Array> = new Map();
  groups: { name: string; epoch: number; members: { node: number; ep: number }[]; sent: number }[] = [];
  snapshots: { name: string; dc: number; dcName: string; node: number; state: Uint8Array }[] = [];
  readonly procs: ProcessInfo[] = [];
  readonly calls: { method: AdminMethod; params: unknown }[] = [];
  down = false;
  /** What `status` reports as the node's load (scheduling), if set. */
  load: NodeLoad | undefined;

  constructor(
    readonly id: number,
    readonly peers: number[],
    readonly events: EventLog,
    readonly store = false,
  ) {}

  async call<M extends AdminMethod>(
    method: M,
    params: AdminMethods[M]['params'],
    _signal: AbortSignal,
  ): Promise<AdminMethods[M]['result']> {
    this.calls.push({ method, params });
    if (this.down) throw dvsError('ENOTCONN', `node ${this.id} is not answering`);
    return this.handle(method, params as Record<string, unknown>) as AdminMethods[M]['result'];
  }

  private find(ref: unknown): DcConfig {
    for (const d of this.dcs.values()) if (d.name === ref || d.id === ref) return d;
    throw dvsError('ENOENT', `no DC '${String(ref)}' on node ${this.id}`);
  }

  private handle(method: AdminMethod, p: Record<string, unknown>): unknown {
    switch (method) {
      case 'status': {
        const links: LinkInfo[] = this.peers.map((n) => ({
          node: n,
          name: `node${n}`,
          address: `127.0.0.1:${7000 + n}`,
          state: 'up',
          framesSent: 10,
          framesReceived: 9,
          bytesSent: 1000,
          bytesReceived: 900,
          retransmits: 0,
          duplicates: 0,
          reconnects: 0,
          rttMs: 0.5,
          unacked: 0,
          sinceMs: 100,
        }));
        const st: NodeStatus = {
          id: this.id,
          name: `node${this.id}`,
          address: `127.0.0.1:${7000 + this.id}`,
          socket: `/tmp/n${this.id}.sock`,
          metrics: null,
          pid: 1000 + this.id,
          incarnation: 'x',
          startedAt: 0,
          uptimeMs: 5,
          version: '0.1.0',
          links,
          dcs: this.dcs.size,
          endpoints: this.procs.filter((x) => x.exit === null).length,
          ...(this.store ? { cluster: { store: 'embedded', degraded: false, members: [] } } : {}),
          ...(this.load ? { load: this.load } : {}),
        };
        return st;
      }
      case 'dc.create': {
        const cfg = p.config as DcConfig;
        if ([...this.dcs.values()].some((d) => d.name === cfg.name))
          throw dvsError('EEXIST', `DC ${cfg.name} exists`);
        const full = { ...cfg, id: cfg.id === 0 ? 9 : cfg.id };
        this.dcs.set(full.id, full);
        const iso = p.isolation as
          | { limits?: Record<string, string>; lan?: { prefix: string; address?: string } }
          | undefined;
        if (iso?.limits)
          this.limits.set(
            full.id,
            Object.entries(iso.limits)
              .map(([k, v]) => `${k}=${v}`)
              .join(','),
          );
        if (iso?.lan) this.lans.set(full.id, { prefix: iso.lan.prefix, address: iso.lan.address ?? '' });
        this.events.emit('dc.created', `dc ${full.name}`, { id: full.id });
        return full;
      }
      case 'dc.remove': {
        const dc = this.find(p.dc);
        this.dcs.delete(dc.id);
        return { killed: [] };
      }
      case 'dc.addNode':
      case 'dc.rmNode':
        if (!this.store) throw dvsError('EINVAL', `${method} needs a cluster store`);
        return this.find(p.dc);
      case 'dc.list':
        return [...this.dcs.values()];
      case 'proc.run': {
        const dc = this.find(p.dc);
        if (this.procs.some((x) => x.dc === dc.id && x.ep === p.ep && x.exit === null)) {
          throw dvsError('EBOUND', `endpoint ${String(p.ep)} is already bound`);
        }
        const info: ProcessInfo = {
          dc: dc.id,
          dcName: dc.name,
          ep: p.ep as number,
          name: (p.name as string | undefined) ?? `ep${String(p.ep)}`,
          pid: 5000 + this.procs.length,
          node: this.id,
          cmd: p.cmd as string[],
          startedAt: Date.now(),
          exit: null,
        };
        this.procs.push(info);
        return info;
      }
      case 'proc.kill': {
        const info = this.procs.find((x) => x.ep === p.ep && x.exit === null);
        if (!info) throw dvsError('ENOENT', 'no process');
        info.exit = { code: null, signal: (p.signal as string | undefined) ?? 'SIGTERM', at: Date.now() };
        return info;
      }
      case 'proc.killGroup': {
        const mine = this.procs.filter((x) => x.ep === p.ep && x.exit === null);
        if (mine.length === 0) throw dvsError('ENOENT', `endpoint ${String(p.ep)} is not replicated`);
        for (const info of mine) {
          info.exit = { code: null, signal: (p.signal as string | undefined) ?? 'SIGTERM', at: Date.now() };
        }
        return { processes: mine, unreachable: [] };
      }
      case 'proc.migrate': {
        const info = this.procs.find((x) => x.ep === p.ep && x.exit === null);
        if (!info) throw dvsError('ENOENT', 'no process');
        return {
          dc: info.dc,
          ep: info.ep,
          from: this.id,
          to: p.to as number,
          pid: { from: info.pid, to: info.pid + 1 },
          stateful: true,
          stateBytes: 8,
          freezeMs: 3,
          totalMs: 40,
        };
      }
      case 'proc.list':
        return this.procs.filter((x) => p.dc === undefined || x.dc === p.dc);
      case 'logs.read':
        return { data: new TextEncoder().encode('hello\n'), offset: 6, running: false };
      case 'ep.list': {
        const dc = this.find(p.dc);
        return this.procs
          .filter((x) => x.dc === dc.id && x.exit === null)
          .map(
            (x): EndpointInfo => ({
              dc: dc.id,
              ep: x.ep,
              name: x.name,
              node: this.id,
              pid: x.pid,
              kind: 'local',
              flags: ['RECEIVING'],
              sendTo: null,
              getFrom: 0x7fffffff,
              queued: 0,
              pendingNotify: 0,
              counters: { lclSent: 3, rmtSent: 2, received: 4, notifies: 0, copyBytes: 0 },
            }),
          );
      }
      case 'events.list':
        return {
          events: this.events.list({
            ...(p.since !== undefined ? { since: p.since as number } : {}),
            ...(p.limit !== undefined ? { limit: p.limit as number } : {}),
          }),
          last: this.events.last,
        };
      case 'dc.isolation': {
        const dc = this.find(p.dc);
        const lan = this.lans.get(dc.id);
        return {
          dc: dc.id,
          node: this.id,
          mode: 'container',
          limits: this.limits.get(dc.id) ?? '',
          running: true,
          ...(lan
            ? {
                lan: {
                  node: this.id,
                  underlay: `127.0.0.1`,
                  mac: `02:00:00:00:00:0${this.id}`,
                  address: lan.address,
                  prefix: lan.prefix,
                },
              }
            : {}),
        };
      }
      case 'dc.lanPeers':
        this.lanPeers.set(this.find(p.dc).id, p.members as unknown[]);
        return { ok: true };
      case 'dc.set': {
        const dc = this.find(p.dc);
        const merged = new Map(
          (this.limits.get(dc.id) ?? '')
            .split(',')
            .filter(Boolean)
            .map((kv) => kv.split('=') as [string, string]),
        );
        for (const [k, v] of Object.entries(p.limits as Record<string, string>)) {
          if (v === 'max') merged.delete(k);
          else merged.set(k, v);
        }
        this.limits.set(dc.id, [...merged].map(([k, v]) => `${k}=${v}`).join(','));
        return this.handle('dc.isolation', { dc: dc.id });
      }
      case 'dc.stats': {
        const dc = this.find(p.dc);
        return {
          dc: dc.id,
          node: this.id,
          mode: 'container',
          limits: this.limits.get(dc.id) ?? '',
          running: true,
          frozen: this.frozen.has(dc.id),
          memory: { usageBytes: 1 << 20, limitBytes: 256 << 20, oomKills: 0 },
          pids: { current: 2, limit: null, refused: 0 },
        };
      }
      case 'dc.pause':
        this.frozen.add(this.find(p.dc).id);
        return { ok: true };
      case 'dc.resume':
        this.frozen.delete(this.find(p.dc).id);
        return { ok: true };
      case 'proc.exec': {
        this.find(p.dc);
        const cmd = p.cmd as string[];
        return {
          code: 0,
          signal: null,
          stdout: `${cmd.join(' ')} on ${this.id}\n`,
          stderr: '',
          oomKilled: false,
        };
      }
      default:
        return this.service(method as string, p);
    }
  }

  /** The DVK service methods the API uses (kv, locks, groups, snapshots), as a daemon with a store. */
  private service(method: string, p: Record<string, unknown>): unknown {
    const needDc = () => {
      this.find(p.dc);
      if (!this.store) throw dvsError('EUNAVAIL', 'DVK services need a cluster store');
    };
    switch (method) {
      case 'kv.get': {
        needDc();
        const v = this.kv.get(p.key as string);
        if (v === undefined) throw dvsError('ENOENT', `no key '${String(p.key)}'`);
        return { key: p.key, value: v, revision: 7, createRevision: 5, version: 2 };
      }
      case 'kv.put':
        needDc();
        if (!(p.value instanceof Uint8Array)) throw dvsError('EINVAL', 'value must be bytes');
        this.kv.set(p.key as string, p.value);
        return { revision: 8 };
      case 'kv.delete':
        needDc();
        return { deleted: this.kv.delete(p.key as string), revision: 9 };
      case 'kv.list':
        needDc();
        return {
          revision: 9,
          entries: [...this.kv]
            .filter(([k]) => k.startsWith(p.prefix as string))
            .sort(([a], [b]) => (a < b ? -1 : 1))
            .map(([key, value]) => ({ key, value, revision: 7, createRevision: 5, version: 1 })),
        };
      case 'lock.ls':
        needDc();
        return [{ name: 'leader', holder: { owner: 'ep100@node1', token: 3, lease: 'l1' }, waiters: [] }];
      case 'group.ls': {
        const dc = this.find(p.dc);
        return {
          node: this.id,
          cfg: [1, 0, 1],
          nodes: [0, 1],
          flushing: false,
          groups: this.groups.map((g) => ({
            node: this.id,
            dc: dc.id,
            name: g.name,
            view: { id: { epoch: g.epoch, coord: 0, inc: 1, seq: 1 }, members: g.members },
            local: g.members.filter((m) => m.node === this.id).map((m) => ({ ep: m.ep, backlog: 0 })),
            sent: g.sent,
            delivered: g.sent,
            views: 1,
          })),
        };
      }
      case 'snapshot.create': {
        const dc = this.find(p.dc);
        const name = (p.name as string | undefined) ?? `${dc.name}-1`;
        this.snapshots.push({
          name,
          dc: dc.id,
          dcName: dc.name,
          node: this.id,
          state: new Uint8Array([1, 2, 3]),
        });
        return this.snapInfo(name);
      }
      case 'snapshot.ls':
        return this.snapshots
          .filter((x) => p.dc === undefined || x.dcName === p.dc || x.dc === p.dc)
          .map((x) => this.snapInfo(x.name));
      case 'snapshot.show': {
        const x = this.snapshots.find((y) => y.name === p.name);
        if (!x) throw dvsError('ENOENT', `no snapshot '${String(p.name)}'`);
        return {
          info: this.snapInfo(x.name),
          procs: [{ ep: 100, node: this.id, hooked: true, state: x.state, proc: null }],
          channels: [],
        };
      }
      case 'snapshot.rm': {
        const i = this.snapshots.findIndex((y) => y.name === p.name);
        if (i < 0) throw dvsError('ENOENT', `no snapshot '${String(p.name)}'`);
        this.snapshots.splice(i, 1);
        return { ok: true };
      }
      case 'snapshot.restore':
      case 'snapshot.fork': {
        const x = this.snapshots.find((y) => y.name === p.snapshot);
        if (!x) throw dvsError('ENOENT', `no snapshot '${String(p.snapshot)}'`);
        return {
          snapshot: x.name,
          dc: { ...this.find(x.dc), ...(method === 'snapshot.fork' ? { name: p.as, id: 5 } : {}) },
          started: [{ ep: 100, node: this.id, pid: 7 }],
          skipped: [],
          messages: 0,
        };
      }
      default:
        throw dvsError('EINVAL', `unknown admin method '${method}'`);
    }
  }

  private snapInfo(name: string) {
    const x = this.snapshots.find((y) => y.name === name)!;
    return {
      name,
      dc: x.dc,
      dcName: x.dcName,
      node: x.node,
      createdAt: 1,
      processes: 1,
      stateful: 1,
      messages: 0,
      bytes: 3,
      durationMs: 2,
    };
  }
}
