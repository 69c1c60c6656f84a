/**
 * The framing of the relay baseline: the same shape as dvs's process protocol (src/protocol/frame.ts and
 * proc-frames.ts), written independently so the baseline measures Node + sockets, not our code:
 *
 * ```
 *  0        4      5      6        8          12         16         20        24
 *  | len u32 | op  | flags | err u16 | callId   | peer u32 | type i32 | aux u32 | payload ...
 *  |  (LE)   |<------------------ 20-byte header, LE ------------------------>|
 * ```
 * `len` counts the header and payload. `peer` is the destination on the way to the daemon and the source on
 * the way out (the daemon rewrites it, as the dvs kernel does).
 */

export const HEADER = 20;
export const OP_HELLO = 1;
export const OP_MSG = 2;

/** Frame types used by the endpoints. */
export const T_PING = 1;
export const T_START = 2;
export const T_DATA = 3;
export const T_DONE = 4;

/** Offsets of the header fields inside a frame body. */
export const OFF_PEER = 8;
export const OFF_TYPE = 12;
export const OFF_AUX = 16;

/** Write one frame at `pos` of `buf`; returns the position after it. */
export function putFrame(
  buf: Buffer,
  pos: number,
  op: number,
  peer: number,
  type: number,
  aux: number,
  payload: Uint8Array,
): number {
  const len = HEADER + payload.length;
  buf.writeUInt32LE(len, pos);
  buf.fill(0, pos + 4, pos + 4 + HEADER);
  buf[pos + 4] = op;
  buf.writeUInt32LE(peer, pos + 4 + OFF_PEER);
  buf.writeInt32LE(type, pos + 4 + OFF_TYPE);
  buf.writeUInt32LE(aux, pos + 4 + OFF_AUX);
  buf.set(payload, pos + 4 + HEADER);
  return pos + 4 + len;
}

/** One frame as a new Buffer. */
export function frame(op: number, peer: number, type: number, aux: number, payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(4 + HEADER + payload.length);
  putFrame(b, 0, op, peer, type, aux, payload);
  return b;
}

/**
 * Splits a byte stream into frame bodies (header + payload, without the length). Frames inside one chunk
 * are views of it; a frame spanning chunks is assembled from the leftover and the next chunk.
 */
export class Deframer {
  private rest: Buffer | null = null;

  push(chunk: Buffer, onFrame: (body: Buffer) => void): void {
    let buf = chunk;
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = null;
    }
    let pos = 0;
    while (buf.length - pos >= 4) {
      const len = buf.readUInt32LE(pos);
      if (len < HEADER) throw new Error(`bad frame length ${len}`);
      if (buf.length - pos - 4 < len) break;
      onFrame(buf.subarray(pos + 4, pos + 4 + len));
      pos += 4 + len;
    }
    if (pos < buf.length) this.rest = Buffer.from(buf.subarray(pos));
  }
}
