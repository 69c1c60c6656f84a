/**
 * Codec of {@link NodeFrame}: the frames two kernels exchange over a node link. Each encoded frame is the
 * body of one length-prefixed frame (src/protocol/frame.ts); its first byte is a tag.
 *
 * Hot frames have a fixed little-endian binary header followed by the raw payload. Offsets in bytes; `-`
 * marks a reserved byte that must be 0; endpoints are u32 no larger than MAX_ENDPOINT; dc is u16, 1..65535
 * (0 only in the node-level `sync` control frame).
 * ```
 * msg     0 tag=1 | 1 kind | 2 dc u16 | 4 src u32 | 8 dst u32 | 12 op u64 | 20 type i32 | 24 len u32 | 28 payload
 *         kind: 0 send, 1 request, 2 post
 * ack     0 tag=2 | 1 flags | 2 dc u16 | 4 src u32 | 8 dst u32 | 12 op u64 | 20 code u16 | 22 node u16 | 24
 *         flags bit 0: `node` present (other bits 0; node 0 when absent); code 0 = taken, else ERROR_NUMBERS
 * reply   0 tag=3 | 1 -    | 2 dc u16 | 4 src u32 | 8 dst u32 | 12 op u64 | 20 type i32 | 24 len u32 | 28 payload
 * notify  0 tag=4 | 1 -    | 2 dc u16 | 4 src u32 | 8 dst u32 | 12 ts f64 (ms since the epoch)       | 20
 * credit  0 tag=5 | 1 -    | 2 dc u16 | 4 src u32 | 8 dst u32 | 12 n u32 | 16
 * control 0 tag=16 | 1 MessagePack map of the whole frame object (plain MessagePack, no records)
 * ```
 * `len` must equal the bytes that follow the header and be at most MAX_PAYLOAD_LIMIT; `n` is u32; `op` is a
 * u64 (low u32 then high u32) below 2^53, since kernels number operations with a counter that never wraps.
 * Tags 0xF0..0xFF are reserved for the link layer (src/proxy/wire.ts) and never start a node frame.
 *
 * Decoding validates every field and throws DvsError EPROTO on anything malformed, never another error.
 * Encoding validates too ({@link checkNodeFrame}) and throws EINVAL: a frame the peer would reject must be
 * refused at the sender, where the bug is.
 */
import { Packr } from 'msgpackr';
import {
  CONTROL_FRAME_TYPES,
  type ControlFrame,
  type ControlFrameType,
  MAX_ENDPOINT,
  MAX_PAYLOAD_LIMIT,
  type NodeFrame,
} from '../kernel/types.js';
import { DvsError, type ErrorCode, errorCodeOf, errorNumber, isErrorCode } from './errors.js';
import { FRAME_HEADER_BYTES, FrameWriter } from './frame.js';

/** First byte of each kind of node frame. */
export const NODE_TAG = {
  msg: 1,
  ack: 2,
  reply: 3,
  notify: 4,
  credit: 5,
  control: 16,
} as const;

/** Header sizes of the hot frames, bytes. */
export const MSG_HEADER_BYTES = 28;
export const ACK_BYTES = 24;
export const REPLY_HEADER_BYTES = 28;
export const NOTIFY_BYTES = 20;
export const CREDIT_BYTES = 16;

/** Tags at or above this value belong to the link layer, not to node frames. */
export const LINK_TAG_BASE = 0xf0;

/** The frames with a fixed binary layout. */
export type HotFrame = Extract<NodeFrame, { t: 'msg' | 'ack' | 'reply' | 'notify' | 'credit' }>;

const KIND_NUMBER = { send: 0, request: 1, post: 2 } as const;
const KIND_BY_NUMBER = ['send', 'request', 'post'] as const;
const CONTROL_TYPES: ReadonlySet<string> = new Set(CONTROL_FRAME_TYPES);
/** Control frames about the node rather than one DC (dc 0): the endpoint sync, store, rpc and gcs traffic. */
const NODE_WIDE: ReadonlySet<string> = new Set(['sync', 'store', 'rpc', 'gcs']);

