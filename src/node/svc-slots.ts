/**
 * SLOTS as a DVK service (`slots.allocate`, `slots.free`, `slots.status`): one {@link SlotsService} per DC
 * hosted by this node, its member joined to the daemon-internal GCS group `.slots` of the DC (one member per
 * node) through {@link GcsSlotsGroup}. docs/slots.md, "In the daemon".
 *
 * Incarnations. A SLOTS member id is `incarnation * 65536 + node`, and the initial owner table gives slots to
 * incarnation 0 of each node, so the incarnation must be 0 on a node's first life in the DC and grow at every
 * later one. It is a counter per DC in `<dataDir>/slots/<dc>.inc`, read and bumped (fsync'd) before the member
 * joins. Wiping the data dir while the rest of the DC lives would reuse an incarnation: don't.
 *
 * The member joins when the DC appears on this node (checked every `pollMs`) and leaves when it goes or the
 * daemon stops (reason leave: its slots go to the primary). A slot is freed only on the node that allocated
 * it. Allocations by the CLI or by a process act on the caller's DC.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { DcConfig, DcId, NodeId } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';
import { GcsSlotsGroup } from '../services/slots/gcs-adapter.js';
import { SlotsService } from '../services/slots/service.js';
import { memberId } from '../services/slots/types.js';
import { decodeEndpoint, type GcsWiring, type InternalMember } from './gcs-wiring.js';
import { callerDc, type ServiceRegistry } from './services.js';

/** The daemon-internal group of a DC's SLOTS members. */
export const SLOTS_GROUP = '.slots';

export interface SlotsServicesOptions {
  nodeId: NodeId;
  dataDir: string;
  gcs: GcsWiring;
  /** DCs hosted by this node now. */
  dcs: () => DcConfig[];
  resolveDc: (ref: DcId | string) => DcId;
  logger: Logger;
  registry?: Registry;
  /** Allocatable slots per DC, from the DC's sysEndpoints on (default: DVS_SLOTS_TOTAL, else 1024). Every
   *  node must agree. */
  total?: number;
  /** How often the hosted DCs are checked, ms (default 250). */
  pollMs?: number;
}

interface DcSlots {
  dc: DcId;
  inc: number;
  svc: SlotsService;
  member: InternalMember;
  /** Slots allocated through this node and not freed. */
  held: Set<number>;
}

/** SLOTS members of the DCs on this node, and the `slots.*` service methods. */
export class SlotsServices {
  private readonly o: SlotsServicesOptions;
  private readonly log: Logger;
  private readonly dcs = new Map<DcId, DcSlots>();
  private readonly starting = new Map<DcId, Promise<DcSlots | undefined>>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(o: SlotsServicesOptions) {
    this.o = o;
    this.log = o.logger.child({ component: 'slots' });
  }

  register(registry: ServiceRegistry): void {
    registry.registerAll('slots', {
      allocate: async (p, ctx) => {
        const s = await this.forDc(callerDc(p, ctx, this.o.resolveDc));
        const timeout = typeof p.timeout === 'number' && p.timeout > 0 ? p.timeout : 5000;
        const slot = await s.svc.allocate({ signal: ctx.signal, timeout });
        s.held.add(slot);
        return { slot, node: this.o.nodeId };
      },
      free: async (p, ctx) => {
        const s = await this.forDc(callerDc(p, ctx, this.o.resolveDc));
        const slot = p.slot;
        if (typeof slot !== 'number' || !s.held.has(slot))
          throw dvsError('ENOENT', `slot ${String(slot)} is not allocated on node ${this.o.nodeId}`);
        s.held.delete(slot);
        s.svc.free(slot);
        return null;
      },
      status: async (p, ctx) => {
        const s = await this.forDc(callerDc(p, ctx, this.o.resolveDc));
        const m = s.svc.member;
        return {
          node: this.o.nodeId,
          dc: s.dc,
          member: m.self,
          incarnation: s.inc,
          phase: m.phase,
          free: m.freeCount,
          used: m.usedCount,
          held: [...s.held].sort((a, b) => a - b),
          stats: { ...m.stats },
        };
      },
    });
  }

