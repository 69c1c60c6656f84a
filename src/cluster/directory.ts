/**
 * The endpoint directory: where every endpoint of every DC lives, in the cluster store
 * (`/dvs/dir/<dc>/<ep>` → {@link DirRecord}), cached on every node through list + watch.
 *
 * Recipes (each one txn, so racing nodes cannot both win):
 * - bind: `createRevision(entry) == 0` (free), `modRevision(/dvs/nodes/<node>) == r` (the hosting node is
 *   registered, with the lease read at r) and `createRevision(/dvs/dcs/<dc>) != 0` (the DC exists); the entry
 *   is put with the hosting node's registration lease, so when a node dies its endpoints vanish in the same
 *   revision as its membership record. A loser gets EBOUND naming the current owner. Binding again what is
 *   already there (same node, kind and pid) succeeds: it resolves a write whose answer was lost.
 * - unbind: only the node that hosts an entry may remove it (EPERM otherwise); CAS on the entry's modRevision.
 * - move (migration commit): CAS on the entry's modRevision and on the destination's registration; the entry
 *   moves to the destination's lease and its `epoch` increments. EMOVED (with `details.node`) if the entry is
 *   not on `fromNode` any more.
 *
 * The cache answers `lookup()` without touching the store (the store is never on the IPC hot path); kernels
 * follow it through `onChange` (bind / unbind / move). A kernel whose cache is stale bounces a frame with
 * EMOVED and the current location, which this directory holds. While the store is unreachable the cache keeps
 * its last state and `healthy` is false.
 *
 * Entries that this node bound for itself are remembered: when the node's registration lease was lost and it
 * registered again, `reassert()` puts them back (the daemon calls it from Membership's `onRegistered`).
 */
import type { Logger } from 'pino';
import type { DcId, Endpoint, NodeId } from '../kernel/types.js';
import { MAX_ENDPOINT } from '../kernel/types.js';
import { DvsError, dvsError } from '../protocol/errors.js';
import {
  DIR_PREFIX,
  type DirKind,
  type DirRecord,
  dcKey,
  decodeDirRecord,
  decodeNodeRecord,
  dirKey,
  encodeValue,
  nodeKey,
  parseDirKey,
} from './keys.js';
import { type MirrorEvent, PrefixMirror } from './mirror.js';
import type { ClusterStore, KeyValue, StoreCallOptions, TxnResult } from './store.js';

/** A directory entry with its place and the revision that wrote it. */
export interface DirEntry extends DirRecord {
  dc: DcId;
  ep: Endpoint;
  /** modRevision of the entry: later writes have higher revisions. */
  revision: number;
}

/** A change of the directory, as every node sees it. `unbind` also reports entries of a node that died. */
export type DirChange =
  | { type: 'bind'; dc: DcId; ep: Endpoint; entry: DirEntry }
  | { type: 'unbind'; dc: DcId; ep: Endpoint; prev: DirEntry }
  | { type: 'move'; dc: DcId; ep: Endpoint; from: NodeId; entry: DirEntry };

/** What bind() records. */
export interface BindInfo {
  /** Hosting node. */
  node: NodeId;
  /** Default `self`. */
  kind?: DirKind;
  /** Default `ep<N>`. */
  name?: string;
  /** OS pid on the hosting node (default -1: unknown). */
  pid?: number;
}

/** Options of {@link Directory}. */
export interface DirectoryOptions {
  store: ClusterStore;
  /** This node: its own bindings are remembered for reassert(). */
  nodeId: NodeId;
  logger: Logger;
  /** Every change, after the cache is updated (catch-up changes included). */
  onChange?: (ev: DirChange) => void;
  /** Called when the directory loses or regains the store. */
  onHealth?: (healthy: boolean, why?: string) => void;
  /** Default timeout of a store call, ms (default 5000). */
  callTimeoutMs?: number;
}

const MAX_ATTEMPTS = 32;

function checkIds(dc: DcId, ep: Endpoint): void {
  if (!Number.isInteger(dc) || dc < 1 || dc > 65535) throw dvsError('EINVAL', `bad DC id ${dc}`);
  if (!Number.isInteger(ep) || ep < 0 || ep > MAX_ENDPOINT) throw dvsError('EINVAL', `bad endpoint ${ep}`);
}

