/**
 * The key layout of the cluster services in the {@link ClusterStore}, and the codecs of their values.
 *
 * ```
 * /dvs/
 *   nodes/<node>        NodeRecord   leased: the node's registration lease (gone when the node dies)
 *   dcs/<dc>            DcConfig     durable
 *   dcnames/<name>      DcNameRecord durable; written in the same txn as dcs/<dc> (name uniqueness)
 *   dcnext              DcNextRecord durable; the next DC id to try (allocation hint, CAS-guarded)
 *   dir/<dc>/<ep>       DirRecord    leased: the *hosting* node's registration lease, so a dead node's
 *                                    endpoints vanish with it, in the same revision as nodes/<node>
 *   dciso/<name>        {limits?, lan?}  durable; a DC's limits (text) and LAN prefix, by DC name: written
 *                                    before dcs/<dc>, so a node never applies a DC without them
 *   dclan/<dc>/<node>   LanMember    durable; that node's container on the DC LAN (MAC, underlay, address)
 *   dcaddr/<dc>/<addr>  {node}       durable; address claims (a txn on createRevision: no two containers
 *                                    of a DC get one address)
 *   repl/<dc>/<ep>      ReplRecord   durable; a replicated endpoint's primary/backups or replicas, changed
 *                                    by CAS only (src/node/repl-record.ts: the split-brain fence)
 * ```
 * Numbers are decimal without padding (`/dvs/dir/3/70`). Every prefix a service watches ends in `/`, so
 * `/dvs/dir/1/` never matches `/dvs/dir/12/...`.
 *
 * Values are JSON (UTF-8), not MessagePack: the records are tiny and off the IPC hot path (only bind, unbind,
 * migration, DC changes and node joins write them), and JSON lets an operator read and repair them with
 * `etcdctl get --prefix /dvs/` or any etcd tool. Every read is validated: a value that does not decode to a
 * well-formed record is reported as a DvsError EPROTO by the decoders below, and the services log it and
 * ignore the key (a bad value written by hand or by a newer version never crashes a node).
 */

import type { BindKind, DcConfig, DcId, Endpoint, NodeId } from '../kernel/types.js';
import { MAX_ENDPOINT } from '../kernel/types.js';
import { dvsError } from '../protocol/errors.js';
import { validateDcConfig } from './dc-config.js';

/** Root of every dvs key. */
export const ROOT = '/dvs/';
/** Prefix of the node registrations. */
export const NODES_PREFIX = '/dvs/nodes/';
/** Prefix of the DC configurations. */
export const DCS_PREFIX = '/dvs/dcs/';
/** Prefix of the DC name index. */
export const DC_NAMES_PREFIX = '/dvs/dcnames/';
/** The DC id allocation hint. */
export const DC_NEXT_KEY = '/dvs/dcnext';
/** Prefix of the endpoint directory. */
export const DIR_PREFIX = '/dvs/dir/';

/** Key of node `id`'s registration. */
export const nodeKey = (id: NodeId): string => `${NODES_PREFIX}${id}`;
/** Key of DC `id`'s configuration. */
export const dcKey = (id: DcId): string => `${DCS_PREFIX}${id}`;
/** Key of the name index entry of DC `name`. */
export const dcNameKey = (name: string): string => `${DC_NAMES_PREFIX}${name}`;
/** Key of endpoint `ep` of DC `dc` in the directory. */
export const dirKey = (dc: DcId, ep: Endpoint): string => `${DIR_PREFIX}${dc}/${ep}`;
/** Prefix of every directory entry of DC `dc`. */
export const dirDcPrefix = (dc: DcId): string => `${DIR_PREFIX}${dc}/`;
/** Prefix of the DCs' isolation specs (by DC name; src/node/isolation-wiring.ts). */
export const DC_ISO_PREFIX = '/dvs/dciso/';
/** Prefix of the DC LAN members. */
export const DC_LAN_PREFIX = '/dvs/dclan/';
/** Prefix of the DC LAN address claims. */
export const DC_ADDR_PREFIX = '/dvs/dcaddr/';
/** Key of DC `name`'s isolation spec. */
export const dcIsoKey = (name: string): string => `${DC_ISO_PREFIX}${name}`;
/** Key of node `node`'s container on DC `dc`'s LAN. */
export const dcLanKey = (dc: DcId, node: NodeId): string => `${DC_LAN_PREFIX}${dc}/${node}`;
/** Key of the claim on `address` of DC `dc`'s LAN. */
export const dcAddrKey = (dc: DcId, address: string): string => `${DC_ADDR_PREFIX}${dc}/${address}`;

const DECIMAL = /^(0|[1-9][0-9]*)$/;

function intIn(s: string | undefined, min: number, max: number): number | undefined {
  if (s === undefined || !DECIMAL.test(s)) return undefined;
  const n = Number(s);
  return n >= min && n <= max ? n : undefined;
}

/** Node id of a `/dvs/nodes/<id>` key, or undefined if the key is not one. */
export function parseNodeKey(key: string): NodeId | undefined {
  return key.startsWith(NODES_PREFIX) ? intIn(key.slice(NODES_PREFIX.length), 0, 65535) : undefined;
}

