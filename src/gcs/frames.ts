/**
 * Validation of GCS frames from peers (a peer is never trusted: a malformed frame is dropped whole).
 * The frame shapes are drawn in types.ts.
 */
import {
  type CfgId,
  type GcsFrame,
  GROUP_NAME_RE,
  type MemberRow,
  type NodeId,
  type Op,
  ORDERS,
  type Order,
  type Recovery,
  type SeqOp,
} from './types.js';

const MAX_NODE = 0xffff;
const MAX_DC = 0xffff;
/**
 * Members are `(node, ep)` with `ep` any safe integer: the daemon packs the DC into it (endpoint numbers are
 * unique only inside a DC, and a node keys its local members by `ep`; src/node/gcs-wiring.ts).
 */
const MAX_EP = Number.MAX_SAFE_INTEGER;

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isNode(x: unknown): x is NodeId {
  return isCount(x) && x <= MAX_NODE;
}

/** A valid DC id (1..65535). */
export function isDc(x: unknown): x is number {
  return isCount(x) && x >= 1 && x <= MAX_DC;
}

/** A valid member endpoint number (a safe non-negative integer). */
export function isEndpoint(x: unknown): x is number {
  return isCount(x) && x <= MAX_EP;
}

/** A valid group name. */
export function isGroupName(x: unknown): x is string {
  return typeof x === 'string' && GROUP_NAME_RE.test(x);
}

/** One of the delivery orders. */
export function isOrder(x: unknown): x is Order {
  return typeof x === 'string' && (ORDERS as readonly string[]).includes(x);
}

function isCfg(x: unknown): x is CfgId {
  return Array.isArray(x) && x.length === 3 && isCount(x[0]) && isNode(x[1]) && isCount(x[2]);
}

function isNodes(x: unknown): x is NodeId[] {
  return Array.isArray(x) && x.length > 0 && x.every(isNode);
}

function isOp(x: unknown): x is Op {
  if (!isObj(x) || !isDc(x.dc) || !isGroupName(x.g) || !isEndpoint(x.ep) || !isCount(x.id)) return false;
  switch (x.k) {
    case 'msg':
      return isOrder(x.o) && x.p instanceof Uint8Array;
    case 'join':
      return true;
    case 'leave':
      return x.r === 'leave' || x.r === 'crash' || x.r === 'expel';
    default:
      return false;
  }
}

function isSeqOp(x: unknown): x is SeqOp {
  return isObj(x) && isCount(x.s) && x.s > 0 && isNode(x.n) && isCount(x.i) && isOp(x.op);
}

function isOrderedOp(e: unknown): boolean {
  return isObj(e) && isNode(e.n) && isCount(e.i) && isOp(e.op);
}

function isSeen(x: unknown): boolean {
  return (
    Array.isArray(x) &&
    x.every((e) => Array.isArray(e) && e.length === 3 && isNode(e[0]) && isCount(e[1]) && isCount(e[2]))
  );
}

function isRow(x: unknown): x is MemberRow {
  return (
    isObj(x) &&
    isNode(x.n) &&
    isDc(x.dc) &&
    isGroupName(x.g) &&
    Array.isArray(x.eps) &&
    x.eps.every(isEndpoint)
  );
}

function isRecovery(x: unknown): x is Recovery {
  return (
    isObj(x) &&
    isCfg(x.cfg) &&
    isCount(x.stable) &&
    typeof x.full === 'boolean' &&
    Array.isArray(x.ops) &&
    x.ops.every(isSeqOp) &&
    (x.tail === undefined || (isCount(x.tail) && x.tail > 0))
  );
}

/** The frame if `x` is a well-formed GCS frame, else undefined. */
export function parseFrame(x: unknown): GcsFrame | undefined {
  if (!isObj(x)) return undefined;
  const ok = ((): boolean => {
    switch (x.t) {
      case 'propose':
        return isCfg(x.id) && isNodes(x.nodes);
      case 'nack':
        return isCfg(x.id) && isCfg(x.promised);
      case 'flushOk':
        return (
          isCfg(x.id) &&
          isCfg(x.cfg) &&
          isNodes(x.old) &&
          isCount(x.recv) &&
          isCount(x.stable) &&
          Array.isArray(x.ops) &&
          x.ops.every(isSeqOp) &&
          Array.isArray(x.members) &&
          x.members.every(isRow) &&
          isSeen(x.seen) &&
          (x.pend === undefined || (Array.isArray(x.pend) && x.pend.every(isOrderedOp)))
        );
      case 'install':
        return (
          isCfg(x.id) &&
          isNodes(x.nodes) &&
          Array.isArray(x.members) &&
          x.members.every(isRow) &&
          Array.isArray(x.recover) &&
          x.recover.every(isRecovery) &&
          isSeen(x.seen)
        );
      case 'wake':
        return true;
      case 'submit':
        return isCfg(x.cfg) && isCount(x.inc) && Array.isArray(x.ops) && x.ops.every(isOp);
      case 'ordered':
        return (
          isCfg(x.cfg) && isCount(x.first) && x.first > 0 && Array.isArray(x.ops) && x.ops.every(isOrderedOp)
        );
      case 'ack':
      case 'stable':
        return isCfg(x.cfg) && isCount(x.seq);
      default:
        return false;
    }
  })();
  return ok ? (x as unknown as GcsFrame) : undefined;
}