function sameRecord(a: DirRecord, b: DirRecord): boolean {
  return (
    a.node === b.node && a.kind === b.kind && a.name === b.name && a.pid === b.pid && a.epoch === b.epoch
  );
}

function isAmbiguous(e: unknown): boolean {
  return e instanceof DvsError && e.details?.ambiguous === true;
}

function describe(dc: DcId, ep: Endpoint, r: DirRecord): string {
  return `endpoint ${ep} of DC ${dc} is bound on node ${r.node} (name ${r.name}, pid ${r.pid})`;
}

/** The endpoint directory over the cluster store, with its local cache. */
export class Directory {
  private readonly store: ClusterStore;
  private readonly log: Logger;
  private readonly nodeId: NodeId;
  private readonly timeout: number;
  private readonly o: DirectoryOptions;
  private readonly mirror: PrefixMirror<DirRecord>;
  /** What this node bound for itself and has not unbound: key -> record. */
  private readonly owned = new Map<string, DirEntry>();

  constructor(opts: DirectoryOptions) {
    this.o = opts;
    this.store = opts.store;
    this.log = opts.logger;
    this.nodeId = opts.nodeId;
    this.timeout = opts.callTimeoutMs ?? 5000;
    this.mirror = new PrefixMirror<DirRecord>({
      store: this.store,
      prefix: DIR_PREFIX,
      logger: this.log,
      callTimeoutMs: this.timeout,
      decode: (kv) => {
        if (parseDirKey(kv.key) === undefined) throw dvsError('EPROTO', `not a directory key: ${kv.key}`);
        return decodeDirRecord(kv.value);
      },
      onEvents: (evs) => this.onEvents(evs),
      ...(opts.onHealth ? { onHealth: opts.onHealth } : {}),
    });
  }

  /** List the directory and watch it; `onChange` gets a `bind` for every entry already there. */
  async start(signal?: AbortSignal): Promise<void> {
    await this.mirror.start(signal);
  }

  /** Stop watching (the cache stays readable). */
  async stop(): Promise<void> {
    this.mirror.stop();
  }

  /** False while the store is unreachable (lookups then answer from the last known state). */
  get healthy(): boolean {
    return this.mirror.healthy;
  }

  /** Where `ep` of `dc` lives, from the cache. */
  lookup(dc: DcId, ep: Endpoint): DirEntry | undefined {
    const e = this.mirror.get(dirKey(dc, ep));
    return e ? this.entry(e.kv, e.value) : undefined;
  }

  /** Every cached entry (of one DC if given), sorted by DC then endpoint. */
  entries(dc?: DcId): DirEntry[] {
    const out: DirEntry[] = [];
    for (const e of this.mirror.entries()) {
      const ent = this.entry(e.kv, e.value);
      if (dc === undefined || ent.dc === dc) out.push(ent);
    }
    return out.sort((a, b) => a.dc - b.dc || a.ep - b.ep);
  }