/** DC id of a `/dvs/dcs/<id>` key, or undefined. */
export function parseDcKey(key: string): DcId | undefined {
  return key.startsWith(DCS_PREFIX) ? intIn(key.slice(DCS_PREFIX.length), 1, 65535) : undefined;
}

/** `{dc, ep}` of a `/dvs/dir/<dc>/<ep>` key, or undefined. */
export function parseDirKey(key: string): { dc: DcId; ep: Endpoint } | undefined {
  if (!key.startsWith(DIR_PREFIX)) return undefined;
  const parts = key.slice(DIR_PREFIX.length).split('/');
  if (parts.length !== 2) return undefined;
  const dc = intIn(parts[0], 1, 65535);
  const ep = intIn(parts[1], 0, MAX_ENDPOINT);
  return dc === undefined || ep === undefined ? undefined : { dc, ep };
}

// ------------------------------------------------------------------------------------------------ records

/** `/dvs/nodes/<id>`: a registered (live) node. */
export interface NodeRecord {
  id: NodeId;
  name: string;
  /** Node-link address, host:port. */
  address: string;
  /** Random per daemon start: tells a restarted node from the one that was there before. */
  incarnation: string;
  /** When this incarnation registered, ms since the epoch (its clock). */
  startedAt: number;
}

/** `/dvs/dcnames/<name>`: the id of the DC that has the name. */
export interface DcNameRecord {
  id: DcId;
}

/** `/dvs/dcnext`: where the next DC id search starts. */
export interface DcNextRecord {
  next: DcId;
}

/** Bind kinds a directory entry may carry (`remote` is a cache state, never stored). */
export type DirKind = Exclude<BindKind, 'remote'>;
const DIR_KINDS: readonly string[] = ['self', 'local', 'backup', 'replica'];

/** `/dvs/dir/<dc>/<ep>`: where an endpoint lives. */
export interface DirRecord {
  /** The node that hosts the endpoint. */
  node: NodeId;
  kind: DirKind;
  /** Registered name of the endpoint (`fs`, `pm`, `ep70`). */
  name: string;
  /** OS pid on the hosting node (-1 if unknown). */
  pid: number;
  /** Incremented by every move; 0 when first bound. Lets a kernel order the locations it hears of. */
  epoch: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** Encode a record as the JSON bytes stored in a value. */
export function encodeValue(v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v));
}

function parseObject(bytes: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(bytes));
  } catch {
    throw dvsError('EPROTO', `${what}: value is not UTF-8 JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw dvsError('EPROTO', `${what}: value is not a JSON object`);
  }
  return v as Record<string, unknown>;
}

function int(o: Record<string, unknown>, f: string, what: string, min: number, max: number): number {
  const v = o[f];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw dvsError('EPROTO', `${what}: field '${f}' must be an integer in ${min}..${max}`);
  }
  return v;
}

function str(o: Record<string, unknown>, f: string, what: string, maxLen: number): string {
  const v = o[f];
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLen) {
    throw dvsError('EPROTO', `${what}: field '${f}' must be a string of 1..${maxLen} characters`);
  }
  return v;
}

/** Decode and validate a NodeRecord (EPROTO if malformed). */
export function decodeNodeRecord(bytes: Uint8Array): NodeRecord {
  const what = 'node record';
  const o = parseObject(bytes, what);
  return {
    id: int(o, 'id', what, 0, 65535),
    name: str(o, 'name', what, 256),
    address: str(o, 'address', what, 512),
    incarnation: str(o, 'incarnation', what, 128),
    startedAt: int(o, 'startedAt', what, 0, Number.MAX_SAFE_INTEGER),
  };
}

/** Decode and validate a DcConfig (EPROTO if malformed; the rules are the daemon's validateDcConfig). */
export function decodeDcConfig(bytes: Uint8Array): DcConfig {
  const o = parseObject(bytes, 'dc config');
  try {
    return validateDcConfig(o);
  } catch (e) {
    throw dvsError('EPROTO', `dc config: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Decode and validate a DcNameRecord. */
export function decodeDcNameRecord(bytes: Uint8Array): DcNameRecord {
  return { id: int(parseObject(bytes, 'dc name record'), 'id', 'dc name record', 1, 65535) };
}

/** Decode and validate a DcNextRecord. */
export function decodeDcNextRecord(bytes: Uint8Array): DcNextRecord {
  return { next: int(parseObject(bytes, 'dc next record'), 'next', 'dc next record', 1, 65535) };
}

/** Decode and validate a DirRecord. */
export function decodeDirRecord(bytes: Uint8Array): DirRecord {
  const what = 'directory entry';
  const o = parseObject(bytes, what);
  const kind = o.kind;
  if (typeof kind !== 'string' || !DIR_KINDS.includes(kind)) {
    throw dvsError('EPROTO', `${what}: field 'kind' must be one of ${DIR_KINDS.join(', ')}`);
  }
  return {
    node: int(o, 'node', what, 0, 65535),
    kind: kind as DirKind,
    name: str(o, 'name', what, 256),
    pid: int(o, 'pid', what, -1, 2 ** 31 - 1),
    epoch: int(o, 'epoch', what, 0, Number.MAX_SAFE_INTEGER),
  };
}