  async start(): Promise<void> {
    this.running = true;
    this.timer = setInterval(() => this.sync(), this.o.pollMs ?? 250);
    this.timer.unref();
    this.sync();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const s of this.dcs.values()) this.drop(s);
    this.dcs.clear();
  }

  /** The DC's SLOTS member, started now if the DC is here but its member is still starting. */
  private async forDc(dc: DcId): Promise<DcSlots> {
    if (!this.running) throw dvsError('EUNAVAIL', 'slots service not running');
    const have = this.dcs.get(dc);
    if (have) return have;
    const cfg = this.o.dcs().find((d) => d.id === dc);
    if (cfg === undefined) throw dvsError('ENOENT', `DC ${dc} is not hosted on node ${this.o.nodeId}`);
    const s = await this.ensure(cfg);
    if (s === undefined) throw dvsError('EUNAVAIL', `slots of DC ${dc} could not start`);
    return s;
  }

  private sync(): void {
    if (!this.running) return;
    const here = new Map(this.o.dcs().map((d) => [d.id, d]));
    for (const cfg of here.values())
      if (!this.dcs.has(cfg.id) && cfg.nodes.includes(this.o.nodeId)) void this.ensure(cfg);
    for (const [dc, s] of this.dcs)
      if (!here.has(dc)) {
        this.drop(s);
        this.dcs.delete(dc);
      }
  }

  private ensure(cfg: DcConfig): Promise<DcSlots | undefined> {
    let p = this.starting.get(cfg.id);
    if (p === undefined) {
      p = this.create(cfg).then(
        (s) => {
          this.starting.delete(cfg.id);
          return s;
        },
        (e: unknown) => {
          this.starting.delete(cfg.id);
          this.log.error({ err: e, dc: cfg.id }, 'cannot start slots');
          return undefined;
        },
      );
      this.starting.set(cfg.id, p);
    }
    return p;
  }

  private async create(cfg: DcConfig): Promise<DcSlots | undefined> {
    const inc = await this.nextIncarnation(cfg.id);
    if (!this.running || this.dcs.has(cfg.id)) return this.dcs.get(cfg.id);
    const node = this.o.nodeId;
    let group: GcsSlotsGroup | undefined;
    const early: Parameters<GcsSlotsGroup['onEvent']>[0][] = [];
    const member = this.o.gcs.joinInternal(cfg.id, SLOTS_GROUP, inc, (ev) => {
      if (group) group.onEvent(ev);
      else early.push(ev);
    });
    group = new GcsSlotsGroup({
      self: memberId(node, inc),
      memberId: (m) => {
        const d = decodeEndpoint(m.ep);
        return d.kind === 'internal' && d.dc === cfg.id ? memberId(m.node, d.tag) : undefined;
      },
      multicast: (payload) => member.multicast('agreed', payload),
    });
    for (const ev of early) group.onEvent(ev);
    const svc = new SlotsService({
      group,
      config: { nodes: [...cfg.nodes], firstSlot: cfg.sysEndpoints, total: this.total() },
      dc: cfg.id,
      logger: this.log,
      ...(this.o.registry ? { registry: this.o.registry } : {}),
    });
    svc.start();
    const s: DcSlots = { dc: cfg.id, inc, svc, member, held: new Set() };
    this.dcs.set(cfg.id, s);
    this.log.info({ dc: cfg.id, incarnation: inc, member: group.self }, 'slots member joined');
    return s;
  }

  private drop(s: DcSlots): void {
    s.svc.stop();
    s.member.close();
  }

  /** Slots per DC: the option, else DVS_SLOTS_TOTAL, else 1024. */
  private total(): number {
    const env = Number(process.env.DVS_SLOTS_TOTAL);
    return this.o.total ?? (Number.isInteger(env) && env > 0 ? env : 1024);
  }

  /** This node's next SLOTS life in DC `dc` (0 the first time), persisted before it is used. */
  private async nextIncarnation(dc: DcId): Promise<number> {
    const dir = join(this.o.dataDir, 'slots');
    const file = join(dir, `${dc}.inc`);
    await mkdir(dir, { recursive: true });
    let inc = 0;
    try {
      const n = Number((await readFile(file, 'utf8')).trim());
      if (Number.isInteger(n) && n >= 0) inc = n;
    } catch {
      // first life in this DC
    }
    const fh = await open(file, 'w');
    try {
      await fh.writeFile(`${inc + 1}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return inc;
  }
}
