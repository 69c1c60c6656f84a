/**
 * The process <-> node daemon protocol, spoken on the node's local Unix socket by the SDK (processes) and
 * the CLI (admin only).
 *
 * Every frame travels length-prefixed as defined in ./frame.ts (u32 LE length, then the frame body). A
 * body starts with a FIXED 20-byte little-endian header, followed by the op's body bytes (a raw message
 * payload, a UTF-8 error text, or MessagePack for the few control ops):
 *
 * ```
 *  byte  0        1        2        3        4                 8                 12                16               20
 *       +--------+--------+-----------------+-----------------+-----------------+-----------------+-----------------+----------
 *       | op u8  |flags u8| err u16         | callId u32      | peer u32        | type i32        | aux u32         | body ...
 *       +--------+--------+-----------------+-----------------+-----------------+-----------------+-----------------+----------
 * ```
 *
 * `err` is an ERROR_NUMBERS wire number (0 = none). Fields an op does not use must be zero (checked on
 * decode, so garbage is caught early). Per op (→ = process to daemon, ← = daemon to process):
 *
 * | op | # | dir | header fields | body |
 * |---|---|---|---|---|
 * | HELLO          |  1 | → | callId | MessagePack {dc, endpoint, pid, name?, kind?, primaryNode?} |
 * | HELLO_OK       |  2 | ← | callId | MessagePack {node, dc, dcName, endpoint, maxPayload, postWindow} |
 * | SEND           |  3 | → | callId, peer = dst, type | payload |
 * | SENDREC        |  4 | → | callId, peer = dst, type | payload |
 * | RECEIVE        |  5 | → | callId, peer = src or ANY, flags NOWAIT, aux = receive-ahead limit | - |
 * | RECEIVE_REQUEST|  6 | → | callId, flags NOWAIT | - |
 * | REPLY          |  7 | → | callId, peer = dst, type | payload |
 * | NOTIFY         |  8 | → | callId, peer = dst | - |
 * | POST           |  9 | → | peer = dst, type | payload |
 * | WAKEUP         | 10 | → | callId, peer = dst | - |
 * | CANCEL         | 11 | → | callId, err = reason (ETIMEDOUT / EABORTED) | - |
 * | GRANT          | 12 | → | callId, flags = access (1 r, 2 w), peer = size, aux = grant id | - |
 * | REVOKE         | 13 | → | callId, aux = grant id | - |
 * | VCOPY          | 14 | → | callId | MessagePack {src: GrantRef, dst: GrantRef, bytes} |
 * | RESULT         | 15 | ← | callId, err; with flag MSG: peer = source, type, flags bits 2-3 = kind, flag MORE | error: UTF-8 text; message: payload, or for kind notify the timestamp as f64 LE |
 * | CREDIT         | 16 | ← | peer = dst, aux = n | - |
 * | POST_FAILED    | 17 | ← | peer = dst, err = code, aux = n | - |
 * | GRANT_READ     | 18 | ← | callId = xfer, aux = grant, peer = offset, type = length | - |
 * | GRANT_DATA     | 19 | → | callId = xfer, err | data |
 * | GRANT_WRITE    | 20 | ← | callId = xfer, aux = grant, peer = offset | data |
 * | GRANT_WRITTEN  | 21 | → | callId = xfer, err | - |
 * | ADMIN          | 22 | → | - | MessagePack {id, method, params} |
 * | ADMIN_RESULT   | 23 | ← | - | MessagePack {id, result} or {id, error: WireError} |
 * | REPLY_RECEIVE  | 24 | → | callId, peer = dst, type, flags NOWAIT | payload (answered by a RESULT with the next request) |
 * | EVENT          | 25 | ← | callId = subscription id | MessagePack data (a service pushing to a subscriber: watches, group deliveries) |
 *
 * A failed HELLO is answered by a RESULT with the error. RESULT flag MORE marks a receive-ahead message:
 * when a receive (with aux > 0) completes with a post, the daemon takes up to `aux` further posts that are
 * already queued (Kernel.receiveAhead: never a send, request or notification) and sends them flagged MORE;
 * the SDK serves later receives from them. This is what lets
 * one receiver consume a post stream at millions of messages per second with one round trip per batch.
 */
