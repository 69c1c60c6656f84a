/**
 * The DC registry: which DCs exist and on which nodes, in the cluster store (`/dvs/dcs/<id>`,
 * `/dvs/dcnames/<name>`, `/dvs/dcnext`; see keys.ts). Every write is one atomic txn:
 *
 * - create: compares `createRevision == 0` on both the id key and the name key, so ids and names are unique
 *   cluster-wide even when two nodes race; without an explicit id the next free id is allocated in the store
 *   (the `dcnext` hint is CAS-guarded in the same txn; on a lost race the allocation is retried).
 * - remove: deletes the id key, the name key and the DC's directory entries together, guarded on the
 *   config's modRevision.
 * - addNode / rmNode: read-modify-write guarded on modRevision, retried on conflict.
 *
 * Writes whose outcome is unknown (etcd leader change) are resolved by reading back, so a retried create does
 * not fail with EEXIST on its own earlier, committed attempt.
 *
 * Every node's registry mirrors the prefix (list + watch, catching up from a revision after a restart) and
 * reports `create` / `update` / `remove`; the daemon applies them to its kernel (docs/cluster.md).
 */
import type { Logger } from 'pino';
import type { DcConfig, DcId, NodeId } from '../kernel/types.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import { validateDcConfig, validateDcName } from './dc-config.js';
import {
  DC_NEXT_KEY,
  DCS_PREFIX,
  dcKey,
  dcNameKey,
  decodeDcConfig,
  decodeDcNameRecord,
  decodeDcNextRecord,
  dirDcPrefix,
  encodeValue,
  parseDcKey,
} from './keys.js';
import { type MirrorEvent, PrefixMirror } from './mirror.js';
import type { ClusterStore, Compare, KeyValue, StoreCallOptions } from './store.js';

/** A change of the DC registry, as every node sees it. */
export type DcChange =
  | { type: 'create'; dc: DcConfig }
  | { type: 'update'; dc: DcConfig; prev: DcConfig }
  | { type: 'remove'; prev: DcConfig };

/** What create() accepts: a DcConfig whose id (and tuning fields) may be left out. */
export type DcSpec = Omit<DcConfig, 'id' | 'maxPayload' | 'sysEndpoints' | 'postWindow'> &
  Partial<Pick<DcConfig, 'id' | 'maxPayload' | 'sysEndpoints' | 'postWindow'>>;

/** Options of {@link DcRegistry}. */
export interface DcRegistryOptions {
  store: ClusterStore;
  logger: Logger;
  /** Every change, after the local view is updated (catch-up changes included). */
  onChange?: (ev: DcChange) => void;
  /** Called when the registry loses or regains the store. */
  onHealth?: (healthy: boolean, why?: string) => void;
  /** Default timeout of a store call, ms (default 5000). */
  callTimeoutMs?: number;
}

/** Conflicting writers retry this many times before giving up with EBUSY. */
const MAX_ATTEMPTS = 32;

/** The DC registry over the cluster store. */
export class DcRegistry {
  private readonly store: ClusterStore;
  private readonly log: Logger;
  private readonly o: DcRegistryOptions;
  private readonly mirror: PrefixMirror<DcConfig>;
  private readonly timeout: number;

  constructor(opts: DcRegistryOptions) {
    this.o = opts;
    this.store = opts.store;
    this.log = opts.logger;
    this.timeout = opts.callTimeoutMs ?? 5000;
    this.mirror = new PrefixMirror<DcConfig>({
      store: this.store,
      prefix: DCS_PREFIX,
      logger: this.log,
      callTimeoutMs: this.timeout,
      decode: (kv) => {
        const cfg = decodeDcConfig(kv.value);
        if (parseDcKey(kv.key) !== cfg.id) throw dvsError('EPROTO', `dc config id ${cfg.id} under ${kv.key}`);
        return cfg;
      },
      onEvents: (evs) => this.onEvents(evs),
      ...(opts.onHealth ? { onHealth: opts.onHealth } : {}),
    });
  }

  /** List the DCs and watch for changes; `onChange` gets a `create` for each DC already there. */
  async start(signal?: AbortSignal): Promise<void> {
    await this.mirror.start(signal);
  }

  /** Stop watching (the last view stays readable). */
  async stop(): Promise<void> {
    this.mirror.stop();
  }

  /** False while the store is unreachable (list() then returns the last known view). */
  get healthy(): boolean {
    return this.mirror.healthy;
  }

  /** The DCs as of the last revision seen, sorted by id. */
  list(): DcConfig[] {
    return this.mirror
      .entries()
      .map((e) => e.value)
      .sort((a, b) => a.id - b.id);
  }

