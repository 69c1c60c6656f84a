/**
 * The cluster store's record of a replicated endpoint: the fence against split brain (docs/replication.md,
 * "Partitions"). Every node of a DC keeps its own copy of a replica group in memory, changed by messages
 * between daemons; on its own that lets both sides of a network partition change it (both promote a backup,
 * both replace a replica) and serve diverging states. With a cluster store, every change of *who may serve*
 * is first a compare-and-swap of this record, and only the side of a partition that reaches the store (its
 * majority for etcd, the store host's side for the embedded store) can make it.
 *
 * ```
 *   /dvs/repl/<dc>/<ep>   ReplRecord (JSON)   durable; written when the group starts, changed by CAS on
 *                                             its modRevision, deleted when the group ends
 *   primary-backup:  {mode, primary, members: backups, epoch}   epoch +1 at each promotion
 *   state-machine:   {mode, members: replica nodes, epoch}       epoch +1 at each membership change
 * ```
 */
import type { ClusterStore } from '../cluster/store.js';
import type { DcId, Endpoint, NodeId } from '../kernel/types.js';
import { DvsError, dvsError } from '../protocol/errors.js';

/** Prefix of the replicated endpoints' records. */
export const REPL_PREFIX = '/dvs/repl/';
/** Key of the record of endpoint `ep` of DC `dc`. */
export const replKey = (dc: DcId, ep: Endpoint): string => `${REPL_PREFIX}${dc}/${ep}`;

/** What the store says of a replica group. */
export interface ReplRecord {
  mode: 'primary-backup' | 'state-machine';
  /** primary-backup: the node whose process serves; absent for state-machine. */
  primary?: NodeId;
  /** primary-backup: the backups that may be promoted; state-machine: the nodes holding a replica. */
  members: NodeId[];
  epoch: number;
}

/** A record as read, with the revision a CAS compares against. */
export interface ReplRecordAt {
  rec: ReplRecord;
  modRevision: number;
}

/** How long one store call of a record may take, ms. */
const CALL_TIMEOUT_MS = 3000;
/** Attempts of a read-modify-CAS that lost a race with another writer. */
const CAS_ATTEMPTS = 16;

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeReplRecord(r: ReplRecord): Uint8Array {
  return enc.encode(JSON.stringify(r));
}

/** The record in `bytes`, or undefined if it is not one (a hand-written or foreign value). */
export function decodeReplRecord(bytes: Uint8Array): ReplRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const isNode = (x: unknown): x is NodeId => typeof x === 'number' && Number.isInteger(x) && x >= 0;
  if (o.mode !== 'primary-backup' && o.mode !== 'state-machine') return undefined;
  if (!Array.isArray(o.members) || !o.members.every(isNode)) return undefined;
  if (typeof o.epoch !== 'number' || !Number.isInteger(o.epoch) || o.epoch < 1) return undefined;
  if (o.primary !== undefined && !isNode(o.primary)) return undefined;
  return {
    mode: o.mode,
    ...(o.primary !== undefined ? { primary: o.primary } : {}),
    members: [...o.members],
    epoch: o.epoch,
  };
}

/** The record keeper of a node that runs with a cluster store (undefined without one: nothing to fence with). */
export function replRecordsOf(
  cluster: () => { clusterStore: ClusterStore | undefined } | undefined,
): ReplRecords | undefined {
  const store = cluster()?.clusterStore;
  return store === undefined ? undefined : new ReplRecords(store);
}

/**
 * Reads and changes replica group records with compare-and-swap. Every call fails with the store's error
 * (EUNAVAIL, ETIMEDOUT, ENOTCONN, ...) when the store cannot be reached: the caller retries or gives up,
 * and never acts as if the change was made.
 */
export class ReplRecords {
  constructor(private readonly store: ClusterStore) {}

  /** The record of `dc`/`ep`, if any. */
  async get(dc: DcId, ep: Endpoint, signal?: AbortSignal): Promise<ReplRecordAt | undefined> {
    const kv = (
      await this.store.get(replKey(dc, ep), { timeout: CALL_TIMEOUT_MS, ...(signal ? { signal } : {}) })
    ).kvs[0];
    if (kv === undefined) return undefined;
    const rec = decodeReplRecord(kv.value);
    if (rec === undefined) throw dvsError('EPROTO', `bad replica group record under ${kv.key}`);
    return { rec, modRevision: kv.modRevision };
  }

  /**
   * Starts a group's record: its epoch is one more than any record a previous group of the endpoint left
   * (so a process of that group can never pass a CAS of this one). Returns the record written.
   */
  async create(
    dc: DcId,
    ep: Endpoint,
    rec: Omit<ReplRecord, 'epoch'>,
    signal?: AbortSignal,
  ): Promise<ReplRecord> {
    return this.update(dc, ep, (cur) => ({ ...rec, epoch: (cur?.epoch ?? 0) + 1 }), signal);
  }

  /**
   * Read, change, compare-and-swap: `change` gets the current record (undefined if none) and returns the
   * new one, or throws to refuse (its error is thrown as is). Retried when another writer won the race.
   * An ambiguous write (outcome unknown) is re-read: if the record is what we wrote, it landed.
   */
  async update(
    dc: DcId,
    ep: Endpoint,
    change: (cur: ReplRecord | undefined) => ReplRecord,
    signal?: AbortSignal,
  ): Promise<ReplRecord> {
    const key = replKey(dc, ep);
    const o = { timeout: CALL_TIMEOUT_MS, ...(signal ? { signal } : {}) };
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const at = await this.get(dc, ep, signal);
      const next = change(at?.rec);
      const value = encodeReplRecord(next);
      try {
        const r = await this.store.txn(
          [{ key, target: 'modRevision', op: '==', value: at?.modRevision ?? 0 }],
          [{ op: 'put', key, value }],
          [],
          o,
        );
        if (r.succeeded) return next;
      } catch (e) {
        if (!(e instanceof DvsError && e.details?.ambiguous === true)) throw e;
        const now = await this.get(dc, ep, signal);
        if (now !== undefined && sameRecord(now.rec, next)) return next;
      }
    }
    throw dvsError('EBUSY', `the record of endpoint ${ep} of DC ${dc} changes too often`, { dc, ep });
  }

  /** Deletes the record (the group ended). */
  async remove(dc: DcId, ep: Endpoint, signal?: AbortSignal): Promise<void> {
    await this.store.delete(replKey(dc, ep), { timeout: CALL_TIMEOUT_MS, ...(signal ? { signal } : {}) });
  }
}

function sameRecord(a: ReplRecord, b: ReplRecord): boolean {
  // Through the decoder: one key order whatever built the objects.
  const norm = (r: ReplRecord) => JSON.stringify(decodeReplRecord(encodeReplRecord(r)));
  return norm(a) === norm(b);
}