  /**
   * Record that `ep` of `dc` lives on `info.node`. EBOUND (naming the owner, `details.node`) if it is bound
   * elsewhere, ENOTCONN if the node is not registered, ENOENT if the DC does not exist.
   */
  async bind(dc: DcId, ep: Endpoint, info: BindInfo, opts: StoreCallOptions = {}): Promise<DirEntry> {
    checkIds(dc, ep);
    const rec: DirRecord = {
      node: info.node,
      kind: info.kind ?? 'self',
      name: info.name ?? `ep${ep}`,
      pid: info.pid ?? -1,
      epoch: 0,
    };
    const o = this.callOpts(opts);
    const key = dirKey(dc, ep);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const nodeKv = await this.registration(info.node, o);
      let res: TxnResult;
      try {
        res = await this.store.txn(
          [
            { key, target: 'createRevision', op: '==', value: 0 },
            { key: nodeKv.key, target: 'modRevision', op: '==', value: nodeKv.modRevision },
            { key: dcKey(dc), target: 'createRevision', op: '!=', value: 0 },
          ],
          [{ op: 'put', key, value: encodeValue(rec), lease: nodeKv.lease ?? '0' }],
          [
            { op: 'get', key },
            { op: 'get', key: dcKey(dc) },
          ],
          o,
        );
      } catch (e) {
        if (isAmbiguous(e)) continue; // the next round finds our entry (same record: success) or none
        throw e;
      }
      if (res.succeeded) {
        const ent = { ...rec, dc, ep, revision: res.revision };
        if (rec.node === this.nodeId) this.owned.set(key, ent);
        return ent;
      }
      if (res.results[1]?.kvs.length === 0) throw dvsError('ENOENT', `no DC ${dc}`, { dc });
      const cur = res.results[0]?.kvs[0];
      if (cur === undefined) continue; // the node re-registered between our read and the txn
      const have = this.tryDecode(cur);
      if (have && have.node === rec.node && have.kind === rec.kind && have.pid === rec.pid) {
        const ent = { ...have, dc, ep, revision: cur.modRevision };
        if (rec.node === this.nodeId) this.owned.set(key, ent);
        return ent;
      }
      if (have === undefined) {
        throw dvsError('EBOUND', `endpoint ${ep} of DC ${dc} has a malformed directory entry`, { dc, ep });
      }
      throw dvsError('EBOUND', describe(dc, ep, have), { dc, ep, node: have.node, pid: have.pid });
    }
    throw dvsError('EBUSY', `could not bind endpoint ${ep} of DC ${dc}: too many concurrent changes`);
  }

  /**
   * Remove the entry of `ep` if `node` hosts it (EPERM if another node does). Returns false if there was no
   * entry (already unbound, or the node's lease expired).
   */
  async unbind(dc: DcId, ep: Endpoint, node: NodeId, opts: StoreCallOptions = {}): Promise<boolean> {
    checkIds(dc, ep);
    const o = this.callOpts(opts);
    const key = dirKey(dc, ep);
    if (node === this.nodeId) this.owned.delete(key);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const res = await this.store.get(key, o);
      const kv = res.kvs[0];
      if (kv === undefined) return false;
      const have = this.tryDecode(kv);
      if (have !== undefined && have.node !== node) {
        throw dvsError(
          'EPERM',
          `${describe(dc, ep, have)}, not on node ${node}: only its node may unbind it`,
          {
            dc,
            ep,
            node: have.node,
          },
        );
      }
      try {
        const r = await this.store.txn(
          [{ key, target: 'modRevision', op: '==', value: kv.modRevision }],
          [{ op: 'delete', key }],
          [],
          o,
        );
        if (r.succeeded) return true;
      } catch (e) {
        if (!isAmbiguous(e)) throw e;
      }
    }
    throw dvsError('EBUSY', `could not unbind endpoint ${ep} of DC ${dc}: too many concurrent changes`);
  }

  /**
   * Commit a migration: move `ep` of `dc` from `fromNode` to `toNode` (a registered node). EMOVED with
   * `details.node` if it is not on `fromNode`, ENOTBOUND if it is not bound, ENOTCONN if `toNode` is not
   * registered. Moving to where it already is (a retried commit) returns the entry.
   */
  async move(
    dc: DcId,
    ep: Endpoint,
    fromNode: NodeId,
    toNode: NodeId,
    opts: StoreCallOptions = {},
    /** The process now holding the endpoint at `toNode` (its pid, and its name if it changed). */
    holder?: { pid: number; name?: string },
  ): Promise<DirEntry> {
    checkIds(dc, ep);
    const o = this.callOpts(opts);
    const key = dirKey(dc, ep);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const nodeKv = await this.registration(toNode, o);
      const res = await this.store.get(key, o);
      const kv = res.kvs[0];
      const have = kv && this.tryDecode(kv);
      if (kv === undefined || have === undefined) {
        throw dvsError('ENOTBOUND', `endpoint ${ep} of DC ${dc} is not bound`, { dc, ep });
      }
      if (have.node !== fromNode) {
        if (have.node === toNode && fromNode !== toNode) return { ...have, dc, ep, revision: kv.modRevision };
        throw dvsError('EMOVED', `${describe(dc, ep, have)}, not on node ${fromNode}`, {
          dc,
          ep,
          node: have.node,
        });
      }
      const next: DirRecord = {
        ...have,
        node: toNode,
        epoch: have.epoch + 1,
        ...(holder === undefined ? {} : { pid: holder.pid, name: holder.name ?? have.name }),
      };
      try {
        const r = await this.store.txn(
          [
            { key, target: 'modRevision', op: '==', value: kv.modRevision },
            { key: nodeKv.key, target: 'modRevision', op: '==', value: nodeKv.modRevision },
          ],
          [{ op: 'put', key, value: encodeValue(next), lease: nodeKv.lease ?? '0' }],
          [],
          o,
        );
        if (r.succeeded) {
          const ent = { ...next, dc, ep, revision: r.revision };
          if (toNode === this.nodeId) this.owned.set(key, ent);
          else this.owned.delete(key);
          this.log.info({ dc, ep, from: fromNode, to: toNode, epoch: next.epoch }, 'endpoint moved');
          return ent;
        }
      } catch (e) {
        if (!isAmbiguous(e)) throw e;
      }
    }
    throw dvsError('EBUSY', `could not move endpoint ${ep} of DC ${dc}: too many concurrent changes`);
  }

  /**
   * Put back this node's own entries that are missing (after its registration lease was lost and renewed).
   * Entries now bound elsewhere are dropped from this node's list and returned as conflicts: the daemon must
   * unbind them locally.
   */
  async reassert(opts: StoreCallOptions = {}): Promise<{ restored: DirEntry[]; conflicts: DirEntry[] }> {
    const restored: DirEntry[] = [];
    const conflicts: DirEntry[] = [];
    for (const [key, ent] of [...this.owned]) {
      try {
        const got = await this.bind(
          ent.dc,
          ent.ep,
          { node: ent.node, kind: ent.kind, name: ent.name, pid: ent.pid },
          opts,
        );
        restored.push(got);
      } catch (e) {
        if (e instanceof DvsError && (e.code === 'EBOUND' || e.code === 'ENOENT')) {
          this.owned.delete(key);
          conflicts.push(ent);
          this.log.warn({ dc: ent.dc, ep: ent.ep, err: e.message }, 'could not re-assert an endpoint');
        } else {
          throw e;
        }
      }
    }
    return { restored, conflicts };
  }

  // ------------------------------------------------------------------------------------------------ internals

  private callOpts(opts: StoreCallOptions): StoreCallOptions {
    return { timeout: opts.timeout ?? this.timeout, ...(opts.signal ? { signal: opts.signal } : {}) };
  }

  /** The registration of `node` (its lease carries the entries it hosts). ENOTCONN if not registered. */
  private async registration(node: NodeId, o: StoreCallOptions): Promise<KeyValue> {
    const res = await this.store.get(nodeKey(node), o);
    const kv = res.kvs[0];
    let valid = false;
    if (kv?.lease !== undefined) {
      try {
        valid = decodeNodeRecord(kv.value).id === node;
      } catch {
        valid = false;
      }
    }
    if (kv === undefined || !valid) {
      throw dvsError('ENOTCONN', `node ${node} is not a registered (live) member of the cluster`, { node });
    }
    return kv;
  }

  private tryDecode(kv: KeyValue): DirRecord | undefined {
    try {
      return decodeDirRecord(kv.value);
    } catch {
      return undefined;
    }
  }

  private entry(kv: KeyValue, rec: DirRecord): DirEntry {
    const at = parseDirKey(kv.key)!;
    return { ...rec, dc: at.dc, ep: at.ep, revision: kv.modRevision };
  }

  private onEvents(evs: MirrorEvent<DirRecord>[]): void {
    for (const ev of evs) {
      const at = parseDirKey(ev.key);
      if (at === undefined) continue;
      let change: DirChange;
      if (ev.type === 'delete') {
        // `revision` of a vanished entry is its last write (the deletion revision is the batch's).
        const prev: DirEntry = { ...ev.prev, ...at, revision: 0 };
        change = { type: 'unbind', dc: at.dc, ep: at.ep, prev };
      } else {
        const entry = this.entry(ev.kv, ev.value);
        // Moved away from this node (a migration committed by the destination): no longer ours to re-assert.
        if (ev.value.node !== this.nodeId) this.owned.delete(ev.key);
        if (ev.prev !== undefined && sameRecord(ev.prev, ev.value)) continue; // re-asserted as it was
        change =
          ev.prev !== undefined && ev.prev.node !== ev.value.node
            ? { type: 'move', dc: at.dc, ep: at.ep, from: ev.prev.node, entry }
            : { type: 'bind', dc: at.dc, ep: at.ep, entry };
      }
      try {
        this.o.onChange?.(change);
      } catch (e) {
        this.log.error({ err: e }, 'directory onChange callback threw');
      }
    }
  }
}