import { Packr } from 'msgpackr';
import type {
  CallId,
  DcId,
  Endpoint,
  GrantAccess,
  GrantRef,
  MsgKind,
  NodeId,
  Received,
} from '../kernel/types.js';
import { ANY, MAX_ENDPOINT, MAX_PAYLOAD_LIMIT } from '../kernel/types.js';
import type { ErrorCode, WireError } from './errors.js';
import { DvsError, ERROR_NUMBERS, errorCodeOf, isErrorCode } from './errors.js';
import type { FrameWriterOptions } from './frame.js';
import { FRAME_HEADER_BYTES, FrameWriter } from './frame.js';

/** Size of the fixed header of every process-protocol frame body. */
export const PROC_HEADER_SIZE = 20;

/** Wire numbers of the ops (append-only). */
export const PROC_OPS = {
  hello: 1,
  helloOk: 2,
  send: 3,
  sendrec: 4,
  receive: 5,
  receiveRequest: 6,
  reply: 7,
  notify: 8,
  post: 9,
  wakeup: 10,
  cancel: 11,
  grant: 12,
  revoke: 13,
  vcopy: 14,
  result: 15,
  credit: 16,
  postFailed: 17,
  grantRead: 18,
  grantData: 19,
  grantWrite: 20,
  grantWritten: 21,
  admin: 22,
  adminResult: 23,
  replyReceive: 24,
  event: 25,
} as const;
export type ProcOp = keyof typeof PROC_OPS;

/** RECEIVE / RECEIVE_REQUEST: do not wait. */
export const FLAG_NOWAIT = 0x01;
/** RESULT: carries a message. */
export const FLAG_MSG = 0x01;
/** RESULT: receive-ahead message (not the answer to a pending call). */
export const FLAG_MORE = 0x10;
/** GRANT access bits. */
export const FLAG_READ = 0x01;
export const FLAG_WRITE = 0x02;

const KIND_SHIFT = 2;
const KINDS: readonly MsgKind[] = ['send', 'request', 'post', 'notify'];
const KIND_BITS: Readonly<Record<MsgKind, number>> = { send: 0, request: 1, post: 2, notify: 3 };
const U32_MAX = 0xffffffff;
const I32_MIN = -0x80000000;
const I32_MAX = 0x7fffffff;

/** HELLO: a process asks to take endpoint `endpoint` of DC `dc` (id or name). */
export interface HelloFrame {
  op: 'hello';
  callId: CallId;
  dc: DcId | string;
  endpoint: Endpoint;
  pid: number;
  name?: string;
  kind?: 'self' | 'replica' | 'backup';
  primaryNode?: NodeId;
}

/** HELLO_OK: where the process is now bound, and the DC's limits. */
export interface HelloOkFrame {
  op: 'helloOk';
  callId: CallId;
  node: NodeId;
  dc: DcId;
  dcName: string;
  endpoint: Endpoint;
  maxPayload: number;
  postWindow: number;
}

/** Outcome of a call (or of a HELLO that failed). `code` null = success. */
export interface ResultFrame {
  op: 'result';
  callId: CallId;
  code: ErrorCode | null;
  /** Error text (only with a code). */
  message?: string;
  /** The message, for receive, receiveRequest and sendrec. */
  msg?: Received;
  /** A receive-ahead message (see the module doc). */
  more?: boolean;
}

/** Every frame of the process protocol, decoded. */
export type ProcFrame =
  | HelloFrame
  | HelloOkFrame
  | { op: 'send' | 'sendrec' | 'reply'; callId: CallId; dst: Endpoint; type: number; payload: Uint8Array }
  | { op: 'receive'; callId: CallId; src: Endpoint; nowait: boolean; ahead: number }
  | { op: 'receiveRequest'; callId: CallId; nowait: boolean }
  | { op: 'replyReceive'; callId: CallId; dst: Endpoint; type: number; payload: Uint8Array; nowait: boolean }
  | { op: 'notify' | 'wakeup'; callId: CallId; dst: Endpoint }
  | { op: 'post'; dst: Endpoint; type: number; payload: Uint8Array }
  | { op: 'cancel'; callId: CallId; reason: 'ETIMEDOUT' | 'EABORTED' }
  | { op: 'grant'; callId: CallId; grant: number; size: number; access: GrantAccess }
  | { op: 'revoke'; callId: CallId; grant: number }
  | { op: 'vcopy'; callId: CallId; src: GrantRef; dst: GrantRef; bytes: number }
  | ResultFrame
  | { op: 'credit'; dst: Endpoint; n: number }
  | { op: 'postFailed'; dst: Endpoint; code: ErrorCode; n: number }
  | { op: 'grantRead'; xfer: number; grant: number; offset: number; length: number }
  | { op: 'grantData'; xfer: number; code: ErrorCode | null; data: Uint8Array }
  | { op: 'grantWrite'; xfer: number; grant: number; offset: number; data: Uint8Array }
  | { op: 'grantWritten'; xfer: number; code: ErrorCode | null }
  | { op: 'admin'; id: number; method: string; params: unknown }
  | { op: 'adminResult'; id: number; result?: unknown; error?: WireError }
  | { op: 'event'; sub: number; data: unknown };

