/**
 * The node-link wire: what two daemons write on their one connection, on top of length-prefixed framing
 * (src/protocol/frame.ts). Link messages use tags 0xF1..0xF5, which never start a node frame
 * (src/protocol/node-frames.ts), so both kinds share one stream.
 *
 * ```
 * HELLO 0 tag=F1 | 1 magic "DVSL" | 5 version u8 | 6 MessagePack map (HelloInfo)
 * DATA  0 tag=F2 | 1..3 0 | 4 firstSeq f64 | 12 ack f64 | 20       then node frames numbered firstSeq, +1, ...
 * ACK   0 tag=F3 | 1..3 0 | 4 ack f64      | 12
 * PING  0 tag=F4 | 1..3 0 | 4 stamp f64    | 12
 * PONG  0 tag=F5 | 1..3 0 | 4 stamp f64    | 12                    (the PING's stamp, echoed)
 * ```
 * Sequence numbers and acks are integers below 2^53 carried as f64 (exact), so a link never wraps.
 *
 * A connection:
 * ```
 *  dialer (lower node id)                      acceptor (higher node id)
 *    | HELLO {nodeId, incarnation, epoch, peerIncarnation, peerEpoch, received}
 *    |------------------------------------------>|  validate; reset the session if the peer restarted
 *    |                                    HELLO  |  (same fields, as they stand after that)
 *    |<------------------------------------------|
 *    | DATA(firstSeq, ack) frame frame ... DATA(...) frame ...        (both ways, one write per batch)
 *    | ACK(n) when there is nothing to send; PING/PONG every heartbeat
 * ```
 * Every function here throws DvsError EPROTO on malformed input.
 */
import { Packr } from 'msgpackr';
import { DvsError } from '../protocol/errors.js';
import type { FrameWriter } from '../protocol/frame.js';

export const LINK_TAG = { hello: 0xf1, data: 0xf2, ack: 0xf3, ping: 0xf4, pong: 0xf5 } as const;
export const LINK_MAGIC = 'DVSL';
export const LINK_VERSION = 1;
export const DATA_HEADER_BYTES = 20;
export const SHORT_BYTES = 12;
/** Largest HELLO body accepted (names are short). */
export const MAX_HELLO_BYTES = 4096;

/** What each side tells the other when a connection opens. */
export interface HelloInfo {
  nodeId: number;
  name: string;
  /** Random id of the sender's daemon run. */
  incarnation: string;
  /** Sender's session epoch towards the receiver: bumped when the sender forgot the session (declared dead). */
  epoch: number;
  /** The receiver's incarnation and epoch the sender's session state refers to ('' / 0: none). */
  peerIncarnation: string;
  peerEpoch: number;
  /** Highest seq the sender received in order from the receiver (LinkSession.received). */
  received: number;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

function bad(what: string): DvsError {
  return new DvsError('EPROTO', `bad link frame: ${what}`);
}

function isSeq(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** HELLO body. */
export function encodeHello(h: HelloInfo): Uint8Array {
  const packed = packr.pack(h);
  const out = Buffer.allocUnsafe(6 + packed.length);
  out[0] = LINK_TAG.hello;
  out.write(LINK_MAGIC, 1, 'latin1');
  out[5] = LINK_VERSION;
  out.set(packed, 6);
  return out;
}

/** Parse and validate a HELLO body. */
export function decodeHello(b: Uint8Array): HelloInfo {
  if (b.length < 6 || b.length > MAX_HELLO_BYTES || b[0] !== LINK_TAG.hello) throw bad('hello size or tag');
  if (Buffer.from(b.buffer, b.byteOffset + 1, 4).toString('latin1') !== LINK_MAGIC) throw bad('hello magic');
  if (b[5] !== LINK_VERSION) throw bad(`hello version ${b[5]}`);
  let v: unknown;
  try {
    v = packr.unpack(b.subarray(6));
  } catch {
    throw bad('hello is not MessagePack');
  }
  if (typeof v !== 'object' || v === null) throw bad('hello is not a map');
  const o = v as Record<string, unknown>;
  const int = (k: string, max: number): number => {
    const n = o[k];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > max) throw bad(`hello ${k}`);
    return n;
  };
  const str = (k: string): string => {
    const s = o[k];
    if (typeof s !== 'string' || s.length > 256) throw bad(`hello ${k}`);
    return s;
  };
  return {
    nodeId: int('nodeId', 0xffff),
    name: str('name'),
    incarnation: str('incarnation'),
    epoch: int('epoch', Number.MAX_SAFE_INTEGER),
    peerIncarnation: str('peerIncarnation'),
    peerEpoch: int('peerEpoch', Number.MAX_SAFE_INTEGER),
    received: int('received', Number.MAX_SAFE_INTEGER),
  };
}

/** Append a DATA header to `w`; the node frames that follow it are numbered from `firstSeq`. */
export function writeDataHeader(w: FrameWriter, firstSeq: number, ack: number): void {
  const o = w.begin(DATA_HEADER_BYTES);
  const b = w.buf;
  b[o] = LINK_TAG.data;
  b[o + 1] = 0;
  b[o + 2] = 0;
  b[o + 3] = 0;
  b.writeDoubleLE(firstSeq, o + 4);
  b.writeDoubleLE(ack, o + 12);
  w.end(DATA_HEADER_BYTES);
}

/** Append a short link frame (ACK, PING or PONG) carrying `value`. */
export function writeShort(w: FrameWriter, tag: number, value: number): void {
  const o = w.begin(SHORT_BYTES);
  const b = w.buf;
  b[o] = tag;
  b[o + 1] = 0;
  b[o + 2] = 0;
  b[o + 3] = 0;
  b.writeDoubleLE(value, o + 4);
  w.end(SHORT_BYTES);
}

/** A short link frame as a standalone body. */
export function encodeShort(tag: number, value: number): Uint8Array {
  const b = Buffer.alloc(SHORT_BYTES);
  b[0] = tag;
  b.writeDoubleLE(value, 4);
  return b;
}

function view(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.length);
}

/** Parse a DATA header: firstSeq >= 1 and ack >= 0, both integers. */
export function decodeDataHeader(b: Uint8Array): { firstSeq: number; ack: number } {
  if (b.length !== DATA_HEADER_BYTES || b[1] !== 0 || b[2] !== 0 || b[3] !== 0) throw bad('data header');
  const v = view(b);
  const firstSeq = v.readDoubleLE(4);
  const ack = v.readDoubleLE(12);
  if (!isSeq(firstSeq) || firstSeq < 1 || !isSeq(ack)) throw bad('data header seq');
  return { firstSeq, ack };
}

/** Parse an ACK (integer >= 0) or a PING/PONG (any finite stamp). */
export function decodeShort(b: Uint8Array): number {
  if (b.length !== SHORT_BYTES || b[1] !== 0 || b[2] !== 0 || b[3] !== 0) throw bad('short frame');
  const n = view(b).readDoubleLE(4);
  if (b[0] === LINK_TAG.ack ? !isSeq(n) : !Number.isFinite(n)) throw bad('short frame value');
  return n;
}