/** Plain MessagePack: maps in, plain objects out, readable by any MessagePack implementation. */
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

function bad(what: string, details?: Record<string, unknown>): DvsError {
  return new DvsError('EPROTO', `bad node frame: ${what}`, details);
}

function invalid(what: string): DvsError {
  return new DvsError('EINVAL', `cannot encode node frame: ${what}`);
}

function isU32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function isOp(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function isEndpoint(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_ENDPOINT;
}

function isDc(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 0xffff;
}

function isI32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= -0x80000000 && n <= 0x7fffffff;
}

/**
 * Throws DvsError EINVAL if `f` cannot be encoded (a field out of range, an unknown control frame name).
 * Cheap: the link calls it on every send() so that encoding at flush time cannot fail.
 */
export function checkNodeFrame(f: NodeFrame): void {
  if (!isDc(f.dc) && !(f.dc === 0 && NODE_WIDE.has(f.t))) throw invalid(`dc ${String(f.dc)}`);
  switch (f.t) {
    case 'msg':
    case 'reply':
      if (f.t === 'msg' && !Object.hasOwn(KIND_NUMBER, f.kind)) throw invalid(`kind ${String(f.kind)}`);
      if (!isI32(f.type)) throw invalid(`type ${String(f.type)}`);
      if (!(f.payload instanceof Uint8Array)) throw invalid('payload is not a Uint8Array');
      if (f.payload.length > MAX_PAYLOAD_LIMIT) throw invalid(`payload of ${f.payload.length} bytes`);
      break;
    case 'ack':
      if (f.code !== null && !isErrorCode(f.code)) throw invalid(`code ${String(f.code)}`);
      if (f.node !== undefined && !(Number.isInteger(f.node) && f.node >= 0 && f.node <= 0xffff)) {
        throw invalid(`node ${String(f.node)}`);
      }
      break;
    case 'notify':
      if (typeof f.ts !== 'number' || !Number.isFinite(f.ts)) throw invalid(`ts ${String(f.ts)}`);
      break;
    case 'credit':
      if (!isU32(f.n)) throw invalid(`n ${String(f.n)}`);
      break;
    default:
      if (!CONTROL_TYPES.has(f.t)) throw invalid(`unknown frame type ${String(f.t)}`);
      return;
  }
  if (!isEndpoint(f.src)) throw invalid(`src ${String(f.src)}`);
  if (!isEndpoint(f.dst)) throw invalid(`dst ${String(f.dst)}`);
  if ((f.t === 'msg' || f.t === 'ack' || f.t === 'reply') && !isOp(f.op)) throw invalid(`op ${String(f.op)}`);
}

/**
 * Encode a control frame's body (tag + MessagePack). Control frames are encoded once, when sent, so the
 * link can keep the bytes for resending. Throws EINVAL if the frame is invalid or cannot be packed.
 */
export function encodeControlFrame(f: ControlFrame): Uint8Array {
  checkNodeFrame(f);
  let packed: Uint8Array;
  try {
    packed = packr.pack(f);
  } catch (e) {
    throw new DvsError('EINVAL', `cannot pack control frame ${f.t}`, undefined, { cause: e });
  }
  const out = new Uint8Array(packed.length + 1);
  out[0] = NODE_TAG.control;
  out.set(packed, 1);
  return out;
}

/** Bytes the body of hot frame `f` takes (control frames: encode them with encodeControlFrame). */
function hotSize(f: NodeFrame): number {
  switch (f.t) {
    case 'msg':
      return MSG_HEADER_BYTES + f.payload.length;
    case 'reply':
      return REPLY_HEADER_BYTES + f.payload.length;
    case 'ack':
      return ACK_BYTES;
    case 'notify':
      return NOTIFY_BYTES;
    case 'credit':
      return CREDIT_BYTES;
    default:
      return -1;
  }
}

/**
 * Append `f` as one frame to `w` without intermediate allocations. `f` must have passed
 * {@link checkNodeFrame}; control frames are packed here (prefer writing their pre-encoded bytes).
 */
