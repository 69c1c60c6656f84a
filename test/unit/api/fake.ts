/** A fake node behind the AdminCaller interface: just enough of the admin methods for API tests. */
import type { AdminCaller } from '../../../src/api/caller.js';
import type { DcConfig, EndpointInfo } from '../../../src/kernel/types.js';
import type { EventLog } from '../../../src/node/events.js';
import type {
  AdminMethod,
  AdminMethods,
  LinkInfo,
  NodeStatus,
  ProcessInfo,
} from '../../../src/protocol/admin.js';
import { dvsError } from '../../../src/protocol/errors.js';

export class FakeNode implements AdminCaller {
  readonly dcs = new Map<number, DcConfig>();
  readonly procs: ProcessInfo[] = [];
  readonly calls: { method: AdminMethod; params: unknown }[] = [];
  down = false;

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
        };
        return st;
      }
      case 'dc.create': {
        const cfg = p.config as DcConfig;
        if ([...this.dcs.values()].some((d) => d.name === cfg.name))
          throw dvsError('EEXIST', `DC ${cfg.name} exists`);
        const full = { ...cfg, id: cfg.id === 0 ? 9 : cfg.id };
        this.dcs.set(full.id, full);
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
      default:
        throw dvsError('EINVAL', `unknown admin method '${method}'`);
    }
  }
}