/** Plain MessagePack (no msgpackr records), so any MessagePack implementation can speak the protocol. */
const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8enc = new TextEncoder();
const EMPTY = new Uint8Array(0);

function proto(message: string): DvsError {
  return new DvsError('EPROTO', `process frame: ${message}`);
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

/**
 * Encodes process-protocol frames into a {@link FrameWriter} (length prefix of ./frame.ts included), so
 * that everything a side produces in one event-loop turn goes out in one socket write.
 */
export class ProcFrameWriter {
  /** The underlying frame slab writer. */
  readonly out: FrameWriter;

  constructor(opts?: FrameWriterOptions) {
    this.out = new FrameWriter(opts);
  }

  /** Bytes waiting. */
  get length(): number {
    return this.out.length;
  }

  /** Take everything written so far as one Buffer, or undefined when empty. */
  take(): Buffer | undefined {
    return this.out.take();
  }

  /** Append one frame with raw header fields (the fast path used by every op). */
  raw(
    op: number,
    flags: number,
    err: number,
    callId: number,
    peer: number,
    type: number,
    aux: number,
    body: Uint8Array,
  ): void {
    const w = this.out;
    const size = PROC_HEADER_SIZE + body.length;
    const o = w.begin(size);
    const b = w.buf;
    // Byte stores instead of Buffer.writeUInt32LE: this runs once per message at millions per second.
    b[o] = op;
    b[o + 1] = flags;
    b[o + 2] = err;
    b[o + 3] = err >>> 8;
    put32(b, o + 4, callId);
    put32(b, o + 8, peer);
    put32(b, o + 12, type);
    put32(b, o + 16, aux);
    const n = body.length;
    if (n > 32) b.set(body, o + PROC_HEADER_SIZE);
    else for (let i = 0, d = o + PROC_HEADER_SIZE; i < n; i++) b[d + i] = body[i]!;
    w.end(size);
  }

  /** Append a POST (hot path: no object allocation). */
  post(dst: Endpoint, type: number, payload: Uint8Array): void {
    this.raw(PROC_OPS.post, 0, 0, 0, dst, type, 0, payload);
  }

  /** Append a CREDIT. */
  credit(dst: Endpoint, n: number): void {
    this.raw(PROC_OPS.credit, 0, 0, 0, dst, 0, n, EMPTY);
  }

  /** Append a RESULT (hot path for receives). */
  result(
    callId: CallId,
    code: ErrorCode | null,
    message: string | undefined,
    msg: Received | undefined,
    more = false,
  ): void {
    if (code !== null) {
      this.raw(
        PROC_OPS.result,
        0,
        ERROR_NUMBERS[code],
        callId,
        0,
        0,
        0,
        message ? utf8enc.encode(message) : EMPTY,
      );
      return;
    }
    if (msg === undefined) {
      this.raw(PROC_OPS.result, 0, 0, callId, 0, 0, 0, EMPTY);
      return;
    }
    const flags = FLAG_MSG | (KIND_BITS[msg.kind] << KIND_SHIFT) | (more ? FLAG_MORE : 0);
    let body = msg.payload;
    if (msg.kind === 'notify') {
      body = new Uint8Array(msg.timestamp === undefined ? 0 : 8);
      if (msg.timestamp !== undefined) new DataView(body.buffer).setFloat64(0, msg.timestamp, true);
    }
    this.raw(PROC_OPS.result, flags, 0, callId, msg.source, msg.type, 0, body);
  }

  /** Append any frame. */
  frame(f: ProcFrame): void {
    switch (f.op) {
      case 'hello': {
        const body: Record<string, unknown> = { dc: f.dc, endpoint: f.endpoint, pid: f.pid };
        if (f.name !== undefined) body.name = f.name;
        if (f.kind !== undefined) body.kind = f.kind;
        if (f.primaryNode !== undefined) body.primaryNode = f.primaryNode;
        this.raw(PROC_OPS.hello, 0, 0, f.callId, 0, 0, 0, packr.pack(body));
        return;
      }
      case 'helloOk': {
        const { node, dc, dcName, endpoint, maxPayload, postWindow } = f;
        const body = packr.pack({ node, dc, dcName, endpoint, maxPayload, postWindow });
        this.raw(PROC_OPS.helloOk, 0, 0, f.callId, 0, 0, 0, body);
        return;
      }
      case 'send':
      case 'sendrec':
      case 'reply':
        this.raw(PROC_OPS[f.op], 0, 0, f.callId, f.dst, f.type, 0, f.payload);
        return;
      case 'receive':
        this.raw(PROC_OPS.receive, f.nowait ? FLAG_NOWAIT : 0, 0, f.callId, f.src, 0, f.ahead, EMPTY);
        return;
      case 'receiveRequest':
        this.raw(PROC_OPS.receiveRequest, f.nowait ? FLAG_NOWAIT : 0, 0, f.callId, 0, 0, 0, EMPTY);
        return;
      case 'replyReceive':
        this.raw(PROC_OPS.replyReceive, f.nowait ? FLAG_NOWAIT : 0, 0, f.callId, f.dst, f.type, 0, f.payload);
        return;
      case 'notify':
      case 'wakeup':
        this.raw(PROC_OPS[f.op], 0, 0, f.callId, f.dst, 0, 0, EMPTY);
        return;
      case 'post':
        this.post(f.dst, f.type, f.payload);
        return;
      case 'cancel':
        this.raw(PROC_OPS.cancel, 0, ERROR_NUMBERS[f.reason], f.callId, 0, 0, 0, EMPTY);
        return;
      case 'grant': {
        const flags = (f.access.includes('r') ? FLAG_READ : 0) | (f.access.includes('w') ? FLAG_WRITE : 0);
        this.raw(PROC_OPS.grant, flags, 0, f.callId, f.size, 0, f.grant, EMPTY);
        return;
      }
      case 'revoke':
        this.raw(PROC_OPS.revoke, 0, 0, f.callId, 0, 0, f.grant, EMPTY);
        return;
      case 'vcopy': {
        const body = packr.pack({ src: refOf(f.src), dst: refOf(f.dst), bytes: f.bytes });
        this.raw(PROC_OPS.vcopy, 0, 0, f.callId, 0, 0, 0, body);
        return;
      }
      case 'result':
        this.result(f.callId, f.code, f.message, f.msg, f.more === true);
        return;
      case 'credit':
        this.credit(f.dst, f.n);
        return;
      case 'postFailed':
        this.raw(PROC_OPS.postFailed, 0, ERROR_NUMBERS[f.code], 0, f.dst, 0, f.n, EMPTY);
        return;
      case 'grantRead':
        this.raw(PROC_OPS.grantRead, 0, 0, f.xfer, f.offset, f.length, f.grant, EMPTY);
        return;
      case 'grantData':
        this.raw(PROC_OPS.grantData, 0, f.code === null ? 0 : ERROR_NUMBERS[f.code], f.xfer, 0, 0, 0, f.data);
        return;
      case 'grantWrite':
        this.raw(PROC_OPS.grantWrite, 0, 0, f.xfer, f.offset, 0, f.grant, f.data);
        return;
      case 'grantWritten':
        this.raw(
          PROC_OPS.grantWritten,
          0,
          f.code === null ? 0 : ERROR_NUMBERS[f.code],
          f.xfer,
          0,
          0,
          0,
          EMPTY,
        );
        return;
      case 'admin':
        this.raw(
          PROC_OPS.admin,
          0,
          0,
          0,
          0,
          0,
          0,
          packr.pack({ id: f.id, method: f.method, params: f.params }),
        );
        return;
      case 'adminResult': {
        const body =
          f.error !== undefined ? { id: f.id, error: f.error } : { id: f.id, result: f.result ?? null };
        this.raw(PROC_OPS.adminResult, 0, 0, 0, 0, 0, 0, packr.pack(body));
        return;
      }
      case 'event':
        this.raw(PROC_OPS.event, 0, 0, f.sub, 0, 0, 0, packr.pack(f.data ?? null));
        return;
    }
  }
}

function refOf(r: GrantRef): GrantRef {
  return { ep: r.ep, grant: r.grant, offset: r.offset };
}

/** Encode one frame body (without the length prefix): the inverse of {@link decodeProcFrame}. */
export function encodeProcFrame(f: ProcFrame): Uint8Array {
  const w = new ProcFrameWriter({ slabBytes: 256 });
  w.frame(f);
  return w.take()!.subarray(FRAME_HEADER_BYTES);
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

const OP_NAMES: (ProcOp | undefined)[] = [];
for (const [name, n] of Object.entries(PROC_OPS) as [ProcOp, number][]) OP_NAMES[n] = name;

/** Name of an op number, for logs. */
export function procOpName(n: number): string {
  return OP_NAMES[n] ?? `op#${n}`;
}

/** Receives the fields of a POST from {@link readPost}. */
export interface PostSink {
  onPost(dst: Endpoint, type: number, payload: Uint8Array): void;
}

/**
 * Fast path for the hottest frame: if `body` is a well-formed POST, hand its fields to `sink` (no frame
 * object) and return true; otherwise return false and let {@link decodeProcFrame} decode (or reject) it.
 */
export function readPost(body: Uint8Array, sink: PostSink): boolean {
  if (body.length < PROC_HEADER_SIZE || body.length > PROC_HEADER_SIZE + MAX_PAYLOAD_LIMIT) return false;
  if (body[0] !== PROC_OPS.post || body[1] !== 0 || body[2] !== 0 || body[3] !== 0) return false;
  if (u32At(body, 4) !== 0 || u32At(body, 16) !== 0) return false;
  const dst = u32At(body, 8);
  if (dst > MAX_ENDPOINT) return false;
  sink.onPost(dst, u32At(body, 12) | 0, body.subarray(PROC_HEADER_SIZE));
  return true;
}

/**
 * Decode one frame body (without the length prefix). Validates the header and the body and throws
 * DvsError EPROTO on anything malformed. Payloads are views into `body` (no copy).
 */
export function decodeProcFrame(body: Uint8Array): ProcFrame {
  if (body.length < PROC_HEADER_SIZE) throw proto(`short frame (${body.length} bytes)`);
  // Plain byte reads: no DataView per frame on the hot path.
  const opNum = body[0]!;
  const flags = body[1]!;
  const err = body[2]! | (body[3]! << 8);
  const callId = u32At(body, 4);
  const peer = u32At(body, 8);
  const type = u32At(body, 12) | 0;
  const aux = u32At(body, 16);
  const rest = body.subarray(PROC_HEADER_SIZE);
  const op = OP_NAMES[opNum];
  if (op === undefined) throw proto(`unknown op ${opNum}`);
  const h = new HeaderCheck(op, flags, err, callId, peer, type, aux, rest);
  switch (op) {
    case 'hello': {
      h.only({ callId: true, body: true });
      const o = unpackObject(rest, op);
      const dc = o.dc;
      if (!(typeof dc === 'string' && dc.length > 0 && dc.length <= 256) && !isU16(dc))
        throw proto('hello: bad dc');
      const f: HelloFrame = {
        op,
        callId,
        dc,
        endpoint: endpointOf(o.endpoint, 'hello endpoint'),
        pid: int(o.pid, 'pid'),
      };
      if (o.name !== undefined) f.name = str(o.name, 'name');
      if (o.kind !== undefined) {
        if (o.kind !== 'self' && o.kind !== 'replica' && o.kind !== 'backup') throw proto('hello: bad kind');
        f.kind = o.kind;
      }
      if (o.primaryNode !== undefined) {
        if (!isU16(o.primaryNode)) throw proto('hello: bad primaryNode');
        f.primaryNode = o.primaryNode;
      }
      return f;
    }
    case 'helloOk': {
      h.only({ callId: true, body: true });
      const o = unpackObject(rest, op);
      if (!isU16(o.node) || !isU16(o.dc)) throw proto('helloOk: bad node or dc');
      return {
        op,
        callId,
        node: o.node,
        dc: o.dc,
        dcName: str(o.dcName, 'dcName'),
        endpoint: endpointOf(o.endpoint, 'helloOk endpoint'),
        maxPayload: positive(o.maxPayload, 'maxPayload'),
        postWindow: positive(o.postWindow, 'postWindow'),
      };
    }
    case 'send':
    case 'sendrec':
    case 'reply':
      h.only({ callId: true, peer: true, type: true, body: true });
      h.payloadLimit();
      return { op, callId, dst: endpointOf(peer, 'dst'), type, payload: rest };
    case 'receive':
      h.only({ callId: true, peer: true, aux: true, flags: FLAG_NOWAIT });
      if (peer !== ANY) endpointOf(peer, 'src');
      return { op, callId, src: peer, nowait: (flags & FLAG_NOWAIT) !== 0, ahead: aux };
    case 'receiveRequest':
      h.only({ callId: true, flags: FLAG_NOWAIT });
      return { op, callId, nowait: (flags & FLAG_NOWAIT) !== 0 };
    case 'replyReceive':
      h.only({ callId: true, peer: true, type: true, body: true, flags: FLAG_NOWAIT });
      h.payloadLimit();
      return {
        op,
        callId,
        dst: endpointOf(peer, 'dst'),
        type,
        payload: rest,
        nowait: (flags & FLAG_NOWAIT) !== 0,
      };
    case 'notify':
    case 'wakeup':
      h.only({ callId: true, peer: true });
      return { op, callId, dst: endpointOf(peer, 'dst') };
    case 'post':
      h.only({ peer: true, type: true, body: true });
      h.payloadLimit();
      return { op, dst: endpointOf(peer, 'dst'), type, payload: rest };
    case 'cancel': {
      h.only({ callId: true, err: true });
      const reason = errorCodeOf(err);
      if (reason !== 'ETIMEDOUT' && reason !== 'EABORTED') throw proto(`cancel: bad reason ${err}`);
      return { op, callId, reason };
    }
    case 'grant': {
      h.only({ callId: true, peer: true, aux: true, flags: FLAG_READ | FLAG_WRITE });
      const r = (flags & FLAG_READ) !== 0;
      const w = (flags & FLAG_WRITE) !== 0;
      if (!r && !w) throw proto('grant: no access bits');
      return { op, callId, grant: aux, size: peer, access: r && w ? 'rw' : r ? 'r' : 'w' };
    }
    case 'revoke':
      h.only({ callId: true, aux: true });
      return { op, callId, grant: aux };
    case 'vcopy': {
      h.only({ callId: true, body: true });
      const o = unpackObject(rest, op);
      return { op, callId, src: grantRef(o.src), dst: grantRef(o.dst), bytes: u32(o.bytes, 'bytes') };
    }
    case 'result':
      return decodeResult(h, flags, err, callId, peer, type, rest);
    case 'credit':
      h.only({ peer: true, aux: true });
      return { op, dst: endpointOf(peer, 'dst'), n: aux };
    case 'postFailed':
      h.only({ peer: true, err: true, aux: true });
      if (err === 0) throw proto('postFailed without a code');
      return { op, dst: endpointOf(peer, 'dst'), code: errorCodeOf(err), n: aux };
    case 'grantRead':
      h.only({ callId: true, peer: true, type: true, aux: true });
      if (type < 0) throw proto('grantRead: negative length');
      return { op, xfer: callId, grant: aux, offset: peer, length: type };
    case 'grantData':
      h.only({ callId: true, err: true, body: true });
      if (err !== 0 && rest.length > 0) throw proto('grantData: data with an error');
      return { op, xfer: callId, code: err === 0 ? null : errorCodeOf(err), data: rest };
    case 'grantWrite':
      h.only({ callId: true, peer: true, aux: true, body: true });
      return { op, xfer: callId, grant: aux, offset: peer, data: rest };
    case 'grantWritten':
      h.only({ callId: true, err: true });
      return { op, xfer: callId, code: err === 0 ? null : errorCodeOf(err) };
    case 'admin': {
      h.only({ body: true });
      const o = unpackObject(rest, op);
      return { op, id: u32(o.id, 'admin id'), method: str(o.method, 'method'), params: o.params ?? {} };
    }
    case 'adminResult': {
      h.only({ body: true });
      const o = unpackObject(rest, op);
      const id = u32(o.id, 'admin id');
      if (o.error !== undefined && o.error !== null) {
        const e = o.error as Record<string, unknown>;
        if (typeof e !== 'object' || !isErrorCode(e.code) || typeof e.message !== 'string')
          throw proto('adminResult: bad error');
        return { op, id, error: DvsError.fromWire(e).toWire() };
      }
      return { op, id, result: o.result };
    }
    case 'event': {
      h.only({ callId: true, body: true });
      let data: unknown;
      try {
        data = packr.unpack(rest);
      } catch {
        throw proto('event: malformed MessagePack');
      }
      return { op, sub: callId, data };
    }
  }
}

function decodeResult(
  h: HeaderCheck,
  flags: number,
  err: number,
  callId: number,
  peer: number,
  type: number,
  rest: Uint8Array,
): ResultFrame {
  if (err !== 0) {
    h.only({ callId: true, err: true, body: true });
    const f: ResultFrame = { op: 'result', callId, code: errorCodeOf(err) };
    if (rest.length > 0) f.message = utf8.decode(rest);
    return f;
  }
  if ((flags & FLAG_MSG) === 0) {
    h.only({ callId: true });
    return { op: 'result', callId, code: null };
  }
  h.only({
    callId: true,
    peer: true,
    type: true,
    body: true,
    flags: FLAG_MSG | FLAG_MORE | (3 << KIND_SHIFT),
  });
  const kind = KINDS[(flags >> KIND_SHIFT) & 3]!;
  const source = endpointOf(peer, 'source');
  let msg: Received;
  if (kind === 'notify') {
    if (rest.length === 8) {
      const ts = new DataView(rest.buffer, rest.byteOffset, 8).getFloat64(0, true);
      if (!Number.isFinite(ts)) throw proto('result: bad timestamp');
      msg = { source, type, payload: EMPTY, kind, timestamp: ts };
    } else if (rest.length === 0) {
      msg = { source, type, payload: EMPTY, kind };
    } else throw proto('result: notify body must be 0 or 8 bytes');
  } else {
    h.payloadLimit();
    msg = { source, type, payload: rest, kind };
  }
  const f: ResultFrame = { op: 'result', callId, code: null, msg };
  if ((flags & FLAG_MORE) !== 0) f.more = true;
  return f;
}

/** Checks that a frame uses only the header fields its op defines. */
class HeaderCheck {
  constructor(
    readonly op: ProcOp,
    readonly flags: number,
    readonly err: number,
    readonly callId: number,
    readonly peer: number,
    readonly type: number,
    readonly aux: number,
    readonly body: Uint8Array,
  ) {}

  only(used: {
    callId?: true;
    peer?: true;
    type?: true;
    aux?: true;
    err?: true;
    body?: true;
    flags?: number;
  }): void {
    let field = '';
    if ((this.flags & ~(used.flags ?? 0)) !== 0) field = `flags 0x${this.flags.toString(16)}`;
    else if (!used.err && this.err !== 0) field = 'error number';
    else if (!used.callId && this.callId !== 0) field = 'callId';
    else if (!used.peer && this.peer !== 0) field = 'peer';
    else if (!used.type && this.type !== 0) field = 'type';
    else if (!used.aux && this.aux !== 0) field = 'aux';
    else if (!used.body && this.body.length !== 0) field = 'body';
    if (field !== '') throw proto(`${this.op}: unexpected ${field}`);
  }

  payloadLimit(): void {
    if (this.body.length > MAX_PAYLOAD_LIMIT) throw proto(`${this.op}: payload of ${this.body.length} bytes`);
  }
}

function unpackObject(b: Uint8Array, op: ProcOp): Record<string, unknown> {
  let v: unknown;
  try {
    v = packr.unpack(b);
  } catch (e) {
    throw new DvsError('EPROTO', `process frame: ${op}: bad MessagePack body`, undefined, { cause: e });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array)
    throw proto(`${op}: body is not a map`);
  return v as Record<string, unknown>;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

function u32At(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function isU16(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff;
}
function u32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > U32_MAX) throw proto(`bad ${what}`);
  return v;
}
function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < I32_MIN || v > I32_MAX) throw proto(`bad ${what}`);
  return v;
}
function positive(v: unknown, what: string): number {
  const n = u32(v, what);
  if (n === 0) throw proto(`bad ${what}`);
  return n;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length > 4096) throw proto(`bad ${what}`);
  return v;
}
function endpointOf(v: unknown, what: string): Endpoint {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_ENDPOINT) throw proto(`bad ${what}`);
  return v;
}
function grantRef(v: unknown): GrantRef {
  if (typeof v !== 'object' || v === null) throw proto('vcopy: bad grant ref');
  const o = v as Record<string, unknown>;
  return {
    ep: endpointOf(o.ep, 'grant ep'),
    grant: u32(o.grant, 'grant id'),
    offset: u32(o.offset, 'grant offset'),
  };
}