export function writeNodeFrame(w: FrameWriter, f: NodeFrame): void {
  const size = hotSize(f);
  if (size < 0) {
    w.frame(encodeControlFrame(f as ControlFrame));
    return;
  }
  const h = f as HotFrame;
  const o = w.begin(size);
  const b = w.buf;
  b.writeUInt16LE(h.dc, o + 2);
  b.writeUInt32LE(h.src, o + 4);
  b.writeUInt32LE(h.dst, o + 8);
  writeHotFields(b, o, h);
  w.end(size);
}

function writeOp(b: Buffer, o: number, op: number): void {
  b.writeUInt32LE(op >>> 0, o + 12);
  b.writeUInt32LE(Math.floor(op / 0x100000000), o + 16);
}

function writeHotFields(b: Buffer, o: number, f: HotFrame): void {
  switch (f.t) {
    case 'msg':
      b[o] = NODE_TAG.msg;
      b[o + 1] = KIND_NUMBER[f.kind];
      writeOp(b, o, f.op);
      b.writeInt32LE(f.type, o + 20);
      b.writeUInt32LE(f.payload.length, o + 24);
      b.set(f.payload, o + MSG_HEADER_BYTES);
      break;
    case 'reply':
      b[o] = NODE_TAG.reply;
      b[o + 1] = 0;
      writeOp(b, o, f.op);
      b.writeInt32LE(f.type, o + 20);
      b.writeUInt32LE(f.payload.length, o + 24);
      b.set(f.payload, o + REPLY_HEADER_BYTES);
      break;
    case 'ack':
      b[o] = NODE_TAG.ack;
      b[o + 1] = f.node === undefined ? 0 : 1;
      writeOp(b, o, f.op);
      b.writeUInt16LE(f.code === null ? 0 : errorNumber(f.code), o + 20);
      b.writeUInt16LE(f.node ?? 0, o + 22);
      break;
    case 'notify':
      b[o] = NODE_TAG.notify;
      b[o + 1] = 0;
      b.writeDoubleLE(f.ts, o + 12);
      break;
    case 'credit':
      b[o] = NODE_TAG.credit;
      b[o + 1] = 0;
      b.writeUInt32LE(f.n, o + 12);
      break;
  }
}

/** Encode `f` as a standalone body (tests and cold paths; the link writes batches with writeNodeFrame). */
export function encodeNodeFrame(f: NodeFrame): Uint8Array {
  checkNodeFrame(f);
  const size = hotSize(f);
  if (size < 0) return encodeControlFrame(f as ControlFrame);
  const w = new FrameWriter({ slabBytes: size + FRAME_HEADER_BYTES });
  writeNodeFrame(w, f);
  return w.take()!.subarray(FRAME_HEADER_BYTES);
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function i32(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24);
}

const f64Scratch = new Float64Array(1);
const f64Bytes = new Uint8Array(f64Scratch.buffer);

/** The op at offset 12: a u64 below 2^53. */
function op64(b: Uint8Array): number {
  const hi = u32(b, 16);
  if (hi > 0x1fffff) throw bad('op above 2^53');
  return hi * 0x100000000 + u32(b, 12);
}

function f64(b: Uint8Array, o: number): number {
  // Float64Array uses the platform's byte order; every platform Node supports is little-endian.
  for (let i = 0; i < 8; i++) f64Bytes[i] = b[o + i]!;
  return f64Scratch[0]!;
}

function header(b: Uint8Array, fixed: number, name: string): { dc: number; src: number; dst: number } {
  if (b.length < fixed) throw bad(`${name} of ${b.length} bytes`);
  const dc = u16(b, 2);
  const src = u32(b, 4);
  const dst = u32(b, 8);
  if (dc === 0) throw bad(`${name} with dc 0`);
  if (src > MAX_ENDPOINT || dst > MAX_ENDPOINT) throw bad(`${name} endpoint out of range`, { src, dst });
  return { dc, src, dst };
}

function payloadOf(b: Uint8Array, name: string): Uint8Array {
  const len = u32(b, 24);
  if (len > MAX_PAYLOAD_LIMIT || b.length !== REPLY_HEADER_BYTES + len) {
    throw bad(`${name} payload length ${len} in ${b.length} bytes`);
  }
  return b.subarray(REPLY_HEADER_BYTES);
}