  /** A DC by id or name from the local view. */
  get(idOrName: DcId | string): DcConfig | undefined {
    if (typeof idOrName === 'number') return this.mirror.get(dcKey(idOrName))?.value;
    return this.list().find((d) => d.name === idOrName);
  }

  /**
   * Create a DC. Without `spec.id`, the next free id is allocated in the store. EEXIST if the id or the
   * name is taken (the message names the DC holding it), EINVAL on a bad config, ENOSPC if no id is free.
   */
  async create(spec: DcSpec, opts: StoreCallOptions = {}): Promise<DcConfig> {
    const o = this.callOpts(opts);
    // Validate everything but the id before touching the store.
    validateDcConfig({ ...spec, id: spec.id ?? 1 });
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const hint = await this.store.get(DC_NEXT_KEY, o);
      const hintKv = hint.kvs[0];
      let id = spec.id;
      if (id === undefined) id = await this.freeId(hintKv, o);
      const cfg = validateDcConfig({ ...spec, id });
      const value = encodeValue(cfg);
      const compare: Compare[] = [
        { key: dcKey(id), target: 'createRevision', op: '==', value: 0 },
        { key: dcNameKey(cfg.name), target: 'createRevision', op: '==', value: 0 },
      ];
      const success = [
        { op: 'put' as const, key: dcKey(id), value },
        { op: 'put' as const, key: dcNameKey(cfg.name), value: encodeValue({ id }) },
      ];
      if (spec.id === undefined) {
        // Guard the hint so two allocators cannot both take the id they read from it.
        compare.push({ key: DC_NEXT_KEY, target: 'modRevision', op: '==', value: hintKv?.modRevision ?? 0 });
        success.push({ op: 'put', key: DC_NEXT_KEY, value: encodeValue({ next: id >= 65535 ? 1 : id + 1 }) });
      }
      let res: Awaited<ReturnType<ClusterStore['txn']>>;
      try {
        res = await this.store.txn(
          compare,
          success,
          [
            { op: 'get', key: dcKey(id) },
            { op: 'get', key: dcNameKey(cfg.name) },
          ],
          o,
        );
      } catch (e) {
        if (!(e instanceof DvsError && e.details?.ambiguous === true)) throw e;
        // Did our write land? Read back: the same config under the same id and name means yes.
        const back = await this.store.get(dcKey(id), o);
        const kv = back.kvs[0];
        if (kv && Buffer.from(kv.value).equals(Buffer.from(value))) return cfg;
        continue;
      }
      if (res.succeeded) {
        this.log.info({ dc: cfg.id, name: cfg.name, nodes: cfg.nodes }, 'dc created');
        return cfg;
      }
      const byId = res.results[0]?.kvs[0];
      const byName = res.results[1]?.kvs[0];
      if (byName) {
        const holder = safeDecode(byName, decodeDcNameRecord);
        throw dvsError('EEXIST', `DC name '${cfg.name}' is taken (DC id ${holder?.id ?? '?'})`, {
          name: cfg.name,
        });
      }
      if (byId && spec.id !== undefined) {
        const holder = safeDecode(byId, decodeDcConfig);
        throw dvsError('EEXIST', `DC id ${id} is taken (by '${holder?.name ?? '?'}')`, { id });
      }
      // Lost an allocation race (the hint moved, or the id got taken): allocate again.
    }
    throw dvsError('EBUSY', `could not create DC '${spec.name}': too many concurrent changes, try again`);
  }

  /** Remove a DC (by id or name) and its directory entries. ENOENT if there is none. Returns its config. */
  async remove(idOrName: DcId | string, opts: StoreCallOptions = {}): Promise<DcConfig> {
    const o = this.callOpts(opts);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const { cfg, kv } = await this.read(idOrName, o);
      try {
        const res = await this.store.txn(
          [{ key: kv.key, target: 'modRevision', op: '==', value: kv.modRevision }],
          [
            { op: 'delete', key: kv.key },
            { op: 'delete', key: dcNameKey(cfg.name) },
            { op: 'delete', key: dirDcPrefix(cfg.id), prefix: true },
          ],
          [],
          o,
        );
        if (res.succeeded) {
          this.log.info({ dc: cfg.id, name: cfg.name }, 'dc removed');
          return cfg;
        }
      } catch (e) {
        if (!(e instanceof DvsError && e.details?.ambiguous === true)) throw e;
        // Next round reads again: ENOENT then means our delete landed.
        const back = await this.store.get(kv.key, o);
        if (back.kvs.length === 0) return cfg;
      }
    }
    throw dvsError('EBUSY', `could not remove DC ${String(idOrName)}: too many concurrent changes`);
  }

  /** Add `node` to a DC's nodes (no-op if already there). Returns the new config. */
  addNode(idOrName: DcId | string, node: NodeId, opts: StoreCallOptions = {}): Promise<DcConfig> {
    return this.modify(idOrName, opts, (cfg) =>
      cfg.nodes.includes(node) ? undefined : { ...cfg, nodes: [...cfg.nodes, node] },
    );
  }

  /** Remove `node` from a DC's nodes (no-op if absent; EINVAL if it is the last one). */
  rmNode(idOrName: DcId | string, node: NodeId, opts: StoreCallOptions = {}): Promise<DcConfig> {
    return this.modify(idOrName, opts, (cfg) => {
      if (!cfg.nodes.includes(node)) return undefined;
      if (cfg.nodes.length === 1) {
        throw dvsError('EINVAL', `node ${node} is the last node of DC '${cfg.name}': remove the DC instead`);
      }
      return { ...cfg, nodes: cfg.nodes.filter((n) => n !== node) };
    });
  }

  // ------------------------------------------------------------------------------------------------ internals

  private callOpts(opts: StoreCallOptions): StoreCallOptions {
    return { timeout: opts.timeout ?? this.timeout, ...(opts.signal ? { signal: opts.signal } : {}) };
  }

  /** Read-modify-write of one DC config, guarded on its modRevision. `change` returns undefined for no-op. */
  private async modify(
    idOrName: DcId | string,
    opts: StoreCallOptions,
    change: (cfg: DcConfig) => DcConfig | undefined,
  ): Promise<DcConfig> {
    const o = this.callOpts(opts);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const { cfg, kv } = await this.read(idOrName, o);
      const next = change(cfg);
      if (next === undefined) return cfg;
      const valid = validateDcConfig(next);
      try {
        const res = await this.store.txn(
          [{ key: kv.key, target: 'modRevision', op: '==', value: kv.modRevision }],
          [{ op: 'put', key: kv.key, value: encodeValue(valid) }],
          [],
          o,
        );
        if (res.succeeded) {
          this.log.info({ dc: valid.id, nodes: valid.nodes }, 'dc nodes changed');
          return valid;
        }
      } catch (e) {
        // The change is idempotent (a set of nodes): the next round re-reads and finds it done, or redoes it.
        if (!(e instanceof DvsError && e.details?.ambiguous === true)) throw e;
      }
    }
    throw dvsError('EBUSY', `could not change DC ${String(idOrName)}: too many concurrent changes`);
  }

  /** Linearizable read of a DC by id or name (ENOENT if missing or malformed). */
  private async read(idOrName: DcId | string, o: StoreCallOptions): Promise<{ cfg: DcConfig; kv: KeyValue }> {
    let id: DcId;
    if (typeof idOrName === 'number') id = idOrName;
    else {
      const name = validateDcName(idOrName);
      const n = await this.store.get(dcNameKey(name), o);
      const rec = n.kvs[0] && safeDecode(n.kvs[0], decodeDcNameRecord)?.id;
      if (rec === undefined) throw dvsError('ENOENT', `no DC named '${name}'`, { name });
      id = rec;
    }
    const res = await this.store.get(dcKey(id), o);
    const kv = res.kvs[0];
    const cfg = kv && safeDecode(kv, decodeDcConfig);
    if (kv === undefined || cfg === undefined)
      throw dvsError('ENOENT', `no DC ${String(idOrName)}`, { dc: idOrName });
    return { cfg, kv };
  }

  /** The lowest free DC id at or after the store's hint (wrapping), from a linearizable list. */
  private async freeId(hintKv: KeyValue | undefined, o: StoreCallOptions): Promise<DcId> {
    const start = (hintKv && safeDecode(hintKv, decodeDcNextRecord)?.next) ?? 1;
    const taken = new Set<number>();
    const res = await this.store.get(DCS_PREFIX, { ...o, prefix: true });
    for (const kv of res.kvs) {
      const id = parseDcKey(kv.key);
      if (id !== undefined) taken.add(id);
    }
    for (let i = 0; i < 65535; i++) {
      const id = ((start - 1 + i) % 65535) + 1;
      if (!taken.has(id)) return id;
    }
    throw dvsError('ENOSPC', 'no free DC id (65535 DCs exist)');
  }

  private onEvents(evs: MirrorEvent<DcConfig>[]): void {
    for (const ev of evs) {
      const change: DcChange =
        ev.type === 'delete'
          ? { type: 'remove', prev: ev.prev }
          : ev.prev === undefined
            ? { type: 'create', dc: ev.value }
            : { type: 'update', dc: ev.value, prev: ev.prev };
      try {
        this.o.onChange?.(change);
      } catch (e) {
        this.log.error({ err: e }, 'dc registry onChange callback threw');
      }
    }
  }
}

function safeDecode<T>(kv: KeyValue, decode: (b: Uint8Array) => T): T | undefined {
  try {
    return decode(kv.value);
  } catch {
    return undefined;
  }
}
