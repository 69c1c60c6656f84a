/**
 * Shapes of the control frames the kernel exchanges (they travel as MessagePack of the object, see
 * types.ts), and cheap validators for fields of frames from peers (a peer is never trusted).
 *
 * | frame       | fields (besides `t`, `dc`)                                  | meaning                                       |
 * |-------------|-------------------------------------------------------------|-----------------------------------------------|
 * | `replyAck`  | src (client), dst (server), op, code                        | outcome of a `reply` (code null = delivered)  |
 * | `cancel`    | src (sender), dst, op, reason                               | withdraw queued send/request `op`             |
 * | `wakeup`    | src, dst                                                    | wakeup(dst)                                   |
 * | `bind`      | ep, kind, name, pid                                         | an endpoint was bound at the sending node     |
 * | `unbind`    | ep                                                          | it was unbound (its process died)             |
 * | `sync`      | dc = 0, dcs: [{dc, eps: [{ep, kind, name, pid}]}]           | every local endpoint, per DC shared with peer |
 * | `syncReq`   | (dc: a DC shared with the receiver)                         | answer with a `sync` (DC created late, link up)|
 * | `postFail`  | src (receiver), dst (sender), code, n, [node, type, payload]| n posts dropped; EMOVED carries one to replay |
 * | `copyReq`   | x, rq, src {ep,grant,offset}, dst {ep,grant,offset}, bytes  | vcopy: requester node -> source node          |
 * | `copyData`  | x, rq, src, dst, grant, offset, end, data                   | one chunk: source node -> destination node    |
 * | `copyAck`   | x, offset, n, code                                          | chunk written (or failed): dest -> source     |
 * | `copyDone`  | x, code                                                     | whole copy done (or failed): source -> rqtr   |
 * | `copyAbort` | x                                                           | requester gave up: requester -> source        |
 */
import { type ErrorCode, isErrorCode } from '../protocol/errors.js';
import { type BindKind, type Endpoint, type GrantRef, MAX_ENDPOINT } from './types.js';

/** An endpoint as `bind` and `sync` describe it. */
export interface EpDesc {
  ep: Endpoint;
  kind: BindKind;
  name: string;
  pid: number;
}

/** A valid endpoint number. */
export function isEp(x: unknown): x is Endpoint {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= MAX_ENDPOINT;
}

/** A non-negative safe integer. */
export function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** A safe integer (any sign). */
export function isInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x);
}

/** null or a stable error code. */
export function isCodeOrNull(x: unknown): x is ErrorCode | null {
  return x === null || isErrorCode(x);
}

/** A well-formed grant reference (the endpoint may still be unbound). */
export function isGrantRef(x: unknown): x is GrantRef {
  if (typeof x !== 'object' || x === null) return false;
  const g = x as Record<string, unknown>;
  return isEp(g.ep) && isInt(g.grant) && isCount(g.offset);
}

/** Parse one endpoint description of a `bind`/`sync` frame, or undefined if malformed. */
export function epDesc(x: unknown): EpDesc | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const o = x as Record<string, unknown>;
  if (!isEp(o.ep) || typeof o.name !== 'string' || !isInt(o.pid)) return undefined;
  const kind = o.kind === 'self' || o.kind === 'local' || o.kind === 'replica' ? o.kind : undefined;
  if (kind === undefined) return undefined;
  return { ep: o.ep, kind, name: o.name, pid: o.pid };
}