function exact(b: Uint8Array, size: number, name: string): void {
  if (b.length !== size) throw bad(`${name} of ${b.length} bytes`);
}

function reserved(b: Uint8Array, name: string): void {
  if (b[1] !== 0) throw bad(`${name} reserved byte ${b[1]}`);
}

/**
 * Decode one node frame body. Payloads are views of `body` (no copy). Throws DvsError EPROTO on any
 * malformed input (unknown tag, bad length, field out of range, unknown error code, bad MessagePack).
 */
export function decodeNodeFrame(body: Uint8Array): NodeFrame {
  if (body.length === 0) throw bad('empty');
  const tag = body[0];
  switch (tag) {
    case NODE_TAG.msg: {
      const h = header(body, MSG_HEADER_BYTES, 'msg');
      const kind = KIND_BY_NUMBER[body[1]!];
      if (kind === undefined) throw bad(`msg kind ${body[1]}`);
      return {
        t: 'msg',
        dc: h.dc,
        src: h.src,
        dst: h.dst,
        kind,
        op: op64(body),
        type: i32(body, 20),
        payload: payloadOf(body, 'msg'),
      };
    }
    case NODE_TAG.reply: {
      const h = header(body, REPLY_HEADER_BYTES, 'reply');
      reserved(body, 'reply');
      return {
        t: 'reply',
        dc: h.dc,
        src: h.src,
        dst: h.dst,
        op: op64(body),
        type: i32(body, 20),
        payload: payloadOf(body, 'reply'),
      };
    }
    case NODE_TAG.ack: {
      exact(body, ACK_BYTES, 'ack');
      const h = header(body, ACK_BYTES, 'ack');
      const flags = body[1]!;
      if (flags > 1) throw bad(`ack flags ${flags}`);
      const n = u16(body, 20);
      let code: ErrorCode | null = null;
      if (n !== 0) {
        code = errorCodeOf(n);
        if (errorNumber(code) !== n) throw bad(`ack with unknown error number ${n}`);
      }
      const node = u16(body, 22);
      if (flags === 0) {
        if (node !== 0) throw bad('ack node set without flag');
        return { t: 'ack', dc: h.dc, src: h.src, dst: h.dst, op: op64(body), code };
      }
      return { t: 'ack', dc: h.dc, src: h.src, dst: h.dst, op: op64(body), code, node };
    }
    case NODE_TAG.notify: {
      exact(body, NOTIFY_BYTES, 'notify');
      const h = header(body, NOTIFY_BYTES, 'notify');
      reserved(body, 'notify');
      const ts = f64(body, 12);
      if (!Number.isFinite(ts)) throw bad('notify ts not finite');
      return { t: 'notify', dc: h.dc, src: h.src, dst: h.dst, ts };
    }
    case NODE_TAG.credit: {
      exact(body, CREDIT_BYTES, 'credit');
      const h = header(body, CREDIT_BYTES, 'credit');
      reserved(body, 'credit');
      return { t: 'credit', dc: h.dc, src: h.src, dst: h.dst, n: u32(body, 12) };
    }
    case NODE_TAG.control:
      return decodeControl(body);
    default:
      throw bad(`unknown tag ${tag}`);
  }
}

function decodeControl(body: Uint8Array): ControlFrame {
  let v: unknown;
  try {
    v = packr.unpack(body.subarray(1));
  } catch (e) {
    throw new DvsError('EPROTO', 'bad node frame: control frame is not MessagePack', undefined, { cause: e });
  }
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype) {
    throw bad('control frame is not a map');
  }
  const o = v as Record<string, unknown>;
  if (typeof o.t !== 'string' || !CONTROL_TYPES.has(o.t)) throw bad(`control frame type ${String(o.t)}`);
  // `sync` and `store` are about the node, not one DC: they travel with dc 0.
  if (!isDc(o.dc) && !(o.dc === 0 && NODE_WIDE.has(o.t))) throw bad(`control frame dc ${String(o.dc)}`);
  return o as ControlFrame & { t: ControlFrameType };
}
