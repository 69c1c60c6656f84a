/**
 * Conversions between the ClusterStore types and etcd's protobuf messages (as the `etcd3` client loads them:
 * 64-bit integers as decimal strings, bytes as Buffers).
 */
import type { ICompare, IKeyValue, IRequestOp, IResponseOp } from 'etcd3';
import { DvsError } from '../../protocol/errors.js';
import type { Compare, KeyValue, TxnOp } from '../store.js';

// Numeric values of etcd's CompareResult / CompareTarget enums (rpc.proto), written out so this module needs
// no runtime import of the client.
const RESULT = { '==': 0, '>': 1, '<': 2, '!=': 3 } as const;
const TARGET = { version: 0, createRevision: 1, modRevision: 2, value: 3, lease: 4 } as const;

/** A key as etcd bytes. */
export function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

/** Bytes of a value, without copying. */
export function valueBytes(v: Uint8Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * The etcd range of a key or of every key under a prefix: `[prefix, prefix+1)`, where +1 increments the last
 * byte below 0xff; the empty prefix is the whole key space (`'\0'`, `'\0'`).
 */
export function rangeOf(key: string, prefix: boolean | undefined): { key: Buffer; range_end?: Buffer } {
  const k = keyBytes(key);
  if (!prefix) {
    if (k.length === 0) throw new DvsError('EINVAL', 'empty key', { key });
    return { key: k };
  }
  if (k.length === 0) return { key: Buffer.from([0]), range_end: Buffer.from([0]) };
  const end = Buffer.from(k);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return { key: k, range_end: end.subarray(0, i + 1) };
    }
  }
  // Every byte is 0xff: the prefix covers everything from it to the end of the key space.
  return { key: k, range_end: Buffer.from([0]) };
}

/** An etcd key-value as a store KeyValue (plain Uint8Array value, numbers, lease '0' dropped). */
export function toKeyValue(kv: IKeyValue): KeyValue {
  const out: KeyValue = {
    key: kv.key.toString('utf8'),
    // A copy into a plain Uint8Array: callers compare values structurally, and a Buffer is a different type.
    value: new Uint8Array(kv.value ?? []),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
  };
  if (kv.lease !== undefined && kv.lease !== '0' && kv.lease !== '') out.lease = kv.lease;
  return out;
}

/** A lease id as etcd takes it; '0' means none. */
export function leaseId(lease: string | undefined): string {
  if (lease === undefined || lease === '') return '0';
  if (!/^\d{1,20}$/.test(lease))
    throw new DvsError('EINVAL', `bad lease id ${JSON.stringify(lease)}`, { lease });
  return lease;
}

/** A store Compare as an etcd Compare. */
export function toCompare(c: Compare): ICompare {
  const result = RESULT[c.op];
  const target = TARGET[c.target];
  if (result === undefined || target === undefined) {
    throw new DvsError('EINVAL', `bad compare ${c.target} ${c.op}`, { key: c.key });
  }
  const base: ICompare = { key: keyBytes(c.key), result, target };
  switch (c.target) {
    case 'value':
      if (!(c.value instanceof Uint8Array)) throw badCompare(c, 'bytes');
      return { ...base, value: valueBytes(c.value) };
    case 'lease':
      if (typeof c.value !== 'string') throw badCompare(c, 'a lease id string');
      return { ...base, lease: leaseId(c.value) };
    default: {
      if (typeof c.value !== 'number' || !Number.isSafeInteger(c.value) || c.value < 0) {
        throw badCompare(c, 'a non-negative integer');
      }
      const n = String(c.value);
      if (c.target === 'version') return { ...base, version: n };
      if (c.target === 'createRevision') return { ...base, create_revision: n };
      return { ...base, mod_revision: n };
    }
  }
}

function badCompare(c: Compare, want: string): DvsError {
  return new DvsError('EINVAL', `compare on ${c.target} of ${JSON.stringify(c.key)} needs ${want}`, {
    key: c.key,
    target: c.target,
  });
}

/** A store TxnOp as an etcd RequestOp. Deletes ask for the deleted pairs (the contract returns them). */
export function toRequestOp(op: TxnOp): IRequestOp {
  switch (op.op) {
    case 'put':
      return {
        request_put: {
          key: rangeOf(op.key, false).key,
          value: valueBytes(op.value),
          lease: leaseId(op.lease),
        },
      };
    case 'delete':
      return { request_delete_range: { ...rangeOf(op.key, op.prefix), prev_kv: true } };
    case 'get':
      return { request_range: { ...rangeOf(op.key, op.prefix), limit: String(op.limit ?? 0) } };
    default:
      throw new DvsError('EINVAL', `bad txn op ${JSON.stringify((op as { op?: unknown }).op)}`);
  }
}

/** The keys an op's response carries: read (get), deleted (delete), none (put). */
export function fromResponseOp(r: IResponseOp): { kvs: KeyValue[] } {
  if (r.response_range) return { kvs: (r.response_range.kvs ?? []).map(toKeyValue) };
  if (r.response_delete_range) return { kvs: (r.response_delete_range.prev_kvs ?? []).map(toKeyValue) };
  return { kvs: [] };
}

/** True if any op writes. */
export function writes(ops: readonly TxnOp[]): boolean {
  return ops.some((o) => o.op !== 'get');
}
